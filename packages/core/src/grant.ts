/*
 * The grants: what each one posts. The HTTP exchange, client authentication and the reading of the
 * answer are the one token-endpoint client in token-request.ts.
 */
import { clientAuthenticationParams, clientAuthenticator, type ClientAuthenticationOptions } from './client-auth.js';
import { ErrorCode, TokenRelayError, configurationError } from './errors.js';
import { assertionClaims, assertionSigner, type AssertionSigningOptions } from './jwt.js';
import {
  credentialGrantErrors,
  parseEndpoint,
  tokenEndpointClient,
  type OAuthErrorMeaning,
  type TokenRequestOptions,
} from './token-request.js';
import type { RefreshContext, RefreshHandler, TokenSet } from './types.js';

/** What every grant takes: where to ask, and which scope. */
interface GrantEndpointOptions {
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

/** Options of {@link clientCredentialsGrant}. */
export interface ClientCredentialsGrantOptions extends GrantEndpointOptions, ClientAuthenticationOptions, TokenRequestOptions {}

/** Options of {@link jwtBearerGrant}. */
export interface JwtBearerGrantOptions extends AssertionSigningOptions, TokenRequestOptions {
  /** The token endpoint; see {@link RefreshTokenGrantOptions.tokenEndpoint}. */
  tokenEndpoint: string | URL;
  /** The client id: the assertion's `iss`. */
  clientId: string;
  /** Whom the tokens are for: the assertion's `sub` (a user name, a service account). */
  subject: string;
  /**
   * The assertion's `aud`, sent exactly as given: the authorization server's issuer or token
   * endpoint, as the server documents.
   * @example 'https://auth.example.com'
   */
  audience: string;
  /** Scope to ask for, as a space-separated string or an array. */
  scope?: string | readonly string[];
}

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

const refreshTokenErrors: OAuthErrorMeaning = {
  invalid_grant: { code: ErrorCode.SESSION_EXPIRED, rejected: 'the refresh token', advice: 'the user must sign in again' },
};

const scopeParam = (scope: string | readonly string[] | undefined): string | undefined =>
  Array.isArray(scope) ? scope.join(' ') : (scope as string | undefined) || undefined;

/** Builds the form of each request: the grant's own params, scope and extra params, refusing extras that clash. */
function formBuilder(who: string, own: readonly string[], options: { scope?: string | readonly string[]; extraParams?: Readonly<Record<string, string>> }) {
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
function asHandler(handler: (context: RefreshContext) => Promise<TokenSet>, tokenEndpoint: URL, needsRefreshToken: boolean): RefreshHandler {
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
        throw new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'There is no refresh token; the user must sign in again');
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

/**
 * A {@link RefreshHandler} for the client credentials grant (RFC 6749 §4.4): a job or a server
 * gets tokens for itself with its own credentials (`client_secret_basic`, `client_secret_post` or
 * `private_key_jwt`), so there is no refresh token: each "refresh" asks again. A manager with no
 * tokens acquires them on the first request (`needsRefreshToken: false`).
 *
 * Errors: `CREDENTIALS_REJECTED` for `invalid_client`, `unauthorized_client` and `invalid_grant`
 * (never transient: fix the configuration); otherwise as {@link refreshTokenGrant}.
 *
 * @throws TokenRelayError `CONFIGURATION_ERROR` (synchronously) for invalid options.
 * @example
 * ```ts
 * const manager = createTokenManager({
 *   refresh: clientCredentialsGrant({ tokenEndpoint: 'https://auth.example.com/oauth/token', clientId: 'etl', clientSecret, scope: 'reports' }),
 * })
 * ```
 */
export function clientCredentialsGrant(options: ClientCredentialsGrantOptions): RefreshHandler {
  const who = 'clientCredentialsGrant';
  const endpoint = parseEndpoint(options.tokenEndpoint, who);
  const authenticator = clientAuthenticator(options, who);
  if (authenticator.method === 'none') {
    throw configurationError(`${who}: the client must authenticate: give a clientSecret or a privateKey`);
  }
  const client = tokenEndpointClient(endpoint, authenticator, { ...options, who });
  const form = formBuilder(who, [], options);
  return asHandler(
    async ({ tokens, signal }) =>
      client.requestTokens(form({ grant_type: 'client_credentials' }), {
        signal,
        secrets: [tokens?.accessToken],
        meanings: credentialGrantErrors,
      }),
    endpoint,
    false,
  );
}

/**
 * A {@link RefreshHandler} for the JWT bearer grant (RFC 7523 §2.1): each acquisition signs a fresh
 * assertion (`iss` = clientId, `sub` = subject, `aud` = audience, `iat`, `exp` 2 minutes ahead, a
 * unique `jti`) with the private key, using WebCrypto (RS256, ES256 or PS256), and posts
 * `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=…`. There is no refresh token:
 * a manager with no tokens acquires them on the first request (`needsRefreshToken: false`).
 *
 * Errors: `CREDENTIALS_REJECTED` when the assertion is refused (`invalid_grant`: signature,
 * audience, subject, a user not pre-authorized) or the client is (`invalid_client`,
 * `unauthorized_client`); the assertion never appears in an error. Otherwise as {@link refreshTokenGrant}.
 *
 * @throws TokenRelayError `CONFIGURATION_ERROR` (synchronously) for invalid options, (when acquiring)
 * for a key WebCrypto cannot import.
 * @example
 * ```ts
 * const manager = createTokenManager({
 *   refresh: jwtBearerGrant({
 *     tokenEndpoint: 'https://auth.example.com/oauth/token',
 *     clientId: 'reporting',
 *     subject: 'svc-reporting',
 *     audience: 'https://auth.example.com',
 *     privateKey: await readFile('reporting.key.pem', 'utf8'),
 *   }),
 * })
 * ```
 */
export function jwtBearerGrant(options: JwtBearerGrantOptions): RefreshHandler {
  const who = 'jwtBearerGrant';
  const endpoint = parseEndpoint(options.tokenEndpoint, who);
  const { clientId, subject, audience, clock = Date } = options;
  for (const [name, value] of Object.entries({ clientId, subject, audience })) {
    if (typeof value !== 'string' || value === '') throw configurationError(`${who}: ${name} is required`);
  }
  const sign = assertionSigner(options, who);
  // The assertion is the grant and authenticates the client (RFC 7523 §3.1): no other client authentication.
  const client = tokenEndpointClient(endpoint, async () => [], { ...options, who });
  const form = formBuilder(who, ['assertion'], options);
  return asHandler(
    async ({ tokens, signal }) => {
      const assertion = await sign(assertionClaims({ iss: clientId, sub: subject, aud: audience }, clock));
      return client.requestTokens(form({ grant_type: JWT_BEARER, assertion }), {
        signal,
        secrets: [assertion, ...assertion.split('.'), tokens?.accessToken],
        meanings: credentialGrantErrors,
      });
    },
    endpoint,
    false,
  );
}
