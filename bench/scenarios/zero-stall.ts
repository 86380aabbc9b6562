import { noFailedRequests } from './goals.js';
import { Tally, count, duration, failedText, plural, resultOf, signIn, steadyTraffic, timedSession, withServer, type HttpScenario } from './harness.js';
import { PAUSE_BETWEEN_REQUESTS_MS } from './steady.js';

const TOKEN_TTL_MS = 4_000;
const TOKEN_ENDPOINT_LATENCY_MS = 400;
/** A request slower than the API's usual latency by more than this waited for a refresh. */
export const STALL_MARGIN_MS = 200;

/**
 * Steady traffic across proactive refreshes against a slow token endpoint (400 ms, 4 s tokens):
 * a request that arrives while its token is still valid should be sent at once and the refresh
 * happen in the background. Counted: requests slower than the API's usual latency (the median
 * request of the run, which met no refresh) plus 200 ms, i.e. requests that waited for a
 * refresh; and the latency percentiles. A timing goal: reported, never failing the run.
 */
export const zeroStall: HttpScenario = {
  id: 'zero-stall-refresh',
  timingOnly: true,
  title: (sizes) =>
    `Proactive refresh, slow token endpoint (${duration(TOKEN_ENDPOINT_LATENCY_MS)}), 4 s tokens: ${count(
      sizes.zeroStallWorkers,
    )} workers for ${duration(sizes.zeroStallMs)}`,
  goal: `0 requests slower than the API + ${duration(STALL_MARGIN_MS)} (timing); 0 failed`,
  async run({ host, contender, sizes }) {
    const options = { accessTokenTtlSeconds: TOKEN_TTL_MS / 1_000, tokenEndpointLatencyMs: TOKEN_ENDPOINT_LATENCY_MS };
    return withServer(host, options, async (server) => {
      const latencies: number[] = [];
      const session = timedSession(await signIn(contender, server), ({ outcome, startedAt, settledAt }) => {
        if (outcome.ok) latencies.push(settledAt - startedAt);
      });
      const tally = new Tally();
      const startedAt = performance.now();
      await steadyTraffic(tally, session, {
        workers: sizes.zeroStallWorkers,
        stopAt: startedAt + sizes.zeroStallMs,
        pauseMs: PAUSE_BETWEEN_REQUESTS_MS,
        boundMs: sizes.boundMs,
        path: '/api/zero-stall',
      });
      const batch = tally.close(performance.now() - startedAt);
      latencies.sort((a, b) => a - b);
      const p50 = percentile(latencies, 50);
      const { tokenSuccesses } = await server.stats();
      return resultOf(server, batch, tokenSuccesses, {
        p50Ms: round(p50),
        p95Ms: round(percentile(latencies, 95)),
        p99Ms: round(percentile(latencies, 99)),
        maxMs: round(latencies.at(-1) ?? 0),
        stalledRequests: latencies.filter((latency) => latency > p50 + STALL_MARGIN_MS).length,
      });
    });
  },
  check: (result) => noFailedRequests(result),
  timingCheck: (result) => {
    const stalled = Number(result.extra.stalledRequests);
    return stalled === 0 ? [] : [`${plural(stalled, 'request')} waited for a refresh (slower than the API + ${duration(STALL_MARGIN_MS)})`];
  },
  cell: (result) =>
    `${count(Number(result.extra.stalledRequests))} slow · p50 ${ms(result.extra.p50Ms)} / p95 ${ms(result.extra.p95Ms)} / p99 ${ms(
      result.extra.p99Ms,
    )} / max ${ms(result.extra.maxMs)} · ${plural(result.tokenCalls, 'token call')} · ${failedText(result, result.requests)}`,
};

/** The nearest-rank percentile of ascending `sorted`. */
function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] ?? 0;
}

const round = (value: number) => Math.round(value * 10) / 10;
const ms = (value: number | string | boolean | undefined) => `${Number(value).toFixed(0)} ms`;
