/*
 * What the fetch adapter reads of fetch's own values (inputs, bodies, responses), shared by the
 * wrapper and by the redirect following outside browsers.
 */

export type FetchInput = Parameters<typeof fetch>[0];
export type FetchInit = Parameters<typeof fetch>[1];
export type GlobalFetch = (input: FetchInput, init?: FetchInit) => Promise<Response>;

export const locationOf = () => (globalThis as { location?: { origin?: unknown; href?: unknown } }).location;

export function isRequest(input: FetchInput): input is Request {
  return typeof input === 'object' && !(input instanceof URL) && typeof input.url === 'string';
}

/** A ReadableStream or an async iterable can be read only once, so a request carrying one is never replayed. */
export function isOneShotBody(body: unknown): boolean {
  return (
    typeof body === 'object' &&
    body !== null &&
    (typeof (body as { getReader?: unknown }).getReader === 'function' || Symbol.asyncIterator in body)
  );
}

export function discard(response: Response): void {
  response.body?.cancel().catch(() => {});
}
