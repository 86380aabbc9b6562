/*
 * The undici door: an interceptor for undici's dispatcher (`Dispatcher.compose`). In Node the global
 * `fetch` and `undici.request` both send through the global dispatcher, so composed there it covers
 * every request of the process, whatever `fetch` reference the caller captured. It maps undici's
 * dispatch handler onto TokenManager.getAccessToken / refresh and the core adapter kit; all refresh
 * logic (single flight, stale-token detection, retries, pauses) is in core.
 */
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
import {
  abortable,
  accessTokenIfSignedIn,
  bearerAuthorization,
  configurationError,
  createOriginMatcher,
  dpopUnsupported,
  isSignedOut,
  queuePlace,
  type DpopRequest,
  type DpopSender,
} from '@tokenrelay/core/kit';
import { asError, holdingHandler, type DispatchHandler, type HeldResponse, type RawHeaders } from './holding-handler.js';
import { createHopGuard, followedHops, withinFirstOrigin } from './redirect-follower.js';

/** Options of {@link tokenRelayInterceptor}. */
export interface TokenRelayInterceptorOptions {
  /**
   * Where the bearer token may be sent: origins (`https://api.example.com`) or a predicate on the
   * request URL. Requests elsewhere pass through untouched; the token endpoint never gets it, so
   * the manager's own token call, which goes through the same dispatcher, passes untouched too.
   * Required: a dispatcher serves the whole process, there is no page origin to default to.
   * @example
   * ```ts
   * origins: ['https://api.example.com']
   * ```
   */
  origins: Origins;
  /**
   * Decides whether a failed response (status ≥ 400) means the access token is no longer valid;
   * then the tokens are refreshed and the request replayed once. It must settle: the failed answer is
   * held meanwhile, its connection paused once about 64 KiB of its body is read (all of it if you read
   * its text). Only the caller's abort ends the wait for it.
   * @default defaultShouldRefresh: a 401, unless its `WWW-Authenticate` names another error
   */
  shouldRefresh?: ShouldRefresh;
  /**
   * Puts a DPoP proof (RFC 9449) on every request this interceptor authorizes, a replay included, and
   * retries once on a nonce challenge: `createDpop()` of `@tokenrelay/dpop`, the one whose `fetch` the
   * refresh grant uses, so the servers' nonces are shared. Without it, a request of a DPoP-bound
   * session (`token_type` DPoP) fails with a `CONFIGURATION_ERROR`: it would be refused without a proof.
   * @default none: no proofs
   * @example
   * ```ts
   * const dpop = createDpop()
   * const manager = createTokenManager({ tokens, refresh: refreshTokenGrant({ tokenEndpoint, clientId, fetch: dpop.fetch }) })
   * setGlobalDispatcher(getGlobalDispatcher().compose(tokenRelayInterceptor(manager, { origins: ['https://api.example.com'], dpop })))
   * ```
   */
  dpop?: DpopSender;
  /**
   * Sends the requests that had to wait for a refresh, and the replays, through this queue — any
   * object with `add(task)`, such as p-queue's `new PQueue({ concurrency: 8 })` — so that the
   * requests released by a refresh do not hit the API in one burst. Each holds its place in the queue
   * until its exchange ends (answered, failed, upgraded or aborted), so the queue's concurrency bounds
   * the requests in flight. Requests that did not wait go out at once, unqueued. An aborted request
   * leaves the queue at once.
   * @default none: released requests go out together
   * @example
   * ```ts
   * import PQueue from 'p-queue'
   * tokenRelayInterceptor(manager, { origins: ['https://api.example.com'], queue: new PQueue({ concurrency: 8 }) })
   * ```
   */
  queue?: RequestQueue;
}

