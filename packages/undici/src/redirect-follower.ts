/*
 * What the interceptor can know of a redirect followed below it (undici 6's `maxRedirections`, undici's redirect
 * interceptor composed before it): the follower sends each hop without dispatching it through the interceptor,
 * keeping our bearer while the hops stay on the first origin (undici drops it on leaving), and at each hop's start
 * tells the handler the URLs answered so far (`context.history`), never the URL of the hop about to go.
 */
import type { Origins, TokenRelayError } from '@tokenrelay/core';
import { configurationError } from '@tokenrelay/core/kit';

/**
 * The URLs a redirect follower below the interceptor has sent a request to, the one answering last once it
 * answers, as undici's follower tells its handler at each hop's start. None without such a follower.
 */
export function followedHops(context: unknown): readonly URL[] {
  const history = (context as { history?: unknown } | undefined)?.history;
  return Array.isArray(history) ? (history as URL[]) : [];
}

/** Are all `hops` on the first one's origin: did the bearer, which undici drops on leaving an origin, go with each? */
export const withinFirstOrigin = (hops: readonly URL[]) => hops.every((hop) => hop.origin === hops[0]?.origin);

/**
 * Judges a hop a follower below starts for a request sent with our bearer, knowing only the `hops` before it: the
 * error that stops it before it is sent, or `undefined` when it may go. It may go when the bearer has left (a hop so
 * far off the first origin), or when every URL of the first origin may have the bearer: with a list of `origins`,
 * any origin but the token endpoint's; with a predicate, none is known to.
 */
export function createHopGuard(origins: Origins, tokenEndpoint: string | undefined): (hops: readonly URL[]) => TokenRelayError | undefined {
  const tokenEndpointOrigin = tokenEndpoint === undefined ? undefined : new URL(tokenEndpoint).origin;
  const mayCarryBearerEverywhereOn = (origin: string) => typeof origins !== 'function' && origin !== tokenEndpointOrigin;
  return (hops) => (hops.length > 0 && withinFirstOrigin(hops) && !mayCarryBearerEverywhereOn((hops[0] as URL).origin) ? unjudgedHop() : undefined);
}

const unjudgedHop = () =>
  configurationError(
    "tokenRelayInterceptor cannot judge the hops of a redirect followed below it (undici 6's maxRedirections, a redirect " +
      'interceptor composed before it), and this one may take the bearer to the token endpoint or outside `origins`: compose ' +
      'the redirect interceptor after it, e.g. agent.compose(tokenRelayInterceptor(manager, { origins }), interceptors.redirect({ maxRedirections: 3 }))',
  );
