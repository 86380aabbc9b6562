/*
 * The fetch adapter: maps Request/Response onto TokenManager.getAccessToken / refresh and the
 * core adapter kit. All refresh logic (single flight, stale-token detection, retries) is in core.
 */
import {
  ErrorCode,
  TokenRelayError,
  bearerAuthorization,
  createOriginMatcher,
  defaultShouldRefresh,
  unwrappedFetch,
  type FailedResponse,
  type Origins,
  type ShouldRefresh,
  type TokenManager,
} from '@tokenrelay/core';

/** Options of {@link withTokenRelay}. */
export interface TokenRelayFetchOptions {
  /**
   * Where the bearer token may be sent: origins (`https://api.example.com`) or a predicate on
   * the request URL. Requests elsewhere pass through untouched. The token endpoint never gets it.
   * @default in a browser, `[location.origin]`; elsewhere there is no default and
   *   `withTokenRelay` throws a `CONFIGURATION_ERROR`, so tokens are never sent everywhere.
   * @example
   * ```ts
   * origins: ['https://api.example.com']
   * ```
   */
  origins?: Origins;
  /**
   * Decides whether a failed response (status ≥ 400) means the access token is no longer
   * valid; then the tokens are refreshed and the request replayed once.
   * @default defaultShouldRefresh: a 401, unless its `WWW-Authenticate` names another
   *   error (`insufficient_scope`, DPoP `use_dpop_nonce`, …)
   * @example
   * ```ts
   * // Salesforce Bulk v1 reports a dead session as a 400.
   * shouldRefresh: async (response) =>
   *   response.status === 401 || (response.status === 400 && (await response.text()).includes('InvalidSessionId'))
   * ```
   */
  shouldRefresh?: ShouldRefresh;
}

/** Options of {@link installTokenRelay}: as {@link TokenRelayFetchOptions}, with `origins` required. */
export interface InstallTokenRelayOptions extends TokenRelayFetchOptions {
  /** Where the bearer token may be sent; see {@link TokenRelayFetchOptions.origins}. */
  origins: Origins;
}

type FetchInput = Parameters<typeof fetch>[0];
type FetchInit = Parameters<typeof fetch>[1];

const locationOf = () => (globalThis as { location?: { origin?: unknown; href?: unknown } }).location;

function isRequest(input: FetchInput): input is Request {
  return typeof input === 'object' && !(input instanceof URL) && typeof input.url === 'string';
}

/** The absolute URL a fetch call goes to, or `undefined` when fetch itself would reject it. */
function targetUrl(input: FetchInput): URL | undefined {
  if (input instanceof URL) return input;
  const href = locationOf()?.href;
  try {
    return new URL(isRequest(input) ? input.url : String(input), typeof href === 'string' ? href : undefined);
  } catch {
    return undefined;
  }
}

/** A ReadableStream or an async iterable can be read only once, so a request carrying one is never replayed. */
function isOneShotBody(body: unknown): boolean {
  return (
    typeof body === 'object' &&
    body !== null &&
    (typeof (body as { getReader?: unknown }).getReader === 'function' || Symbol.asyncIterator in body)
  );
}

function failedResponse(response: Response, url: URL): FailedResponse {
  let text: Promise<string> | undefined;
  return {
    status: response.status,
    url: response.url || url.href,
    header: (name) => response.headers.get(name) ?? undefined,
    // A clone, so the caller can still read the body of a response that is returned to them.
    text: () => (text ??= response.clone().text()),
  };
}

function discard(response: Response): void {
  response.body?.cancel().catch(() => {});
}

/**
 * Wraps a fetch so that requests to `origins` carry `Authorization: Bearer <access token>`
 * from `manager`, and a request that fails for an expired token is replayed once after a
 * (single-flight) refresh.
 *
 * - Requests to other origins, and requests that already carry an `Authorization` header,
 *   are passed to `fetchImpl` exactly as given: no bearer, no refresh.
 * - A replayed request is never replayed again: if it fails too, its response is returned.
 * - If the refresh fails, the call rejects with the `TokenRelayError` (e.g. `SESSION_EXPIRED`);
 *   if the request's signal aborts, it rejects with the signal's reason at once.
 * - Bodies: a `Request` is cloned before it is sent, and bodies given in `init` as a string,
 *   `Blob`, `ArrayBuffer`, typed array, `FormData` or `URLSearchParams` are sent again as they
 *   are. A one-shot body (`init.body` a `ReadableStream` or an async iterable) is never sent
 *   twice: on an auth failure the tokens are still refreshed, so the next call works, and the
 *   caller gets the original failed `Response`.
 *
 * The wrapper carries `fetchImpl` under `unwrappedFetch`, so the token endpoint call of
 * `refreshTokenGrant` bypasses it.
 *
 * @throws TokenRelayError `CONFIGURATION_ERROR` when `origins` is invalid, or missing outside a browser.
 * @example
 * ```ts
 * const api = withTokenRelay(fetch, manager, { origins: ['https://api.example.com'] })
 * const response = await api('https://api.example.com/me')
 * ```
 */
