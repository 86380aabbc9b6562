/*
 * The one parser of token sets: the manager (initial tokens, setTokens, a handler's result) and
 * every store (what it reads back) check a token set here, so the same object is accepted, and
 * round-trips, the same way everywhere.
 */
import type { StoredTokens, TokenSet } from './types.js';

/** True for a plain object (not null, not an array). */
export const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * A token that can be sent in an HTTP header as `Bearer <token>`: visible ASCII only. CR, LF, NUL,
 * spaces or characters outside Latin-1 would make every request throw in the HTTP client while no
 * 401 ever comes to trigger a refresh, so such a token is refused before it is stored.
 */
const headerSafeToken = /^[\x21-\x7e]+$/;

/**
 * Why `tokens.expiresAt` cannot be epoch milliseconds at time `now`, or `undefined` when it can.
 * Epoch seconds (a common mistake, which makes every token look expired) are about a thousandth of
 * the time in milliseconds; no real expiry lies that far in the past. Relative to the clock, so a
 * test clock started at 0 is fine.
 */
export function expiresAtProblem(tokens: TokenSet, now: number): string | undefined {
  const { expiresAt } = tokens;
  if (expiresAt === undefined || expiresAt >= now / 100) return undefined;
  return `expiresAt (${expiresAt}) looks like seconds; use epoch ms (Date.now() + expires_in * 1000)`;
}

/**
 * Why `value` is not a usable {@link TokenSet}, or `undefined` when it is one. The answer names
 * fields only, never their values.
 */
export function tokenSetProblem(value: unknown): string | undefined {
  if (!isRecord(value)) return 'tokens are not an object';
  const { accessToken, refreshToken, expiresAt, tokenType, scope, raw, sessionData } = value;
  if (typeof accessToken !== 'string' || accessToken === '') return 'accessToken is not a non-empty string';
  if (!headerSafeToken.test(accessToken)) return 'accessToken is not visible ASCII (HTTP header)';
  if (refreshToken !== undefined && (typeof refreshToken !== 'string' || refreshToken === '')) return 'refreshToken is not a non-empty string';
  if (expiresAt !== undefined && (typeof expiresAt !== 'number' || !Number.isFinite(expiresAt))) return 'expiresAt is not a finite number';
  for (const [name, field] of [
    ['tokenType', tokenType],
    ['scope', scope],
  ] as const) {
    if (field !== undefined && typeof field !== 'string') return `${name} is not a string`;
  }
  for (const [name, field] of [
    ['raw', raw],
    ['sessionData', sessionData],
  ] as const) {
    if (field !== undefined && !isRecord(field)) return `${name} is not an object`;
  }
  return undefined;
}

/**
 * Checks `value` and returns a copy with the known fields only, in a stable order (`raw` keeps
 * every field the server sent). `refuse` builds the error for a value that is not a token set.
 */
export function parseTokenSet(value: unknown, refuse: (problem: string) => Error): TokenSet {
  const problem = tokenSetProblem(value);
  if (problem !== undefined) throw refuse(problem);
  const fields = value as unknown as TokenSet;
  const tokens: Record<string, unknown> = { accessToken: fields.accessToken };
  for (const name of ['refreshToken', 'expiresAt', 'tokenType', 'scope', 'raw', 'sessionData'] as const) {
    const field = fields[name];
    // The objects are copied, so the caller's later changes never reach the stored tokens.
    if (field !== undefined) tokens[name] = isRecord(field) ? { ...field } : field;
  }
  return tokens as unknown as TokenSet;
}

/**
 * Checks what a store read back (`{ tokens, revision, sessionExpired? }`) and returns a clean copy.
 * `refuse` builds the error for a value that is not one.
 */
export function parseStoredTokens(value: unknown, refuse: (problem: string) => Error): StoredTokens {
  if (!isRecord(value)) throw refuse('the stored value is not an object');
  const { revision, sessionExpired } = value;
  if (typeof revision !== 'number' || !Number.isSafeInteger(revision) || revision < 1) {
    throw refuse('revision is not a whole number ≥ 1');
  }
  if (sessionExpired !== undefined && typeof sessionExpired !== 'boolean') throw refuse('sessionExpired is not a boolean');
  const tokens = parseTokenSet(value.tokens, refuse);
  return sessionExpired ? { tokens, revision, sessionExpired: true } : { tokens, revision };
}
