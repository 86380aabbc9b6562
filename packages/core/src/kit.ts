/*
 * @tokenrelay/core/kit: the pieces tokenrelay's own adapters and stores are built from, for
 * authors of adapters (another HTTP client) and stores (another database). An app needs none of
 * them: it calls the main entry. They follow the package's version, but they are tools, not the
 * API an app is written against, so read the changelog when you upgrade an adapter or store.
 *
 * - Adapters: `createOriginMatcher` (which requests get the bearer), `bearerAuthorization`,
 *   `accessTokenIfSignedIn` and `isSignedOut` (a signed-out app sends requests without a bearer),
 *   `defaultShouldRefresh` and `parseWwwAuthenticate` (which 401s mean "refresh"),
 *   `unwrappedFetch` (how a wrapped fetch hands the token endpoint its inner fetch),
 *   `isSecureOrLoopback` and `isLoopbackHostname` (where credentials may go), `isRequest` and
 *   `isOneShotBody` (what fetch was given, and whether its body can be sent twice), `sendThrough` and
 *   `queuePlace` (a request released by a refresh goes through the app's queue), `DpopSender` (what
 *   attachDpop takes: `@tokenrelay/dpop`'s `createDpop()`), `dpopUnsupported` (a door without proofs
 *   refuses a DPoP-bound session).
 * - Stores: `parseStoredTokens`/`parseTokenSet` (the one parser: what a store reads back is
 *   checked here, so the same object round-trips the same way in every store), `storeError`,
 *   `createWriteOrder` (one handle's sign-ins and sign-outs land in call order, though each waits
 *   for the lock on its own).
 * - Both: `delay` (an abortable pause that cleans up after itself), `abortable` (stops waiting for a
 *   promise when a signal aborts), `notifyListeners` (one bad listener never starves the others),
 *   `configurationError`, `readBody` (a response's text, read no further than a limit).
 */
export {
  accessTokenIfSignedIn,
  bearerAuthorization,
  createOriginMatcher,
  defaultShouldRefresh,
  dpopUnsupported,
  isLoopbackHostname,
  isOneShotBody,
  isRequest,
  isSecureOrLoopback,
  isSignedOut,
  parseWwwAuthenticate,
  queuePlace,
  sendThrough,
  unwrappedFetch,
  type AuthChallenge,
  type DpopRequest,
  type DpopSender,
  type FailedResponse,
  type Origins,
  type RequestQueue,
  type ShouldRefresh,
} from './adapter-kit.js';
export { isRecord, parseStoredTokens, parseTokenSet, tokenSetProblem } from './token-set.js';
export { configurationError, storeError } from './errors.js';
export { MAX_TIMER_MS, abortable, assertTimerDelay, delay } from './delay.js';
export { readBody } from './read-body.js';
export { notifyListeners } from './notify.js';
export { createWriteOrder, type WriteOrder } from './write-order.js';