/** Handlers of undici 7's own interface only (its interceptors' handlers): onRequestStart, onResponseStart, … */
interface ControllerHandler {
  onRequestStart?(controller: DispatchController, context: unknown): void;
  onRequestUpgrade?(controller: DispatchController, statusCode: number, headers: Record<string, string | string[]>, socket: unknown): void;
  onResponseStart?(controller: DispatchController, statusCode: number, headers: Record<string, string | string[]>, statusMessage?: string): void;
  onResponseData?(controller: DispatchController, chunk: Buffer): void;
  onResponseEnd?(controller: DispatchController, trailers: Record<string, string | string[]>): void;
  onResponseError?(controller: DispatchController, error: Error): void;
}

interface DispatchController {
  readonly aborted: boolean;
  readonly paused: boolean;
  readonly reason: Error | null;
  abort(reason?: Error): void;
  pause(): void;
  resume(): void;
}

/** What this interceptor reads of undici's dispatch options; the rest is passed on as it is. */
interface DispatchOptions {
  origin?: string | URL;
  path: string;
  method?: string;
  body?: unknown;
  headers?: unknown;
}
type Dispatch = (options: DispatchOptions, handler: DispatchHandler) => boolean;

/**
 * An undici interceptor, for `Dispatcher.compose`: takes the next `dispatch`, returns one of the
 * same type. Generic rather than tied to one undici's types, so it fits undici 6, 7 and later.
 */
export type TokenRelayInterceptor = <D extends (options: never, handler: never) => boolean>(dispatch: D) => D;

/** One attempt of a DPoP request as `dpop.send` sees it; `release` hands an answer held back on, `discard` gives it up. */
interface SignedAttempt {
  readonly answer: ReturnType<DpopRequest<unknown>['answerOf']>;
  release(): void;
  discard(): void;
}

/**
 * Builds an undici interceptor that puts `Authorization: Bearer <access token>` from `manager` on
 * requests to `origins`, and replays once, after a (single-flight) refresh, a request that failed
 * for an expired token. Compose it on the global dispatcher and every `fetch` and `undici.request`
 * of the process is covered, clients that captured `fetch` before included.
 *
 * - Requests to other origins, to the token endpoint, and requests that already carry an
 *   `Authorization` header pass untouched. A request without `origin` (what a `Pool` or `Client`
 *   composed with it dispatches when asked by path alone) fails with a `CONFIGURATION_ERROR`: give it
 *   the `Pool`'s or `Client`'s own origin (they send to their own host whatever `origin` says, so another
 *   origin, even one of `origins`, would take its bearer there). Redirects: fetch and undici's redirect interceptor composed
 *   after this one dispatch every hop anew, and each hop is judged on its own URL. undici's redirect interceptor dispatches
 *   all hops of a request with one handler: once a hop went without the bearer (another origin, the token endpoint, an
 *   `Authorization` of the caller's), no later hop gets it back, and a 401 to one starts no refresh. fetch follows redirects
 *   itself, each hop a new request this interceptor cannot tell from any other: a chain that left `origins` gets the bearer
 *   back on a hop that returns to them, and its 401 refreshes (`withTokenRelay` on top too: its hops go through here); where
 *   a server outside `origins` may redirect a `fetch`, authorize it with `withTokenRelay` through a dispatcher without this
 *   interceptor (fetch's `dispatcher` option). A redirect followed below it (the redirect interceptor composed before it,
 *   undici 6's `maxRedirections`) sends its hops without it, undici keeping the bearer while they stay on the first origin, and tells it the URLs
 *   answered so far but never the next one. So when the first URL's origin is the token endpoint's, or
 *   `origins` is a predicate, the first redirect hop fails with a `CONFIGURATION_ERROR` before it is
 *   sent, wherever it goes (another origin too): the request rejects, at request time, only when a server
 *   redirects it. Otherwise the hops go on, the bearer dropped by undici on leaving the origin, and the
 *   answer of a hop the bearer did not reach is never refreshed for.
 * - Signed out (`NO_TOKENS`), a request goes without a bearer and its answer, a 401 included, goes
 *   back as it is: no token call.
 * - A failure is judged at its headers: a replay never waits for its body (the exchange is given up),
 *   of which about 64 KiB is read meanwhile, unless a `shouldRefresh` of your own reads it all.
 * - A replayed request is never replayed again. Bodies undici can send again (none, a string, a
 *   `Buffer` or `Uint8Array`) are replayed; a stream or an async iterable never twice — the tokens
 *   are still refreshed, so the next request works, and the caller gets the failed response.
 *   Node's `fetch` hands every body to the dispatcher as an async iterable: a `fetch` POST is not
 *   replayed here (wrap that `fetch` with `withTokenRelay` of `@tokenrelay/fetch` for that).
 * - With the `queue` option, the requests that waited for a refresh, and the replays, are sent through
 *   it, each holding its place until its exchange ends; requests whose token was fresh never wait in it.
 * - DPoP: with the `dpop` option every request it authorizes carries a fresh proof; without it, a
 *   request of a DPoP-bound session (`token_type` DPoP) fails with a `CONFIGURATION_ERROR`.
 * - If the refresh fails, the request fails with the `TokenRelayError` (`undici.request` rejects
 *   with it; `fetch` rejects with a `TypeError` whose `cause` is it: `isTokenRelayError` looks through
 *   `cause`).
 *
 * Handlers of undici 6 and 7 are both understood, so it composes on either and under Node's own fetch.
 *
 * @throws TokenRelayError `CONFIGURATION_ERROR` when `origins` is missing or invalid. Three requests fail with
 *   it later, at request time: one without `origin`, one of a DPoP-bound session without `dpop`, and one
 *   redirected below it (above).
 * @example
 * ```ts
 * import { getGlobalDispatcher, setGlobalDispatcher } from 'undici'
 * setGlobalDispatcher(getGlobalDispatcher().compose(tokenRelayInterceptor(manager, { origins: ['https://api.example.com'] })))
 * ```
 */
