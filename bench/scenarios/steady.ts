import { noFailedRequests } from './goals.js';
import { Tally, count, duration, failedText, plural, resultOf, signIn, steadyTraffic, withServer, type HttpScenario } from './harness.js';

const TOKEN_TTL_MS = 1_000;
export const PAUSE_BETWEEN_REQUESTS_MS = 20;
/**
 * Token calls closer together than this answer the same expiry (duplicates): a client that
 * refreshes ahead does so at 75 % of a 1 s lifetime, one that waits for a 401 after 100 %.
 */
const SAME_EXPIRY_WINDOW_MS = TOKEN_TTL_MS / 4;

/**
 * Steady traffic over 1-second access tokens: a few clients each send a request, wait 20 ms, and
 * again. A client that knows the expiry refreshes before it and never meets a 401; one that learns
 * of expiry from 401s pays a 401 round trip for every request in flight at each expiry.
 *
 * One token call per expiry means no duplicate token calls: a token call within 250 ms of the
 * previous one answers the same expiry again. (Counting expiries in a time window is off by one
 * at its edges, so the goal is stated on duplicates; `expiries` still reports the token lifetimes
 * that ended while the traffic ran.)
 */
export const steady: HttpScenario = {
  id: 'steady-1s-tokens',
  title: (sizes) =>
    `Steady traffic, 1 s tokens: ${count(sizes.steadyClients)} clients for ${duration(sizes.steadyMs)}`,
  goal: '1 token call per expiry, 0 steady-state 401s, 0 failed',
  async run({ host, contender, sizes }) {
    return withServer(host, { accessTokenTtlSeconds: TOKEN_TTL_MS / 1_000 }, async (server) => {
      let firstIssuedAt = 0;
      const session = await signIn(contender, server, (tokens) => {
        firstIssuedAt = (tokens.expiresAt ?? 0) - TOKEN_TTL_MS;
        return tokens;
      });
      const tally = new Tally();
      const startedAt = performance.now();
      await steadyTraffic(tally, session, {
        workers: sizes.steadyClients,
        stopAt: startedAt + sizes.steadyMs,
        pauseMs: PAUSE_BETWEEN_REQUESTS_MS,
        boundMs: sizes.boundMs,
        path: '/api/steady',
      });
      const stoppedAt = Date.now();
      const batch = tally.close(performance.now() - startedAt);
      const { tokenIssuedAt } = await server.stats();
      const lifetimesStartedAt = [firstIssuedAt, ...tokenIssuedAt].filter(
        (at, index, all) => index === 0 || at - (all[index - 1] ?? 0) >= SAME_EXPIRY_WINDOW_MS,
      );
      const expiries = lifetimesStartedAt.filter((at) => at + TOKEN_TTL_MS <= stoppedAt).length;
      return resultOf(server, batch, expiries, {
        duplicateTokenCalls: 1 + tokenIssuedAt.length - lifetimesStartedAt.length,
      });
    });
  },
  check: (result) => [
    ...(result.extra.duplicateTokenCalls === 0 ? [] : [`${String(result.extra.duplicateTokenCalls)} duplicate token calls`]),
    ...(result.api401 === 0 ? [] : [`${result.api401} steady-state 401s`]),
    ...(result.maxConcurrentTokenCalls <= 1 ? [] : [`${result.maxConcurrentTokenCalls} concurrent token calls`]),
    ...noFailedRequests(result),
  ],
  cell: (result) =>
    `${plural(result.tokenCalls, 'token call')} (${count(Number(result.extra.duplicateTokenCalls))} duplicate) · ${count(
      result.api401,
    )}×401 · ${failedText(result, result.requests)}`,
};
