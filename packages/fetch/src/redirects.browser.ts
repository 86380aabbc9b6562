/*
 * Redirects in browsers: the browser build uses this file instead of redirects.ts. A browser
 * follows redirects out of sight (its `redirect: 'manual'` yields an opaque response) and drops
 * `Authorization` on a cross-origin hop, so the wrapper sends the request as it is. redirects.ts
 * sends this way too when fetch will not show it the redirects.
 */
import { headersOf, type FetchInit } from './fetch-values.js';
import { withBearer } from './headers.js';
import type { SendContext } from './redirects.js';

/** Sends `input` with the bearer of `accessToken`; the browser follows any redirect itself. */
export function sendFollowingRedirects(
  { send, bearerOf, afterResponse }: SendContext,
  input: string | Request,
  init: FetchInit,
  accessToken: string,
  bodyCopy: Request | undefined,
): Promise<Response> {
  const sent = send(input, { ...init, headers: withBearer(headersOf(input, init), bearerOf(accessToken)) });
  return afterResponse ? sent.then((response) => afterResponse(response, input, init, accessToken, bodyCopy)) : sent;
}
