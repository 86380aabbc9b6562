/*
 * The got door: got sends with Node's http, not fetch, so it gets hooks. They map got's
 * beforeRequest / beforeRedirect / afterResponse onto TokenManager.getAccessToken / refresh and the
 * core adapter kit; the replay is got's own `retryWithMergedOptions`, which also drops the hook for
 * the replayed request, so a replay is never replayed. All refresh logic is in core.
 */
import type {
  AfterResponseHook,
  BeforeErrorHook,
  BeforeRedirectHook,
  BeforeRequestHook,
  NormalizedOptions,
  Request as GotRequest,
  Response,
} from 'got';
import {
  ErrorCode,
  TokenRelayError,
  defaultShouldRefresh,
  type FailedResponse,
  type Origins,
  type RequestQueue,
  type ShouldRefresh,
  type TokenManager,
} from '@tokenrelay/core';
import { accessTokenIfSignedIn, bearerAuthorization, createOriginMatcher, dpopUnsupported, isSignedOut } from '@tokenrelay/core/kit';
import { runLast, takeOverCreation } from './attempt.js';
import { trackOurBearer } from './bearer.js';
import { contextSlot } from './context.js';
import { hopOfEndedRequest, leaveQueue, sendWhenQueueHasRoom } from './queue.js';

/** Options of {@link tokenRelayHooks}. */
export interface TokenRelayGotOptions {
  /**
   * Where the bearer token may be sent: origins (`https://api.example.com`) or a predicate on the
   * request URL. Requests elsewhere go untouched; the token endpoint never gets it, and a redirect
   * to a URL outside `origins`, or a request a later `beforeRequest` hook sends there, leaves without it.
   * Once a hop of a request went without it for its URL, no later redirect hop gets it back.
   * @example
   * ```ts
   * origins: ['https://api.example.com']
   * ```
   */
  origins: Origins;
  /**
   * Decides whether a failed response (status ≥ 400) means the access token is no longer valid;
   * then the tokens are refreshed and the request replayed once.
   * @default defaultShouldRefresh: a 401, unless its `WWW-Authenticate` names another error
   */
  shouldRefresh?: ShouldRefresh;
  /**
   * Sends the requests that had to wait for a refresh, and the replays, through this queue — any
   * object with `add(task)`, such as p-queue's `new PQueue({ concurrency: 8 })` — so that the
   * requests released by a refresh do not hit the API in one burst. Every HTTP request got sends for
   * such a request (got's retries of it and its redirect hops included) takes a place when got
   * creates it, after every `beforeRequest` hook, and holds it until it closes (answered, failed,
   * reset, aborted, cancelled, or ended by got's retry) or got leaves it for a redirect's next hop
   * (whose 3xx body may still drain), so the queue's concurrency bounds them in flight; between
   * two of them (a retry's backoff, a redirect) none is held.
   * Requests that did not wait go out at once, unqueued. A request whose `signal` aborts leaves the
   * queue at once, and so does a redirect hop whose request is cancelled; got tells hooks nothing of
   * a `promise.cancel()` before the first HTTP request exists, so a request cancelled while it waits
   * for that keeps its entry until its turn, then gives the place back unsent. got's `timeout` does
   * not count the wait in the queue (bound it with `signal: AbortSignal.timeout(ms)`).
   * @default none: released requests go out together
   * @example
   * ```ts
   * import PQueue from 'p-queue'
   * tokenRelayHooks(manager, { origins: ['https://api.example.com'], queue: new PQueue({ concurrency: 8 }) })
   * ```
   */
  queue?: RequestQueue;
}

/** The hooks to give got: `got.extend({ hooks: tokenRelayHooks(manager, { origins }) })`. */
export interface TokenRelayGotHooks {
  beforeRequest: BeforeRequestHook[];
  beforeRedirect: BeforeRedirectHook[];
  afterResponse: AfterResponseHook[];
  beforeError: BeforeErrorHook[];
}