export function tokenRelayInterceptor(manager: TokenManager, options: TokenRelayInterceptorOptions): TokenRelayInterceptor {
  if (options?.origins === undefined) {
    throw new TokenRelayError(
      ErrorCode.CONFIGURATION_ERROR,
      'tokenRelayInterceptor needs `origins` (where the access token may be sent), e.g. ["https://api.example.com"]',
    );
  }
  const mayCarryBearer = createOriginMatcher(options.origins, manager.tokenEndpoint);
  const stopUnjudgedHop = createHopGuard(options.origins, manager.tokenEndpoint);
  const { dpop, queue } = options;
  const shouldRefresh = options.shouldRefresh ?? defaultShouldRefresh;
  // A failed response is held back (about the first 64 KiB of its body read) until we know whether it is replaced by a
  // replay: with the default predicate only a 401 can be; a predicate of your own may take any status ≥ 400.
  const mayRefreshFor = (status: number) => (options.shouldRefresh ? status >= 400 : status === 401);

  // The handlers of redirect chains that had a hop pass untouched (not ours to authorize). undici's redirect interceptor
  // composed after this one dispatches every hop of a chain with one handler: as fetch, which never puts back an
  // Authorization it dropped, no later hop gets the bearer, and its 401 starts no refresh (a server outside `origins`
  // must not choose where, how and with what body the request goes with our bearer).
  const chainsPassedUntouched = new WeakSet<object>();

  return <D extends (options: never, handler: never) => boolean>(dispatchNext: D): D => {
    const next = dispatchNext as unknown as Dispatch;
    const dispatch = (given: DispatchOptions, handler: DispatchHandler | ControllerHandler): boolean => {
      const { request, refused } = withListedHeaders(given);
      if (refused) return next(request, handler as DispatchHandler);
      if (!request.origin && !hasAuthorization(request.headers)) {
        // Sent on without the bearer, it would be answered 401 with no token call, silently: told instead.
        handlerOf(handler).onError?.(originUnknown());
        return true;
      }
      const target = requestTarget(request);
      if (chainsPassedUntouched.has(handler) || target === undefined || !mayCarryBearer(target) || hasAuthorization(request.headers)) {
        chainsPassedUntouched.add(handler);
        return next(request, handler as DispatchHandler);
      }
      return relay(next, request, target, handlerOf(handler));
    };
    return dispatch as unknown as D;
  };

  /** Sends `request` (to `target`, its absolute URL) with the bearer, and on a refresh-worthy failure refreshes and replays it once. */
  function relay(next: Dispatch, request: DispatchOptions, target: string, upstream: DispatchHandler): boolean {
    // Made when first needed: by a wait (for a token, a refresh, the queue) or the caller's abort. A
    // request whose token is fresh and whose answer is kept never needs one.
    let aborted: AbortController | undefined;
    const abortController = () => (aborted ??= new AbortController());
    let abortAttempt: ((reason?: Error) => void) | undefined;
    let connected = false;
    // The caller gets one abort for the whole exchange: it ends the attempt under way, or the wait for a token.
    const abort = (reason?: Error) => {
      abortController().abort(reason);
      abortAttempt?.(reason);
    };
    // The caller is told one error, as undici's own request tells its handler: after it, nothing more.
    let failed = false;
    const fail = (error: unknown) => {
      if (failed) return;
      failed = true;
      upstream.onError?.(asError(error));
    };

    // `ended`, when given, is called once this send's exchange is over, whatever ends it.
    const send = (accessToken: string | undefined, holdFailures: boolean, ended?: () => void) => {
      const authorization = accessToken === undefined ? undefined : bearerAuthorization(accessToken, manager.tokenType);
      const headers = authorization === undefined ? request.headers : withHeader(request.headers, 'authorization', authorization);
      const handler = endingWith(attempt(accessToken, holdFailures), ended);
      if (dpop === undefined) {
        // A DPoP-bound token without a proof would be refused: say which door carries proofs instead.
        const unsupported = authorization === undefined ? undefined : dpopUnsupported('tokenRelayInterceptor', authorization);
        if (!unsupported) return next({ ...request, headers }, handler);
        // Through the attempt's handler, which ends the exchange (freeing a queue slot) and tells the caller.
        handler.onError?.(unsupported);
        return true;
      }
      // Every dispatch gets its own proof; a nonce challenge is held back until dpop.send retries or keeps it.
      dpop
        .send<SignedAttempt>({
          method: request.method ?? 'GET',
          url: target,
          authorization,
          body: request.body,
          attempt: (proof) =>
            new Promise((settle, reject) => {
              next({ ...request, headers: withHeader(headers, 'dpop', proof) }, holdingNonceChallenge(handler, settle, reject));
            }),
          answerOf: (signed) => signed.answer,
          discard: (signed) => signed.discard(),
        })
        .then(
          (kept) => kept.release(),
          (error: unknown) => handler.onError?.(asError(error)),
        )
        .catch(toldAlready);
      return true;
    };

    // Released by a refresh with many others (a waiter, a replay): through the queue, if any. The task
    // holds its slot until the exchange ends, so the queue bounds the requests in flight, not their starts.
    const sendReleased = (accessToken: string, holdFailures: boolean) => {
      if (queue === undefined) return void send(accessToken, holdFailures);
      const signal = abortController().signal;
      queuePlace(queue, signal).then((free) => {
        // Aborted once sent: the attempt's own abort tells the caller; the place is given back.
        signal.addEventListener('abort', free, { once: true });
        try {
          send(accessToken, holdFailures, free);
        } catch (error) {
          free();
          fail(error);
        }
      }, fail);
    };

    const attempt = (accessToken: string | undefined, holdFailures: boolean): DispatchHandler => {
      // Only an answer to the first send with a token may be replaced by a replay.
      const tokenUsed = holdFailures ? accessToken : undefined;
      // The URLs of the hops a redirect follower below this interceptor has sent, as it tells them at each hop's start.
      let hops: readonly URL[] = [];
      return holdingHandler(upstream, {
        // The answer of a hop our bearer did not reach (the follower left its origin) says nothing about our token.
        holds: (status) => tokenUsed !== undefined && mayRefreshFor(status) && withinFirstOrigin(hops),
        onHeld: (held) => void afterFailure(held, tokenUsed as string, hops.at(-1)?.href ?? target).catch(toldAlready),
        onConnect(abortThis, context) {
          abortAttempt = abortThis;
          if (aborted?.signal.aborted) return abortThis(aborted.signal.reason as Error);
          hops = followedHops(context);
          // A hop a follower below starts carries our bearer while it stays on the first origin, and its URL is not told.
          const stop = accessToken === undefined ? undefined : stopUnjudgedHop(hops);
          if (stop) return abortThis(stop);
          if (connected) return;
          connected = true;
          upstream.onConnect?.(abort, context);
        },
        onError: fail,
      });
    };

    // Decided at the failure's headers: a replay never waits for its body, which may be huge or never end.
    const afterFailure = async (held: HeldResponse, tokenUsed: string, answeredBy: string) => {
      const signal = abortController().signal;
      try {
        // The caller's abort gives the held answer up, though a shouldRefresh of your own has not settled.
        if (!(await abortable(Promise.resolve(shouldRefresh(failedResponse(held, answeredBy))), signal))) return held.deliver();
        const { accessToken } = await manager.refresh({ staleAccessToken: tokenUsed, signal });
        if (!isReplayable(request.body)) return held.deliver();
        held.discard();
        sendReleased(accessToken, false);
      } catch (error) {
        // Signed out meanwhile: the caller gets the server's answer as it is.
        if (isSignedOut(error) && !signal.aborted) return held.deliver();
        held.discard();
        fail(error);
      }
    };

    const immediate = manager.currentAccessToken();
    if (immediate !== undefined) return send(immediate, true);
    // The caller gets its abort now, so it can give up while the request waits for a token or its turn in the queue.
    connected = true;
    upstream.onConnect?.(abort);
    accessTokenIfSignedIn(manager, { signal: abortController().signal })
      // Signed out: not released by a refresh, so not queued.
      .then((accessToken) => (accessToken === undefined ? send(undefined, true) : sendReleased(accessToken, true)))
      // A dispatcher that throws when the request is handed to it fails the request, like any other failure.
      .catch(fail);
    return true;
  }
}

