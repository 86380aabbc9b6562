import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { inspect } from 'node:util';
import { attachTokenRelay } from '@tokenrelay/axios';
import { ErrorCode, createTokenManager, isTokenRelayError, type TokenManager } from '@tokenrelay/core';
import { salesforceFixtures, startOAuthServer, type OAuthServer, type OAuthServerOptions } from '@tokenrelay/testing';
import axios, { AxiosError, type CreateAxiosDefaults } from 'axios';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { defaultClientGrant } from './helpers/default-client-grant.js';

const servers: OAuthServer[] = [];
const closers: Array<() => Promise<void>> = [];

afterEach(async () => {
  await Promise.all(closers.splice(0).map((close) => close()));
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function startServer(options: OAuthServerOptions = {}): Promise<OAuthServer> {
  const server = await startOAuthServer(options);
  servers.push(server);
  return server;
}

/** A signed-in session: a real manager refreshing through the server's token endpoint, and an axios instance on its API. */
async function startSession(options: OAuthServerOptions = {}) {
  const server = await startServer(options);
  const manager = createTokenManager({
    tokens: server.issue(),
    refresh: defaultClientGrant(server),
  });
  // proxy: false keeps the traffic on loopback whatever HTTP_PROXY says.
  const api = axios.create({ baseURL: server.url, proxy: false });
  attachTokenRelay(api, manager);
  return { server, manager, api };
}

const currentAccessToken = async (manager: TokenManager) => (await manager.getTokens())?.accessToken;

async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => expect.unreachable('the request should have failed'),
    (error: unknown) => error,
  );
}

