/*
 * What the fetch adapter shares of fetch's own values (its types, the page's location, discarding a
 * response), between the wrapper and the redirect following outside browsers.
 */

export type FetchInput = Parameters<typeof fetch>[0];
export type FetchInit = Parameters<typeof fetch>[1];
export type GlobalFetch = (input: FetchInput, init?: FetchInit) => Promise<Response>;

export const locationOf = () => (globalThis as { location?: { origin?: unknown; href?: unknown } }).location;

export function discard(response: Response): void {
  response.body?.cancel().catch(() => {});
}