/** The error of a request that does not say where it goes (no `origin`, an empty or null one): what a Pool or a Client dispatches when asked by path alone. */
const originUnknown = () =>
  configurationError(
    'tokenRelayInterceptor cannot tell where a request without `origin` goes (a Pool or Client it is composed on, asked by path ' +
      "alone): give the request the Pool's or Client's own origin, e.g. pool.request({ origin: poolOrigin, path }) (it sends to its own host " +
      'whatever origin says), or compose the interceptor on an Agent or the global dispatcher',
  );

/** For what the caller's own onError throws: it has been told its error, and there is nothing more to tell it. */
const toldAlready = () => {};

/**
 * Wraps one attempt's handler for `dpop.send`: an answer that may be a nonce challenge (a 400 or 401
 * with `DPoP-Nonce`) is held back, so that a retry replaces it unseen; any other answer flows on to
 * `handler` as it comes. Either is settled at its headers.
 */
function holdingNonceChallenge(handler: DispatchHandler, settle: (attempt: SignedAttempt) => void, reject: (error: Error) => void): DispatchHandler {
  let settled = false;
  return holdingHandler(handler, {
    holds: (status, headers) => (status === 400 || status === 401) && headerValue(headers, 'dpop-nonce') !== undefined,
    onPassing(status, headers) {
      settled = true;
      // The body of an answer that flows on is the caller's: the answer is judged without it.
      settle({ answer: answerOf({ status, headers, text: () => Promise.resolve('') }), release: () => {}, discard: () => {} });
    },
    onHeld(held) {
      settled = true;
      settle({ answer: answerOf(held), release: () => held.deliver(), discard: () => held.discard() });
    },
    onError(error) {
      if (settled) return handler.onError?.(error);
      settled = true;
      reject(error);
    },
  });
}

