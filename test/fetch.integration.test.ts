import { createHash } from 'node:crypto';
import { ErrorCode, createTokenManager } from '@tokenrelay/core';
import { installTokenRelay, withTokenRelay } from '@tokenrelay/fetch';
import { loopbackOnlyFetch, startOAuthServer, type OAuthServer, type OAuthServerOptions } from '@tokenrelay/testing';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { defaultClientGrant } from './helpers/default-client-grant.js';

const servers: OAuthServer[] = [];
let restoreFetch: (() => void) | undefined;

afterEach(async () => {
  restoreFetch?.();
  restoreFetch = undefined;
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function startServer(options: OAuthServerOptions = {}): Promise<OAuthServer> {
  const server = await startOAuthServer(options);
  servers.push(server);
  return server;
}

/** A signed-in session on `server`: a real manager refreshing through the server's token endpoint. */
function signIn(server: OAuthServer) {
  return createTokenManager({
    tokens: server.issue(),
    refresh: defaultClientGrant(server),
  });
}

async function startSession(options: OAuthServerOptions = {}) {
  const server = await startServer(options);
  const manager = signIn(server);
  const api = withTokenRelay(loopbackOnlyFetch(), manager, { origins: [server.url] });
  return { server, manager, api };
}

const currentAccessToken = async (manager: ReturnType<typeof signIn>) => (await manager.getTokens())?.accessToken;

describe('withTokenRelay against the embedded OAuth server', () => {
  it('makes one token request for 10 concurrent 401s and replays each request once with the new token', async () => {
    const { server, manager, api } = await startSession({ tokenEndpointLatencyMs: 100 });
    server.revokeAccessTokens();

    const responses = await Promise.all(Array.from({ length: 10 }, (_, i) => api(`${server.url}/api/items/${i}`)));

    expect(responses.map((response) => response.status)).toEqual(Array(10).fill(200));
    const stats = server.stats();
    expect(stats.tokenRequests).toBe(1);
    expect(stats.api401).toBe(10);
    expect(stats.apiOk).toBe(10);
    const fresh = await currentAccessToken(manager);
    expect(stats.apiRequestLog.filter((entry) => entry.status === 200).every((entry) => entry.accessToken === fresh)).toBe(true);
  });

  it('replays a request whose 401 arrives after the refresh finished without a second token request', async () => {
    const { server, api } = await startSession();
    // The server checks this request's token only after 400 ms, once the token has been replaced.
    const late = api(`${server.url}/api/late?delayMs=400`);
    await vi.waitFor(() => expect(server.stats().apiRequests).toBe(1));
    server.revokeAccessTokens();

    expect((await api(`${server.url}/api/now`)).status).toBe(200);
    expect((await late).status).toBe(200);
    expect(server.stats().tokenRequests).toBe(1);
    expect(server.stats().api401).toBe(2);
  });

  it('replays a Request body with the same bytes', async () => {
    const { server, api } = await startSession();
    server.revokeAccessTokens();
    const payload = JSON.stringify({ items: Array.from({ length: 200 }, (_, i) => `item-${i}`) });

    const response = await api(new Request(`${server.url}/api/upload`, { method: 'POST', body: payload }));

    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ bodySha256: createHash('sha256').update(payload).digest('hex') });
    expect(server.stats().apiRequests).toBe(2);
  });

  it('does not send a stream body twice: the caller gets the 401, and the next request goes out with the refreshed token', async () => {
    const { server, api } = await startSession();
    server.revokeAccessTokens();
    const init = { method: 'POST', body: new Blob(['streamed']).stream(), duplex: 'half' } as RequestInit;

    const response = await api(`${server.url}/api/upload`, init);

    expect(response.status).toBe(401);
    expect(await response.json()).toMatchObject({ error: 'invalid_token' });
    expect(server.stats()).toMatchObject({ apiRequests: 1, tokenRequests: 1 });
    expect((await api(`${server.url}/api/items`)).status).toBe(200);
    expect(server.stats()).toMatchObject({ apiRequests: 2, tokenRequests: 1 });
  });

  it('rejects every waiting request with SESSION_EXPIRED when the refresh token was revoked, then fails fast', async () => {
    const { server, api } = await startSession();
    server.revokeRefreshTokens();

    const results = await Promise.allSettled(Array.from({ length: 5 }, () => api(`${server.url}/api/items`)));

    for (const result of results) {
      expect(result).toMatchObject({ status: 'rejected', reason: { code: ErrorCode.SESSION_EXPIRED } });
    }
    expect(server.stats().tokenRequests).toBe(1);
    await expect(api(`${server.url}/api/items`)).rejects.toMatchObject({ code: ErrorCode.SESSION_EXPIRED });
    expect(server.stats().tokenRequests).toBe(1);
  });

  it('never sends the bearer to another origin', async () => {
    const { server, api } = await startSession();
    const elsewhere = await startServer();

    await api(`${server.url}/api/items`);
    const response = await api(`${elsewhere.url}/api/items`);

    expect(response.status).toBe(401);
    expect(server.stats().apiRequestLog[0]?.accessToken).toBeDefined();
    expect(elsewhere.stats().apiRequestLog.map((entry) => entry.accessToken)).toEqual([undefined]);
  });

  it('keeps steady traffic free of 401s with 1 s tokens by refreshing before expiry', async () => {
    const { server, api } = await startSession({ accessTokenTtlSeconds: 1 });
    const until = Date.now() + 2_200;

    while (Date.now() < until) {
      expect((await api(`${server.url}/api/items`)).status).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 40));
    }

    expect(server.stats().api401).toBe(0);
    expect(server.stats().tokenRequests).toBeGreaterThanOrEqual(2);
    expect(server.stats().maxInFlightTokenRequests).toBe(1);
  });
});

