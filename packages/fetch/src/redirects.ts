/*
 * Redirects outside browsers. There fetch shows each redirect (`redirect: 'manual'`), so the
 * wrapper follows them itself, as fetch would (at most 20; 301/302 POST and 303 become a GET
 * without a body), deciding at every hop whether the bearer may go there. A browser cannot: its
 * `redirect: 'manual'` yields an opaque response, and it follows redirects out of sight. The
 * browser build uses redirects.browser.ts instead of this file, which browsers never run.
 */
import { isOneShotBody, isRequest } from '@tokenrelay/core/kit';
import { discard, locationOf, type FetchInit, type GlobalFetch } from './fetch-values.js';

/**
 * What the wrapper does with the final response of a first send (after any redirects), in the same
 * promise step. One function for every request: what it needs of the request comes as arguments
 * (`init` and `href` as the send got them, the rest passed through), so a send allocates no closure for it.
 */
export type AfterResponse = (
  response: Response,
  replayInput: string | Request,
  init: FetchInit,
  own: HeadersInit | undefined,
  href: string,
  accessToken: string,
) => Response | Promise<Response>;

/** What the redirect following needs of the wrapper. */
export interface RedirectContext {
  readonly send: GlobalFetch;
  /** May the bearer go to this URL? */
  readonly mayCarryBearer: (url: string) => boolean;
  /** What a first send does with its final response. */
  readonly afterResponse: AfterResponse;
}

/** fetch's own limit (Fetch Standard, HTTP-redirect fetch). */
const MAX_REDIRECTS = 20;
const redirectStatuses = new Set([301, 302, 303, 307, 308]);
/** Headers fetch drops when a redirect turns the request into a GET without a body. */
const requestBodyHeaders = ['content-encoding', 'content-language', 'content-location', 'content-type'];
/** Headers fetch (undici) drops when a redirect leaves the origin. */
const crossOriginHeaders = ['authorization', 'cookie', 'proxy-authorization'];

/**
 * A browser (or worker) fetch follows redirects out of sight: `redirect: 'manual'` only yields an
 * opaque response. Elsewhere (Node, Deno, Bun) we follow them ourselves to judge every hop.
 */
const hidesRedirects = () => locationOf() !== undefined;

/** One request of a redirect chain. `body` is a function when it is read only if a 307/308 needs it again. */
interface Hop {
  url: string;
  method: string;
  body: BodyInit | (() => Promise<ArrayBuffer>) | undefined;
  init: RequestInit & { headers: HeadersInit };
}

/** The next request of a redirect, as fetch builds it; `undefined` when fetch would return `response` as it is. */
async function nextHop(response: Response, hop: Hop, hops: number): Promise<Hop | undefined> {
  const location = response.headers.get('location');
  if (!redirectStatuses.has(response.status) || location === null) return undefined;
  const url = new URL(location, hop.url);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`fetch failed: redirect to ${url.protocol}`);
  if (hops >= MAX_REDIRECTS) throw new TypeError('fetch failed: redirect count exceeded');
  const headers = new Headers(hop.init.headers);
  const toGet =
    ((response.status === 301 || response.status === 302) && hop.method === 'POST') ||
    (response.status === 303 && hop.method !== 'GET' && hop.method !== 'HEAD');
  let { body } = hop;
  if (toGet) {
    body = undefined;
    for (const name of requestBodyHeaders) headers.delete(name);
  } else if (typeof body === 'function') {
    body = await body();
  } else if (isOneShotBody(body)) {
    throw new TypeError('fetch failed: cannot follow a redirect with a streamed body');
  }
  if (url.origin !== new URL(hop.url).origin) for (const name of crossOriginHeaders) headers.delete(name);
  return { url: url.href, method: toGet ? 'GET' : hop.method, body, init: { ...hop.init, headers } };
}

/** Follows the redirects of `response` hop by hop, so the bearer never follows one to an origin (or the token endpoint) it may not reach. */
async function followRedirects({ send, mayCarryBearer }: RedirectContext, response: Response, hop: Hop, bearer: string): Promise<Response> {
  let next: Hop | undefined = hop;
  for (let hops = 0; (next = await nextHop(response, next, hops)); hops++) {
    discard(response);
    const hopHeaders = new Headers(next.init.headers);
    if (mayCarryBearer(next.url)) hopHeaders.set('authorization', bearer);
    else hopHeaders.delete('authorization');
    const body = typeof next.body === 'function' ? undefined : next.body;
    response = await send(next.url, { ...next.init, method: next.method, body, headers: hopHeaders });
    Object.defineProperty(response, 'redirected', { value: true });
  }
  return response;
}

/**
 * Sends `input` with `headers` (which carry `bearer`); when fetch is to follow redirects and shows
 * them, follows them hop by hop. For a first send (`replayInput` given) `context.afterResponse` runs
 * on the final response in the step that judges the redirect, with `own` and `accessToken` passed
 * through, so a response that is no redirect costs one promise step of ours, or none for a replay.
 */
export function sendFollowingRedirects(
  context: RedirectContext,
  input: string | Request,
  init: FetchInit,
  headers: HeadersInit,
  href: string,
  bearer: string,
  replayInput: string | Request | undefined,
  own: HeadersInit | undefined,
  accessToken: string,
): Promise<Response> {
  const { send, afterResponse } = context;
  const request = isRequest(input) ? input : undefined;
  const redirect = init?.redirect ?? (request ? request.redirect : 'follow');
  if (redirect !== 'follow' || hidesRedirects()) {
    const sent = send(input, { ...init, headers });
    return replayInput === undefined ? sent : sent.then((response) => afterResponse(response, replayInput, init, own, href, accessToken));
  }
  // A 307/308 sends the body again: keep a copy of a Request's, read only if that happens.
  const spare = request?.body ? request.clone() : undefined;
  const first = { ...init, headers, redirect: 'manual' as const };
  return send(input, first).then((response) => {
    if (!redirectStatuses.has(response.status)) {
      return replayInput === undefined ? response : afterResponse(response, replayInput, init, own, href, accessToken);
    }
    // The hop is built only when a redirect comes.
    const hop: Hop = {
      url: href,
      method: (init?.method ?? request?.method ?? 'GET').toUpperCase(),
      body: init?.body ?? (spare ? () => spare.arrayBuffer() : undefined),
      init: { ...first, signal: init?.signal ?? request?.signal },
    };
    const followed = followRedirects(context, response, hop, bearer);
    return replayInput === undefined ? followed : followed.then((final) => afterResponse(final, replayInput, init, own, href, accessToken));
  });
}