/** `handler`, telling `ended` (when given) that its dispatch's exchange is over: answered, failed or upgraded. */
function endingWith(handler: DispatchHandler, ended: (() => void) | undefined): DispatchHandler {
  if (ended === undefined) return handler;
  return {
    ...handler,
    onUpgrade(status, headers, socket) {
      ended();
      handler.onUpgrade?.(status, headers, socket);
    },
    onComplete(trailers) {
      ended();
      handler.onComplete?.(trailers);
    },
    onError(error) {
      ended();
      handler.onError?.(error);
    },
  };
}

/**
 * The absolute URL `request` goes to, as a string the origin check decides without parsing it:
 * undici sends to `origin` (it refuses one with a path) and writes `path`, which starts with `/`,
 * after it. `undefined` when there is no origin, or no URL.
 */
function requestTarget(request: DispatchOptions): string | undefined {
  const { origin, path } = request;
  if (!origin) return undefined;
  if (path.charCodeAt(0) === 47) {
    const base = typeof origin === 'string' ? origin : origin.origin;
    return base.charCodeAt(base.length - 1) === 47 ? base.slice(0, -1) + path : base + path;
  }
  // A path that is none (an absolute URL for a proxy): parsed, as undici reads it.
  try {
    return new URL(path, origin).href;
  } catch {
    return undefined;
  }
}

