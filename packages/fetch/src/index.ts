/*
 * The fetch adapter: maps Request/Response onto TokenManager.getAccessToken / refresh and the
 * core adapter kit. All refresh logic (single flight, stale-token detection, retries) is in core.
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
  accessTokenIfSignedIn,
  bearerAuthorization,
  createOriginMatcher,
  isOneShotBody,
  isRequest,
  isSignedOut,
  sendThrough,
  unwrappedFetch,
} from '@tokenrelay/core/kit';
import { answeredWithoutBearer, bodyCopyOf, discard, headersOf, locationOf, signalOf, targetHref, type FetchInit, type FetchInput, type GlobalFetch } from './fetch-values.js';
import { hasAuthorization } from './headers.js';
import { sendFollowingRedirects, type AfterResponse, type SendContext } from './redirects.js';

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
  /**
   * Sends the requests that had to wait for a refresh, and the replays, through this queue — any
   * object with `add(task)`, such as p-queue's `new PQueue({ concurrency: 8 })` — so that the
   * requests released by a refresh do not hit the API in one burst. Requests that did not wait go
   * out at once, unqueued. An aborted request leaves the queue at once.
   * @default none: released requests go out together
   * @example
   * ```ts
   * import PQueue from 'p-queue'
   * withTokenRelay(fetch, manager, { origins, queue: new PQueue({ concurrency: 8 }) })
   * ```
   */
  queue?: RequestQueue;
}

/** Options of {@link installTokenRelay}: as {@link TokenRelayFetchOptions}, with `origins` required. */
export interface InstallTokenRelayOptions extends TokenRelayFetchOptions {
  /** Where the bearer token may be sent; see {@link TokenRelayFetchOptions.origins}. */
  origins: Origins;
}

/**
 * A fetch-shaped function: the global `fetch`, undici's, or any other with its call shape.
 * Structural, so a fetch with Request/Response classes of its own (undici from npm) fits as it is.
 */
export type FetchFunction = (input: never, init?: never) => Promise<FetchResponse>;

/** What the wrapper reads of a response; the global `Response` and undici's both have it. */
export interface FetchResponse {
  readonly status: number;
  readonly url: string;
  readonly headers: { get(name: string): string | null };
  readonly body: { cancel(): Promise<void> } | null;
  clone(): { text(): Promise<string> };
}

/** What fetch resolves a relative URL against: the document's base in a browser; elsewhere nothing. */
function documentBase(): string | undefined {
  const base = (globalThis as { document?: { baseURI?: unknown } }).document?.baseURI ?? locationOf()?.href;
  return typeof base === 'string' ? base : undefined;
}

function failedResponse(response: Response, url: string): FailedResponse {
  let text: Promise<string> | undefined;
  return {
    status: response.status,
    url,
    header: (name) => response.headers.get(name) ?? undefined,
    // A clone, so the caller can still read the body of a response that is returned to them.
    text: () => (text ??= response.clone().text()),
  };
}

