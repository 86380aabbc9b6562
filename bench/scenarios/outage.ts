import type { Contender } from '../contenders/index.js';
import type { RemoteOAuthServer } from '../server/remote.js';
import { noHungRequests } from './goals.js';
import {
  Tally,
  count,
  duration,
  plural,
  resultOf,
  sendAll,
  signIn,
  sleep,
  steadyTraffic,
  timedSession,
  withServer,
  type HttpScenario,
} from './harness.js';
import { PAUSE_BETWEEN_REQUESTS_MS } from './steady.js';

const TOKEN_TTL_MS = 1_000;
const OUTAGE_MS = 3_000;
/** The goals: at most this many token calls during the 3 s outage, traffic back within 1 s. */
export const MAX_TOKEN_CALLS_DURING_OUTAGE = 8;
export const RECOVERY_GOAL_MS = 1_000;
/**
 * More 503s than any client can ask for in 3 s (a naive interceptor makes one token call per
 * request): the outage is ended by dropping the rest, not by running out of them.
 */
const OUTAGE_FAILURES = 10_000;
/** After the one request against a token endpoint that stays down settled: time for stray token calls. */
const STRAY_CALLS_MS = 500;

/**
 * The token endpoint is down (503, as a load balancer without a backend answers) for 3 s under
 * steady traffic on 1 s tokens: every token lifetime ends during the outage. Counted: the token
 * calls that arrived while it was down (a client that refreshes again right after each failed
 * refresh turns the outage into a storm), and the recovery: from the endpoint's return to the
 * first request that succeeded after it.
 *
 * Second part, on a fresh server whose token endpoint stays down: one request with an expired
 * token, and the token calls it causes until it settles. A client with its own retries (ky,
 * ofetch) on top of tokenrelay's fetch wrapper must not multiply them: it is judged against
 * tokenrelay alone (`compareWithBase`).
 */
export const outage: HttpScenario = {
  id: 'token-endpoint-outage',
  title: (sizes) =>
    `Token endpoint down (503) for ${duration(OUTAGE_MS)}, 1 s tokens, ${count(sizes.outageWorkers)} workers; then one request against an endpoint that stays down`,
  goal: `≤ ${MAX_TOKEN_CALLS_DURING_OUTAGE} token calls during the outage, recovery ≤ ${duration(RECOVERY_GOAL_MS)} (timing); with retries on top: no more token calls than tokenrelay alone`,
  async run({ host, contender, sizes }) {
    const outageResult = await withServer(host, { accessTokenTtlSeconds: TOKEN_TTL_MS / 1_000 }, async (server) => {
      let firstSuccessAfterOutage: number | undefined;
      let outageEndedAt = Number.POSITIVE_INFINITY;
      const session = timedSession(await signIn(contender, server), ({ outcome, settledAt }) => {
        if (outcome.ok && settledAt >= outageEndedAt) firstSuccessAfterOutage ??= settledAt;
      });
      const tally = new Tally();
      const startedAt = performance.now();
      const traffic = steadyTraffic(tally, session, {
        workers: sizes.outageWorkers,
        stopAt: startedAt + sizes.outageLeadMs + OUTAGE_MS + sizes.outageTailMs,
        pauseMs: PAUSE_BETWEEN_REQUESTS_MS,
        boundMs: sizes.boundMs,
        path: '/api/outage',
      });
      await sleep(sizes.outageLeadMs);
      await server.failNextTokenRequests(OUTAGE_FAILURES, 'unavailable');
      await sleep(OUTAGE_MS);
      await server.clearFailures();
      outageEndedAt = performance.now();
      await traffic;
      const batch = tally.close(performance.now() - startedAt);
      const tokenCallsDuringOutage = (await server.stats()).injectedFailures.unavailable ?? 0;
      return resultOf(server, batch, 0, {
        tokenCallsDuringOutage,
        // Unset: nothing succeeded before the traffic stopped.
        ...(firstSuccessAfterOutage === undefined ? {} : { recoveryMs: Math.round(firstSuccessAfterOutage - outageEndedAt) }),
      });
    });
    const tokenCallsForOneRequest = await withServer(host, {}, (server) => tokenCallsOfOneRequest(server, contender, sizes.boundMs));
    return { ...outageResult, extra: { ...outageResult.extra, tokenCallsForOneRequest } };
  },
  check: (result) => {
    const calls = Number(result.extra.tokenCallsDuringOutage);
    return [
      ...(calls <= MAX_TOKEN_CALLS_DURING_OUTAGE
        ? []
        : [`${calls} token calls during the ${duration(OUTAGE_MS)} outage, wanted ≤ ${MAX_TOKEN_CALLS_DURING_OUTAGE}`]),
      ...noHungRequests(result),
    ];
  },
  timingCheck: (result) => {
    const recoveryMs = result.extra.recoveryMs;
    if (recoveryMs === undefined) return ['no request succeeded after the outage'];
    return Number(recoveryMs) <= RECOVERY_GOAL_MS ? [] : [`recovery took ${duration(Number(recoveryMs))}, wanted ≤ ${duration(RECOVERY_GOAL_MS)}`];
  },
  compareWithBase: (result, base) => {
    const calls = Number(result.extra.tokenCallsForOneRequest);
    const baseCalls = Number(base.extra.tokenCallsForOneRequest);
    return calls <= baseCalls
      ? []
      : [`one request against a down token endpoint made ${plural(calls, 'token call')}, the fetch wrapper alone ${baseCalls}`];
  },
  cell: (result) => {
    const recovery = result.extra.recoveryMs === undefined ? 'never' : duration(Number(result.extra.recoveryMs));
    return `${plural(Number(result.extra.tokenCallsDuringOutage), 'token call')} during the outage · recovery ${recovery} · one request: ${plural(
      Number(result.extra.tokenCallsForOneRequest),
      'token call',
    )}`;
  },
};

/** One request with an expired token against a token endpoint that answers only 503s: the token calls it causes. */
async function tokenCallsOfOneRequest(server: RemoteOAuthServer, contender: Contender, boundMs: number): Promise<number> {
  const session = await signIn(contender, server, (tokens) => ({ ...tokens, expiresAt: Date.now() - 1_000 }));
  await server.revokeAccessTokens();
  await server.failNextTokenRequests(OUTAGE_FAILURES, 'unavailable');
  await sendAll(session, ['/api/down'], boundMs);
  await sleep(STRAY_CALLS_MS);
  return (await server.stats()).tokenRequests;
}
