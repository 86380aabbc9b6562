import { isSecureOrLoopback, unwrappedFetch } from './adapter-kit.js';
import { ErrorCode, TokenRelayError, redactSecrets } from './errors.js';
import type { Clock, RefreshHandler, TokenSet } from './types.js';

/** How the client proves its identity to the token endpoint (RFC 6749 §2.3). */
export type ClientAuthentication = 'client_secret_basic' | 'client_secret_post' | 'none';

/** Options of {@link refreshTokenGrant}. */
export interface RefreshTokenGrantOptions {
  /**
   * The token endpoint. Must be `https:`; plain `http:` is accepted for loopback hosts only
   * (`localhost`, `127.0.0.0/8`, `[::1]`), for local development and tests.
   * @example 'https://auth.example.com/oauth/token'
   */
  tokenEndpoint: string | URL;
  /** The OAuth client id. */
  clientId: string;
  /** The client secret of a confidential client. Leave out for a public client. */
  clientSecret?: string;
  /**
   * How the client authenticates: HTTP Basic (`client_secret_basic`, id and secret form-urlencoded
   * before base64 as RFC 6749 §2.3.1 requires), in the form body (`client_secret_post`), or
   * `client_id` alone (`none`, public clients).
   * @default 'client_secret_basic' when a clientSecret is given, otherwise 'none'
   */
  clientAuthentication?: ClientAuthentication;
  /**
   * Scope to ask for; must not exceed the original grant. Left out, the server keeps the original scope.
   * @example ['openid', 'profile']
   */
  scope?: string | readonly string[];
  /** More form parameters some servers want (e.g. Salesforce's `format`). Cannot override the standard ones. */
  extraParams?: Readonly<Record<string, string>>;
  /**
   * The fetch used for the token call.
   * @default globalThis.fetch at call time, with any tokenrelay wrapper removed, so the token call never
   * goes through our own interceptor
   */
  fetch?: typeof fetch;
  /**
   * The largest token response body read, in bytes; a larger one is an `INVALID_TOKEN_RESPONSE`
   * (or `TOKEN_ENDPOINT_ERROR` for an error status).
   * @default 262_144
   */
  maxResponseBytes?: number;
  /**
   * Clock for turning `expires_in` into `expiresAt`. The time taken is the one just before the
   * request is sent, so network latency shortens the lifetime rather than lengthening it.
   * @default Date
   */
  clock?: Clock;
}

const reservedParams = new Set(['grant_type', 'refresh_token', 'client_id', 'client_secret', 'scope']);

const configError = (message: string) => new TokenRelayError(ErrorCode.CONFIGURATION_ERROR, message);

function parseTokenEndpoint(value: string | URL): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw configError('refreshTokenGrant: tokenEndpoint must be an absolute URL');
  }
  if (url.username || url.password) throw configError('refreshTokenGrant: tokenEndpoint must not contain credentials');
  if (!isSecureOrLoopback(url)) {
    throw configError(`refreshTokenGrant: tokenEndpoint must use https (http is allowed for loopback hosts only): ${url.origin}`);
  }
  return url;
}

/** RFC 6749 Appendix B: application/x-www-form-urlencoded, as URLSearchParams serialises it. */
const formEncode = (value: string) => new URLSearchParams([['', value]]).toString().slice(1);

function resolveFetch(explicit: typeof fetch | undefined): typeof fetch {
  let candidate = explicit ?? globalThis.fetch;
  // Unwrap our own wrappers (bounded: wrappers nest only as deep as someone installed them).
  for (let depth = 0; depth < 16 && candidate && unwrappedFetch in candidate; depth++) {
    candidate = (candidate as typeof fetch & { [unwrappedFetch]: typeof fetch })[unwrappedFetch];
  }
  if (typeof candidate !== 'function') throw configError('refreshTokenGrant: no fetch is available; pass options.fetch');
  return candidate;
}

async function readBody(response: Response, limit: number): Promise<string | undefined> {
  const declared = Number(response.headers.get('content-length'));
  if (declared > limit) {
    // Not awaited: a stream's cancel may wait on its source, and we are done with this response either way.
    response.body?.cancel().catch(() => undefined);
    return undefined;
  }
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      reader.cancel().catch(() => undefined);
      return undefined;
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes);
}

