/*
 * RFC 6749 §5.1 token responses → TokenSet. Every grant turns its answer into tokens here, and
 * users who do their own sign-in (an authorization-code callback) can do the same.
 */
import { ErrorCode, TokenRelayError } from './errors.js';
import { isRecord, parseTokenSet } from './token-set.js';
import type { TokenSet } from './types.js';

/** Options of {@link tokenSetFromResponse}. */
export interface TokenSetFromResponseOptions {
  /**
   * When the request was sent, in epoch milliseconds: `expiresAt = now + expires_in * 1000`. Take
   * it just before sending, so network latency shortens the lifetime rather than lengthening it.
   * @default Date.now()
   */
  now?: number;
}

/**
 * Checks `response` as an RFC 6749 §5.1 token response and builds the rest; `refuse` builds the
 * error for one that is not usable. Shared by the grants, which add the HTTP status to the error.
 */
export function parseTokenResponse(response: unknown, now: number, refuse: (problem: string) => Error): TokenSet {
  if (!isRecord(response)) throw refuse('not a JSON object');
  const { access_token, refresh_token, expires_in, token_type, scope, ...rest } = response;
  if (typeof access_token !== 'string' || access_token === '') throw refuse('no access_token');
  if (token_type !== undefined && !/^(bearer|dpop)$/i.test(String(token_type))) {
    // Quoted whole or not at all: the caller redacts the secrets it sent, which a cut would break up.
    const type = String(token_type);
    throw refuse(`token_type ${type.length > 40 ? `of ${type.length} characters` : `"${type}"`}, not Bearer or DPoP`);
  }
  if (expires_in !== undefined && expires_in !== null && (typeof expires_in !== 'number' || !Number.isFinite(expires_in) || expires_in < 0)) {
    throw refuse(`invalid expires_in (${typeof expires_in === 'string' ? 'a string' : String(expires_in)})`);
  }
  // refresh_token and scope are checked by the one token-set parser below, which drops the absent ones.
  const tokens = {
    accessToken: access_token,
    // Bearer or DPoP in any case, or absent; a non-string (['dpop']) is refused by parseTokenSet below.
    tokenType: token_type ?? 'Bearer',
    refreshToken: refresh_token,
    // 0 is what some servers send for a token that does not expire; taken as a lifetime, it would make
    // every request refresh. Unknown instead: a 401 says when it ends.
    expiresAt: typeof expires_in === 'number' && expires_in > 0 ? now + expires_in * 1000 : undefined,
    scope,
    raw: rest,
  };
  // The one token-set parser: refuses what cannot be used (a token that cannot go in a header, an
  // expiry that overflowed to Infinity) before anything is stored.
  return parseTokenSet(tokens, (problem) => refuse(`unusable tokens: ${problem}`));
}

/**
 * Turns a token response (RFC 6749 §5.1, the parsed JSON body) into a {@link TokenSet}, checked as
 * strictly as the grants check theirs: `access_token` required and sendable in an HTTP header,
 * `token_type` Bearer, DPoP or absent, `expires_in` a non-negative number whose expiry is finite,
 * `refresh_token` and `scope` strings. `expires_in` becomes `expiresAt` (`0`, which some servers send for a
 * token that does not expire, leaves it unknown); `raw` keeps every other
 * field (`id_token`, Salesforce's `instance_url`, …). For sign-ins tokenrelay does not make itself,
 * e.g. an authorization-code callback, before `manager.setTokens()`.
 *
 * @throws TokenRelayError `INVALID_TOKEN_RESPONSE` for a response that is not usable; the message
 * names the problem, never a token.
 * @example
 * ```ts
 * const now = Date.now()
 * const response = await fetch(tokenEndpoint, { method: 'POST', body: codeExchange })
 * await manager.setTokens(tokenSetFromResponse(await response.json(), { now }))
 * ```
 */
export function tokenSetFromResponse(response: unknown, options: TokenSetFromResponseOptions = {}): TokenSet {
  return parseTokenResponse(response, options.now ?? Date.now(), (problem) =>
    new TokenRelayError(ErrorCode.INVALID_TOKEN_RESPONSE, `Token response: ${problem}`),
  );
}
