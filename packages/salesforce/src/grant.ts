import { ErrorCode, TokenRelayError, refreshTokenGrant, type ClientAuthentication, type RefreshHandler, type TokenSet } from '@tokenrelay/core';
import { clientCredentialsGrant, jwtBearerGrant, revokeToken, type AssertionSigningOptions } from '@tokenrelay/core/grants';
import { configurationError, isSecureOrLoopback } from '@tokenrelay/core/kit';
import { verifySalesforceSignature } from './signature.js';

/** Options of {@link salesforceRefreshGrant}. */
export interface SalesforceRefreshGrantOptions {
  /**
   * Where the org's OAuth endpoints live: `https://login.salesforce.com` (production),
   * `https://test.salesforce.com` (sandboxes), a My Domain (`https://acme.my.salesforce.com`,
   * `https://acme--uat.sandbox.my.salesforce.com`) or an Experience Cloud site with its path
   * (`https://acme.my.site.com/customers`). The token endpoint is `${loginUrl}/services/oauth2/token`.
   * Must be `https:`; `http:` is accepted for loopback hosts only (tests, `@tokenrelay/testing`).
   * @default 'https://login.salesforce.com'
   */
  loginUrl?: string | URL;
  /** The connected app's consumer key. */
  clientId: string;
  /**
   * The connected app's consumer secret. Needed when the app has "Require Secret for Refresh
   * Token Flow" on; when given, the `signature` of every token response is verified with it.
   * Leave it out for an app that does not require it (then nothing can be verified).
   */
  clientSecret?: string;
  /**
   * How the secret is sent. Salesforce documents the form body and also accepts HTTP Basic.
   * @default 'client_secret_post' when a clientSecret is given, otherwise 'none'
   */
  clientAuthentication?: Exclude<ClientAuthentication, 'private_key_jwt'>;
  /**
   * The org's session timeout (Setup → Session Settings, or the connected app's own), in
   * milliseconds. Salesforce sends no `expires_in`, so with this the access token's `expiresAt` is
   * `issued_at + sessionTimeoutMs` (from the time the token was asked for when the answer has no
   * `issued_at`, as Salesforce's JWT bearer answers) and the manager refreshes before it; without it the expiry is
   * unknown and only an `INVALID_SESSION_ID` answer starts a refresh. Salesforce extends a session
   * while it is used, so this is the earliest the token can expire (by Salesforce's clock).
   * @default undefined (expiry unknown)
   * @example 2 * 60 * 60 * 1000 // the common 2-hour timeout
   */
  sessionTimeoutMs?: number;
  /**
   * The fetch used for the token call.
   * @default globalThis.fetch at call time, with any tokenrelay wrapper removed
   */
  fetch?: typeof fetch;
}

/** The Salesforce fields of a token set, read from `tokens.raw`. */
export interface SalesforceSession {
  /** `instance_url`: the org's API host, e.g. `https://acme.my.salesforce.com`. */
  readonly instanceUrl: string | undefined;
  /** `id`: the identity URL, `https://login.salesforce.com/id/<orgId>/<userId>`. */
  readonly identityUrl: string | undefined;
  /** `issued_at` as epoch milliseconds (Salesforce sends it as a 13-digit string). */
  readonly issuedAt: number | undefined;
}

/** Options of {@link salesforceJwtBearerGrant}. */
export interface SalesforceJwtBearerGrantOptions extends AssertionSigningOptions {
  /**
   * Where to ask for tokens; see {@link SalesforceRefreshGrantOptions.loginUrl}.
   * @default 'https://login.salesforce.com'
   */
  loginUrl?: string | URL;
  /** The External Client App's (or connected app's) consumer key: the assertion's `iss`. */
  clientId: string;
  /** The Salesforce username the tokens are for (pre-authorized for the app): the assertion's `sub`. */
  username: string;
  /**
   * The assertion's `aud`.
   * @default `loginUrl` without a trailing slash (`https://login.salesforce.com`,
   * `https://test.salesforce.com`, or an Experience Cloud site URL with its path); for a My Domain
   * `loginUrl`, `https://login.salesforce.com` (`https://test.salesforce.com` for a sandbox's
   * `*.sandbox.my.salesforce.com`), as Salesforce requires
   */
  audience?: string;
  /** See {@link SalesforceRefreshGrantOptions.sessionTimeoutMs}. */
  sessionTimeoutMs?: number;
  /**
   * The fetch used for the token call.
   * @default globalThis.fetch at call time, with any tokenrelay wrapper removed
   */
  fetch?: typeof fetch;
}

