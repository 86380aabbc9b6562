/*
 * Redirects outside browsers. There fetch shows each redirect (`redirect: 'manual'`), so the
 * wrapper follows them itself, as fetch would (at most 20; 301/302 POST and 303 become a GET
 * without a body), deciding at every hop whether the bearer may go there. A browser cannot: its
 * `redirect: 'manual'` yields an opaque response, and it follows redirects out of sight. The
 * browser build uses redirects.browser.ts instead of this file, which browsers never run.
 */
import { isOneShotBody, isRequest } from '@tokenrelay/core/kit';
import { answeredWithoutBearer, bodyCopyOf, discard, headersOf, locationOf, targetHref, type FetchInit, type GlobalFetch } from './fetch-values.js';
import { withBearer } from './headers.js';
import { sendFollowingRedirects as sendAsGiven } from './redirects.browser.js';

/*
 * A send is given the caller's request as `input` (the URL that was checked, as a string: a URL object
 * changed meanwhile does not move it; or a Request) and `init`, the `accessToken` it goes with (what a
 * refresh for its failure names as stale), and `bodyCopy`: a clone of a Request's body, taken before
 * the send consumes `input`'s, which a first send's replay sends and a 307/308 reads (through a clone
 * of its own, so it stays whole for the replay); `undefined` without a Request body (a body given in
 * `init` is sent again as it is). Its URL, headers and signal are read from `input` and `init` where
 * needed (fetch-values.ts). Arguments, not an object: every request would allocate that object.
 */

/**
 * What the wrapper does with the final response of a first send (after any redirects), in the same
 * promise step, with what the send was given. One function for every request, so a send allocates no closure for it.
 */
export type AfterResponse = (
  response: Response,
  input: string | Request,
  init: FetchInit,
  accessToken: string,
  bodyCopy: Request | undefined,
) => Response | Promise<Response>;

/** What a send needs of the wrapper; one per wrapper and kind of send. */
export interface SendContext {
  readonly send: GlobalFetch;
  /** May the bearer go to this URL? */
  readonly mayCarryBearer: (url: string) => boolean;
  /** The `Authorization` value for an access token (`Bearer …`, or `DPoP …` for a DPoP-bound one). */
  readonly bearerOf: (accessToken: string) => string;
  /**
   * What a first send does with its final response; `undefined` for a replay (never replayed
   * again) and for a send through the queue (judged once it has left the queue).
   */
  readonly afterResponse: AfterResponse | undefined;
}

/** fetch's own limit (Fetch Standard, HTTP-redirect fetch). */
const MAX_REDIRECTS = 20;
const redirectStatuses = new Set([301, 302, 303, 307, 308]);
/** Headers fetch drops when a redirect turns the request into a GET without a body. */
const requestBodyHeaders = ['content-encoding', 'content-language', 'content-location', 'content-type'];
/** Headers fetch (undici) drops when a redirect leaves the origin. */
const crossOriginHeaders = ['authorization', 'cookie', 'proxy-authorization'];
/**
 * The members of a Request given as input that fetch sends it with and a redirect's next request
 * keeps (HTTP-redirect fetch), beside its URL, method, headers and body. Its referrer and referrer
 * policy come in `init` (the wrapper puts them there for a Request sent without one).
 */
const keptRequestMembers = ['cache', 'credentials', 'keepalive', 'mode', 'signal'] as const;
/** The referrer policies a redirect's `Referrer-Policy` header may give the next request (Referrer Policy §3). */
const referrerPolicies = new Set<string>([
  'no-referrer',
  'no-referrer-when-downgrade',
  'same-origin',
  'origin',
  'strict-origin',
  'origin-when-cross-origin',
  'strict-origin-when-cross-origin',
  'unsafe-url',
]);
/** The hash functions of integrity metadata (Subresource Integrity), weakest first. */
const integrityHashes = ['sha256', 'sha384', 'sha512'];

/**
 * A browser (or worker) fetch follows redirects out of sight: `redirect: 'manual'` only yields an
 * opaque response. Elsewhere (Node, Deno, Bun) we follow them ourselves to judge every hop.
 */
const hidesRedirects = () => locationOf() !== undefined;

