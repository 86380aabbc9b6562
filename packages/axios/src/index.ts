/*
 * axios adapter: maps axios request/response interceptors onto TokenManager.getAccessToken and
 * TokenManager.refresh. All refresh logic (single flight, stale 401s, retries) lives in core.
 */
import {
  ErrorCode,
  TokenRelayError,
  defaultShouldRefresh,
  type FailedResponse,
  type Origins,
  type ShouldRefresh,
  type TokenManager,
} from '@tokenrelay/core';
import { accessTokenIfSignedIn, bearerAuthorization, createOriginMatcher, isSignedOut } from '@tokenrelay/core/kit';
import type { AxiosInstance, AxiosRequestTransformer, AxiosResponse, InternalAxiosRequestConfig } from 'axios';

/** Options of {@link attachTokenRelay}. */
export interface AttachTokenRelayOptions {
  /**
   * Where the bearer token may be sent: origins (`https://api.example.com`), or a predicate on the
   * request URL (`baseURL` + `url` as axios combines them; the query built from `params` is not
   * included). Requests elsewhere, and to the manager's token endpoint, go out untouched.
   * @default the origin of the instance's `defaults.baseURL` at attach time; it must be absolute
   * @example
   * ```ts
   * attachTokenRelay(api, manager, { origins: ['https://api.example.com', 'https://files.example.com'] })
   * ```
   */
  origins?: Origins;
  /**
   * Decides whether a failed response (status ≥ 400) means the access token is no longer valid;
   * then the tokens are refreshed and the request replayed once.
   * @default defaultShouldRefresh — a 401 unless its `WWW-Authenticate` says otherwise (never a
   *   403 `insufficient_scope`, never DPoP `use_dpop_nonce`)
   * @example
   * ```ts
   * // Some Salesforce 401s are not cured by a new token (jsforce skips these too)
   * shouldRefresh: async (response) =>
   *   response.status === 401 && !(await response.text()).includes('not valid for use with the REST API')
   * ```
   */
  shouldRefresh?: ShouldRefresh;
}

const ticketKey: unique symbol = Symbol('tokenrelay.axios');

/**
 * Marks a request we authorized. Kept on the config under a symbol because axios copies the
 * config (so it cannot be a WeakMap key) but keeps this class instance by identity, so a replay
 * carries it. The token is a private field: logging an AxiosError does not print it again.
 */
class AuthorizedRequest {
  readonly #accessToken: string;
  constructor(
    accessToken: string,
    public replayed: boolean,
  ) {
    this.#accessToken = accessToken;
  }
  get accessToken(): string {
    return this.#accessToken;
  }
}

type TrackedConfig = InternalAxiosRequestConfig & { [ticketKey]?: AuthorizedRequest };

/** Resolves like the browser does for relative URLs; in Node a relative URL has no origin. */
function resolveUrl(url: string): URL | undefined {
  try {
    return new URL(url, (globalThis as { location?: { href: string } }).location?.href);
  } catch {
    return undefined;
  }
}

/**
 * `baseURL` + `url` by axios's rule (buildFullPath); the query from `params` cannot change the
 * origin, and `instance.getUri` costs as much as a whole request (it re-merges the defaults).
 */
function requestUrl(config: InternalAxiosRequestConfig): URL | undefined {
  const url = config.url ?? '';
  const absolute = /^([a-z][a-z\d+\-.]*:)?\/\//i.test(url);
  if (!config.baseURL || (absolute && config.allowAbsoluteUrls !== false)) return resolveUrl(url);
  return resolveUrl(url ? `${config.baseURL.replace(/\/+$/, '')}/${url.replace(/^\/+/, '')}` : config.baseURL);
}

/**
 * The URL that answered, after redirects, when the client tells it: Node's http adapter
 * (`res.responseUrl`) and XMLHttpRequest (`responseURL`) do.
 */
function reportedUrl(response: AxiosResponse): string | undefined {
  const request = response.request as { res?: { responseUrl?: unknown }; responseURL?: unknown } | undefined;
  const url = request?.res?.responseUrl ?? request?.responseURL;
  return typeof url === 'string' && url !== '' ? url : undefined;
}

function defaultOrigins(instance: AxiosInstance): Origins {
  const base = instance.defaults.baseURL === undefined ? undefined : resolveUrl(instance.defaults.baseURL);
  if (base?.protocol !== 'https:' && base?.protocol !== 'http:') {
    throw new TokenRelayError(
      ErrorCode.CONFIGURATION_ERROR,
      'attachTokenRelay needs `origins` or an absolute http(s) `baseURL` on the axios instance: the access token is never sent to every origin',
    );
  }
  return [base.origin];
}

