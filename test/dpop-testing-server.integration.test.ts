/*
 * @tokenrelay/dpop against the testing server's DPoP mode, where it reproduces the server that spends a
 * refresh token before it refuses the proof's nonce: the client learns the nonce first, so it never hits it.
 */
import { createTokenManager, refreshTokenGrant } from '@tokenrelay/core';
import { createDpop } from '@tokenrelay/dpop';
import { withTokenRelay } from '@tokenrelay/fetch';
import { loopbackOnlyFetch, startOAuthServer } from '@tokenrelay/testing';
import { expect, it } from 'vitest';

it('refreshes a rotating DPoP session on a server that spends refresh tokens before its nonce check, without a reuse', async () => {
  const server = await startOAuthServer({
    dpop: { spendRefreshTokenBeforeNonceCheck: true },
    rotateRefreshTokens: true,
    clients: [{ clientId: 'spa', authMethod: 'none' }],
  });
  try {
    const dpop = createDpop({ fetch: loopbackOnlyFetch() });
    const signedIn = server.issue({ clientId: 'spa', dpopJkt: await dpop.thumbprint() });
    const manager = createTokenManager({
      tokens: signedIn,
      refresh: refreshTokenGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'spa', fetch: dpop.fetch }),
    });
    const refreshed = await manager.refresh();
    const api = withTokenRelay(dpop.fetch, manager, { origins: [server.url] });

    expect((await api(`${server.url}/api/items`)).status).toBe(200);
    expect(refreshed.refreshToken).not.toBe(signedIn.refreshToken);
    const stats = server.stats();
    expect(stats).toMatchObject({ tokenSuccesses: 1, refreshTokenReuses: 0, familiesRevoked: 0, apiOk: 1, api401: 0 });
    // The one nonce refusal was the client's probe: the real refresh token was presented once, with the nonce.
    expect(stats.tokenRequestLog.filter((entry) => entry.params.refresh_token === signedIn.refreshToken).map((entry) => entry.status)).toEqual([200]);
  } finally {
    await server.close();
  }
});

it('never presents the refresh token after a nonce probe the server did not answer (503): the refresh fails and the next one probes again, without a reuse', async () => {
  const server = await startOAuthServer({
    dpop: { spendRefreshTokenBeforeNonceCheck: true },
    rotateRefreshTokens: true,
    clients: [{ clientId: 'spa', authMethod: 'none' }],
  });
  try {
    const dpop = createDpop({ fetch: loopbackOnlyFetch() });
    const signedIn = server.issue({ clientId: 'spa', dpopJkt: await dpop.thumbprint() });
    const manager = createTokenManager({
      tokens: signedIn,
      refresh: refreshTokenGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'spa', fetch: dpop.fetch }),
      // One attempt per refresh, and a short pause after the failed one, so the test goes on at once.
      retry: { retries: 0, pauseAfterFailureMs: 1, maxPauseAfterFailureMs: 1 },
    });
    // The load balancer answers the probe alone; the server is back for the next request.
    server.failNextTokenRequests(1, 'unavailable');

    // Retries ran out on the outage (REFRESH_FAILED), not a dead session (SESSION_EXPIRED).
    await expect(manager.refresh()).rejects.toMatchObject({ name: 'TokenRelayError', code: 'REFRESH_FAILED' });
    await new Promise((resolve) => setTimeout(resolve, 20));
    const refreshed = await manager.refresh();

    expect(refreshed.refreshToken).not.toBe(signedIn.refreshToken);
    expect(server.stats()).toMatchObject({ refreshTokenReuses: 0, familiesRevoked: 0, tokenSuccesses: 1 });
    expect(server.stats().tokenRequestLog.filter((entry) => entry.params.refresh_token === signedIn.refreshToken).map((entry) => entry.status)).toEqual([200]);
  } finally {
    await server.close();
  }
});

it('retries a refresh whose nonce probe met an outage (503) within the same refresh: the retry probes again and presents the refresh token once', async () => {
  const server = await startOAuthServer({
    dpop: { spendRefreshTokenBeforeNonceCheck: true },
    rotateRefreshTokens: true,
    clients: [{ clientId: 'spa', authMethod: 'none' }],
  });
  try {
    const dpop = createDpop({ fetch: loopbackOnlyFetch() });
    const signedIn = server.issue({ clientId: 'spa', dpopJkt: await dpop.thumbprint() });
    const manager = createTokenManager({
      tokens: signedIn,
      refresh: refreshTokenGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'spa', fetch: dpop.fetch }),
      retry: { retries: 1, minDelayMs: 1, maxDelayMs: 1 },
    });
    server.failNextTokenRequests(1, 'unavailable');

    const refreshed = await manager.refresh();

    expect(refreshed.refreshToken).not.toBe(signedIn.refreshToken);
    const log = server.stats().tokenRequestLog;
    expect(log.map((entry) => [entry.params.refresh_token === signedIn.refreshToken ? 'refresh token' : entry.params.refresh_token, entry.status])).toEqual([
      ['tokenrelay-dpop-nonce-probe', 503],
      ['tokenrelay-dpop-nonce-probe', 400],
      ['refresh token', 200],
    ]);
    expect(server.stats()).toMatchObject({ refreshTokenReuses: 0, familiesRevoked: 0, tokenSuccesses: 1 });
  } finally {
    await server.close();
  }
});