/** What a 307/308 sends again: the body given in `init`, or a reader of a Request's copy, read when such a redirect first needs it. */
type ResendableBody = BodyInit | (() => Promise<ArrayBuffer>) | undefined;

/**
 * One request of a redirect chain: `init` is what it is sent with (the first one's, without the
 * bearer, is the template of the next); `body` what a 307/308 sends again.
 */
interface Hop {
  readonly url: string;
  readonly method: string;
  readonly body: ResendableBody;
  readonly init: RequestInit;
}

/** The next request of a redirect, as fetch builds it, with headers of its own; `undefined` when fetch would return `response` as it is. */
async function nextHop(response: Response, hop: Hop, hops: number): Promise<(Hop & { readonly init: { headers: Headers } }) | undefined> {
  const location = response.headers.get('location');
  if (!redirectStatuses.has(response.status) || location === null) return undefined;
  const url = new URL(location, hop.url);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`fetch failed: redirect to ${url.protocol}`);
  if (hops >= MAX_REDIRECTS) throw new TypeError('fetch failed: redirect count exceeded');
  // As fetch: a streamed body stops any redirect but a 303, even one that would turn the request into a GET.
  if (response.status !== 303 && isOneShotBody(hop.body)) throw new TypeError('fetch failed: cannot follow a redirect with a streamed body');
  const headers = new Headers(hop.init.headers);
  const toGet =
    ((response.status === 301 || response.status === 302) && hop.method === 'POST') ||
    (response.status === 303 && hop.method !== 'GET' && hop.method !== 'HEAD');
  let body: BodyInit | undefined;
  if (toGet) {
    for (const name of requestBodyHeaders) headers.delete(name);
  } else {
    body = typeof hop.body === 'function' ? await hop.body() : hop.body;
  }
  if (url.origin !== new URL(hop.url).origin) for (const name of crossOriginHeaders) headers.delete(name);
  const method = toGet ? 'GET' : hop.method;
  const referrerPolicy = referrerPolicyOf(response);
  return { url: url.href, method, body, init: { ...hop.init, method, body, headers, ...(referrerPolicy && { referrerPolicy }) } };
}

/** The referrer policy a redirect gives the next request: the last valid one its `Referrer-Policy` names, if any. */
function referrerPolicyOf(response: Response): ReferrerPolicy | undefined {
  const named = response.headers.get('referrer-policy')?.split(',').reverse() ?? [];
  return named.map((policy) => policy.trim()).find((policy) => referrerPolicies.has(policy)) as ReferrerPolicy | undefined;
}

/** Follows the redirects of `response` hop by hop, so the bearer never follows one to an origin (or the token endpoint) it may not reach. */
async function followRedirects({ send, mayCarryBearer }: SendContext, response: Response, first: Hop, bearer: string): Promise<Response> {
  // As fetch, which never puts back an Authorization it dropped: once a hop may not have the bearer,
  // no later hop gets it back (a server outside `origins` must not choose where, how and with what body it goes).
  let carriesBearer = true;
  // Bounded: nextHop throws after MAX_REDIRECTS hops.
  for (let hop = first, hops = 0; ; hops++) {
    const next = await nextHop(response, hop, hops).catch((error: unknown) => {
      // A redirect that is not followed (refused, too many) frees its connection too.
      discard(response);
      throw error;
    });
    if (next === undefined) return response;
    discard(response);
    carriesBearer &&= mayCarryBearer(next.url);
    if (carriesBearer) next.init.headers.set('authorization', bearer);
    else next.init.headers.delete('authorization');
    response = await send(next.url, next.init);
    if (!carriesBearer) answeredWithoutBearer.add(response);
    Object.defineProperty(response, 'redirected', { value: true });
    hop = next;
  }
}

/**
 * The first request of a redirect chain, as the template of the next: what fetch sends `input` and
 * `init` with (the Request's members, `init`'s in their place), without the bearer and the integrity
 * metadata (checked once, on the final response), and the body a 307/308 sends again: `init`'s, or
 * read from the Request's copy.
 */