describe('withTokenRelay: where the bearer goes, against the embedded OAuth server', () => {
  it('never carries the bearer along a same-origin redirect to the token endpoint, and makes no token call for its 401', async () => {
    const { server, api } = await startSession();

    const response = await api(`${server.url}/redirect?status=307&to=/oauth/token`, { method: 'POST', body: 'grant_type=refresh_token' });

    // The token endpoint refuses a request that identifies no client; the caller gets that answer as it is.
    expect(response.status).toBe(400);
    expect(server.stats().tokenRequestLog.map((entry) => [entry.method, entry.accessToken])).toEqual([['POST', undefined]]);
  });

  it('never refreshes or replays for a 401 from another origin reached by a redirect', async () => {
    const { server, api } = await startSession();
    const elsewhere = await startServer();

    const response = await api(`${server.url}/redirect?to=${encodeURIComponent(`${elsewhere.url}/api/items`)}`);

    expect(response.status).toBe(401);
    expect(response.url).toBe(`${elsewhere.url}/api/items`);
    expect(server.stats().tokenRequests).toBe(0);
    expect(elsewhere.stats().apiRequestLog.map((entry) => entry.accessToken)).toEqual([undefined]);
  });

  it('keeps the bearer along a redirect within origins', async () => {
    const { server, api } = await startSession();

    const response = await api(`${server.url}/redirect?to=/api/items`);

    expect(response.status).toBe(200);
    expect(response.redirected).toBe(true);
    expect(server.stats().apiRequestLog.map((entry) => entry.status)).toEqual([200]);
  });

  it('signed out, sends requests without a bearer and returns their 401 with no token call', async () => {
    const server = await startServer();
    const manager = createTokenManager({
      refresh: defaultClientGrant(server),
    });
    const api = withTokenRelay(loopbackOnlyFetch(), manager, { origins: [server.url] });

    const response = await api(`${server.url}/api/items`);

    expect(response.status).toBe(401);
    expect(server.stats().tokenRequests).toBe(0);
    expect(server.stats().apiRequestLog.map((entry) => entry.accessToken)).toEqual([undefined]);
  });
});

describe('installTokenRelay against the embedded OAuth server', () => {
  it('authenticates the global fetch, refreshes through the unwrapped fetch with rotation, and restores', async () => {
    const server = await startServer({ rotateRefreshTokens: true });
    const original = globalThis.fetch;
    restoreFetch = installTokenRelay(signIn(server), { origins: [server.url] });

    for (let round = 0; round < 2; round++) {
      server.revokeAccessTokens();
      expect((await fetch(`${server.url}/api/items`)).status).toBe(200);
    }
    restoreFetch();
    expect(globalThis.fetch).toBe(original);
    expect((await fetch(`${server.url}/api/items`)).status).toBe(401);

    const stats = server.stats();
    expect(stats.tokenRequests).toBe(2);
    expect(stats.refreshTokenReuses).toBe(0);
    expect(stats.tokenRequestLog.map((entry) => entry.clientAuthentication)).toEqual([
      'client_secret_basic',
      'client_secret_basic',
    ]);
    expect(stats.apiRequestLog.at(-1)?.accessToken).toBeUndefined();
  });
});