/**
 * Wraps a fetch so that requests to `origins` carry `Authorization: Bearer <access token>`
 * from `manager`, and a request that fails for an expired token is replayed once after a
 * (single-flight) refresh.
 *
 * - Requests to other origins, and requests that already carry an `Authorization` header,
 *   are passed to `fetchImpl` exactly as given: no bearer, no refresh.
 * - The URL is read once, when the wrapper is called: the origin check and the send see the
 *   same URL, even if the caller changes a `URL` object afterwards.
 * - Redirects: outside a browser the wrapper follows them itself (as fetch would: at most 20,
 *   301/302 POST and 303 become a GET without a body, every hop keeps the request's cache mode,
 *   credentials, mode, referrer, referrer policy (or the one a redirect's `Referrer-Policy` names),
 *   keepalive and signal, and integrity metadata is checked on the final response), deciding at
 *   every hop whether the bearer may go there, so it never reaches another origin or the token
 *   endpoint. A browser follows redirects out of sight; there the browser drops `Authorization`
 *   on a cross-origin hop. In both, a failed response from a URL outside `origins` (or from the
 *   token endpoint) is returned as it is: no refresh, no replay.
 * - Signed out (the manager holds no tokens: `NO_TOKENS`), a request goes without a bearer and
 *   its answer, a 401 included, goes back to the caller: no token call.
 * - A replayed request is never replayed again: if it fails too, its response is returned.
 * - If the refresh fails, the call rejects with the `TokenRelayError` (e.g. `SESSION_EXPIRED`,
 *   and every later call too, until a sign-in); if the request's signal aborts, it rejects with
 *   the signal's reason at once.
 * - Bad input (an invalid header, an `origins` or `shouldRefresh` that throws) rejects the
 *   returned promise, as fetch does; the wrapper never throws synchronously.
 * - A `Request` sent without an init keeps its referrer and referrer policy, which fetch would reset
 *   for the init that carries the bearer.
 * - Bodies: a `Request` is cloned before it is sent, and bodies given in `init` as a string,
 *   `Blob`, `ArrayBuffer`, typed array, `FormData` or `URLSearchParams` are sent again as they
 *   are. A one-shot body (`init.body` a `ReadableStream` or an async iterable) is never sent
 *   twice: on an auth failure the tokens are still refreshed, so the next call works, and the
 *   caller gets the original failed `Response`.
 *
 * The wrapper has the type of `fetchImpl` (the global fetch, undici's, …) and carries it under
 * `unwrappedFetch`, so the token endpoint call of `refreshTokenGrant` bypasses it.
 *
 * @throws TokenRelayError `CONFIGURATION_ERROR` when `origins` is invalid, or missing outside a browser.
 * @example
 * ```ts
 * const api = withTokenRelay(fetch, manager, { origins: ['https://api.example.com'] })
 * const response = await api('https://api.example.com/me')
 * ```
 */
export function withTokenRelay<F extends FetchFunction>(
  fetchImpl: F,
  manager: TokenManager,
  options: TokenRelayFetchOptions = {},
): F {
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
  // Called with what its caller gave the wrapper, plus headers: whatever its own types, it takes that.
  const send = fetchImpl as unknown as GlobalFetch;
  const bearerOf = (accessToken: string) => bearerAuthorization(accessToken, manager.tokenType);
  /** A first send's final response (after any redirects) as the caller gets it: a failure may still be replayed. */
  const afterResponse: AfterResponse = (response, input, init, accessToken, bodyCopy) =>
    response.status < 400 ? response : afterFailure(response, input, init, accessToken, bodyCopy);
  /** A replay's send, and a send through the queue: its final response goes back as it is. */
  const sendOnly: SendContext = { send, mayCarryBearer, bearerOf, afterResponse: undefined };
  const firstSend: SendContext = { ...sendOnly, afterResponse };

  /**
   * Replays once after a (single-flight) refresh when the failed response says the token is no
   * longer valid; the replay's response goes to the caller as it is.
   */
  async function afterFailure(
    response: Response,
    input: string | Request,
    init: FetchInit,
    tokenUsed: string,
    bodyCopy: Request | undefined,
  ): Promise<Response> {
    // Where the response came from: its own URL when the fetch tells it (after redirects), else the one requested.
    const answeredBy = response.url || targetHref(input);
    // A redirect may end outside `origins`: that server's 401 says nothing about our token.
    if (answeredWithoutBearer.has(response) || !mayCarryBearer(answeredBy)) return response;
    const signal = signalOf(input, init);
    let accessToken: string;
    try {
      if (!(await shouldRefresh(failedResponse(response, answeredBy)))) return response;
      ({ accessToken } = await manager.refresh({ staleAccessToken: tokenUsed, signal }));
    } catch (error) {
      // Signed out meanwhile: the caller gets the server's answer as it is.
      if (isSignedOut(error)) return response;
      discard(response);
      throw error;
    }
    if (isOneShotBody(init?.body)) return response;
    discard(response);
    // The replay sends the body's copy (the first send consumed the caller's); a copy of it for a 307/308 is
    // taken only where redirects are followed hop by hop (redirects.ts).
    return sendThrough(options.queue, () => sendFollowingRedirects(sendOnly, bodyCopy ?? input, init, accessToken, undefined), signal);
  }

  /**
   * Sends with the bearer wherever it may go. Outside a browser redirects are followed hop by hop
   * (redirects.ts); a browser follows them itself (redirects.browser.ts, the browser build's).
   * A response that is neither a redirect nor a failure costs one promise step, in the client's own `then`.
   */
  function sendFirst(input: string | Request, init: FetchInit, accessToken: string, waited: boolean): Promise<Response> {
    const bodyCopy = bodyCopyOf(input, init);
    const { queue } = options;
    if (!waited || queue === undefined) return sendFollowingRedirects(firstSend, input, init, accessToken, bodyCopy);
    // A request that waited for a refresh is released with many others: through the queue. Its slot is
    // freed when the response comes, not held while a failure waits for the next refresh.
    const sent = sendThrough(queue, () => sendFollowingRedirects(sendOnly, input, init, accessToken, bodyCopy), signalOf(input, init));
    return sent.then((response) => afterResponse(response, input, init, accessToken, bodyCopy));
  }

  async function sendAfterWait(input: string | Request, init: FetchInit): Promise<Response> {
    const accessToken = await accessTokenIfSignedIn(manager, { signal: signalOf(input, init) });
    // Signed out: the server decides (a public endpoint answers, a protected one says 401).
    if (accessToken === undefined) return send(input, init);
    return sendFirst(input, init, accessToken, true);
  }

  function relayFetch(input: FetchInput, init?: FetchInit): Promise<Response> {
    try {
      const href = targetHref(input);
      if (!mayCarryBearer(href, documentBase)) return send(input, init);
      if (hasAuthorization(headersOf(input, init))) return send(input, init);
      // Send the URL that was checked (a string: a URL object the caller changes meanwhile does not move it).
      let target: string | Request = href;
      if (isRequest(input)) {
        target = input;
        // fetch resets a Request's referrer and referrer policy for an init with members, as the bearer's is: a Request sent without one keeps its own.
        // (An init whose members are all undefined is empty to fetch too.)
        if (!Object.values(init ?? {}).some((value) => value !== undefined)) init = { referrer: input.referrer, referrerPolicy: input.referrerPolicy };
      }
      const accessToken = manager.currentAccessToken();
      if (accessToken === undefined) return sendAfterWait(target, init);
      return sendFirst(target, init, accessToken, false);
    } catch (error) {
      // As fetch does: bad input rejects, never throws.
      return Promise.reject(error);
    }
  }
  Object.defineProperty(relayFetch, unwrappedFetch, { value: fetchImpl });
  return relayFetch as unknown as F;
}