describe('attachTokenRelay against the embedded OAuth server', () => {
  it('makes one token request for 10 concurrent 401s and replays each request once with the new token', async () => {
    const { server, manager, api } = await startSession({ tokenEndpointLatencyMs: 100 });
    server.revokeAccessTokens();

    const responses = await Promise.all(Array.from({ length: 10 }, (_, i) => api.get(`/api/items/${i}`)));

    expect(responses.map((response) => response.status)).toEqual(Array(10).fill(200));
    const stats = server.stats();
    expect(stats).toMatchObject({ tokenRequests: 1, api401: 10, apiOk: 10, maxInFlightTokenRequests: 1 });
    const fresh = await currentAccessToken(manager);
    expect(stats.apiRequestLog.filter((entry) => entry.status === 200).every((entry) => entry.accessToken === fresh)).toBe(true);
  });

  it('replays a request whose 401 arrives after the refresh finished without a second token request', async () => {
    const { server, api } = await startSession();
    // The server checks this request's token only after 400 ms, once the token has been replaced.
    const late = api.get('/api/late', { params: { delayMs: 400 } });
    await vi.waitFor(() => expect(server.stats().apiRequests).toBe(1));
    server.revokeAccessTokens();

    expect((await api.get('/api/now')).status).toBe(200);
    expect((await late).status).toBe(200);
    expect(server.stats()).toMatchObject({ tokenRequests: 1, api401: 2 });
  });

  it('replays a JSON POST body with the same bytes', async () => {
    const { server, api } = await startSession();
    server.revokeAccessTokens();
    const payload = { items: Array.from({ length: 200 }, (_, i) => `item-${i}`) };

    const response = await api.post<{ bodySha256: string }>('/api/upload', payload);

    expect(response.data.bodySha256).toBe(createHash('sha256').update(JSON.stringify(payload)).digest('hex'));
    expect(server.stats()).toMatchObject({ apiRequests: 2, tokenRequests: 1 });
  });

  it('does not send a stream body twice: the caller gets the 401, and the next request goes out with the refreshed token', async () => {
    const { server, api } = await startSession();
    server.revokeAccessTokens();

    const error = await rejectionOf(api.post('/api/upload', Readable.from([Buffer.from('streamed')])));

    expect(error).toBeInstanceOf(AxiosError);
    expect((error as AxiosError).response?.status).toBe(401);
    expect(server.stats()).toMatchObject({ apiRequests: 1, tokenRequests: 1 });
    expect((await api.get('/api/items')).status).toBe(200);
    expect(server.stats()).toMatchObject({ apiRequests: 2, tokenRequests: 1 });
  });

  it('rejects every waiting request with SESSION_EXPIRED when the refresh token was revoked, then fails fast', async () => {
    const { server, api } = await startSession();
    server.revokeRefreshTokens();

    const results = await Promise.allSettled(Array.from({ length: 5 }, () => api.get('/api/items')));

    for (const result of results) {
      expect(result.status === 'rejected' && isTokenRelayError(result.reason) && result.reason.code).toBe(ErrorCode.SESSION_EXPIRED);
    }
    expect(server.stats().tokenRequests).toBe(1);
    const later = await rejectionOf(api.get('/api/items'));
    expect(isTokenRelayError(later) && later.code).toBe(ErrorCode.SESSION_EXPIRED);
    expect(server.stats()).toMatchObject({ tokenRequests: 1, apiRequests: 5 });
  });

  it('never sends the bearer to another origin, and never refreshes for a 401 from the token endpoint', async () => {
    const { server, api } = await startSession();
    const elsewhere = await startServer();

    await api.get('/api/items');
    const otherOrigin = await rejectionOf(api.get(`${elsewhere.url}/api/items`));
    const tokenEndpoint = await rejectionOf(api.post(server.tokenEndpoint, 'grant_type=refresh_token&refresh_token=x'));

    expect((otherOrigin as AxiosError).response?.status).toBe(401);
    expect(elsewhere.stats().apiRequestLog.map((entry) => entry.accessToken)).toEqual([undefined]);
    expect((tokenEndpoint as AxiosError).response?.status).toBe(401);
    // Only the caller's own token request (its bearer-free sending is proved in the unit tests): its 401 started no refresh.
    expect(server.stats().tokenRequestLog.map((entry) => [entry.clientAuthentication, entry.error])).toEqual([
      [undefined, 'invalid_client'],
    ]);
  });

  it('does not refresh for a 403 insufficient_scope or a DPoP nonce challenge', async () => {
    const { server, api } = await startSession();

    const forbidden = await rejectionOf(api.get('/api/forbidden'));
    const dpop = await rejectionOf(api.get('/api/dpop'));

    expect([(forbidden as AxiosError).response?.status, (dpop as AxiosError).response?.status]).toEqual([403, 401]);
    expect(server.stats()).toMatchObject({ tokenRequests: 0, apiRequests: 2 });
  });

  it('keeps steady traffic free of 401s with 1 s tokens by refreshing before expiry', async () => {
    const { server, api } = await startSession({ accessTokenTtlSeconds: 1 });
    const until = Date.now() + 2_200;

    while (Date.now() < until) {
      expect((await api.get('/api/items')).status).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 40));
    }

    expect(server.stats().api401).toBe(0);
    expect(server.stats().tokenRequests).toBeGreaterThanOrEqual(2);
    expect(server.stats().maxInFlightTokenRequests).toBe(1);
  });

  it('follows refresh-token rotation across refreshes without ever reusing a rotated token', async () => {
    const { server, api } = await startSession({ rotateRefreshTokens: true });

    for (let round = 0; round < 3; round++) {
      server.revokeAccessTokens();
      expect((await api.get('/api/items')).status).toBe(200);
    }

    expect(server.stats()).toMatchObject({ tokenRequests: 3, refreshTokenReuses: 0, familiesRevoked: 0 });
  });

  it('recovers a Salesforce REST call from INVALID_SESSION_ID with one refresh', async () => {
    const { server, api } = await startSession({ mode: 'salesforce' });
    server.revokeAccessTokens();

    const response = await api.get(`/services/data/v60.0/sobjects/Account/${salesforceFixtures.account.Id}`);

    expect(response.data).toMatchObject({ Name: salesforceFixtures.account.Name });
    expect(server.stats()).toMatchObject({ tokenRequests: 1, api401: 1, apiOk: 1 });
  });
});