/** Options of {@link salesforceClientCredentialsGrant}. */
export interface SalesforceClientCredentialsGrantOptions {
  /**
   * The org's My Domain URL (`https://acme.my.salesforce.com`, a sandbox's
   * `https://acme--uat.sandbox.my.salesforce.com`): Salesforce refuses the client credentials flow at
   * `login.salesforce.com` and `test.salesforce.com`.
   */
  myDomainUrl: string | URL;
  /** The External Client App's (or connected app's) consumer key. */
  clientId: string;
  /** Its consumer secret; every token response's `signature` is verified with it. */
  clientSecret: string;
  /**
   * How the secret is sent.
   * @default 'client_secret_post'
   */
  clientAuthentication?: 'client_secret_basic' | 'client_secret_post';
  /** See {@link SalesforceRefreshGrantOptions.sessionTimeoutMs}. */
  sessionTimeoutMs?: number;
  /**
   * The fetch used for the token call.
   * @default globalThis.fetch at call time, with any tokenrelay wrapper removed
   */
  fetch?: typeof fetch;
}

/** Options of {@link revokeSalesforceToken}. */
export interface RevokeSalesforceTokenOptions {
  /**
   * Where the org's OAuth endpoints live; see {@link SalesforceRefreshGrantOptions.loginUrl}.
   * @default 'https://login.salesforce.com'
   */
  loginUrl?: string | URL;
  /** The consumer key of the app the token was issued to. */
  clientId: string;
  /** The token to revoke: a refresh token revokes its access tokens too. */
  token: string;
  /**
   * The fetch used for the call.
   * @default globalThis.fetch at call time, with any tokenrelay wrapper removed
   */
  fetch?: typeof fetch;
  /** Aborts the request. */
  signal?: AbortSignal;
}

const TOKEN_PATH = '/services/oauth2/token';
const REVOKE_PATH = '/services/oauth2/revoke';
const PRODUCTION_LOGIN = 'https://login.salesforce.com';
const SANDBOX_LOGIN = 'https://test.salesforce.com';

const configErrorOf = (who: string) => (message: string) => configurationError(`${who}: ${message}`);
const invalidResponse = (problem: string) =>
  new TokenRelayError(ErrorCode.INVALID_TOKEN_RESPONSE, `The Salesforce token endpoint answered ${problem}`);


function parseUrl(value: string | URL): URL | undefined {
  try {
    return new URL(value);
  } catch {
    return undefined;
  }
}

/** `loginUrl` checked and without its trailing slash: the base of the org's OAuth endpoints. */
function loginBaseOf(loginUrl: string | URL, who: string, name = 'loginUrl'): string {
  const configError = configErrorOf(who);
  const url = parseUrl(loginUrl);
  if (!url) throw configError(`${name} must be an absolute URL, e.g. https://login.salesforce.com`);
  if (url.username || url.password) throw configError(`${name} must not contain credentials`);
  if (!isSecureOrLoopback(url)) throw configError(`${name} must use https (http is allowed for loopback hosts only): ${url.origin}`);
  if (url.search || url.hash) throw configError(`${name} must not have a query or a fragment`);
  const base = url.origin + url.pathname.replace(/\/+$/, '');
  if (base.endsWith(TOKEN_PATH)) {
    throw configError(`${name} is the login host (e.g. ${url.origin}), not the token endpoint; ${TOKEN_PATH} is added to it`);
  }
  return base;
}

const tokenEndpointOf = (loginUrl: string | URL, who = 'salesforceRefreshGrant', name?: string) => loginBaseOf(loginUrl, who, name) + TOKEN_PATH;