function failedResponse(response: AxiosResponse, url: string): FailedResponse {
  const { data } = response;
  return {
    status: response.status,
    url,
    header(name) {
      const wanted = name.toLowerCase();
      // Covers AxiosHeaders (own properties keyed by header name) and plain objects alike.
      const entry = Object.entries(response.headers).find(([key]) => key.toLowerCase() === wanted);
      const value: unknown = entry?.[1];
      if (value === undefined || value === null || value === false) return undefined;
      return Array.isArray(value) ? value.join(', ') : String(value);
    },
    async text() {
      if (typeof data === 'string') return data;
      if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) return new TextDecoder().decode(data);
      if (data instanceof Blob) return data.text();
      // A stream (responseType 'stream') is the caller's to read; reading it here would consume it.
      if (data === undefined || data === null || isOneShotBody(data)) return '';
      return JSON.stringify(data) ?? '';
    },
  };
}

/** A Node stream or a web ReadableStream can be sent only once. */
function isOneShotBody(data: unknown): boolean {
  return (
    (typeof data === 'object' && data !== null && typeof (data as { pipe?: unknown }).pipe === 'function') ||
    (typeof ReadableStream !== 'undefined' && data instanceof ReadableStream)
  );
}

/** An AxiosError that carries a response (not a network error, a cancel or one of ours). */
function hasResponse(error: unknown): error is { response: AxiosResponse } {
  const candidate = error as { isAxiosError?: unknown; response?: unknown } | null;
  return candidate?.isAxiosError === true && typeof candidate.response === 'object' && candidate.response !== null;
}

function abortSignalOf(config: InternalAxiosRequestConfig): AbortSignal | undefined {
  return config.signal instanceof AbortSignal ? config.signal : undefined;
}

/**
 * Adds OAuth 2.0 bearer tokens to an axios instance's requests and, when a response says the
 * token is no longer valid, refreshes it once (single-flight, shared by every waiting request)
 * and replays each failed request once through the same instance.
 *
 * - Requests to other origins, to the token endpoint, or with an `Authorization` header of the
 *   caller's own are sent untouched. The URL judged is the one axios finally sends, after every
 *   interceptor (one registered before this one runs after it and may retarget the request).
 * - Redirects (Node's http adapter): the bearer is dropped at every hop outside `origins`, and at
 *   a same-origin hop to the token endpoint. A failed response whose final URL is outside
 *   `origins` goes to the caller as it is: no refresh, no replay.
 * - Signed out (the manager holds no tokens: `NO_TOKENS`), a request goes without a bearer and its
 *   answer, a 401 included, goes to the caller: no token call. After `SESSION_EXPIRED` a request
 *   rejects with that `TokenRelayError`, the cue to sign in again.
 * - A replay that fails again goes to the caller as axios's error. A failed refresh rejects with
 *   its `TokenRelayError` (`SESSION_EXPIRED`, …). An aborted request rejects with axios's
 *   `CanceledError` at once, while the refresh goes on for the others.
 * - A response that `validateStatus` lets resolve (e.g. a 401) is handled the same way: the replay's
 *   response is returned instead.
 * - A stream body (Node `Readable`, web `ReadableStream`) cannot be sent twice: the tokens are
 *   refreshed so the next request succeeds, and the caller gets the original error.
 *
 * @returns `detach`, which removes both interceptors; calling it again does nothing.
 * @throws TokenRelayError `CONFIGURATION_ERROR` when neither `origins` nor an absolute `baseURL` is set.
 * @example
 * ```ts
 * const api = axios.create({ baseURL: 'https://api.example.com' })
 * const detach = attachTokenRelay(api, manager)
 * ```
 */