function browserOrigins(): string[] | undefined {
  const origin = locationOf()?.origin;
  return typeof origin === 'string' && /^https?:\/\//.test(origin) ? [origin] : undefined;
}

/** One `installTokenRelay`: the fetch its wrapper forwards to, and whether it still adds the bearer. */
interface Installation {
  readonly next: typeof fetch;
  active: boolean;
}

/** Installations by wrapper, so a restore can unwind every wrapper that was already restored. */
const installations = new WeakMap<typeof fetch, Installation>();

/**
 * Replaces `globalThis.fetch` with {@link withTokenRelay}`(globalThis.fetch, manager, options)`.
 * Returns `restore`; calling it again does nothing.
 *
 * - `restore` puts back the fetch that was there before, if `globalThis.fetch` is still the
 *   wrapper. If someone wrapped it meanwhile (another install, msw's `server.listen()`), the
 *   wrapper stays in their chain but stops adding the bearer, and is unwound once it is on top
 *   again: whatever the order, restoring every install puts the original fetch back.
 * - It reaches only code that reads `globalThis.fetch` at call time. A client that captured
 *   `fetch` before (`createClient({ fetch })` of openapi-fetch, ky/ofetch instances made
 *   earlier, a module holding `const f = fetch`) never sees it: wrap that client's fetch with
 *   {@link withTokenRelay} instead, or, with undici, route its dispatcher.
 * - With msw: call it after `server.listen()`. msw then answers through the wrapper; installed
 *   before, msw replaces `globalThis.fetch` and answers mocked requests without the bearer.
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
  const installation: Installation = { next: globalThis.fetch, active: true };
  const relay = withTokenRelay(installation.next, manager, options);
  const wrapper: typeof fetch = (input, init) => (installation.active ? relay(input, init) : installation.next(input, init));
  Object.defineProperty(wrapper, unwrappedFetch, { value: installation.next });
  installations.set(wrapper, installation);
  globalThis.fetch = wrapper;
  return () => {
    if (!installation.active) return;
    installation.active = false;
    // Unwind every restored wrapper that is now on top, this one first (a finite chain: each `next` was there before).
    for (let top = installations.get(globalThis.fetch); top && !top.active; top = installations.get(globalThis.fetch)) {
      globalThis.fetch = top.next;
    }
  };
}