describe('attachTokenRelay: where the bearer goes, against the embedded OAuth server', () => {
  it('never carries the bearer along a same-origin redirect to the token endpoint, and makes no token call for its 401', async () => {
    const { server, api } = await startSession();

    const error = await rejectionOf(api.get('/redirect', { params: { to: '/oauth/token' } }));

    expect((error as AxiosError).response?.status).toBe(405);
    expect(server.stats().tokenRequestLog.map((entry) => [entry.method, entry.accessToken])).toEqual([['GET', undefined]]);
  });

  it('never refreshes or replays for a 401 from another origin reached by a redirect', async () => {
    const { server, api } = await startSession();
    const elsewhere = await startServer();

    const error = await rejectionOf(api.get('/redirect', { params: { to: `${elsewhere.url}/api/items` } }));

    expect((error as AxiosError).response?.status).toBe(401);
    expect(server.stats().tokenRequests).toBe(0);
    expect(elsewhere.stats().apiRequestLog.map((entry) => entry.accessToken)).toEqual([undefined]);
  });

  it('gives no bearer to another origin that an interceptor registered before attach retargets to', async () => {
    const server = await startServer();
    const elsewhere = await startServer();
    const api = axios.create({ baseURL: server.url, proxy: false });
    // Registered first, so axios runs it after tokenrelay's.
    api.interceptors.request.use((config) => ({ ...config, baseURL: elsewhere.url }) as typeof config);
    const refresh = defaultClientGrant(server);
    attachTokenRelay(api, createTokenManager({ tokens: server.issue(), refresh }));

    const error = await rejectionOf(api.get('/api/items'));

    expect((error as AxiosError).response?.status).toBe(401);
    expect(elsewhere.stats().apiRequestLog.map((entry) => entry.accessToken)).toEqual([undefined]);
    expect(server.stats().tokenRequests).toBe(0);
  });

  it('signed out, sends requests without a bearer and gives their 401 to the caller with no token call', async () => {
    const server = await startServer();
    const manager = createTokenManager({
      refresh: defaultClientGrant(server),
    });
    const api = axios.create({ baseURL: server.url, proxy: false });
    attachTokenRelay(api, manager);

    const error = await rejectionOf(api.get('/api/items'));

    expect((error as AxiosError).response?.status).toBe(401);
    expect(server.stats().tokenRequests).toBe(0);
    expect(server.stats().apiRequestLog.map((entry) => entry.accessToken)).toEqual([undefined]);
  });
});

describe('attachTokenRelay: what logging an AxiosError shows, against real sockets', () => {
  const accessToken = 'access-token-never-logged';

  /** A server on 127.0.0.1 that answers 500 at once, except `/slow`, which never answers. */
  async function startApi() {
    const api = createServer((request, response) => {
      if (request.url === '/slow') return;
      response.writeHead(500).end('boom');
    });
    await new Promise<void>((listening) => api.listen(0, '127.0.0.1', listening));
    const url = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
    closers.push(() => new Promise<void>((closed) => (api.closeAllConnections(), api.close(() => closed()))));
    return url;
  }

  function instanceOn(url: string, options: CreateAxiosDefaults = {}) {
    const instance = axios.create({ baseURL: url, proxy: false, ...options });
    attachTokenRelay(instance, createTokenManager({ tokens: { accessToken, refreshToken: 'r0' }, refresh: async () => ({ accessToken: 'two' }) }));
    return instance;
  }

  /** Everything a logger could print of the error: its JSON, and Node's inspection at any depth. */
  const shown = (error: unknown) => `${JSON.stringify(error)}\n${inspect(error, { depth: Infinity })}`;

  it.each([
    ['a 500', (url: string) => instanceOn(url).get('/boom')],
    ['a 500 with redirects off', (url: string) => instanceOn(url, { maxRedirects: 0 }).get('/boom')],
    ['a timeout', (url: string) => instanceOn(url, { timeout: 200 }).get('/slow')],
    ['an abort in flight', (url: string) => instanceOn(url).get('/slow', { signal: AbortSignal.timeout(200) })],
    ['a refused connection', (url: string) => instanceOn(url.replace(/:\d+$/, ':1')).get('/boom')],
    ['a refused connection with redirects off', (url: string) => instanceOn(url.replace(/:\d+$/, ':1'), { maxRedirects: 0 }).get('/boom')],
  ])('leaves the access token out of the AxiosError of %s, and its request still there to read', async (_what, send) => {
    const url = await startApi();

    const error = await send(url).then(
      () => expect.unreachable('the request should have failed'),
      (failed: unknown) => failed as AxiosError,
    );

    expect(error.isAxiosError).toBe(true);
    expect(shown(error)).not.toContain(accessToken);
    expect(error.request).toBeDefined();
  });
});