function firstHop(input: string | Request, init: FetchInit, bodyCopy: Request | undefined): Hop {
  const hopInit: Record<string, unknown> = {};
  // A member the runtime leaves out (workerd has no credentials or mode) is not sent: workerd refuses one it lacks.
  if (isRequest(input)) for (const name of keptRequestMembers) if (input[name] !== undefined) hopInit[name] = input[name];
  for (const [name, value] of Object.entries(init ?? {})) if (value !== undefined) hopInit[name] = value;
  Object.assign(hopInit, { headers: headersOf(input, init), redirect: 'manual', integrity: '' });
  const body = init?.body ?? (bodyCopy && (() => bodyCopy.clone().arrayBuffer()));
  const method = (init?.method ?? (isRequest(input) ? input.method : 'GET')).toUpperCase();
  return { url: targetHref(input), method, body, init: hopInit };
}

/**
 * fetch's integrity check (Subresource Integrity) of a chain's final response: its body must match a
 * digest of the strongest hash function `metadata` names (metadata naming none passes). Sent hop by
 * hop, the chain goes without the metadata, which fetch would check against every redirect's body.
 */
async function checkIntegrity(response: Response, metadata: string): Promise<Response> {
  // As Subresource Integrity parses it (and undici 7): every token that names a known hash function counts,
  // whatever its value (an empty or garbled one then never matches); options after `?` are left out.
  const digests = metadata.split(/\s+/).flatMap((token) => {
    const [expression = ''] = token.split('?');
    const dash = expression.indexOf('-');
    const hash = expression.slice(0, dash).toLowerCase();
    if (dash < 0 || !integrityHashes.includes(hash)) return [];
    // base64 or base64url, without its padding (two `=` at most)
    return [{ hash, digest: expression.slice(dash + 1).replace(/={1,2}$/, '').replace(/-/g, '+').replace(/_/g, '/') }];
  });
  const strongest = integrityHashes[Math.max(...digests.map(({ hash }) => integrityHashes.indexOf(hash)))];
  if (strongest === undefined) return response;
  const bytes = new Uint8Array(await crypto.subtle.digest(`SHA-${strongest.slice(3)}`, await response.clone().arrayBuffer()));
  const actual = btoa(String.fromCharCode(...bytes)).replace(/=+$/, '');
  if (digests.some(({ hash, digest }) => hash === strongest && digest === actual)) return response;
  discard(response);
  throw new TypeError('fetch failed: integrity mismatch');
}

/**
 * Sends `input` with the bearer of `accessToken`; when fetch is to follow redirects and shows them,
 * follows them hop by hop. `context.afterResponse` runs on the final response in the step that
 * judges the redirect, so a response that is no redirect costs one promise step of ours, or none
 * without it.
 */
export function sendFollowingRedirects(
  context: SendContext,
  input: string | Request,
  init: FetchInit,
  accessToken: string,
  bodyCopy: Request | undefined,
): Promise<Response> {
  const redirect = init?.redirect ?? (isRequest(input) ? input.redirect : 'follow');
  // Redirects fetch follows out of sight, or the caller's to handle: the request goes as a browser sends it.
  if (redirect !== 'follow' || hidesRedirects()) return sendAsGiven(context, input, init, accessToken, bodyCopy);
  // A replay brings no copy of its body: a 307/308 needs one, taken before the send consumes the body.
  bodyCopy ??= bodyCopyOf(input, init);
  const integrity = init?.integrity ?? (isRequest(input) ? input.integrity : '');
  // `send` is called as a plain function: a fetch may refuse a foreign `this`.
  const { send } = context;
  const headers = withBearer(headersOf(input, init), context.bearerOf(accessToken));
  const sent = send(input, { ...init, headers, redirect: 'manual', ...(integrity && { integrity: '' }) });
  return sent.then((response) => {
    const { afterResponse } = context;
    const redirected = redirectStatuses.has(response.status);
    if (!redirected && !integrity) return afterResponse ? afterResponse(response, input, init, accessToken, bodyCopy) : response;
    // The hop is built only when a redirect comes; followRedirects sets or drops the bearer at each hop.
    const followed = redirected ? followRedirects(context, response, firstHop(input, init, bodyCopy), context.bearerOf(accessToken)) : Promise.resolve(response);
    const final = integrity ? followed.then((last) => checkIntegrity(last, integrity)) : followed;
    return afterResponse ? final.then((last) => afterResponse(last, input, init, accessToken, bodyCopy)) : final;
  });
}
