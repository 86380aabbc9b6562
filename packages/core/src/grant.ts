/*
 * The refresh token grant, and what every grant shares (endpoint options, the form, the handler's
 * properties). The HTTP exchange, client authentication and the reading of the answer are the one
 * token-endpoint client in token-request.ts; the other grants are in credential-grants.ts.
 */
import { clientAuthenticationParams, clientAuthenticator, type ClientAuthenticationOptions } from './client-auth.js';
import { ErrorCode, TokenRelayError, configurationError } from './errors.js';
import { parseEndpoint, tokenEndpointClient, type OAuthErrorMeaning, type TokenRequestOptions } from './token-request.js';
import type { RefreshContext, RefreshHandler, TokenSet } from './types.js';

/** What every grant takes: where to ask, and which scope. */
export interface GrantEndpointOptions {
  /**
   * The token endpoint. Must be `https:`; plain `http:` is accepted for loopback hosts only
   * (`localhost`, `127.0.0.0/8`, `[::1]`), for local development and tests. Checked when the grant
   * is made, before anything is sent.
   * @example 'https://auth.example.com/oauth/token'
   */
  tokenEndpoint: string | URL;
  /**
   * Scope to ask for, as a space-separated string or an array.
   * @example ['openid', 'profile']
   */
  scope?: string | readonly string[];
  /** More form parameters some servers want (e.g. Salesforce's `format`). Cannot override the standard ones. */
  extraParams?: Readonly<Record<string, string>>;
}

/** Options of {@link refreshTokenGrant}. */
export interface RefreshTokenGrantOptions extends GrantEndpointOptions, ClientAuthenticationOptions, TokenRequestOptions {
  /**
   * Scope to ask for; must not exceed the original grant. Left out, the server keeps the original scope.
   * @example ['openid', 'profile']
   */
  scope?: string | readonly string[];
}

const refreshTokenErrors: OAuthErrorMeaning = {
  invalid_grant: { code: ErrorCode.SESSION_EXPIRED, advice: 'refresh token refused; sign in again' },
};

const scopeParam = (scope: string | readonly string[] | undefined): string | undefined =>
  Array.isArray(scope) ? scope.join(' ') : (scope as string | undefined) || undefined;

/** Builds the form of each request: the grant's own params, scope and extra params, refusing extras that clash. */
export function formBuilder(who: string, own: readonly string[], options: { scope?: string | readonly string[]; extraParams?: Readonly<Record<string, string>> }) {
  const { extraParams = {} } = options;
  const reserved = new Set(['grant_type', 'scope', ...own, ...clientAuthenticationParams]);
  const clash = Object.keys(extraParams).find((name) => reserved.has(name));
  if (clash) throw configurationError(`${who}: extraParams cannot set "${clash}"`);
  const scope = scopeParam(options.scope);
  return (params: Record<string, string>) => {
    const form = new URLSearchParams(params);
    if (scope) form.set('scope', scope);
    for (const [name, value] of Object.entries(extraParams)) form.set(name, value);
    return form;
  };
}

/** Gives a handler the properties the manager and the adapters read. */
export function asHandler(handler: (context: RefreshContext) => Promise<TokenSet>, tokenEndpoint: URL, needsRefreshToken: boolean): RefreshHandler {
  return Object.defineProperties(handler, {
    tokenEndpoint: { value: tokenEndpoint.href, enumerable: true },
    needsRefreshToken: { value: needsRefreshToken, enumerable: true },
  }) as RefreshHandler;
}

/**
 * A {@link RefreshHandler} for a standard OAuth 2.0 token endpoint (RFC 6749 §6): posts
 * `grant_type=refresh_token`, authenticates the client, and validates the response strictly.
 * A response without `refresh_token` keeps the old one (the manager merges it); a response
 * with one replaces it (rotation).
 *
 * Errors: `SESSION_EXPIRED` for `invalid_grant` (any status, also Auth0's 403) or when there
 * is no refresh token; `CREDENTIALS_REJECTED` for `invalid_client` and `unauthorized_client`;
 * `TOKEN_ENDPOINT_ERROR` for other error responses (`transient` for 5xx and 429, with
 * `retryAfterMs`); `INVALID_TOKEN_RESPONSE` for a 2xx that is not a usable token response (also an
 * access token that cannot go in an HTTP header, an expiry that overflows); `NETWORK_ERROR` when
 * the endpoint cannot be reached (`inDoubt` when the request may have reached it). Redirects are
 * refused, so the refresh token and client credentials never follow one to another host.
 *
 * @throws TokenRelayError `CONFIGURATION_ERROR` (synchronously) for invalid options.
 * @example
 * ```ts
 * const manager = createTokenManager({
 *   tokens,
 *   refresh: refreshTokenGrant({ tokenEndpoint: 'https://auth.example.com/oauth/token', clientId: 'app', clientSecret }),
 * })
 * ```
 */
export function refreshTokenGrant(options: RefreshTokenGrantOptions): RefreshHandler {
  const who = 'refreshTokenGrant';
  const endpoint = parseEndpoint(options.tokenEndpoint, who);
  const client = tokenEndpointClient(endpoint, clientAuthenticator(options, who), { ...options, who });
  const form = formBuilder(who, ['refresh_token'], options);
  return asHandler(
    async ({ tokens, signal }) => {
      const refreshToken = tokens?.refreshToken;
      if (!refreshToken) {
        throw new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'No refresh token; sign in again');
      }
      return client.requestTokens(form({ grant_type: 'refresh_token', refresh_token: refreshToken }), {
        signal,
        secrets: [refreshToken, tokens.accessToken],
        meanings: refreshTokenErrors,
      });
    },
    endpoint,
    true,
  );
}