/** Salesforce wants the login host as a JWT's `aud`, also when the token request goes to a My Domain. */
function defaultAudience(loginBase: string): string {
  const { hostname } = new URL(loginBase);
  if (hostname.endsWith('.sandbox.my.salesforce.com')) return SANDBOX_LOGIN;
  if (hostname.endsWith('.my.salesforce.com')) return PRODUCTION_LOGIN;
  return loginBase;
}

/** Salesforce sends `issued_at` as a string of epoch milliseconds. */
function parseIssuedAt(value: unknown): number | undefined {
  if (typeof value === 'string' && /^\d{1,16}$/.test(value)) return Number(value);
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return value;
  return undefined;
}

/**
 * Reads the Salesforce fields (`instance_url`, `id`, `issued_at`) of a token set, e.g. to point a
 * jsforce `Connection` or an axios instance at the org. Fields that are absent or malformed are
 * `undefined`.
 *
 * @example
 * ```ts
 * const { instanceUrl } = readSalesforceSession(await manager.getTokens())
 * const api = axios.create({ baseURL: instanceUrl })
 * ```
 */
export function readSalesforceSession(tokens: TokenSet | undefined): SalesforceSession {
  const raw = tokens?.raw ?? {};
  const text = (value: unknown) => (typeof value === 'string' && value !== '' ? value : undefined);
  return { instanceUrl: text(raw.instance_url), identityUrl: text(raw.id), issuedAt: parseIssuedAt(raw.issued_at) };
}

/**
 * A refresh handler for `createTokenManager` that speaks Salesforce's refresh token flow
 * (`POST ${loginUrl}/services/oauth2/token`). The HTTP exchange and its validation are core's
 * `refreshTokenGrant` (redirects refused, `invalid_grant` → `SESSION_EXPIRED`, retries in the
 * manager); on top of it this:
 *
 * - keeps `instance_url`, `id`, `issued_at` and `signature` in `tokens.raw`, as sent;
 * - keeps the old refresh token unless the response carries a new one (refresh token rotation);
 * - sets `expiresAt = issued_at + sessionTimeoutMs` when the session timeout is given;
 * - checks `instance_url` is https (the bearer is sent there);
 * - with a `clientSecret`, verifies `signature` = base64(HMAC-SHA256(secret, id + issued_at)) in
 *   constant time (WebCrypto, so it runs in browsers and edge runtimes too).
 *
 * A response that fails these checks is an `INVALID_TOKEN_RESPONSE` and is not stored. With
 * rotation on, the refresh token it carried is then lost too: the user must sign in again,
 * which is the safe outcome for a response that cannot be trusted.
 *
 * @throws TokenRelayError `CONFIGURATION_ERROR` (synchronously) for invalid options.
 * @example
 * ```ts
 * const manager = createTokenManager({
 *   tokens, // from your sign-in (web server or JWT flow)
 *   refresh: salesforceRefreshGrant({
 *     loginUrl: 'https://acme.my.salesforce.com',
 *     clientId: process.env.SF_CLIENT_ID,
 *     clientSecret: process.env.SF_CLIENT_SECRET,
 *     sessionTimeoutMs: 2 * 60 * 60 * 1000,
 *   }),
 * })
 * ```
 */
export function salesforceRefreshGrant(options: SalesforceRefreshGrantOptions): RefreshHandler {
  const { clientId, clientSecret } = options;
  const exchange = refreshTokenGrant({
    tokenEndpoint: tokenEndpointOf(options.loginUrl ?? PRODUCTION_LOGIN),
    clientId,
    ...(clientSecret === undefined ? {} : { clientSecret }),
    clientAuthentication: options.clientAuthentication ?? (clientSecret ? 'client_secret_post' : 'none'),
    ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
  });
  return withSalesforceChecks(exchange, 'salesforceRefreshGrant', options);
}

/**
 * Salesforce's rules on top of a core grant: an https `instance_url`, the response `signature`
 * verified when the secret is known, and `expiresAt` from `sessionTimeoutMs`. Keeps the grant's
 * `tokenEndpoint` and `needsRefreshToken`.
 */
