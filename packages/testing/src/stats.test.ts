import { describe, expect, it } from 'vitest';
import { callApi, postToken, refreshWith, useServers } from './test-helpers.js';

const start = useServers();

describe('stats()', () => {
  it('counts every token request, success and error code across a session', async () => {
    const server = await start({ rotateRefreshTokens: true });
    const tokens = server.issue();
    const first = await refreshWith(server, tokens.refreshToken!);
    await refreshWith(server, tokens.refreshToken!); // reuse: family revoked
    await refreshWith(server, String(first.json?.refresh_token)); // the family is gone
    await postToken(server, { grant_type: 'password', username: 'u', password: 'p' });
    server.failNextTokenRequests(1, 'unavailable');
    await refreshWith(server, server.issue().refreshToken!);

    expect(server.stats()).toMatchObject({
      tokenRequests: 5,
      tokenSuccesses: 1,
      tokenErrors: { invalid_grant: 2, unsupported_grant_type: 1 },
      injectedFailures: { unavailable: 1 },
      refreshTokenReuses: 1,
      familiesRevoked: 1,
      maxInFlightTokenRequests: 1,
    });
    expect(server.stats().tokenRequestLog.map((entry) => [entry.status, entry.error ?? null])).toEqual([
      [200, null],
      [400, 'invalid_grant'],
      [400, 'invalid_grant'],
      [400, 'unsupported_grant_type'],
      [503, null],
    ]);
  });

  it('returns a snapshot that later traffic does not change', async () => {
    const server = await start();
    const tokens = server.issue();
    await refreshWith(server, tokens.refreshToken!);
    const before = server.stats();
    await refreshWith(server, tokens.refreshToken!);
    await callApi(server, '/api/me', tokens.accessToken);
    expect(before.tokenRequests).toBe(1);
    expect(before.tokenRequestLog).toHaveLength(1);
    expect(before.apiRequests).toBe(0);
    expect(server.stats().tokenRequests).toBe(2);
  });

  it('resetStats() zeroes the counters and logs but keeps every token valid', async () => {
    const server = await start();
    const tokens = server.issue();
    await refreshWith(server, tokens.refreshToken!);
    await callApi(server, '/api/me', tokens.accessToken);
    server.resetStats();
    expect(server.stats()).toEqual({
      tokenRequests: 0,
      tokenSuccesses: 0,
      tokenErrors: {},
      injectedFailures: {},
      refreshTokenReuses: 0,
      familiesRevoked: 0,
      tokenPairsEvicted: 0,
      revocations: 0,
      maxInFlightTokenRequests: 0,
      apiRequests: 0,
      apiOk: 0,
      api401: 0,
      dpopProofs: 0,
      dpopNonceChallenges: 0,
      dpopReplaysRefused: 0,
      dpopProofsRefused: 0,
      tokenRequestLog: [],
      apiRequestLog: [],
    });
    expect((await callApi(server, '/api/me', tokens.accessToken)).status).toBe(200);
    expect((await refreshWith(server, tokens.refreshToken!)).status).toBe(200);
  });

  it('keeps only the last requestLogLimit entries of each log', async () => {
    const server = await start({ requestLogLimit: 2 });
    const tokens = server.issue();
    for (const path of ['/api/1', '/api/2', '/api/3']) await callApi(server, path, tokens.accessToken);
    for (let index = 0; index < 3; index++) await postToken(server, { grant_type: 'refresh_token', refresh_token: tokens.refreshToken!, scope: `read${index}` });
    const stats = server.stats();
    expect(stats.apiRequests).toBe(3);
    expect(stats.apiRequestLog.map((entry) => entry.path)).toEqual(['/api/2', '/api/3']);
    expect(stats.tokenRequestLog.map((entry) => entry.params.scope)).toEqual(['read1', 'read2']);
  });
});
