/*
 * The browser build's not-sent.ts. A browser's fetch rejects with an opaque `TypeError` ("Failed to
 * fetch") whether or not the request left, with no code to tell: it may have reached the server, as
 * not-sent.ts also answers for such an error. (A fetch of another kind whose errors do carry Node's
 * codes is taken as in doubt here too: the safe side, the refresh token is then never presented again
 * within the same refresh.)
 */

/** True only when `error` certainly left before the request was sent: never, in a browser. */
export function certainlyNotSent(_error: unknown): boolean {
  return false;
}