function withSalesforceChecks(
  exchange: RefreshHandler,
  who: string,
  { clientSecret, sessionTimeoutMs }: { clientSecret?: string | undefined; sessionTimeoutMs?: number | undefined },
): RefreshHandler {
  const configError = configErrorOf(who);
  if (sessionTimeoutMs !== undefined && !(Number.isFinite(sessionTimeoutMs) && sessionTimeoutMs > 0)) {
    throw configError('sessionTimeoutMs must be a positive number of milliseconds');
  }
  if (clientSecret && !globalThis.crypto?.subtle) {
    throw configError('verifying the response signature needs WebCrypto (globalThis.crypto.subtle), which this runtime lacks');
  }
  const handler = async (context: Parameters<RefreshHandler>[0]): Promise<TokenSet> => {
    // Taken before the request, as core dates expires_in: latency shortens the session, never lengthens it.
    const askedAt = Date.now();
    const tokens = await exchange(context);
    const raw = tokens.raw ?? {};
    const instanceUrl = typeof raw.instance_url === 'string' ? parseUrl(raw.instance_url) : undefined;
    if (!instanceUrl || !isSecureOrLoopback(instanceUrl)) throw invalidResponse('without an https instance_url');
    const issuedAt = parseIssuedAt(raw.issued_at);
    if (clientSecret) {
      if (typeof raw.id !== 'string' || issuedAt === undefined || typeof raw.signature !== 'string') {
        throw invalidResponse('without the id, issued_at and signature needed to verify it');
      }
      if (!(await verifySalesforceSignature(clientSecret, raw.id + String(raw.issued_at), raw.signature))) {
        throw invalidResponse(
          'with a signature that does not match (HMAC-SHA256 of id + issued_at with the client secret): ' +
            'the response was altered, or the client secret is not the connected app\'s',
        );
      }
    }
    if (sessionTimeoutMs === undefined) return tokens;
    // Salesforce's JWT bearer answers carry no issued_at (its refresh and client credentials answers do): the session
    // then dates from when it was asked for. One that is there but unreadable is refused.
    if (issuedAt === undefined && raw.issued_at !== undefined) {
      throw invalidResponse('without a valid issued_at, so sessionTimeoutMs cannot date the token');
    }
    return { ...tokens, expiresAt: (issuedAt ?? askedAt) + sessionTimeoutMs };
  };
  return Object.defineProperties(handler, {
    tokenEndpoint: { value: exchange.tokenEndpoint, enumerable: true },
    needsRefreshToken: { value: exchange.needsRefreshToken ?? true, enumerable: true },
  }) as RefreshHandler;
}

/**
 * A refresh handler for Salesforce's OAuth 2.0 JWT Bearer flow ("server-to-server integration"): no
 * person signs in and there is no refresh token; each acquisition signs a fresh assertion (`iss` =
 * the consumer key, `sub` = the username, `aud` = the login host, `exp` 2 minutes ahead, inside
 * Salesforce's 3) with the private key whose certificate is uploaded to the app, and posts it to
 * `${loginUrl}/services/oauth2/token`. A manager with no tokens acquires them on the first request.
 * The response is checked as {@link salesforceRefreshGrant} checks its own (`instance_url`, `id`,
 * `issued_at` kept in `tokens.raw`).
 *
 * Errors: `CREDENTIALS_REJECTED` when Salesforce refuses the assertion or the app (`invalid_grant`:
 * "user hasn't approved this consumer", a wrong audience or certificate; `invalid_client`); the
 * assertion and the key never appear in an error.
 *
 * @throws TokenRelayError `CONFIGURATION_ERROR` (synchronously) for invalid options.
 * @example
 * ```ts
 * const manager = createTokenManager({
 *   store: fileStore('tokens/acme-integration.json'),
 *   refresh: salesforceJwtBearerGrant({
 *     clientId: process.env.SF_CONSUMER_KEY,
 *     username: 'integration@acme.com',
 *     privateKey: await readFile('server.key', 'utf8'), // PEM PKCS#8
 *   }),
 * })
 * ```
 */