export function withTokenRelay(
  fetchImpl: typeof fetch,
  manager: TokenManager,
  options: TokenRelayFetchOptions = {},
): typeof fetch {
  if (typeof fetchImpl !== 'function') {
    throw new TokenRelayError(ErrorCode.CONFIGURATION_ERROR, 'withTokenRelay needs a fetch function to wrap');
  }
  const origins = options.origins ?? browserOrigins();
  if (origins === undefined) {
    throw new TokenRelayError(
      ErrorCode.CONFIGURATION_ERROR,
      'withTokenRelay needs `origins` (where the access token may be sent) outside a browser, e.g. ["https://api.example.com"]',
    );
  }
  const mayCarryBearer = createOriginMatcher(origins, manager.tokenEndpoint);
  const shouldRefresh = options.shouldRefresh ?? defaultShouldRefresh;

  async function sendWithBearer(input: FetchInput, init: FetchInit, headers: Headers, url: URL): Promise<Response> {
    const request = isRequest(input) ? input : undefined;
    const signal = init?.signal ?? request?.signal;
    const tokenUsed = await manager.getAccessToken({ signal });
    const initBody = init?.body ?? undefined;
    const replayable = !isOneShotBody(initBody);
    // The first send consumes the Request's body; the clone keeps the same bytes for the replay.
    const replayInput = request && initBody === undefined && request.body !== null ? request.clone() : input;

    headers.set('authorization', bearerAuthorization(tokenUsed));
    const response = await fetchImpl(input, { ...init, headers });
    if (response.status < 400) return response;

    let accessToken: string;
    try {
      if (!(await shouldRefresh(failedResponse(response, url)))) return response;
      ({ accessToken } = await manager.refresh({ staleAccessToken: tokenUsed, signal }));
    } catch (error) {
      discard(response);
      throw error;
    }
    if (!replayable) return response;
    discard(response);
    const replayHeaders = new Headers(headers);
    replayHeaders.set('authorization', bearerAuthorization(accessToken));
    return fetchImpl(replayInput, { ...init, headers: replayHeaders });
  }

  function relayFetch(input: FetchInput, init?: FetchInit): Promise<Response> {
    const url = targetUrl(input);
    if (url === undefined || !mayCarryBearer(url)) return fetchImpl(input, init);
    // fetch(request, init) takes init.headers instead of the Request's own headers.
    const headers = new Headers(init?.headers ?? (isRequest(input) ? input.headers : undefined));
    if (headers.has('authorization')) return fetchImpl(input, init);
    return sendWithBearer(input, init, headers, url);
  }
  Object.defineProperty(relayFetch, unwrappedFetch, { value: fetchImpl });
  return relayFetch as typeof fetch;
}

function browserOrigins(): string[] | undefined {
  const origin = locationOf()?.origin;
  return typeof origin === 'string' && /^https?:\/\//.test(origin) ? [origin] : undefined;
}

/**
 * Replaces `globalThis.fetch` with {@link withTokenRelay}`(globalThis.fetch, manager, options)`.
 * Returns `restore`, which puts the original fetch back if `globalThis.fetch` is still the
 * wrapper (it leaves alone a fetch someone installed after us); calling it again does nothing.
 *
 * @throws TokenRelayError `CONFIGURATION_ERROR` when `origins` is invalid.
 * @example
 * ```ts
 * const restore = installTokenRelay(manager, { origins: ['https://api.example.com'] })
 * await fetch('https://api.example.com/me') // carries the bearer
 * restore()
 * ```
 */
export function installTokenRelay(manager: TokenManager, options: InstallTokenRelayOptions): () => void {
  const original = globalThis.fetch;
  const wrapper = withTokenRelay(original, manager, options);
  globalThis.fetch = wrapper;
  return () => {
    if (globalThis.fetch === wrapper) globalThis.fetch = original;
  };
}
