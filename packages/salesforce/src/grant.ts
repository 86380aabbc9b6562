import {
  ErrorCode,
  TokenRelayError,
  isSecureOrLoopback,
  refreshTokenGrant,
  type ClientAuthentication,
  type RefreshHandler,
  type TokenSet,
} from '@tokenrelay/core';
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
  clientAuthentication?: ClientAuthentication;
  /**
   * The org's session timeout (Setup → Session Settings, or the connected app's own), in
   * milliseconds. Salesforce sends no `expires_in`, so with this the access token's `expiresAt` is
   * `issued_at + sessionTimeoutMs` and the manager refreshes before it; without it the expiry is
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

const TOKEN_PATH = '/services/oauth2/token';

const configError = (message: string) => new TokenRelayError(ErrorCode.CONFIGURATION_ERROR, `salesforceRefreshGrant: ${message}`);
const invalidResponse = (problem: string) =>
  new TokenRelayError(ErrorCode.INVALID_TOKEN_RESPONSE, `The Salesforce token endpoint answered ${problem}`);


function parseUrl(value: string | URL): URL | undefined {
  try {
    return new URL(value);
  } catch {
    return undefined;
  }
}

function tokenEndpointOf(loginUrl: string | URL): string {
  const url = parseUrl(loginUrl);
  if (!url) throw configError('loginUrl must be an absolute URL, e.g. https://login.salesforce.com');
  if (url.username || url.password) throw configError('loginUrl must not contain credentials');
  if (!isSecureOrLoopback(url)) throw configError(`loginUrl must use https (http is allowed for loopback hosts only): ${url.origin}`);
  if (url.search || url.hash) throw configError('loginUrl must not have a query or a fragment');
  const base = url.origin + url.pathname.replace(/\/+$/, '');
  if (base.endsWith(TOKEN_PATH)) {
    throw configError(`loginUrl is the login host (e.g. ${url.origin}), not the token endpoint; ${TOKEN_PATH} is added to it`);
  }
  return base + TOKEN_PATH;
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
  const { clientId, clientSecret, sessionTimeoutMs } = options;
  const tokenEndpoint = tokenEndpointOf(options.loginUrl ?? 'https://login.salesforce.com');
  if (sessionTimeoutMs !== undefined && !(Number.isFinite(sessionTimeoutMs) && sessionTimeoutMs > 0)) {
    throw configError('sessionTimeoutMs must be a positive number of milliseconds');
  }
  if (clientSecret && !globalThis.crypto?.subtle) {
    throw configError('verifying the response signature needs WebCrypto (globalThis.crypto.subtle), which this runtime lacks');
  }
  const exchange = refreshTokenGrant({
    tokenEndpoint,
    clientId,
    ...(clientSecret === undefined ? {} : { clientSecret }),
    clientAuthentication: options.clientAuthentication ?? (clientSecret ? 'client_secret_post' : 'none'),
    ...(options.fetch === undefined ? {} : { fetch: options.fetch }),
  });

  const handler = async (context: Parameters<RefreshHandler>[0]): Promise<TokenSet> => {
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
    if (issuedAt === undefined) throw invalidResponse('without a valid issued_at, so sessionTimeoutMs cannot date the token');
    return { ...tokens, expiresAt: issuedAt + sessionTimeoutMs };
  };
  return Object.defineProperty(handler, 'tokenEndpoint', { value: exchange.tokenEndpoint, enumerable: true }) as RefreshHandler;
}
