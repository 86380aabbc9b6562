/*
 * Redirects in browsers: the browser build uses this file instead of redirects.ts. A browser
 * follows redirects out of sight (its `redirect: 'manual'` yields an opaque response) and drops
 * `Authorization` on a cross-origin hop, so the wrapper sends the request as it is: exactly what
 * redirects.ts does when it finds itself in a browser.
 */
import type { FetchInit } from './fetch-values.js';
import type { RedirectContext } from './redirects.js';

/** Sends `input` with `headers`; the browser follows any redirect itself. */
export function sendFollowingRedirects(
  { send, afterResponse }: RedirectContext,
  input: string | Request,
  init: FetchInit,
  headers: HeadersInit,
  href: string,
  _bearer: string,
  replayInput: string | Request | undefined,
  own: HeadersInit | undefined,
  accessToken: string,
): Promise<Response> {
  const sent = send(input, { ...init, headers });
  return replayInput === undefined ? sent : sent.then((response) => afterResponse(response, replayInput, init, own, href, accessToken));
}
