import { ErrorCode, TokenRelayError, type TokenSet } from '@tokenrelay/core';

/**
 * What the store keeps under its key, and what it announces to other tabs. `revision` grows by
 * one with every write, so a tab can tell which of two values is newer when they reach it in
 * the wrong order (the channel and the storage of another process are not synchronised).
 * `tokens: null` marks a sign-out: the revision must survive `clear()` to stay monotonic.
 */
export interface StoredTokens {
  /** 0 for the first write under a key, then one more for every write. */
  readonly revision: number;
  /** The session, or `null` after a sign-out. */
  readonly tokens: TokenSet | null;
}

/** The storage format version; a value written by another version is reported, not guessed at. */
const FORMAT_VERSION = 1;

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

const optionalString = (value: unknown) => value === undefined || typeof value === 'string';

/** The problem with `value` as a token set, or `undefined` when it is one. Never quotes the value: it may hold tokens. */
function tokenSetProblem(value: unknown): string | undefined {
  if (!isRecord(value)) return 'tokens is not an object';
  if (typeof value.accessToken !== 'string' || value.accessToken === '') return 'accessToken is missing';
  if (!optionalString(value.refreshToken)) return 'refreshToken is not a string';
  if (value.expiresAt !== undefined && !(typeof value.expiresAt === 'number' && Number.isFinite(value.expiresAt))) {
    return 'expiresAt is not a number';
  }
  if (!optionalString(value.tokenType)) return 'tokenType is not a string';
  if (!optionalString(value.scope)) return 'scope is not a string';
  if (value.raw !== undefined && !isRecord(value.raw)) return 'raw is not an object';
  return undefined;
}

/** Parses a decoded value; returns the problem as a string when it is not a {@link StoredTokens}. */
export function toStoredTokens(value: unknown): StoredTokens | string {
  if (!isRecord(value)) return 'it is not a JSON object';
  if (value.version !== FORMAT_VERSION) return `its format version is not ${FORMAT_VERSION}`;
  if (!(Number.isSafeInteger(value.revision) && (value.revision as number) >= 0)) return 'its revision is not a whole number';
  if (value.tokens === null) return { revision: value.revision as number, tokens: null };
  const problem = tokenSetProblem(value.tokens);
  if (problem) return problem;
  return { revision: value.revision as number, tokens: value.tokens as TokenSet };
}

/** Serialises a value for storage or the channel. */
export function encodeStoredTokens(stored: StoredTokens): string {
  return JSON.stringify({ version: FORMAT_VERSION, revision: stored.revision, tokens: stored.tokens });
}

/**
 * Reads a stored value. `null` (nothing stored) gives `undefined`.
 *
 * @throws TokenRelayError `STORE_ERROR` when the value is not valid JSON or not a token set:
 *   a corrupt value is never taken for "signed out".
 */
export function decodeStoredTokens(text: string | null, key: string): StoredTokens | undefined {
  if (text === null) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const result = parsed === undefined ? 'it is not valid JSON' : toStoredTokens(parsed);
  if (typeof result === 'string') {
    throw new TokenRelayError(
      ErrorCode.STORE_ERROR,
      `The value stored under "${key}" is not a tokenrelay token set (${result}); sign in again with setTokens() to replace it`,
    );
  }
  return result;
}
