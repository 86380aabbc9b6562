/*
 * The grants that get tokens with the client's own credentials, with no refresh token: client
 * credentials (RFC 6749 §4.4) and JWT bearer (RFC 7523 §2.1). On `@tokenrelay/core` and
 * `@tokenrelay/core/grants`.
 */
import { clientAuthenticator, type ClientAuthenticationOptions } from './client-auth.js';
import { configurationError } from './errors.js';
import { asHandler, formBuilder, type GrantEndpointOptions } from './grant.js';
import { assertionSigner, type AssertionSigningOptions } from './jwt.js';
import {
  credentialsRejected,
  parseEndpoint,
  tokenEndpointClient,
  type OAuthErrorMeaning,
  type TokenEndpointClient,
  type TokenRequestOptions,
} from './token-request.js';

import type { RefreshHandler } from './types.js';

/** For grants that use the client's own credentials only: a refused grant is a refused credential too. */
const credentialGrantErrors: OAuthErrorMeaning = { invalid_grant: credentialsRejected };

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

/**
 * The handler of a grant that asks again with the client's own credentials on every acquisition:
 * no refresh token to send or keep, and a refused grant is a refused credential.
 */
function credentialGrantHandler(
  client: TokenEndpointClient,
  request: () => Promise<{ params: URLSearchParams; secrets: readonly string[] }>,
): RefreshHandler {
  return asHandler(
    async ({ tokens, signal }) => {
      const { params, secrets } = await request();
      return client.requestTokens(params, { signal, secrets: [...secrets, tokens?.accessToken], meanings: credentialGrantErrors });
    },
    client.endpoint,
    false,
  );
}

/** Options of {@link clientCredentialsGrant}. */
export interface ClientCredentialsGrantOptions extends GrantEndpointOptions, ClientAuthenticationOptions, TokenRequestOptions {}

/** Options of {@link jwtBearerGrant}. */
export interface JwtBearerGrantOptions extends GrantEndpointOptions, AssertionSigningOptions, TokenRequestOptions {
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
}

/**
 * A {@link RefreshHandler} for the client credentials grant (RFC 6749 §4.4): a job or a server
 * gets tokens for itself with its own credentials (`client_secret_basic`, `client_secret_post`, or
 * `private_key_jwt` with a `privateKey` or `privateKeyJwt({ privateKey })`), so there is no refresh
 * token: each "refresh" asks again.
 * A manager with no tokens acquires them on the first request (`needsRefreshToken: false`).
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
  return credentialGrantHandler(client, async () => ({ params: form({ grant_type: 'client_credentials' }), secrets: [] }));
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
  return credentialGrantHandler(client, async () => {
    const { assertion, secrets } = await sign({ iss: clientId, sub: subject, aud: audience }, clock);
    return { params: form({ grant_type: JWT_BEARER, assertion }), secrets };
  });
}
