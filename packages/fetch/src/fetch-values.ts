/*
 * What the fetch adapter shares of fetch's own values (its types, what a call's arguments say, the
 * page's location, discarding a response), between the wrapper and the sends of both builds.
 */
import { isRequest } from '@tokenrelay/core/kit';

export type FetchInput = Parameters<typeof fetch>[0];
export type FetchInit = Parameters<typeof fetch>[1];
export type GlobalFetch = (input: FetchInput, init?: FetchInit) => Promise<Response>;

export const locationOf = () => (globalThis as { location?: { origin?: unknown; href?: unknown } }).location;

/**
 * Answers to a redirect hop that went without our bearer (marked where hops are followed, outside a
 * browser): their 401 says nothing about our token, so it never starts a refresh or a replay.
 */
export const answeredWithoutBearer = new WeakSet<Response>();

export function discard(response: Response): void {
  response.body?.cancel().catch(() => {});
}

/** The URL a fetch call goes to, read once: a URL object the caller changes later does not move the request. */
export function targetHref(input: FetchInput): string {
  return isRequest(input) ? input.url : String(input);
}

/** The headers a fetch call sends: `init.headers`, else the Request's (fetch takes init's instead of the Request's). */
export function headersOf(input: FetchInput, init: FetchInit): HeadersInit | undefined {
  return init?.headers ?? (isRequest(input) ? input.headers : undefined);
}

/** The signal of a fetch call: `init.signal`, else the Request's. */
export function signalOf(input: FetchInput, init: FetchInit): AbortSignal | undefined {
  return init?.signal ?? (isRequest(input) ? input.signal : undefined);
}

/**
 * A copy of a Request's body, taken before the send consumes it: the same bytes for the replay and
 * for a 307/308 on the way. None for a body given in `init`, which is sent again as it is.
 */
export function bodyCopyOf(input: FetchInput, init: FetchInit): Request | undefined {
  return isRequest(input) && init?.body == null && input.body !== null ? input.clone() : undefined;
}