export function attachTokenRelay(
  instance: AxiosInstance,
  manager: TokenManager,
  options: AttachTokenRelayOptions = {},
): () => void {
  const mayAuthorize = createOriginMatcher(options.origins ?? defaultOrigins(instance), manager.tokenEndpoint);
  const shouldRefresh = options.shouldRefresh ?? defaultShouldRefresh;
  let attached = true;

  const removeOurBearer = (config: TrackedConfig) => {
    const ticket = config[ticketKey];
    if (ticket && config.headers.get('Authorization') === bearerAuthorization(ticket.accessToken)) config.headers.delete('Authorization');
    delete config[ticketKey];
  };

  /**
   * Runs after every request interceptor (axios calls transformRequest just before the adapter):
   * an interceptor registered before ours runs after it and may retarget the request, so the URL
   * axios finally sends is judged here.
   */
  const checkFinalUrl: AxiosRequestTransformer = function (this: TrackedConfig, data: unknown) {
    const url = requestUrl(this);
    if (this[ticketKey] && (!url || !mayAuthorize(url))) removeOurBearer(this);
    return data;
  };

  /**
   * Node's http adapter: at every redirect hop, drops the bearer unless the hop may have it.
   * (follow-redirects drops it only when the host changes, so a same-origin redirect to the
   * token endpoint would carry it.)
   */
  const redirectHooks = new WeakSet<object>();
  const guardRedirects = (config: TrackedConfig) => {
    const previous = config.beforeRedirect;
    // A replay carries the hook of its first send.
    if (previous && redirectHooks.has(previous)) return;
    const hook: NonNullable<TrackedConfig['beforeRedirect']> = (options, responseDetails, requestDetails) => {
      previous?.(options, responseDetails, requestDetails);
      const hop = typeof options.href === 'string' ? resolveUrl(options.href) : undefined;
      if (hop && mayAuthorize(hop)) return;
      const headers = (options.headers ?? {}) as Record<string, unknown>;
      for (const name of Object.keys(headers)) if (name.toLowerCase() === 'authorization') delete headers[name];
    };
    redirectHooks.add(hook);
    config.beforeRedirect = hook;
  };

  const authorize = async (config: TrackedConfig): Promise<InternalAxiosRequestConfig> => {
    const ticket = config[ticketKey];
    const url = requestUrl(config);
    if (!url || !mayAuthorize(url)) {
      // A copied config sent elsewhere must not carry the bearer we set for its original target.
      removeOurBearer(config);
      return config;
    }
    if (!ticket && config.headers.has('Authorization')) return config;
    const signal = abortSignalOf(config);
    let accessToken: string | undefined;
    try {
      accessToken = await accessTokenIfSignedIn(manager, { signal });
    } catch (error) {
      // axios cancels an aborted request before sending it, with its own CanceledError.
      if (signal?.aborted) return config;
      throw error;
    }
    if (accessToken === undefined) {
      // Signed out: the request goes without a bearer and the server decides.
      removeOurBearer(config);
      return config;
    }
    config.headers.set('Authorization', bearerAuthorization(accessToken));
    config[ticketKey] = new AuthorizedRequest(accessToken, ticket?.replayed ?? false);
    const transforms = config.transformRequest === undefined ? [] : [config.transformRequest].flat();
    if (!transforms.includes(checkFinalUrl)) config.transformRequest = [...transforms, checkFinalUrl];
    guardRedirects(config);
    return config;
  };

  /** The replay's response, or undefined when the caller is to get this response as it is. */
  const replayAfterRefresh = async (response: AxiosResponse): Promise<AxiosResponse | undefined> => {
    const config: TrackedConfig = response.config;
    const ticket = config?.[ticketKey];
    if (!attached || !ticket || ticket.replayed || response.status < 400) return undefined;
    // A redirect may end outside `origins` (or at the token endpoint): that 401 says nothing about our token.
    const reported = reportedUrl(response);
    const answeredBy = reported === undefined ? requestUrl(config) : resolveUrl(reported);
    if (!answeredBy || !mayAuthorize(answeredBy)) return undefined;
    if (!(await shouldRefresh(failedResponse(response, reported ?? instance.getUri(config))))) return undefined;
    ticket.replayed = true;
    const signal = abortSignalOf(config);
    try {
      await manager.refresh({ staleAccessToken: ticket.accessToken, signal });
    } catch (error) {
      // Signed out meanwhile: the caller gets the server's answer as it is.
      if (isSignedOut(error)) return undefined;
      // Aborted while waiting: the replay below is cancelled by axios before it is sent.
      if (!signal?.aborted) throw error;
    }
    if (isOneShotBody(config.data)) return undefined;
    return instance.request(config);
  };

  const requestId = instance.interceptors.request.use(authorize);
  const responseId = instance.interceptors.response.use(
    async (response) => (await replayAfterRefresh(response)) ?? response,
    async (error: unknown) => {
      const replay = hasResponse(error) ? await replayAfterRefresh(error.response) : undefined;
      if (replay) return replay;
      throw error;
    },
  );

  return () => {
    if (!attached) return;
    attached = false;
    instance.interceptors.request.eject(requestId);
    instance.interceptors.response.eject(responseId);
  };
}
