import { noFailedRequests } from './goals.js';
import { count, duration, paths, plural, resultOf, sendAll, signIn, withServer, type HttpScenario } from './harness.js';

const INJECTED_503S = 2;

/**
 * The token endpoint answers 503 twice (a load balancer without a backend for a moment), then
 * recovers, while a burst of requests needs a refresh. A retry with backoff turns every request
 * into a success; giving up at the first 503 fails them.
 */
export const transient503: HttpScenario = {
  id: 'transient-503',
  title: (sizes) => `Token endpoint answers 503 twice, then recovers: ${count(sizes.transientBurst)} concurrent requests`,
  goal: 'every request succeeds, 1 successful token call',
  async run({ host, contender, sizes }) {
    return withServer(host, {}, async (server) => {
      const session = await signIn(contender, server);
      await server.failNextTokenRequests(INJECTED_503S, 'unavailable');
      await server.revokeAccessTokens();
      const batch = await sendAll(session, paths('transient', sizes.transientBurst), sizes.boundMs);
      return resultOf(server, batch, 1, { injected503s: INJECTED_503S });
    });
  },
  check: (result) => [
    ...noFailedRequests(result),
    // The 503s are token calls too, made by the scenario's design; the goal counts the ones that issued a token.
    ...(result.tokenSuccesses === 1 ? [] : [`${result.tokenSuccesses} successful token calls, wanted 1`]),
  ],
  cell: (result) =>
    `${count(result.succeeded)}/${count(result.requests)} succeeded · ${plural(result.tokenCalls, 'token call')} (${count(
      result.tokenCalls - result.tokenSuccesses,
    )} failed) · ${duration(result.settleMs)}`,
};