/** Bodies undici sends from memory, so sending them again sends the same bytes. */
function isReplayable(body: unknown): boolean {
  return body === undefined || body === null || typeof body === 'string' || body instanceof Uint8Array;
}

/**
 * Are `headers` an iterable of pairs as undici 7 tells one from a record: an own `Symbol.iterator`, or one
 * inherited from a prototype other than `Object.prototype` (one put there by prototype pollution makes no
 * record iterable).
 */
function isIterableHeaders(headers: unknown): headers is Iterable<unknown> {
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) return false;
  const prototype: unknown = Object.getPrototypeOf(headers);
  return (
    Object.hasOwn(headers, Symbol.iterator) ||
    (prototype !== null && prototype !== Object.prototype && typeof (headers as { [Symbol.iterator]?: unknown })[Symbol.iterator] === 'function')
  );
}

/**
 * The request with headers given as an iterable of pairs (a Map, a Headers, an iterator, which undici reads in
 * one pass) as a flat `[name, value, …]` list, made once: a one-shot iterator read for an Authorization would
 * be empty when sent. Every other shape undici takes is a record or a flat list already. `refused` when an
 * entry is no `[name, value]` pair: flattened, it would shift every later pair (`['x-b', '2', 'x-evil'], ['v']`
 * would send an `x-evil` header); the request then keeps the entries as an iterable, for undici to refuse it
 * as it does without us ('headers must be in key-value pair format').
 */
function withListedHeaders(request: DispatchOptions): { request: DispatchOptions; refused?: true } {
  const { headers } = request;
  if (!isIterableHeaders(headers)) return { request };
  const entries = [...headers];
  if (!entries.every((entry) => Array.isArray(entry) && entry.length === 2)) return { request: { ...request, headers: entries.values() }, refused: true };
  return { request: { ...request, headers: entries.flat() } };
}

/** The pairs of headers as {@link withListedHeaders} leaves them: a record or a flat `[name, value, …]` list. */
function headerPairs(headers: unknown): Array<readonly [unknown, unknown]> {
  if (typeof headers !== 'object' || headers === null) return [];
  if (!Array.isArray(headers)) return Object.entries(headers);
  return Array.from({ length: Math.floor(headers.length / 2) }, (_, index) => [headers[2 * index], headers[2 * index + 1]] as const);
}

function hasAuthorization(headers: unknown): boolean {
  return headerPairs(headers).some(([name]) => String(name).toLowerCase() === 'authorization');
}

