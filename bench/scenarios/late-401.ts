import { noFailedRequests, oneTokenCallPerExpiry } from './goals.js';
import {
  Tally,
  combine,
  count,
  failedText,
  paths,
  plural,
  resultOf,
  settlesWithin,
  signIn,
  waitFor,
  withServer,
  type HttpScenario,
} from './harness.js';

/**
 * Slow requests leave with the old token; while the server holds them (`?delayMs=`), the token
 * is revoked and a fast request refreshes it. The slow requests' 401s land after that refresh
 * finished: they must be replayed with the new token, without a second token call.
 */
export const late401: HttpScenario = {
  id: 'late-401',
  title: (sizes) => `Late 401: ${count(sizes.lateRequests)} slow requests whose 401 lands after the refresh`,
  goal: '1 token call, 0 failed',
  async run({ host, contender, sizes }) {
    return withServer(host, {}, async (server) => {
      const session = await signIn(contender, server);
      const slow = new Tally();
      const startedAt = performance.now();
      const slowDone = Promise.all(
        paths('slow', sizes.lateRequests, `?delayMs=${sizes.lateDelayMs}`).map((path) => slow.track(session, path)),
      );
      // The slow requests must be at the server (holding the old token) before it is revoked.
      const allArrived = await waitFor(
        async () => (await server.stats()).apiRequests >= sizes.lateRequests,
        sizes.lateDelayMs / 2,
      );
      await server.revokeAccessTokens();
      const fast = new Tally();
      const fastSettled = await settlesWithin(fast.track(session, '/api/fast'), sizes.boundMs);
      const refreshedAfterMs = performance.now() - startedAt;
      const slowSettled = await settlesWithin(slowDone, sizes.boundMs);
      const settleMs = performance.now() - startedAt;
      const batch = combine([fast.close(fastSettled ? refreshedAfterMs : sizes.boundMs), slow.close(slowSettled ? settleMs : sizes.boundMs)]);
      return resultOf(server, batch, 1, {
        // Positive: the refresh (and the fast request's replay) finished this long before the slow 401s.
        refreshFinishedBeforeLate401Ms: Math.round(sizes.lateDelayMs - refreshedAfterMs),
        arrangedAsLate: allArrived && refreshedAfterMs < sizes.lateDelayMs,
      });
    });
  },
  // When the machine was too slow to finish the refresh before the slow 401s, the cell says so;
  // the run is then inconclusive about late 401s, not a failure of the client.
  check: (result) => [...oneTokenCallPerExpiry(result), ...noFailedRequests(result)],
  cell: (result) =>
    `${plural(result.tokenCalls, 'token call')} · ${failedText(result, result.requests)}${
      result.extra.arrangedAsLate === true ? '' : ' (not late: machine too slow)'
    }`,
};
