/*
 * axios adapter: maps axios request/response interceptors onto TokenManager.getAccessToken and
 * TokenManager.refresh. All refresh logic (single flight, stale 401s, retries) lives in core.
 */
import {
  ErrorCode,
  TokenRelayError,
  defaultShouldRefresh,
  type Origins,
  type RequestQueue,
  type ShouldRefresh,
  type TokenManager,
} from '@tokenrelay/core';
import { accessTokenIfSignedIn, bearerAuthorization, createOriginMatcher, isSignedOut, sendThrough } from '@tokenrelay/core/kit';
import type { AxiosAdapter, AxiosInstance, AxiosRequestTransformer, AxiosResponse, InternalAxiosRequestConfig } from 'axios';
import { failedResponse, isOneShotBody } from './response.js';
import { requireGetAdapter, transportOf } from './transport.js';

export { attachDpop } from './dpop.js';

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
  /**
   * Sends the requests that had to wait for a refresh, and the replays, through this queue — any
   * object with `add(task)`, such as p-queue's `new PQueue({ concurrency: 8 })` — so that the
   * requests released by a refresh do not hit the API in one burst. Requests that did not wait go
   * out at once, unqueued. An aborted request leaves the queue at once.
   * @default none: released requests go out together
   * @example
   * ```ts
   * import PQueue from 'p-queue'
   * attachTokenRelay(api, manager, { queue: new PQueue({ concurrency: 8 }) })
   * ```
   */
  queue?: RequestQueue;
}

const ticketKey: unique symbol = Symbol('tokenrelay.axios');
/** On our queueing adapter: the transport it wraps, so a replay is queued once, not twice. */
const queuedAdapterKey: unique symbol = Symbol('tokenrelay.axios.queued');

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

/** What a relative URL is resolved against: the page in a browser; in Node a relative URL has no origin. */
const locationHref = () => (globalThis as { location?: { href?: string } }).location?.href;

/** Resolves like the browser does for relative URLs. */
function resolveUrl(url: string): URL | undefined {
  try {
    return new URL(url, locationHref());
  } catch {
    return undefined;
  }
}

const absoluteUrl = /^([a-z][a-z\d+\-.]*:)?\/\//i;

/**
 * `baseURL` + `url` by axios's rule (buildFullPath), as a string the origin matcher decides
 * without parsing when it can; the query from `params` cannot change the origin, and
 * `instance.getUri` costs as much as a whole request (it re-merges the defaults).
 */