/** `headers` (as {@link withListedHeaders} leaves them) plus header `name` (lower case, not among them yet), in the same shape. */
function withHeader(headers: unknown, name: string, value: string): unknown {
  if (typeof headers !== 'object' || headers === null) return { [name]: value };
  if (Array.isArray(headers)) return [...(headers as unknown[]), name, value];
  return { ...headers, [name]: value };
}

/** An answer as the shared pieces read it: its status, a header by name, its body as text (read only when asked). */
function answerOf(held: Pick<HeldResponse, 'status' | 'headers' | 'text'>) {
  return {
    status: held.status,
    header: (name: string) => headerValue(held.headers, name),
    text: () => held.text(),
  };
}

function failedResponse(held: HeldResponse, url: string): FailedResponse {
  return { ...answerOf(held), url: new URL(url).href };
}

/**
 * A header of undici's raw `[name, value, …]` list, every line of it joined with `, ` as fetch's `Headers`
 * and Node's http join them (a second `WWW-Authenticate` may name the error); `undefined` when absent.
 */
function headerValue(headers: RawHeaders, name: string): string | undefined {
  const wanted = name.toLowerCase();
  const lines: string[] = [];
  for (let index = 0; index + 1 < headers.length; index += 2) {
    if (String(headers[index]).toLowerCase() === wanted) lines.push(...linesOf(headers[index + 1]));
  }
  return lines.length === 0 ? undefined : lines.join(', ');
}

/**
 * The lines of one value of undici's raw header list: a line each, as undici 6 gives them, or all of a
 * repeated header's lines in one list, as undici 7 gives them when one of its own interceptors is below.
 */
const linesOf = (value: RawHeaders[number] | undefined): string[] => (Array.isArray(value) ? value.map(String) : [String(value)]);

/** The handler as this interceptor calls it: undici 7's own handlers speak the controller interface only. */
function handlerOf(handler: DispatchHandler | ControllerHandler): DispatchHandler {
  if ('onHeaders' in handler || !('onResponseStart' in handler)) return handler as DispatchHandler;
  const controllerHandler = handler;
  let abortAttempt: (reason: Error) => void = () => {};
  let resumeAttempt = () => {};
  let paused = false;
  let reason: Error | null = null;
  const controller: DispatchController = {
    get aborted() {
      return reason !== null;
    },
    get paused() {
      return paused;
    },
    get reason() {
      return reason;
    },
    abort(error) {
      reason = error ?? new Error('aborted');
      abortAttempt(reason);
    },
    pause: () => (paused = true),
    resume() {
      paused = false;
      resumeAttempt();
    },
  };
  return {
    onConnect(abort, context) {
      abortAttempt = abort;
      controllerHandler.onRequestStart?.(controller, context);
    },
    onHeaders(status, headers, resume, statusText) {
      resumeAttempt = resume;
      controllerHandler.onResponseStart?.(controller, status, headerRecord(headers), statusText);
      return !paused;
    },
    onData(chunk) {
      controllerHandler.onResponseData?.(controller, chunk);
      return !paused;
    },
    onComplete: (trailers) => controllerHandler.onResponseEnd?.(controller, headerRecord(trailers ?? [])),
    onError: (error) => controllerHandler.onResponseError?.(controller, error),
    onUpgrade: (status, headers, socket) => controllerHandler.onRequestUpgrade?.(controller, status, headerRecord(headers as RawHeaders), socket),
  };
}

function headerRecord(headers: RawHeaders): Record<string, string | string[]> {
  const record: Record<string, string | string[]> = {};
  for (let index = 0; index + 1 < headers.length; index += 2) {
    const name = String(headers[index]).toLowerCase();
    for (const value of linesOf(headers[index + 1])) {
      const existing = record[name];
      record[name] = existing === undefined ? value : Array.isArray(existing) ? [...existing, value] : [existing, value];
    }
  }
  return record;
}