export function salesforceJwtBearerGrant(options: SalesforceJwtBearerGrantOptions): RefreshHandler {
  const who = 'salesforceJwtBearerGrant';
  const loginBase = loginBaseOf(options.loginUrl ?? PRODUCTION_LOGIN, who);
  const { clientId, username, privateKey, algorithm, keyId } = options;
  const exchange = jwtBearerGrant({
    tokenEndpoint: loginBase + TOKEN_PATH,
    clientId,
    subject: username,
    audience: options.audience ?? defaultAudience(loginBase),
    privateKey,
    ...(algorithm === undefined ? {} : { algorithm }),
    ...(keyId === undefined ? {} : { keyId }),
    ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
  });
  return withSalesforceChecks(exchange, who, options);
}

/**
 * A refresh handler for Salesforce's OAuth 2.0 Client Credentials flow (since Winter '23): the app
 * gets tokens for its "run as" user with its consumer key and secret, at the org's My Domain (not
 * the login host); no refresh token, so a manager with no tokens acquires them on the first
 * request. The response `signature` is verified with the secret, and `instance_url`, `id`,
 * `issued_at` are kept in `tokens.raw`.
 *
 * Errors: `CREDENTIALS_REJECTED` for a wrong key or secret (`invalid_client`) and for an app
 * without a "run as" user or with the flow off (`invalid_grant`); the secret never appears in an error.
 *
 * @throws TokenRelayError `CONFIGURATION_ERROR` (synchronously) for invalid options, also for a
 * `myDomainUrl` that is login.salesforce.com or test.salesforce.com.
 * @example
 * ```ts
 * const manager = createTokenManager({
 *   refresh: salesforceClientCredentialsGrant({
 *     myDomainUrl: 'https://acme.my.salesforce.com',
 *     clientId: process.env.SF_CONSUMER_KEY,
 *     clientSecret: process.env.SF_CONSUMER_SECRET,
 *   }),
 * })
 * ```
 */
export function salesforceClientCredentialsGrant(options: SalesforceClientCredentialsGrantOptions): RefreshHandler {
  const who = 'salesforceClientCredentialsGrant';
  const base = loginBaseOf(options.myDomainUrl, who, 'myDomainUrl');
  const { hostname } = new URL(base);
  if (hostname === 'login.salesforce.com' || hostname === 'test.salesforce.com') {
    throw configErrorOf(who)(`myDomainUrl must be the org's My Domain (https://<name>.my.salesforce.com), not ${hostname}: Salesforce refuses the client credentials flow there`);
  }
  const { clientId, clientSecret } = options;
  const exchange = clientCredentialsGrant({
    tokenEndpoint: base + TOKEN_PATH,
    clientId,
    clientSecret,
    clientAuthentication: options.clientAuthentication ?? 'client_secret_post',
    ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
  });
  return withSalesforceChecks(exchange, who, options);
}

/**
 * Revokes a Salesforce token (`POST ${loginUrl}/services/oauth2/revoke`, `token=`), e.g. on sign-out:
 * a refresh token revokes its access tokens too. Resolves when Salesforce answered 200.
 *
 * @throws TokenRelayError as core's `revokeToken`: `TOKEN_ENDPOINT_ERROR` for an error answer
 * (`unsupported_token_type` for an unknown token), `NETWORK_ERROR`; never with the token in the message.
 * @example
 * ```ts
 * const tokens = await manager.getTokens()
 * if (tokens?.refreshToken) await revokeSalesforceToken({ clientId, token: tokens.refreshToken })
 * await manager.clear()
 * ```
 */
export function revokeSalesforceToken(options: RevokeSalesforceTokenOptions): Promise<void> {
  const revocationEndpoint = loginBaseOf(options.loginUrl ?? PRODUCTION_LOGIN, 'revokeSalesforceToken') + REVOKE_PATH;
  const { clientId, token, fetch, signal } = options;
  return revokeToken({
    revocationEndpoint,
    clientId,
    clientAuthentication: 'none',
    token,
    ...(fetch === undefined ? {} : { fetch }),
    ...(signal === undefined ? {} : { signal }),
  });
}