function requestUrl(config: InternalAxiosRequestConfig): string {
  const url = config.url ?? '';
  const base = config.baseURL;
  if (!base || (config.allowAbsoluteUrls !== false && absoluteUrl.test(url))) return url;
  if (!url) return base;
  // The common shape (`https://api.example.com` + `/items`) needs no trimming.
  if (!base.endsWith('/') && url.startsWith('/') && !url.startsWith('//')) return base + url;
  return `${base.replace(/\/+$/, '')}/${url.replace(/^\/+/, '')}`;
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
    if (ticket && config.headers.get('Authorization') === bearerAuthorization(ticket.accessToken, manager.tokenType)) config.headers.delete('Authorization');
    delete config[ticketKey];
  };

  /**
   * Runs after every request interceptor (axios calls transformRequest just before the adapter):
   * an interceptor registered before ours runs after it and may retarget the request, so the URL
   * axios finally sends is judged here. Installed once in the instance's defaults, and added to a
   * request only when that request brings transforms of its own.
   */
  const checkFinalUrl: AxiosRequestTransformer = function (this: TrackedConfig, data: unknown) {
    if (this[ticketKey] && !mayAuthorize(requestUrl(this), locationHref())) removeOurBearer(this);
    return data;
  };
  const withCheckFinalUrl = (transforms: AxiosRequestTransformer | AxiosRequestTransformer[] | undefined) =>
    [...(transforms === undefined ? [] : [transforms].flat()), checkFinalUrl];
  /*
   * In the defaults the check is fused into the last transform (axios's own, unless replaced):
   * axios normalizes the headers once more for every transform, which would cost each request
   * several percent of a bare one.
   */
  const defaultTransforms = [instance.defaults.transformRequest ?? []].flat();
  const lastDefaultTransform = defaultTransforms.pop();
  const checkingTransform: AxiosRequestTransformer = lastDefaultTransform
    ? function (this: TrackedConfig, data, headers) {
        return checkFinalUrl.call(this, lastDefaultTransform.call(this, data, headers), headers);
      }
    : checkFinalUrl;
  instance.defaults.transformRequest = [...defaultTransforms, checkingTransform];
  const checksFinalUrl = (transforms: AxiosRequestTransformer | AxiosRequestTransformer[] | undefined) =>
    Array.isArray(transforms) && (transforms.includes(checkingTransform) || transforms.includes(checkFinalUrl));

  /**
   * Node's http adapter: at every redirect hop, drops the bearer unless the hop may have it.
   * (follow-redirects drops it only when the host changes, so a same-origin redirect to the
   * token endpoint would carry it.)
   */
  const guardRedirect = (redirectOptions: Record<string, unknown>) => {
    if (typeof redirectOptions.href === 'string' && mayAuthorize(redirectOptions.href, locationHref())) return;
    const headers = (redirectOptions.headers ?? {}) as Record<string, unknown>;
    for (const name of Object.keys(headers)) if (name.toLowerCase() === 'authorization') delete headers[name];
  };
  /** Our hooks: the shared one, and those chained to a request's own beforeRedirect. */
  const redirectHooks = new WeakSet<object>([guardRedirect]);
  const guardRedirects = (config: TrackedConfig) => {
    const previous = config.beforeRedirect;
    if (previous === undefined) {
      config.beforeRedirect = guardRedirect;
      return;
    }
    // A replay carries the hook of its first send.
    if (redirectHooks.has(previous)) return;
    const hook: NonNullable<TrackedConfig['beforeRedirect']> = (redirectOptions, responseDetails, requestDetails) => {
      previous(redirectOptions, responseDetails, requestDetails);
      guardRedirect(redirectOptions);
    };
    redirectHooks.add(hook);
    config.beforeRedirect = hook;
  };

  const { queue } = options;
  if (queue !== undefined) requireGetAdapter('attachTokenRelay: `queue`');
  /**
   * Sends this request through the queue: its transport (axios's own adapter, resolved as axios
   * would) runs when the queue has room, so the queue bounds the requests in flight.
   */
  const sendThroughQueue = (config: InternalAxiosRequestConfig, signal: AbortSignal | undefined) => {
    const adapter = config.adapter as AxiosAdapter & { [queuedAdapterKey]?: AxiosAdapter };
    const transport = adapter?.[queuedAdapterKey] ?? transportOf(config.adapter ?? instance.defaults.adapter, config);
    const queued: AxiosAdapter = (sent) => sendThrough(queue, () => transport(sent), signal);
    config.adapter = Object.assign(queued, { [queuedAdapterKey]: transport });
  };

  /**
   * Whether the bearer is ours to set: the request goes to `origins` and brings no `Authorization`
   * of its own. A copied config sent elsewhere loses the bearer we set for its original target.
   */
  const isOurs = (config: TrackedConfig): boolean => {
    if (!mayAuthorize(requestUrl(config), locationHref())) {
      removeOurBearer(config);
      return false;
    }
    return config[ticketKey] !== undefined || !config.headers.has('Authorization');
  };

  /** Sets the bearer; `waited`: the token came after a refresh, so the request is released with many others. */
  const authorizeWith = (config: TrackedConfig, accessToken: string, waited: boolean): InternalAxiosRequestConfig => {
    const ticket = config[ticketKey];
    const replayed = ticket?.replayed ?? false;
    // No Authorization header yet (isOurs): a plain property, as axios's own `headers.set` would
    // add, without its lookups; axios's adapters sanitize every value when they send.
    if (ticket === undefined) config.headers.Authorization = bearerAuthorization(accessToken, manager.tokenType);
    else config.headers.set('Authorization', bearerAuthorization(accessToken, manager.tokenType));
    config[ticketKey] = new AuthorizedRequest(accessToken, replayed);
    if (!checksFinalUrl(config.transformRequest)) config.transformRequest = withCheckFinalUrl(config.transformRequest);
    guardRedirects(config);
    // Released by a refresh with many others (it waited, or it is a replay): through the queue, if any.
    if (queue && (waited || replayed)) sendThroughQueue(config, abortSignalOf(config));
    return config;
  };

  /**
   * A request made while the token is fresh: synchronous, so axios runs the whole chain without a
   * promise of ours (when every other interceptor is synchronous too). The token decided on when
   * axios chose this interceptor stays valid for it if the clock crossed the margin since.
   */
  const authorizeNow = (config: TrackedConfig): InternalAxiosRequestConfig => {
    if (!isOurs(config)) return config;
    const accessToken = manager.currentAccessToken() ?? lastFreshToken;
    return authorizeWith(config, accessToken, false);
  };

  /** A request made while the token is not fresh (or signed out): waits for the refresh. */
  const authorizeWhenReady = async (config: TrackedConfig): Promise<InternalAxiosRequestConfig> => {
    if (!isOurs(config)) return config;
    const signal = abortSignalOf(config);
    const immediate = manager.currentAccessToken();
    let accessToken: string | undefined;
    try {
      accessToken = immediate ?? (await accessTokenIfSignedIn(manager, { signal }));
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
    return authorizeWith(config, accessToken, immediate === undefined);
  };

  /*
   * axios picks interceptors per request with `runWhen`, before running any: exactly one of our
   * two runs, chosen by whether the token is fresh now. Both are registered together, so their
   * runWhen calls follow each other with nothing in between. The fresh token is remembered per
   * config (not on it: a logged config does not print it), and the last one for a config that an
   * interceptor replaced.
   */
  let lastFreshToken = '';
  let freshNow = false;
  const requestNowId = instance.interceptors.request.use(authorizeNow, undefined, {
    synchronous: true,
    runWhen() {
      const accessToken = manager.currentAccessToken();
      freshNow = accessToken !== undefined;
      if (accessToken !== undefined) lastFreshToken = accessToken;
      return freshNow;
    },
  });
  const requestWhenReadyId = instance.interceptors.request.use(authorizeWhenReady, undefined, { runWhen: () => !freshNow });

  const mayReplay = (response: AxiosResponse): boolean => {
    const ticket = (response.config as TrackedConfig | undefined)?.[ticketKey];
    return attached && ticket !== undefined && !ticket.replayed && response.status >= 400;
  };

  /** The replay's response, or undefined when the caller is to get this response as it is. */
  const replayAfterRefresh = async (response: AxiosResponse): Promise<AxiosResponse | undefined> => {
    const config: TrackedConfig = response.config;
    const ticket = config[ticketKey];
    if (!ticket) return undefined;
    // A redirect may end outside `origins` (or at the token endpoint): that 401 says nothing about our token.
    const reported = reportedUrl(response);
    if (!mayAuthorize(reported ?? requestUrl(config), locationHref())) return undefined;
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

  const responseId = instance.interceptors.response.use(
    // Synchronous for a response that cannot need a replay: a successful request costs no promise of ours.
    (response) => (mayReplay(response) ? replayAfterRefresh(response).then((replay) => replay ?? response) : response),
    async (error: unknown) => {
      const replay = hasResponse(error) && mayReplay(error.response) ? await replayAfterRefresh(error.response) : undefined;
      if (replay) return replay;
      throw error;
    },
  );

  return () => {
    if (!attached) return;
    attached = false;
    instance.interceptors.request.eject(requestNowId);
    instance.interceptors.request.eject(requestWhenReadyId);
    instance.interceptors.response.eject(responseId);
    const transforms = instance.defaults.transformRequest;
    if (Array.isArray(transforms) && transforms.includes(checkingTransform)) {
      instance.defaults.transformRequest = transforms.map((transform) => (transform === checkingTransform ? lastDefaultTransform : transform))
        .filter((transform) => transform !== undefined);
    }
  };
}
