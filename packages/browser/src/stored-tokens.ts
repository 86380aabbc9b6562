import type { StoredTokens } from '@tokenrelay/core';
import { isRecord, parseStoredTokens, storeError } from '@tokenrelay/core/kit';

/**
 * What the store keeps under its key, and what it announces to other tabs. `sequence` grows by
 * one with every write of any tab, sign-outs included, so a tab can tell which of two records is
 * newer when they reach it in the wrong order (the channel and the storage of another process are
 * not synchronised). It is the store's own bookkeeping, apart from the session's `revision`, which
 * the manager chooses. `value: undefined` marks a sign-out: the sequence must survive `clear()`.
 */
export interface StoredRecord {
  readonly sequence: number;
  /** The session, or `undefined` after a sign-out. */
  readonly value: StoredTokens | undefined;
}

/** The storage format version; a value written by another version is reported, not guessed at. */
const FORMAT_VERSION = 2;

/** Serialises a record for storage or the channel. */
export function encodeRecord({ sequence, value }: StoredRecord): string {
  const session = value === undefined ? { tokens: null } : value.sessionExpired ? value : { revision: value.revision, tokens: value.tokens };
  return JSON.stringify({ version: FORMAT_VERSION, sequence, ...session });
}

/**
 * Reads a stored record. `null` (nothing stored) gives `undefined`.
 *
 * @throws TokenRelayError `STORE_ERROR` when the value is not valid JSON or not a record:
 *   a corrupt value is never taken for "signed out". The message quotes nothing of it.
 */
export function decodeRecord(text: string | null, key: string): StoredRecord | undefined {
  if (text === null) return undefined;
  const corrupt = (problem: string) =>
    storeError(`The value stored under "${key}" is not tokenrelay's (${problem}); sign in again with setTokens() to replace it`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw corrupt('it is not valid JSON');
  }
  if (!isRecord(parsed)) throw corrupt('it is not a JSON object');
  if (parsed.version !== FORMAT_VERSION) throw corrupt(`its format version is not ${FORMAT_VERSION}`);
  const { sequence } = parsed;
  if (typeof sequence !== 'number' || !Number.isSafeInteger(sequence) || sequence < 0) throw corrupt('its sequence is not a whole number');
  if (parsed.tokens === null) return { sequence, value: undefined };
  return { sequence, value: parseStoredTokens(parsed, corrupt) };
}
