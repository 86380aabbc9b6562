/*
 * What HTTP-client adapters share. An adapter maps its client's request/response onto these
 * and onto TokenManager.getAccessToken / refresh; it holds no refresh logic of its own.
 */
import { abortable } from './delay.js';
import { ErrorCode, TokenRelayError, configurationError, isTokenRelayError } from './errors.js';
import type { GetAccessTokenOptions, TokenManager } from './types.js';

/**
 * Where the bearer token may be sent: a list of origins (`https://api.example.com`; scheme,
 * host and port are compared, any path is ignored), or a predicate for anything finer.
 */
export type Origins = ReadonlyArray<string | URL> | ((url: URL) => boolean);

/** What `shouldRefresh` is told about a failed response (status ≥ 400), whatever the HTTP client. */
export interface FailedResponse {
  /** HTTP status code. */
  readonly status: number;
  /** The absolute URL the request went to. */
  readonly url: string;
  /** A response header, case-insensitive; `undefined` when absent. */
  header(name: string): string | undefined;
  /** The response body as text. Does not consume the body the caller will read. */
  text(): Promise<string>;
}

/**
 * Decides whether a failed response means "the access token is no longer valid": then the
 * tokens are refreshed and the request replayed once. May be async (to read the body).
 */
export type ShouldRefresh = (response: FailedResponse) => boolean | Promise<boolean>;

/** One challenge of a `WWW-Authenticate` header: its scheme (lower-cased) and its parameters. */
export interface AuthChallenge {
  readonly scheme: string;
  readonly params: Readonly<Record<string, string>>;
}

const tokenChar = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

/**
 * Parses a `WWW-Authenticate` header (RFC 9110 §11.6.1) into its challenges, e.g.
 * `Bearer realm="api", error="invalid_token", DPoP algs="ES256"` → two challenges.
 * Malformed parts are skipped rather than thrown on: this only informs a decision.
 */
export function parseWwwAuthenticate(header: string | undefined): AuthChallenge[] {
  const challenges: { scheme: string; params: Record<string, string> }[] = [];
  if (!header) return challenges;
  let index = 0;
  const skip = (pattern: RegExp) => {
    while (index < header.length && pattern.test(header.charAt(index))) index++;
  };
  const readToken = () => {
    const start = index;
    while (index < header.length && tokenChar.test(header.charAt(index))) index++;
    return header.slice(start, index);
  };
  const readValue = () => {
    if (header.charAt(index) !== '"') return readToken();
    let value = '';
    index++;
    while (index < header.length && header.charAt(index) !== '"') {
      if (header.charAt(index) === '\\') index++;
      value += header.charAt(index);
      index++;
    }
    index++;
    return value;
  };
  while (index < header.length) {
    skip(/[\s,]/);
    const word = readToken();
    if (!word) {
      index++;
      continue;
    }
    skip(/\s/);
    const current = challenges.at(-1);
    if (header.charAt(index) === '=' && current && header.charAt(index + 1) !== '=') {
      index++;
      skip(/\s/);
      current.params[word.toLowerCase()] = readValue();
    } else if (header.charAt(index) === '=') {
      // token68 (e.g. `Negotiate abc==`): not a parameter list; skip it.
      skip(/=/);
    } else {
      challenges.push({ scheme: word.toLowerCase(), params: {} });
    }
  }
  return challenges;
}

/**
 * The default {@link ShouldRefresh}: a 401 whose `WWW-Authenticate` does not say otherwise.
 * - 401 with `Bearer error="invalid_token"` or no error, or with no header at all: refresh.
 * - 401 with a Bearer error other than `invalid_token` (`invalid_request`, `insufficient_scope`): no.
 * - 401 with `DPoP error="invalid_token"` or no error: refresh, as for Bearer.
 * - 401 with `DPoP error="use_dpop_nonce"` or `"invalid_dpop_proof"`: no (a new proof is needed, not a new token).
 * - Any other status, 403 `insufficient_scope` included: no.
 */
export function defaultShouldRefresh(response: FailedResponse): boolean {
  if (response.status !== 401) return false;
  // The error the server names (Bearer's or DPoP's; other schemes name none), none counting as an
  // invalid token: `use_dpop_nonce` and `invalid_dpop_proof` ask for a new proof, not a new token.
  const error = parseWwwAuthenticate(response.header('www-authenticate')).find((challenge) => challenge.params.error)?.params.error;
  return (error ?? 'invalid_token') === 'invalid_token';
}