/**
 * got hooks that put `Authorization: Bearer <access token>` from `manager` on requests to `origins`,
 * and replay once, with got's `retryWithMergedOptions` after a (single-flight) refresh, a request that
 * failed for an expired token.
 *
 * - Requests elsewhere, and requests with an `Authorization` header of their own (in any spelling, one a hook
 *   sets included), go untouched, and so do their later redirect hops and got's retries, a cross-origin hop
 *   where got dropped that header included. The bearer of another set of these hooks on the got instance is not such a
 *   header: a hop that carries it goes with it (a 401 to it refreshes that set's tokens), and a later hop to `origins`,
 *   where got dropped it, gets ours.
 * - The final URL decides: a last step of ours runs after every other `beforeRequest` hook, so a request that
 *   a later hook sends where the bearer may not go leaves without it; one whose `Authorization` a later hook set or
 *   deleted goes with that, and its 401 causes no refresh and no replay.
 * - Once a hop of a request (its first included) goes without our bearer because its URL may not carry it, no
 *   later redirect hop of it, nor got's retry of one, gets it back (as fetch never puts back an `Authorization` it
 *   dropped): a server outside `origins` cannot send the request, its method and its body, to an API URL of its
 *   choosing with our bearer. A 401 to such a hop causes no refresh and no replay.
 * - Signed out (`NO_TOKENS`), a request goes without a bearer and its answer comes back as it is.
 * - Bodies got can send again (none, a string, a `Buffer`, `json`, `form`) are replayed; a stream
 *   or an iterable is never sent twice: the tokens are refreshed and the caller gets the failure.
 * - With the `queue` option, the requests that waited for a refresh, and the replays, are sent through it,
 *   each HTTP request of theirs (retries and redirect hops too) holding its place until it closes;
 *   requests whose token was fresh never wait in it.
 * - They put no DPoP proofs on requests: with DPoP-bound tokens (`token_type` DPoP) a request fails
 *   with a `CONFIGURATION_ERROR` (got's `RequestError` whose `cause` is it) naming the doors that do.
 * - If the refresh fails, the request fails with got's `RequestError` whose `cause` is the
 *   `TokenRelayError` (and whose `code` is its code): `findTokenRelayError(error)` returns it.
 * - got's errors carry the request's options (`error.options`, enumerable, in their JSON too): our bearer
 *   leaves them once got hands the headers over to create the HTTP request, and `beforeError` takes it out
 *   too; the token sent is kept in `context` out of JSON's and `util.inspect`'s sight. So the options of got's
 *   errors do not show it, those got makes without `beforeError` (an aborted `signal`, `AbortSignal.timeout(ms)`,
 *   `promise.cancel()`) included; a caller's own `Authorization` stays. Node's HTTP request keeps the raw header
 *   it sent (a deep `util.inspect` reaches it through a custom `agent` with `keepAlive`), and a later hook that
 *   answers the request itself leaves the bearer in that response's `request.options`.
 *
 * @throws TokenRelayError `CONFIGURATION_ERROR` when `origins` is missing or invalid.
 * @example
 * ```ts
 * const api = got.extend({ prefixUrl: 'https://api.example.com', hooks: tokenRelayHooks(manager, { origins: ['https://api.example.com'] }) })
 * ```
 */
