import { noFailedRequests, oneTokenCallPerExpiry } from './goals.js';
import { count, duration, failedText, paths, plural, resultOf, sendAll, signIn, withServer, type HttpScenario } from './harness.js';

/**
 * A burst of concurrent requests meets a dead access token. `expired`: the client knows (its
 * `expiresAt` has passed, as after a laptop wakes up). `revoked`: it does not (the server revoked
 * the token, or the clocks disagree), so every request first gets a 401.
 */
function burst(variant: 'expired' | 'revoked'): HttpScenario {
  return {
    id: variant === 'expired' ? 'burst-after-expiry' : 'burst-after-revocation',
    title: (sizes) =>
      variant === 'expired'
        ? `Burst: ${count(sizes.burst)} concurrent requests after expiry`
        : `Burst: ${count(sizes.burst)} concurrent requests, token revoked (client thinks it is valid)`,
    goal: '1 token call, 0 failed',
    async run({ host, contender, sizes }) {
      return withServer(host, {}, async (server) => {
        const session = await signIn(contender, server, (tokens) =>
          variant === 'expired' ? { ...tokens, expiresAt: Date.now() - 1_000 } : tokens,
        );
        await server.revokeAccessTokens();
        const batch = await sendAll(session, paths('burst', sizes.burst), sizes.boundMs);
        return resultOf(server, batch, 1);
      });
    },
    check: (result) => [...oneTokenCallPerExpiry(result), ...noFailedRequests(result)],
    cell: (result) =>
      `${plural(result.tokenCalls, 'token call')} · ${count(result.api401)}×401 · ${failedText(result)} · ${duration(result.settleMs)}`,
  };
}

export const burstAfterExpiry = burst('expired');
export const burstAfterRevocation = burst('revoked');
