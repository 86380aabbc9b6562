/*
 * axios adapter: maps axios's last transformRequest step, its transport and its response
 * interceptors onto TokenManager.currentAccessToken / getAccessToken and TokenManager.refresh.
 * All refresh logic (single flight, stale 401s, retries) lives in core.
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
import type { AxiosInstance, AxiosRequestTransformer, AxiosResponse, InternalAxiosRequestConfig } from 'axios';
import { failedResponse, isOneShotBody } from './response.js';
import { putInFrontOfRequest, requireGetAdapter, type TransportStep } from './transport.js';

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

/**
 * The config field of our mark. A string, not a symbol: axios 1.6 to 1.14 build a request's config
 * from the string keys of the one given (mergeConfig), so a replay would lose a symbol-keyed mark
 * and go out with the old token, unrecognised.
 */
const ticketKey = 'tokenRelayTicket';

/**
 * Marks a request we authorized. Kept on the config because axios copies the config (so it cannot
 * be a WeakMap key) but keeps this class instance by identity, so a replay carries it. The token
 * is a private field: logging an AxiosError or its config does not print it again.
 */
class AuthorizedRequest {
  readonly #accessToken: string;
  constructor(
    accessToken: string,
    readonly replayed: boolean,
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
  // axios takes a URL object too (it reads it as a string).
  const url = String(config.url ?? '');
  const base = config.baseURL && String(config.baseURL);
  if (!base) return url;
  // The common shape (`https://api.example.com` + `/items`): a path, so no scheme to look for and no trimming.
  if (url.charCodeAt(0) === 47 && url.charCodeAt(1) !== 47 && base.charCodeAt(base.length - 1) !== 47) return base + url;
  if (config.allowAbsoluteUrls !== false && absoluteUrl.test(url)) return url;
  if (!url) return base;
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

/**
 * Whether the request's headers (after axios normalized them) hold an `Authorization` value, in any
 * case: `headers.has` without lower-casing every header name on every request.
 */
function hasAuthorization(headers: InternalAxiosRequestConfig['headers']): boolean {
  for (const name in headers) {
    if (name.length === 13 && name.toLowerCase() === 'authorization' && headers[name] !== undefined) return true;
  }
  return false;
}

/** An AxiosError of a request we authorized. */
function isOurAxiosError(error: unknown): error is { config: TrackedConfig; response?: unknown } {
  const candidate = error as { isAxiosError?: unknown; config?: TrackedConfig } | null;
  return candidate?.isAxiosError === true && candidate.config?.[ticketKey] !== undefined;
}

function abortSignalOf(config: InternalAxiosRequestConfig): AbortSignal | undefined {
  return config.signal instanceof AbortSignal ? config.signal : undefined;
}

/**
 * Adds OAuth 2.0 bearer tokens to an axios instance's requests and, when a response says the
 * token is no longer valid, refreshes it once (single-flight, shared by every waiting request)
 * and replays each failed request once through the same instance.
 *
 * - Requests to other origins, to the token endpoint, or with an `Authorization` of the caller's
 *   own (a header, or axios's `auth` option) are sent untouched. The URL judged is the one axios finally sends, after every
 *   interceptor (one registered before this one runs after it and may retarget the request): the
 *   bearer is set in the last `transformRequest` step, so request interceptors do not see it.
 * - A request whose token is not fresh goes through axios's pipeline at once and waits where its
 *   transport (adapter) is called, until the refresh ends.
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
 * @returns `detach`, which removes the interceptors and the transform step; calling it again does nothing.
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

  /** Deletes the `Authorization` header when it is the bearer we set (a caller's own stays). */
  const deleteOurHeader = (config: TrackedConfig) => {
    const ticket = config[ticketKey];
    if (ticket && config.headers.get('Authorization') === bearerAuthorization(ticket.accessToken, manager.tokenType)) config.headers.delete('Authorization');
  };
  const removeOurBearer = (config: TrackedConfig) => {
    deleteOurHeader(config);
    delete config[ticketKey];
  };

  const { queue } = options;
  requireGetAdapter('attachTokenRelay');
  /** The step in front of the transport of a request released by a refresh with many others: through the queue, if any. */
  const queued: TransportStep = (sent, transport) => (queue ? sendThrough(queue, () => transport(sent), abortSignalOf(sent)) : transport(sent));

  /**
   * The step in front of the transport of a request whose token is not sendable now (expired,
   * refused, a refresh under way) or whose manager is signed out: it waits where its transport
   * would be called, after axios's whole pipeline, so the refresh releases it for little more than
   * the call of its transport.
   */
  const waitForToken: TransportStep = async (sent: TrackedConfig, transport) => {
    // Aborted while waiting: this rejects with the signal's reason, which axios turns into its CanceledError.
    const accessToken = await accessTokenIfSignedIn(manager, { signal: abortSignalOf(sent) });
    if (accessToken === undefined) {
      // Signed out: the request goes without a bearer and the server decides.
      removeOurBearer(sent);
      return transport(sent);
    }
    // A replay carries its replayed ticket; a first send has none yet.
    setBearer(sent, accessToken, sent[ticketKey]?.replayed ?? false);
    return queued(sent, transport);
  };
  const sendWhenReady = (config: TrackedConfig) => {
    // The redirect guard goes on now, not at the release: thousands of released requests then add
    // nothing to configs that have long been in the old heap, and the scavenger copies less.
    guardRedirects(config);
    putInFrontOfRequest(config, waitForToken, instance.defaults.adapter);
  };

  /**
   * Decides the bearer of the request axios is about to hand to its transport: the last step,
   * run in transformRequest, after every request interceptor (one registered before ours runs
   * after it and may retarget the request), so the URL judged is the one axios finally sends. A
   * fresh token costs no interceptor and no promise of ours.
   */
  const authorizeFinal: AxiosRequestTransformer = function (this: TrackedConfig, data: unknown) {
    const ticket = this[ticketKey];
    if (!mayAuthorize(requestUrl(this), locationHref)) {
      if (ticket) removeOurBearer(this);
      return data;
    }
    // Ours to set, unless the caller brought an Authorization of their own, as a header or as axios's
    // `auth` (Basic, which axios's adapters put in place of any other): one we set is renewed.
    if (!attached || (ticket === undefined && (hasAuthorization(this.headers) || this.auth))) return data;
    const accessToken = manager.currentAccessToken();
    if (accessToken === undefined) sendWhenReady(this);
    else {
      const replayed = ticket?.replayed ?? false;
      setBearer(this, accessToken, replayed);
      // A replay is released by a refresh with many others: through the queue, if any.
      if (replayed && queue) putInFrontOfRequest(this, queued, instance.defaults.adapter);
    }
    return data;
  };
  /*
   * In the defaults the step is fused into the last transform (axios's own, unless replaced):
   * axios normalizes the headers once more for every transform, which would cost each request
   * several percent of a bare one.
   */
  const defaultTransforms = [instance.defaults.transformRequest ?? []].flat();
  const lastDefaultTransform = defaultTransforms.pop();
  const fusedTransform: AxiosRequestTransformer = lastDefaultTransform
    ? function (this: TrackedConfig, data, headers) {
        return authorizeFinal.call(this, lastDefaultTransform.call(this, data, headers), headers);
      }
    : authorizeFinal;
  instance.defaults.transformRequest = [...defaultTransforms, fusedTransform];
  const authorizesFinal = (transforms: AxiosRequestTransformer | AxiosRequestTransformer[] | undefined) =>
    Array.isArray(transforms) && (transforms.includes(fusedTransform) || transforms.includes(authorizeFinal));

  /**
   * Node's http adapter: at every redirect hop, drops the bearer unless the hop may have it.
   * (follow-redirects drops it only when the host changes, so a same-origin redirect to the
   * token endpoint would carry it.)
   */
  const guardRedirect = (redirectOptions: Record<string, unknown>) => {
    if (typeof redirectOptions.href === 'string' && mayAuthorize(redirectOptions.href, locationHref)) return;
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

  /** First sends with one token share one (immutable) ticket: a request that finds its token fresh allocates nothing of ours. */
  let lastTicket: AuthorizedRequest | undefined;
  const firstSendTicket = (accessToken: string) =>
    lastTicket?.accessToken === accessToken ? lastTicket : (lastTicket = new AuthorizedRequest(accessToken, false));

  /** Sets the bearer and marks the request as ours. */
  const setBearer = (config: TrackedConfig, accessToken: string, replayed: boolean) => {
    // No bearer of ours yet: no Authorization header at all, so a plain property, as axios's own
    // `headers.set` would add, without its lookups; axios's adapters sanitize every value when they send.
    if (config[ticketKey] === undefined) config.headers.Authorization = bearerAuthorization(accessToken, manager.tokenType);
    else config.headers.set('Authorization', bearerAuthorization(accessToken, manager.tokenType));
    config[ticketKey] = replayed ? new AuthorizedRequest(accessToken, true) : firstSendTicket(accessToken);
    guardRedirects(config);
  };

  /*
   * Our one request interceptor only adds the final step to a request that brings transforms of
   * its own (they replace the instance's); axios skips it, by `runWhen`, for every other request.
   * Synchronous, so axios keeps running the chain without a promise (when every other interceptor
   * is synchronous too).
   */
  const requestId = instance.interceptors.request.use(
    (config) => {
      config.transformRequest = [...(config.transformRequest === undefined ? [] : [config.transformRequest].flat()), authorizeFinal];
      return config;
    },
    undefined,
    { synchronous: true, runWhen: (config) => !authorizesFinal(config.transformRequest) },
  );

  /**
   * An AxiosError the caller gets is often logged: it shows no token of ours. Its config loses our
   * header (its ticket stays: a retry of that config is authorized anew, and a replay is never
   * replayed again); what the adapter sent (`request`: Node's ClientRequest with its raw header
   * block, follow-redirects' request with its options, a fetch `Request`) stays readable, but out of
   * what logging the error or its response prints.
   */
  const forgetOurBearer = (error: { config: TrackedConfig; response?: unknown }) => {
    deleteOurHeader(error.config);
    for (const owner of [error, error.response]) {
      if (owner && Object.hasOwn(owner, 'request')) Object.defineProperty(owner, 'request', { enumerable: false });
    }
  };

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
    if (!mayAuthorize(reported ?? requestUrl(config), locationHref)) return undefined;
    if (!(await shouldRefresh(failedResponse(response, reported ?? instance.getUri(config))))) return undefined;
    config[ticketKey] = new AuthorizedRequest(ticket.accessToken, true);
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
      if (isOurAxiosError(error)) forgetOurBearer(error);
      throw error;
    },
  );

  return () => {
    if (!attached) return;
    attached = false;
    instance.interceptors.request.eject(requestId);
    instance.interceptors.response.eject(responseId);
    const transforms = instance.defaults.transformRequest;
    if (Array.isArray(transforms) && transforms.includes(fusedTransform)) {
      instance.defaults.transformRequest = transforms.map((transform) => (transform === fusedTransform ? lastDefaultTransform : transform))
        .filter((transform) => transform !== undefined);
    }
  };
}