export function tokenRelayHooks(manager: TokenManager, options: TokenRelayGotOptions): TokenRelayGotHooks {
  if (options?.origins === undefined) {
    throw new TokenRelayError(
      ErrorCode.CONFIGURATION_ERROR,
      'tokenRelayHooks needs `origins` (where the access token may be sent), e.g. ["https://api.example.com"]',
    );
  }
  const mayCarryBearer = createOriginMatcher(options.origins, manager.tokenEndpoint);
  const { queue } = options;
  const shouldRefresh = options.shouldRefresh ?? defaultShouldRefresh;
  /** got's request of each redirect hop (by the hop's options): got sends a hop without looking whether it was cancelled meanwhile. */
  const requestOfHop = new WeakMap<NormalizedOptions, GotRequest>();
  const ourBearer = trackOurBearer();
  /**
   * Marks, in got's per-request `context`, a request these hooks' refresh released (one that waited for it,
   * or a replay): got copies the context to its retries and redirect hops, which the `queue` takes too.
   * A key of their own: another set's released request goes through that set's queue only.
   */
  const releasedByRefresh = contextSlot<true>('tokenRelayReleasedByRefresh');
  const isReleasedByRefresh = (request: NormalizedOptions) => releasedByRefresh.get(request) === true;

  /**
   * Our last step on every HTTP request of a request we put the bearer on, or that a refresh released
   * (see runLast). There the URL is final: a bearer that a later hook sent where it may not go comes off.
   * Then, once got hands the headers over to create the HTTP request, our bearer leaves got's options: got
   * makes the errors of an aborted `signal` and of `promise.cancel()` from them without any `beforeError`
   * hook. Our `beforeRequest` puts it back on every retry and redirect hop, until a hop goes where it may not go.
   * With the `queue`, a request a refresh released is created when the queue has room.
   */
  const lastStep: BeforeRequestHook = (request) => {
    const url = urlOf(request.url);
    // Where it may not go, or with an Authorization a later hook set (in any spelling): nor may the rest of the
    // request. Removed by a later hook: this hop goes without. A 401 to either is no longer about our token.
    if (url === undefined || !mayCarryBearer(url) || ourBearer.othersOn(request)) ourBearer.withhold(request);
    else if (!ourBearer.isOn(request)) ourBearer.forget(request);
    const released = queue !== undefined && isReleasedByRefresh(request);
    takeOverCreation(
      request,
      () => ourBearer.takeOffHeaders(request),
      released ? (create) => sendWhenQueueHasRoom(request, queue, requestOfHop.get(request), create) : undefined,
    );
  };

  const beforeRequest: BeforeRequestHook = async (request) => {
    // Every attempt of a request released by a refresh goes through the queue, wherever it goes.
    if (isReleasedByRefresh(request)) runLast(request, lastStep);
    // A hop after one that went where the bearer may not go (that server chose this URL, method and body), or
    // with an Authorization of others (which got drops on a cross-origin hop: ours must not take its place).
    if (ourBearer.isWithheld(request)) return;
    const url = urlOf(request.url);
    if (url === undefined || !mayCarryBearer(url) || ourBearer.othersOn(request)) return ourBearer.withhold(request);
    // Another set's bearer goes on this hop, and its 401 is that set's; a later hop to our origins may carry ours.
    if (ourBearer.anotherSetsOn(request)) return ourBearer.forget(request);
    let accessToken = manager.currentAccessToken();
    if (accessToken === undefined) {
      accessToken = await accessTokenIfSignedIn(manager, { signal: request.signal });
      // A hop of a request cancelled (promise.cancel()) while it waited: got would send it still. The error goes nowhere.
      if (requestOfHop.get(request)?.destroyed) throw hopOfEndedRequest('for a token');
      // Signed out: not released by a refresh, so not queued.
      if (accessToken === undefined) return ourBearer.forget(request);
      if (queue) releasedByRefresh.set(request, true);
    }
    const authorization = bearerAuthorization(accessToken, manager.tokenType);
    // A DPoP-bound token without a proof would be refused: say which door carries proofs instead.
    const unsupported = dpopUnsupported('tokenRelayHooks', authorization);
    if (unsupported) throw unsupported;
    ourBearer.put(request, accessToken, authorization);
    runLast(request, lastStep);
  };

  // got follows redirects itself; each hop passes our beforeRequest and lastStep, which judge its URL.
  const beforeRedirect: BeforeRedirectHook = (request, response) => {
    requestOfHop.set(request, response.request);
    // got leaves the 3xx behind (its body drains on its own): the place its HTTP request held goes to the hop.
    // (Node sets `req` on the response of every client request; its typings leave it out.)
    leaveQueue((response as { req?: object }).req);
  };

  const afterResponse: AfterResponseHook = async (response, retryWithMergedOptions) => {
    const request = response.request.options;
    const tokenUsed = ourBearer.accessTokenSent(request);
    if (tokenUsed === undefined || response.statusCode < 400) return response;
    const answeredBy = urlOf(response.url);
    if (answeredBy === undefined || !mayCarryBearer(answeredBy)) return response;
    if (!(await shouldRefresh(failedResponse(response, answeredBy)))) return response;
    try {
      await manager.refresh({ staleAccessToken: tokenUsed, signal: request.signal });
    } catch (error) {
      // Signed out meanwhile: the caller gets the server's answer as it is.
      if (isSignedOut(error)) return response;
      throw error;
    }
    if (!isReplayable(request.body)) return response;
    // Our beforeRequest puts the new token on the replay, as on every attempt.
    return retryWithMergedOptions(queue ? { context: { [releasedByRefresh.key]: true } } : {});
  };

  // The options of a got error are the request's, and go wherever the error is logged: without our bearer.
  const beforeError: BeforeErrorHook = (error) => {
    if (error.options) ourBearer.forget(error.options);
    return error;
  };

  return { beforeRequest: [beforeRequest], beforeRedirect: [beforeRedirect], afterResponse: [afterResponse], beforeError: [beforeError] };
}

/** The request's URL: got's own `URL` as it is (nothing of ours changes it), a string parsed. */
function urlOf(url: string | URL | undefined): URL | undefined {
  if (url instanceof URL) return url;
  try {
    return url === undefined || url === '' ? undefined : new URL(url);
  } catch {
    return undefined;
  }
}

/** Bodies got holds in memory (`json` and `form` are serialized anew), so sending them again sends the same bytes. */
function isReplayable(body: NormalizedOptions['body']): boolean {
  return body === undefined || typeof body === 'string' || body instanceof Uint8Array;
}

function failedResponse(response: Response, url: URL): FailedResponse {
  return {
    status: response.statusCode,
    url: url.href,
    header: (name) => {
      const value = response.headers[name.toLowerCase()];
      return Array.isArray(value) ? value.join(', ') : value;
    },
    // got has read the body already (afterResponse runs on the complete response).
    text: () => Promise.resolve(response.rawBody.toString('utf8')),
  };
}