const endpointKey = (url: URL) => url.origin + url.pathname;

/**
 * From `lastIndex` on: a path the URL parser keeps exactly as written (no dot segment, percent
 * sign, backslash or character it would encode or strip), up to the query, the fragment or the end.
 */
const literalPathFrom = /(?:\/(?!\.\.?(?:[/?#]|$))[\w\-.~!$&'()*+,;=:@]*)*(?=[?#]|$)/y;

/**
 * `text.startsWith(part, index)` at a fraction of its cost on a hot path: V8's `startsWith` first
 * checks that its argument is no RegExp.
 */
const startsAt = (text: string, part: string, index: number) => text.lastIndexOf(part, index) === index;

/** Does the authority of `url` (which starts with an origin) end at `index`: at `/`, `?`, `#` or the end? */
function authorityEndsAt(url: string, index: number): boolean {
  const next = url.charCodeAt(index);
  // Anything else (`:90`, `.`, `@`, `\`) needs the parser.
  return next === 47 || next === 63 || next === 35 || Number.isNaN(next);
}

/**
 * Is the path of `url` from `start` exactly `wanted` as the URL parser would read it? `undefined`
 * when the path must be parsed to know.
 */
function pathIs(url: string, start: number, wanted: string): boolean | undefined {
  literalPathFrom.lastIndex = start;
  if (!literalPathFrom.test(url)) return undefined;
  const length = literalPathFrom.lastIndex - start;
  // An empty path is `/`.
  return length === 0 ? wanted === '/' : length === wanted.length && startsAt(url, wanted, start);
}

/**
 * Builds the test an adapter runs on every request URL: may the bearer go there? True only
 * for the configured origins, and never for the token endpoint itself.
 *
 * A URL string, or a `URL` object's `href`, that starts with an allowed origin (as `URL#origin`
 * writes it) is decided by string comparison, with no URL parsing: what every request pays (its
 * path is read only on the token endpoint's origin, and compared as a string when the parser would
 * keep it as written). Any other string is parsed against `base` (a relative URL in a browser; a
 * function is called only then); one that does not parse never matches. A predicate `origins`
 * always gets a parsed URL: a `URL` object as it is.
 *
 * @throws TokenRelayError `CONFIGURATION_ERROR` for an empty list or an entry that is not an
 *   absolute http(s) URL.
 */
export function createOriginMatcher(
  origins: Origins,
  tokenEndpoint?: string,
): (url: string | URL, base?: string | (() => string | undefined)) => boolean {
  const tokenEndpointUrl = tokenEndpoint === undefined ? undefined : new URL(tokenEndpoint);
  const tokenEndpointKey = tokenEndpointUrl && endpointKey(tokenEndpointUrl);
  // Read once: a URL's getters build a new string on every call.
  const tokenEndpointOrigin = tokenEndpointUrl?.origin;
  const tokenEndpointPath = tokenEndpointUrl?.pathname;
  const notTokenEndpoint = (url: URL) => tokenEndpointKey === undefined || endpointKey(url) !== tokenEndpointKey;
  const parse = (url: string | URL, base: string | (() => string | undefined) | undefined) => {
    if (typeof url !== 'string') return url;
    try {
      return new URL(url, typeof base === 'function' ? base() : base);
    } catch {
      return undefined;
    }
  };
  if (typeof origins === 'function') {
    return (url, base) => {
      const parsed = parse(url, base);
      return parsed !== undefined && notTokenEndpoint(parsed) && origins(parsed);
    };
  }
  if (!Array.isArray(origins) || origins.length === 0) {
    throw new TokenRelayError(
      ErrorCode.CONFIGURATION_ERROR,
      'origins must list at least one origin the access token may be sent to, e.g. ["https://api.example.com"]',
    );
  }
  const allowed = new Set(
    origins.map((origin: string | URL) => {
      let parsed: URL;
      try {
        parsed = new URL(origin);
      } catch {
        throw new TokenRelayError(ErrorCode.CONFIGURATION_ERROR, `origins: "${String(origin)}" is not an absolute URL`);
      }
      if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') {
        throw new TokenRelayError(ErrorCode.CONFIGURATION_ERROR, `origins: "${String(origin)}" is not an http(s) origin`);
      }
      return parsed.origin;
    }),
  );
  const allowedList = [...allowed];
  return (url, base) => {
    // A URL object's `href` is a string it keeps (its `origin` and `pathname` are built on every read), as the parser wrote it.
    const text = typeof url === 'string' ? url : url.href;
    for (let index = 0; index < allowedList.length; index++) {
      const origin = allowedList[index] as string;
      if (!startsAt(text, origin, 0)) continue;
      if (!authorityEndsAt(text, origin.length)) break;
      // Only the token endpoint's own origin needs its path read.
      if (tokenEndpointOrigin !== origin) return true;
      const isTokenEndpoint = pathIs(text, origin.length, tokenEndpointPath as string);
      if (isTokenEndpoint === undefined) break;
      return !isTokenEndpoint;
    }
    const parsed = parse(url, base);
    return parsed !== undefined && allowed.has(parsed.origin) && notTokenEndpoint(parsed);
  };
}

const loopbackHost = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/;

/** Is `hostname` (a `URL`'s, so IPv6 in brackets) a loopback host: `localhost`, `127.0.0.0/8` or `[::1]`? */
export function isLoopbackHostname(hostname: string): boolean {
  return loopbackHost.test(hostname);
}

/**
 * May credentials be sent to `url`? Only over `https:`, or plain `http:` to a loopback host
 * (`localhost`, `127.0.0.0/8`, `[::1]`) for local development and tests.
 */
export function isSecureOrLoopback(url: URL): boolean {
  return url.protocol === 'https:' || (url.protocol === 'http:' && isLoopbackHostname(url.hostname));
}

/**
 * Is `error` the manager saying it holds no tokens (`NO_TOKENS`: never signed in, or signed out
 * with `clear()`)? Then an adapter sends the request without a bearer and lets the server decide,
 * and a 401 for it goes back to the caller as it is, with no token call: a signed-out app can
 * still reach public endpoints. `SESSION_EXPIRED` is not this: a request after it rejects with
 * that typed error, the app's cue to sign in again.
 */
export function isSignedOut(error: unknown): boolean {
  return isTokenRelayError(error) && error.code === ErrorCode.NO_TOKENS;
}

/**
 * The access token an adapter puts on a request, or `undefined` when the manager is signed out
 * (see {@link isSignedOut}): the request then goes without a bearer. Any other failure rejects.
 */
export function accessTokenIfSignedIn(
  manager: Pick<TokenManager, 'getAccessToken'>,
  options?: GetAccessTokenOptions,
): Promise<string | undefined> {
  // One promise step after the manager's (a released waiter is sent sooner), and a manager that throws still rejects.
  try {
    return manager.getAccessToken(options).then(undefined, orUndefinedIfSignedOut);
  } catch (error) {
    return Promise.reject(error);
  }
}

function orUndefinedIfSignedOut(error: unknown): undefined {
  if (isSignedOut(error)) return undefined;
  throw error;
}

/**
 * Where adapters send the requests that waited for a refresh, and the replays: any object with
 * `add(task)` that runs `task` when it has room and resolves with its result — p-queue's `PQueue`
 * (`new PQueue({ concurrency: 8 })`) is one. Then releasing thousands of waiters after a refresh
 * does not hit the API in one burst (rate limits; Salesforce's limit on concurrent long requests).
 */
export interface RequestQueue {
  add<T>(task: () => Promise<T>): Promise<T>;
}

/**
 * One request of a door that sends with DPoP proofs (RFC 9449) through {@link DpopSender.send}:
 * what it goes to, and how the door sends it and reads the answer.
 */
export interface DpopRequest<R> {
  /** The HTTP method. */
  readonly method: string;
  /** The absolute URL (a query and fragment are left out of the proof). */
  readonly url: string;
  /** The `Authorization` header the request carries: `DPoP <token>` puts the token's hash (`ath`) in the proof. */
  readonly authorization: string | undefined;
  /** The request body: one that can be read only once (a stream) is never sent again. */
  readonly body?: unknown;
  /** Sends the request once with header `DPoP: <proof>`. */
  attempt(proof: string): Promise<R>;
  /** What the answer of an attempt says: its `DPoP-Nonce` is kept, and a nonce challenge is retried. */
  answerOf(result: R): Pick<FailedResponse, 'status' | 'header' | 'text'>;
  /** Lets go of an answer that is not returned (one answered by a retry). */
  discard?(result: R): void;
}

/**
 * What a door needs of `@tokenrelay/dpop`'s `createDpop()` to put DPoP proofs on its requests:
 * core knows no DPoP beyond this shape. `send` makes a fresh proof per attempt, keeps the servers'
 * nonces per origin, and sends once more on a nonce challenge.
 */
export interface DpopSender {
  send<R>(request: DpopRequest<R>): Promise<R>;
}

/**
 * Runs `send` through `queue` when there is one; rejects at once with the signal's reason when
 * `signal` aborts while the task still waits for its turn (the task then finds the signal
 * aborted and ends at once too).
 */
export function sendThrough<T>(queue: RequestQueue | undefined, send: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  return queue ? abortable(queue.add(send), signal) : send();
}

/**
 * Waits for a place in `queue` for an exchange whose end the door sees only later (a dispatch, an
 * HTTP request's close): resolves with the function that gives the place back, once however often it
 * is called. Rejects at once with the signal's reason when `signal` aborts first; the place, when its
 * turn comes, is then given back at once.
 */
export function queuePlace(queue: RequestQueue, signal: AbortSignal | undefined): Promise<() => void> {
  // Already aborted: no dead entry waits its turn in the queue.
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((granted, refused) => {
    sendThrough(
      queue,
      () =>
        new Promise<void>((free) => {
          if (signal?.aborted) return free();
          granted(() => free());
        }),
      signal,
    ).catch(refused);
  });
}

let lastAccessToken: string | undefined;
let lastTokenType: string | undefined;
let lastAuthorization = '';

/**
 * The `Authorization` header value for an access token: `DPoP <token>` when its `tokenType` is DPoP
 * (RFC 9449, case-insensitive), else `Bearer <token>`. Adapters pass `manager.tokenType`. The last
 * one is kept: every request sends the same token until a refresh, and one string (a JWT is about a
 * kilobyte) is flattened once, not per request.
 */
export function bearerAuthorization(accessToken: string, tokenType?: string): string {
  if (accessToken !== lastAccessToken || tokenType !== lastTokenType) {
    lastAccessToken = accessToken;
    lastTokenType = tokenType;
    lastAuthorization = `${tokenType?.toLowerCase() === 'dpop' ? 'DPoP' : 'Bearer'} ${accessToken}`;
  }
  return lastAuthorization;
}

let lastChecked = '';
let lastCheckedIsDpop = false;

/**
 * For a door that puts no DPoP proofs on its requests: a `CONFIGURATION_ERROR` saying which doors
 * do, when the `authorization` it would send (from {@link bearerAuthorization}) is a DPoP one, which
 * the server refuses without a proof; else `undefined`. The verdict is kept for the last value
 * checked: it changes only with the token, and {@link bearerAuthorization} gives the same string
 * until then, so a request checks one it was given before by identity.
 */
export function dpopUnsupported(door: string, authorization: string): TokenRelayError | undefined {
  if (authorization !== lastChecked) {
    lastChecked = authorization;
    lastCheckedIsDpop = authorization.startsWith('DPoP ');
  }
  return lastCheckedIsDpop
    ? configurationError(
        `${door} sends no DPoP proofs, and this session's tokens are DPoP-bound: send its requests through ` +
          "@tokenrelay/fetch's withTokenRelay(dpop.fetch, manager), axios with attachTokenRelay + attachDpop, or " +
          "tokenRelayInterceptor(manager, { origins, dpop }) of @tokenrelay/undici (dpop: @tokenrelay/dpop's createDpop())",
      )
    : undefined;
}

/**
 * A fetch wrapper made by tokenrelay carries the fetch it wraps under this key, so the token
 * endpoint call can unwrap it and never pass through our own interceptor. `Symbol.for`, so it
 * is shared by every installed copy.
 */
export const unwrappedFetch: unique symbol = Symbol.for('tokenrelay.unwrappedFetch');

/** Is `input` (what fetch takes) a `Request`? Told by shape, so another realm's or a polyfill's counts too. */
export function isRequest(input: string | URL | Request): input is Request {
  return typeof input === 'object' && !(input instanceof URL) && typeof input.url === 'string';
}

/**
 * A ReadableStream or an async iterable can be read only once: a request carrying one is never
 * sent twice (not replayed after a refresh, not retried for a DPoP nonce).
 */
export function isOneShotBody(body: unknown): boolean {
  return (
    typeof body === 'object' &&
    body !== null &&
    (typeof (body as { getReader?: unknown }).getReader === 'function' || Symbol.asyncIterator in body)
  );
}