function parseRetryAfter(header: string | null, now: number): number | undefined {
  if (!header) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * A {@link RefreshHandler} for a standard OAuth 2.0 token endpoint (RFC 6749 §6): posts
 * `grant_type=refresh_token`, authenticates the client, and validates the response strictly.
 * A response without `refresh_token` keeps the old one (the manager merges it); a response
 * with one replaces it (rotation).
 *
 * Errors: `SESSION_EXPIRED` for `invalid_grant` (any status, also Auth0's 403) or when there
 * is no refresh token; `TOKEN_ENDPOINT_ERROR` for other error responses (`transient` for 5xx
 * and 429, with `retryAfterMs`); `INVALID_TOKEN_RESPONSE` for a 2xx that is not a usable
 * token response; `NETWORK_ERROR` when the endpoint cannot be reached. Redirects are refused,
 * so the refresh token and client secret never follow one to another host.
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
  const endpoint = parseTokenEndpoint(options.tokenEndpoint);
  const { clientId, clientSecret, extraParams = {}, clock = Date, maxResponseBytes = 262_144 } = options;
  if (typeof clientId !== 'string' || clientId === '') throw configError('refreshTokenGrant: clientId is required');
  const clientAuthentication = options.clientAuthentication ?? (clientSecret ? 'client_secret_basic' : 'none');
  if (clientAuthentication === 'none' && clientSecret) {
    throw configError('refreshTokenGrant: clientSecret was given but clientAuthentication is "none"');
  }
  if (clientAuthentication !== 'none' && !clientSecret) {
    throw configError(`refreshTokenGrant: clientAuthentication "${clientAuthentication}" needs a clientSecret`);
  }
  if (!['client_secret_basic', 'client_secret_post', 'none'].includes(clientAuthentication)) {
    throw configError(`refreshTokenGrant: unknown clientAuthentication "${String(clientAuthentication)}"`);
  }
  const reserved = Object.keys(extraParams).find((name) => reservedParams.has(name));
  if (reserved) throw configError(`refreshTokenGrant: extraParams cannot set "${reserved}"`);
  if (!(maxResponseBytes > 0)) throw configError('refreshTokenGrant: maxResponseBytes must be a positive number');
  const scope = Array.isArray(options.scope) ? options.scope.join(' ') : (options.scope as string | undefined);
  const where = endpoint.origin + endpoint.pathname;
  const basicAuthorization =
    clientAuthentication === 'client_secret_basic'
      ? `Basic ${btoa(`${formEncode(clientId)}:${formEncode(clientSecret ?? '')}`)}`
      : undefined;

  const handler = async ({ tokens, signal }: { tokens: TokenSet | undefined; signal: AbortSignal }): Promise<TokenSet> => {
    const refreshToken = tokens?.refreshToken;
    if (!refreshToken) {
      throw new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'There is no refresh token; the user must sign in again');
    }
    const secrets = [refreshToken, tokens?.accessToken, clientSecret];
    const body = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken });
    if (scope) body.set('scope', scope);
    for (const [name, value] of Object.entries(extraParams)) body.set(name, value);
    if (clientAuthentication !== 'client_secret_basic') body.set('client_id', clientId);
    if (clientAuthentication === 'client_secret_post') body.set('client_secret', clientSecret ?? '');
    const headers: Record<string, string> = {
      'content-type': 'application/x-www-form-urlencoded;charset=UTF-8',
      accept: 'application/json',
    };
    if (basicAuthorization) headers.authorization = basicAuthorization;

    const fetchImpl = resolveFetch(options.fetch);
    const startedAt = clock.now();
    let response: Response;
    let text: string | undefined;
    try {
      response = await fetchImpl(endpoint, { method: 'POST', headers, body, signal, redirect: 'error' });
      text = await readBody(response, maxResponseBytes);
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      throw new TokenRelayError(ErrorCode.NETWORK_ERROR, `Could not reach the token endpoint ${where}`, {
        cause: error,
        transient: true,
      });
    }
    const { status } = response;
    const contentType = response.headers.get('content-type') ?? 'no content-type';
    let json: unknown;
    try {
      json = text === undefined ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }

    if (!response.ok || (isRecord(json) && json.error !== undefined)) {
      const oauthError = isRecord(json) && typeof json.error === 'string' ? json.error : undefined;
      const description =
        isRecord(json) && typeof json.error_description === 'string'
          ? `: ${redactSecrets(json.error_description, secrets).slice(0, 300)}`
          : '';
      const what = oauthError
        ? `${oauthError}${description}`
        : text === undefined
          ? `a body larger than ${maxResponseBytes} bytes`
          : `${contentType}, not an OAuth error response`;
      const details = { status, ...(oauthError === undefined ? {} : { oauthError }) };
      if (oauthError === 'invalid_grant') {
        throw new TokenRelayError(
          ErrorCode.SESSION_EXPIRED,
          `The token endpoint rejected the refresh token (HTTP ${status} ${what}); the user must sign in again`,
          details,
        );
      }
      const retryAfterMs = parseRetryAfter(response.headers.get('retry-after'), clock.now());
      throw new TokenRelayError(ErrorCode.TOKEN_ENDPOINT_ERROR, `The token endpoint answered HTTP ${status} (${what})`, {
        ...details,
        transient: status >= 500 || status === 429,
        ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
      });
    }

    const invalid = (problem: string) =>
      new TokenRelayError(ErrorCode.INVALID_TOKEN_RESPONSE, `The token endpoint answered HTTP ${status} ${problem}`, {
        status,
      });
    if (text === undefined) throw invalid(`with a body larger than ${maxResponseBytes} bytes`);
    if (!isRecord(json)) throw invalid(`with a body that is not a JSON object (${contentType})`);
    const { access_token, refresh_token, expires_in, token_type, scope: grantedScope, ...rest } = json;
    if (typeof access_token !== 'string' || access_token === '') throw invalid('without an access_token');
    if (token_type !== undefined && (typeof token_type !== 'string' || token_type.toLowerCase() !== 'bearer')) {
      throw invalid(`with token_type "${String(token_type)}"; only Bearer tokens are supported`);
    }
    if (expires_in !== undefined && expires_in !== null && (typeof expires_in !== 'number' || !Number.isFinite(expires_in) || expires_in < 0)) {
      throw invalid(`with an invalid expires_in (${typeof expires_in === 'string' ? 'a string' : String(expires_in)})`);
    }
    if (refresh_token !== undefined && (typeof refresh_token !== 'string' || refresh_token === '')) {
      throw invalid('with an invalid refresh_token');
    }
    if (grantedScope !== undefined && typeof grantedScope !== 'string') throw invalid('with an invalid scope');

    const result: TokenSet = { accessToken: access_token, tokenType: typeof token_type === 'string' ? token_type : 'Bearer', raw: rest };
    if (refresh_token !== undefined) result.refreshToken = refresh_token;
    if (typeof expires_in === 'number') result.expiresAt = startedAt + expires_in * 1000;
    if (grantedScope !== undefined) result.scope = grantedScope;
    return result;
  };
  return Object.defineProperty(handler, 'tokenEndpoint', { value: endpoint.href, enumerable: true }) as RefreshHandler;
}
