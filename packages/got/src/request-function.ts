/*
 * The got door's last step before got creates an HTTP request: got calls the `request` function of the
 * attempt's options after every `beforeRequest` hook, so a function put there for one attempt is where
 * the bearer goes on (only on the wire, never into the options got keeps and puts on its errors) and
 * where the queue waits. got copies the options to a retry or a redirect hop, which starts again from
 * the function the wrapper replaced.
 */
import type { NormalizedOptions, RequestFunction } from 'got';

/** The `request` function a wrapper replaced, kept on the wrapper. */
const replacedRequest = Symbol('tokenRelayReplacedRequest');

type WrappedRequestFunction = RequestFunction & { [replacedRequest]?: RequestFunction | undefined };

type NativeRequestOptions = Parameters<RequestFunction>[1];

/** What a `request` function gives got: an HTTP request, or a response of the caller's own function. */
export type Sent = NonNullable<Awaited<ReturnType<RequestFunction>>>;

/**
 * Creates the attempt's HTTP request, with `headers` added to those got hands over: by the caller's
 * `request` function, else by got's own for the URL.
 */
export type CreateRequest = (headers?: Record<string, string>) => Promise<Sent>;

/**
 * Gives `options` back the `request` function a wrapper of a past attempt replaced: one got never
 * called (something after the hooks threw, and got retries with a copy of the options).
 */
export function unwrapRequestFunction(options: NormalizedOptions): void {
  const request = options.request as WrappedRequestFunction | undefined;
  if (request !== undefined && replacedRequest in request) options.request = request[replacedRequest];
}

/**
 * Makes got create this attempt's HTTP request through `around`. Once only: the function it replaced is put back as got calls it, so got's copies of the
 * options (a retry, a redirect hop) do not carry it.
 */
export function aroundRequestFunction(options: NormalizedOptions, around: (create: CreateRequest) => Promise<Sent>): void {
  unwrapRequestFunction(options);
  const replaced = options.request;
  const wrapped: WrappedRequestFunction = (url, nativeOptions, callback) => {
    options.request = replaced;
    // got calls it as `(url, options, callback)`, and through its cache as `(options, callback)`. These
    // options are got's per-attempt copy (their `headers` are got's own, so they are replaced, not
    // changed), or those of got's cache, which judges the response with them.
    const requestOptions = url instanceof URL ? nativeOptions : (url as NativeRequestOptions);
    return around(async (headers) => {
      if (headers) requestOptions.headers = { ...requestOptions.headers, ...headers };
      // A `request` function of the caller's may answer `undefined` for got's own: created here, so `around` sees it.
      const result =
        (await options.getRequestFunction()?.(url, nativeOptions, callback)) ?? (await options.getFallbackRequestFunction()?.(url, nativeOptions, callback));
      // As got's own call would fail: no request function for this URL.
      if (result === undefined) throw new TypeError(`got has no request function for ${String(options.url)}`);
      return result;
    });
  };
  wrapped[replacedRequest] = replaced;
  options.request = wrapped;
}
