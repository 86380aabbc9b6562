/*
 * The caller's headers and the bearer the wrapper adds to them: read by the wrapper (does the
 * caller authorize the request itself?) and by both builds' sends (the first send and every hop).
 */

/** Whether the caller's own headers (a plain object, pairs or a `Headers`) include `Authorization`. */
export function hasAuthorization(headers: HeadersInit | undefined): boolean {
  if (headers === undefined) return false;
  if (isPlainRecord(headers)) return Object.keys(headers).some((name) => name.toLowerCase() === 'authorization');
  return (typeof (headers as Headers).has === 'function' ? (headers as Headers) : new Headers(headers)).has('authorization');
}

function isPlainRecord(headers: HeadersInit): headers is Record<string, string> {
  const prototype: unknown = Object.getPrototypeOf(headers);
  return prototype === Object.prototype || prototype === null;
}

/**
 * The caller's headers plus the bearer, in the cheapest form fetch takes: a plain object stays a
 * plain object (no `Headers` copy that fetch would copy again).
 */
export function withBearer(headers: HeadersInit | undefined, bearer: string): HeadersInit {
  if (headers === undefined || isPlainRecord(headers)) return { ...headers, authorization: bearer };
  const copy = new Headers(headers);
  copy.set('authorization', bearer);
  return copy;
}
