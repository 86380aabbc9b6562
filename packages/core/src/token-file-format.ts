/*
 * The two layouts of fileStore's token file. tokenrelay's own is `{ revision, sessionExpired?, tokens }`.
 * The other is the OAuth token response as the server sent it (`access_token` at the top level), the
 * file that Salesforce samples and many scripts already keep (`tokens/_salesforce.json`): the store
 * reads it and writes it back in that layout, so the user's other tools keep reading the file.
 */
import { parseTokenResponse } from './token-response.js';
import { isRecord, parseStoredTokens } from './token-set.js';
import type { StoredTokens } from './types.js';

/**
 * How a token file is laid out: `'tokenrelay'` is `{ revision, sessionExpired?, tokens }`;
 * `'token-response'` is the OAuth token response (RFC 6749 §5.1) with `access_token` at the top
 * level, plus `expires_at` and tokenrelay's bookkeeping fields (`tokenrelay_revision`,
 * `tokenrelay_session_expired`, `tokenrelay_session_data`).
 */
export type TokenFileFormat = 'tokenrelay' | 'token-response';

/** The layout of a parsed token file: a token response is recognised by `access_token` at its top level. */
export const tokenFileFormatOf = (document: unknown): TokenFileFormat =>
  isRecord(document) && 'access_token' in document ? 'token-response' : 'tokenrelay';

/**
 * What a parsed token file holds, in either layout. A token response goes through core's one
 * token-response parser; its `expires_in` is not used, because nothing in the file says when it
 * started counting (only `expires_at` dates the token). A file no tokenrelay store wrote yet is revision 1.
 */
export function parseTokenFile(document: unknown, refuse: (problem: string) => Error): StoredTokens {
  if (tokenFileFormatOf(document) === 'tokenrelay') return parseStoredTokens(document, refuse);
  const {
    expires_at: expiresAtSeconds,
    expires_in: _countsFromAnUnknownMoment,
    tokenrelay_revision: revision = 1,
    tokenrelay_session_expired: sessionExpired,
    tokenrelay_session_data: sessionData,
    ...response
  } = document as Record<string, unknown>;
  const tokens = parseTokenResponse(response, 0, (problem) => refuse(`it is a token response: ${problem}`));
  if (expiresAtSeconds !== undefined && (typeof expiresAtSeconds !== 'number' || !(expiresAtSeconds >= 0))) {
    throw refuse('expires_at is not a number of epoch seconds');
  }
  const expiresAt = expiresAtSeconds === undefined ? {} : { expiresAt: Math.round(expiresAtSeconds * 1000) };
  return parseStoredTokens({ revision, sessionExpired, tokens: { ...tokens, ...expiresAt, sessionData } }, (problem) =>
    refuse(problem.startsWith('revision') ? `tokenrelay_${problem}` : problem),
  );
}

/**
 * `value` as a token response, written over `previous` (the token response the file held, if it held
 * one): every field of `previous` the new tokens lack stays, `tokens.raw` replaces the rest (so
 * `signature` and `issued_at` come from the same response as the access token), and the token fields
 * follow the tokens. `expires_at` (epoch seconds, fractional to keep milliseconds) is what the store
 * reads back; `expires_in` is the seconds left at `now`, i.e. from the file's modification time.
 */
export function tokenResponseDocument(value: StoredTokens, previous: Readonly<Record<string, unknown>>, now: number): Record<string, unknown> {
  const { tokens } = value;
  // The fields that describe the tokens follow the tokens alone, set or removed: an old file's expiry
  // or revision would be wrong for new tokens (the manager already keeps the old refresh token and scope).
  const fields = {
    access_token: tokens.accessToken,
    refresh_token: tokens.refreshToken,
    // RFC 6749 §5.1 requires token_type, and readers of the file may too.
    token_type: tokens.tokenType ?? 'Bearer',
    scope: tokens.scope,
    expires_in: tokens.expiresAt === undefined ? undefined : Math.max(0, Math.floor((tokens.expiresAt - now) / 1000)),
    expires_at: tokens.expiresAt === undefined ? undefined : tokens.expiresAt / 1000,
    tokenrelay_revision: value.revision,
    tokenrelay_session_expired: value.sessionExpired ? true : undefined,
    // The app's data for the session (e.g. the DPoP key its refresh token is bound to): a token response has no place for it.
    tokenrelay_session_data: tokens.sessionData,
  };
  // A spread keeps each key where it first appeared: the old file's fields stay in their place (a
  // diff shows changed values only), and a new file starts with access_token as a server's answer does.
  const document: Record<string, unknown> = { ...previous, ...fields, ...tokens.raw, ...fields };
  for (const [key, field] of Object.entries(document)) if (field === undefined) delete document[key];
  return document;
}
