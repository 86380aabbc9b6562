import { familyIntact, noFailedRequests, oneTokenCallPerExpiry } from './goals.js';
import { combine, count, failedText, paths, resultOf, sendAll, signIn, withServer, type Batch, type HttpScenario } from './harness.js';

/**
 * The server rotates refresh tokens and revokes the whole family when a retired one comes back
 * (RFC 9700 §4.14.2). Round after round the access token is revoked and a burst meets it: one
 * refresh per round with the newest refresh token keeps the session alive; two with the same one
 * ends it for good.
 */
export const rotation: HttpScenario = {
  id: 'rotation-reuse-detection',
  title: (sizes) =>
    `Rotation + reuse detection: ${count(sizes.rotationRounds)} expiries × ${count(sizes.rotationBurst)} concurrent requests`,
  goal: '1 token call per expiry, 0 failed, family intact',
  async run({ host, contender, sizes }) {
    return withServer(host, { rotateRefreshTokens: true, reuseDetection: true }, async (server) => {
      const session = await signIn(contender, server);
      const rounds: Batch[] = [];
      for (let round = 0; round < sizes.rotationRounds; round++) {
        await server.revokeAccessTokens();
        rounds.push(await sendAll(session, paths(`round-${round}`, sizes.rotationBurst), sizes.boundMs));
      }
      return resultOf(server, combine(rounds), sizes.rotationRounds);
    });
  },
  check: (result) => [...oneTokenCallPerExpiry(result), ...noFailedRequests(result), ...familyIntact(result)],
  cell: (result) =>
    `${count(result.tokenCalls)} token calls / ${count(result.expiries)} expiries · ${failedText(result)} · family ${
      result.familiesRevoked === 0 ? 'intact' : 'revoked'
    }`,
};
