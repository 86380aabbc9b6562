import { noHungRequests, oneTokenCallPerExpiry } from './goals.js';
import { combine, count, duration, paths, plural, resultOf, sendAll, signIn, withServer, type HttpScenario } from './harness.js';

/**
 * The user signed out everywhere: the refresh token is dead (`invalid_grant`) and so is the access
 * token. Two waves of concurrent requests: every request must fail, quickly and without hanging;
 * one token call learns that the session is over, and the second wave should not call again.
 */
export const deadRefreshToken: HttpScenario = {
  id: 'dead-refresh-token',
  title: (sizes) => `Dead refresh token: 2 waves × ${count(sizes.deadWave)} concurrent requests`,
  goal: 'every request settles (none hangs), 1 token call',
  async run({ host, contender, sizes }) {
    return withServer(host, {}, async (server) => {
      const session = await signIn(contender, server);
      await server.revokeRefreshTokens();
      const first = await sendAll(session, paths('dead-1', sizes.deadWave), sizes.boundMs);
      const callsInFirstWave = (await server.stats()).tokenRequests;
      const second = await sendAll(session, paths('dead-2', sizes.deadWave), sizes.boundMs);
      const result = await resultOf(server, combine([first, second]), 1);
      return {
        ...result,
        extra: {
          firstWaveSettleMs: Math.round(first.settleMs),
          secondWaveSettleMs: Math.round(second.settleMs),
          tokenCallsInSecondWave: result.tokenCalls - callsInFirstWave,
        },
      };
    });
  },
  check: (result) => [...oneTokenCallPerExpiry(result), ...noHungRequests(result)],
  cell: (result) =>
    `${plural(result.tokenCalls, 'token call')} · ${count(result.hung)} hung · all settled in ${duration(
      Number(result.extra.firstWaveSettleMs),
    )} + ${duration(Number(result.extra.secondWaveSettleMs))}`,
};
