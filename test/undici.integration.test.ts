import { createHash } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ErrorCode, createTokenManager, findTokenRelayError, type Origins, type TokenManager } from '@tokenrelay/core';
import { withTokenRelay } from '@tokenrelay/fetch';
import { startOAuthServer, type OAuthServer, type OAuthServerOptions } from '@tokenrelay/testing';
import { tokenRelayInterceptor } from '@tokenrelay/undici';
import * as undici from 'undici';
import * as undici7 from 'undici7';
import PQueue from 'p-queue';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { defaultClientGrant } from './helpers/default-client-grant.js';

// Captured before any installation, as an SDK or a client made at import time holds it.
const capturedFetch = globalThis.fetch;

const servers: OAuthServer[] = [];
/** Servers a test plays on node:http itself, for answers the OAuth server does not give. */
const rawServers: Server[] = [];
const originalDispatcher = undici.getGlobalDispatcher();

afterEach(async () => {
  undici.setGlobalDispatcher(originalDispatcher);
  await Promise.all(servers.splice(0).map((server) => server.close()));
  for (const server of rawServers.splice(0)) {
    server.closeAllConnections();
    await new Promise((closed) => server.close(closed));
  }
});

async function startServer(options: OAuthServerOptions = {}): Promise<OAuthServer> {
  const server = await startOAuthServer(options);
  servers.push(server);
  return server;
}

/** A manager whose token calls use the global fetch: they go through the global dispatcher too. */
function managerFor(server: OAuthServer, signedIn = true): TokenManager {
  return createTokenManager({
    ...(signedIn ? { tokens: server.issue() } : {}),
    refresh: defaultClientGrant(server),
  });
}

/** Signed in on a fresh server, the interceptor composed on the global dispatcher. */
async function install(options: OAuthServerOptions = {}, signedIn = true) {
  const server = await startServer(options);
  const manager = managerFor(server, signedIn);
  undici.setGlobalDispatcher(originalDispatcher.compose(tokenRelayInterceptor(manager, { origins: [server.url] })));
  return { server, manager };
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
const payload = JSON.stringify({ items: Array.from({ length: 200 }, (_, i) => `item-${i}`) });

describe('tokenRelayInterceptor on the global dispatcher', () => {
  it("covers Node's own global fetch: a burst after revocation makes one token call and every request succeeds", async () => {
    const { server } = await install({ tokenEndpointLatencyMs: 100 });
    server.revokeAccessTokens();

    const responses = await Promise.all(Array.from({ length: 10 }, (_, i) => fetch(`${server.url}/api/items/${i}`)));

    expect(responses.map((response) => response.status)).toEqual(Array(10).fill(200));
    expect(server.stats()).toMatchObject({ tokenRequests: 1, api401: 10, apiOk: 10 });
  });

  it('covers a fetch captured before the installation', async () => {
    const { server } = await install();
    server.revokeAccessTokens();

    const responses = await Promise.all(Array.from({ length: 5 }, () => capturedFetch(`${server.url}/api/items`)));

    expect(responses.map((response) => response.status)).toEqual(Array(5).fill(200));
    expect(server.stats().tokenRequests).toBe(1);
  });

  it('covers the fetch of the undici package, 6 and 7', async () => {
    const { server } = await install();
    server.revokeAccessTokens();

    const [six, seven] = await Promise.all([undici.fetch(`${server.url}/api/six`), undici7.fetch(`${server.url}/api/seven`)]);

    expect([six.status, seven.status]).toEqual([200, 200]);
    expect(server.stats().tokenRequests).toBe(1);
  });

  it('replays a POST of undici.request with the same bytes after the refresh', async () => {
    const { server } = await install();
    server.revokeAccessTokens();

    const response = await undici.request(`${server.url}/api/upload`, { method: 'POST', body: payload });

    expect(response.statusCode).toBe(200);
    expect(await response.body.json()).toMatchObject({ bodySha256: sha256(payload) });
    expect(server.stats()).toMatchObject({ apiRequests: 2, tokenRequests: 1 });
  });

  it("never sends a fetch body twice (fetch streams it to the dispatcher): the caller gets the 401, the next request the new token", async () => {
    const { server } = await install();
    server.revokeAccessTokens();

    const response = await fetch(`${server.url}/api/upload`, { method: 'POST', body: payload });

    expect(response.status).toBe(401);
    expect(await response.json()).toMatchObject({ error: 'invalid_token' });
    expect(server.stats()).toMatchObject({ apiRequests: 1, tokenRequests: 1 });
    expect((await fetch(`${server.url}/api/items`)).status).toBe(200);
  });

  it('fails every request of a dead session with SESSION_EXPIRED, which fetch wraps in its TypeError and findTokenRelayError finds', async () => {
    const { server } = await install();
    server.revokeRefreshTokens();

    const viaRequest = undici.request(`${server.url}/api/items`);
    const viaFetch = fetch(`${server.url}/api/items`);

    await expect(viaRequest).rejects.toMatchObject({ name: 'TokenRelayError', code: ErrorCode.SESSION_EXPIRED });
    const error: unknown = await viaFetch.catch((reason: unknown) => reason);
    expect(error).toBeInstanceOf(TypeError);
    expect(findTokenRelayError(error)?.code).toBe(ErrorCode.SESSION_EXPIRED);
    expect(server.stats().tokenRequests).toBe(1);
  });

  it('makes no more token calls against a failing token endpoint than withTokenRelay alone', async () => {
    const alone = await startServer();
    const relayed = withTokenRelay(capturedFetch, managerFor(alone), { origins: [alone.url] });
    alone.revokeAccessTokens();
    alone.failNextTokenRequests(100, 'unavailable');
    await expect(relayed(`${alone.url}/api/down`)).rejects.toMatchObject({ name: 'TokenRelayError' });

    const { server } = await install();
    server.revokeAccessTokens();
    server.failNextTokenRequests(100, 'unavailable');
    await expect(undici.request(`${server.url}/api/down`)).rejects.toMatchObject({ name: 'TokenRelayError' });

    expect(server.stats().tokenRequests).toBeGreaterThan(0);
    expect(server.stats().tokenRequests).toBeLessThanOrEqual(alone.stats().tokenRequests);
  });

  it('signed out, sends requests without a bearer and returns their 401 with no token call', async () => {
    const { server } = await install({}, false);

    const response = await fetch(`${server.url}/api/items`);

    expect(response.status).toBe(401);
    expect(server.stats().tokenRequests).toBe(0);
    expect(server.stats().apiRequestLog.map((entry) => entry.accessToken)).toEqual([undefined]);
  });

  it('never sends the bearer to another origin, nor replays its 401', async () => {
    const { server } = await install();
    const elsewhere = await startServer();

    expect((await fetch(`${server.url}/api/items`)).status).toBe(200);
    expect((await fetch(`${elsewhere.url}/api/items`)).status).toBe(401);
    expect(elsewhere.stats().apiRequestLog.map((entry) => entry.accessToken)).toEqual([undefined]);
    expect(server.stats().tokenRequests).toBe(0);
  });

  it('judges every redirect hop fetch dispatches: no bearer to the token endpoint or another origin, no token call for their answers', async () => {
    const { server } = await install();
    const elsewhere = await startServer();

    const toTokenEndpoint = await fetch(`${server.url}/redirect?status=307&to=/oauth/token`, { method: 'POST', body: 'grant_type=refresh_token' });
    const toElsewhere = await fetch(`${server.url}/redirect?to=${encodeURIComponent(`${elsewhere.url}/api/items`)}`);
    const within = await fetch(`${server.url}/redirect?to=/api/items`);

    expect([toTokenEndpoint.status, toElsewhere.status, within.status]).toEqual([400, 401, 200]);
    expect(server.stats().tokenRequestLog.map((entry) => entry.accessToken)).toEqual([undefined]);
    expect(elsewhere.stats().apiRequestLog.map((entry) => entry.accessToken)).toEqual([undefined]);
  });

  it('leaves a request that carries its own Authorization header untouched', async () => {
    const { server } = await install();
    server.revokeAccessTokens();

    const response = await fetch(`${server.url}/api/items`, { headers: { authorization: 'Bearer mine' } });

    expect(response.status).toBe(401);
    expect(server.stats().tokenRequests).toBe(0);
  });
});

/**
 * An API on node:http that records the caller's headers of every request as they arrive (name as sent, value), in
 * order, and the SHA-256 of its body; it takes `Bearer fresh` and answers 401 to anything else.
 */
async function startHeaderEchoApi() {
  const arrivals: Array<{ headers: Array<[string, string]>; bodySha256: string }> = [];
  const api = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const headers: Array<[string, string]> = [];
      for (let index = 0; index < request.rawHeaders.length; index += 2) {
        const name = request.rawHeaders[index]!;
        if (/^(x-|authorization$)/i.test(name)) headers.push([name, request.rawHeaders[index + 1]!]);
      }
      arrivals.push({ headers, bodySha256: sha256(Buffer.concat(chunks).toString('utf8')) });
      response.statusCode = request.headers.authorization === 'Bearer fresh' ? 200 : 401;
      response.end();
    });
  });
  rawServers.push(api);
  await new Promise<void>((listening) => api.listen(0, '127.0.0.1', listening));
  return { url: `http://127.0.0.1:${(api.address() as AddressInfo).port}`, arrivals };
}

/** Every form of headers undici takes, each made anew from the same pairs (an iterator is read once). */
const headerForms = (client: typeof undici): Array<[string, (pairs: string[][]) => unknown]> => [
  ['a record', (pairs) => Object.fromEntries(pairs)],
  ['a flat list', (pairs) => pairs.flat()],
  ['a Map', (pairs) => new Map(pairs as Array<[string, string]>)],
  ['a Headers', (pairs) => new client.Headers(pairs as Array<[string, string]>)],
  ['a one-shot iterator (Map.entries())', (pairs) => new Map(pairs as Array<[string, string]>).entries()],
  [
    'a generator',
    (pairs) =>
      (function* () {
        yield* pairs;
      })(),
  ],
];

describe('tokenRelayInterceptor and the headers undici takes', () => {
  for (const [version, client] of [['6', undici], ['7', undici7 as unknown as typeof undici]] as const) {
    for (const [form, headersOf] of headerForms(client)) {
      it(`adds the bearer after the caller's headers given as ${form}, every one kept in order, and replays the request after a refresh with them (undici ${version})`, async () => {
        const api = await startHeaderEchoApi();
        const refresh = vi.fn(async () => ({ accessToken: 'fresh' }));
        const manager = createTokenManager({ tokens: { accessToken: 'stale', refreshToken: 'r' }, refresh });
        const agent = new client.Agent().compose(tokenRelayInterceptor(manager, { origins: [api.url] }));
        const callers = [
          ['x-a', '1'],
          ['x-b', '2'],
        ];

        const headers = headersOf(callers) as Record<string, string>;
        const response = await client.request(`${api.url}/upload`, { dispatcher: agent, method: 'POST', body: payload, headers });
        await response.body.dump();

        expect(response.statusCode).toBe(200);
        expect(api.arrivals).toEqual([
          { headers: [...callers, ['authorization', 'Bearer stale']], bodySha256: sha256(payload) },
          { headers: [...callers, ['authorization', 'Bearer fresh']], bodySha256: sha256(payload) },
        ]);
        expect(refresh).toHaveBeenCalledTimes(1);
        await agent.close();
      });

      it(`leaves a request whose headers given as ${form} carry its own Authorization untouched: they arrive as undici sends them without it (undici ${version})`, async () => {
        const api = await startHeaderEchoApi();
        const refresh = vi.fn(async () => ({ accessToken: 'fresh' }));
        const manager = createTokenManager({ tokens: { accessToken: 'stale', refreshToken: 'r' }, refresh });
        const agent = new client.Agent().compose(tokenRelayInterceptor(manager, { origins: [api.url] }));
        const plain = new client.Agent();
        const callers = [
          ['x-a', '1'],
          ['AuThorization', 'Bearer mine'],
          ['x-b', '2'],
        ];

        const relayed = await client.request(`${api.url}/`, { dispatcher: agent, headers: headersOf(callers) as Record<string, string> });
        await relayed.body.dump();
        const direct = await client.request(`${api.url}/`, { dispatcher: plain, headers: headersOf(callers) as Record<string, string> });
        await direct.body.dump();

        expect([relayed.statusCode, direct.statusCode]).toEqual([401, 401]);
        expect(api.arrivals[0]!.headers).toEqual(api.arrivals[1]!.headers);
        expect(api.arrivals[0]!.headers.map(([name, value]) => [name.toLowerCase(), value]).sort()).toEqual([
          ['authorization', 'Bearer mine'],
          ['x-a', '1'],
          ['x-b', '2'],
        ]);
        expect(refresh).not.toHaveBeenCalled();
        await Promise.all([agent.close(), plain.close()]);
      });
    }
  }
});

describe('tokenRelayInterceptor and headers undici refuses or reads as a record', () => {
  for (const [version, client] of [['6', undici], ['7', undici7 as unknown as typeof undici]] as const) {
    it(`fails a request whose iterable headers hold an entry that is no [name, value] pair as undici does without it, and sends nothing: no shifted pairs, no injected header (undici ${version})`, async () => {
      const api = await startHeaderEchoApi();
      const refresh = vi.fn(async () => ({ accessToken: 'fresh' }));
      const manager = createTokenManager({ tokens: { accessToken: 'stale', refreshToken: 'r' }, refresh });
      const agent = new client.Agent().compose(tokenRelayInterceptor(manager, { origins: [api.url] }));
      const plain = new client.Agent();
      // Flattened, these would be x-b: 2 and x-evil: v.
      const malformed = () => [['x-b', '2', 'x-evil'], ['v']].values() as unknown as Record<string, string>;

      const relayed: unknown = await client.request(`${api.url}/`, { dispatcher: agent, headers: malformed() }).catch((error: unknown) => error);
      const direct: unknown = await client.request(`${api.url}/`, { dispatcher: plain, headers: malformed() }).catch((error: unknown) => error);

      expect(direct).toBeInstanceOf(client.errors.InvalidArgumentError);
      expect(relayed).toBeInstanceOf(client.errors.InvalidArgumentError);
      expect((relayed as Error).message).toBe((direct as Error).message);
      expect(api.arrivals).toEqual([]);
      expect(refresh).not.toHaveBeenCalled();
      await Promise.all([agent.close(), plain.close()]);
    });
  }

  it('reads a plain record as a record even when Object.prototype has been given a Symbol.iterator, as undici 7 does (undici 7)', async () => {
    const client = undici7 as unknown as typeof undici;
    const api = await startHeaderEchoApi();
    const manager = createTokenManager({ tokens: { accessToken: 'fresh', refreshToken: 'r' }, refresh: async () => ({ accessToken: 'fresh' }) });
    const agent = new client.Agent().compose(tokenRelayInterceptor(manager, { origins: [api.url] }));
    const prototype = Object.prototype as { [Symbol.iterator]?: unknown };
    // A polluted prototype: undici 7 ignores an iterator a plain record only inherits from Object.prototype.
    prototype[Symbol.iterator] = function* () {
      yield ['x-evil', 'injected'];
    };
    try {
      const response = await client.request(`${api.url}/`, { dispatcher: agent, headers: { 'x-a': '1' } });
      await response.body.dump();
    } finally {
      delete prototype[Symbol.iterator];
    }

    expect(api.arrivals.map((arrival) => arrival.headers)).toEqual([
      [
        ['x-a', '1'],
        ['authorization', 'Bearer fresh'],
      ],
    ]);
    await agent.close();
  });
});

describe('tokenRelayInterceptor composed on a Pool or a Client', () => {
  for (const [version, client] of [['6', undici], ['7', undici7 as unknown as typeof undici]] as const) {
    it(`authorizes and replays a request that names its origin (undici ${version})`, async () => {
      const server = await startServer();
      const pool = new client.Pool(server.url).compose(tokenRelayInterceptor(managerFor(server), { origins: [server.url] }));
      server.revokeAccessTokens();

      const response = await pool.request({ origin: server.url, path: '/api/items', method: 'GET' });
      await response.body.dump();

      expect(response.statusCode).toBe(200);
      expect(server.stats().tokenRequests).toBe(1);
      await pool.close();
    });

    it(`fails a request by path alone, whose origin it cannot see, with CONFIGURATION_ERROR before it is sent, rather than send it without the bearer (undici ${version})`, async () => {
      const server = await startServer();
      const pool = new client.Pool(server.url).compose(tokenRelayInterceptor(managerFor(server), { origins: [server.url] }));
      const single = new client.Client(server.url).compose(tokenRelayInterceptor(managerFor(server), { origins: [server.url] }));

      await expect(pool.request({ path: '/api/items', method: 'GET' })).rejects.toMatchObject({ code: ErrorCode.CONFIGURATION_ERROR });
      await expect(single.request({ path: '/api/items', method: 'GET' })).rejects.toMatchObject({ code: ErrorCode.CONFIGURATION_ERROR });

      expect(server.stats().apiRequests).toBe(0);
      await Promise.all([pool.close(), single.close()]);
    });

    it(`fails a request whose origin is empty or null with CONFIGURATION_ERROR before it is sent, as one by path alone (undici ${version})`, async () => {
      const server = await startServer();
      const pool = new client.Pool(server.url).compose(tokenRelayInterceptor(managerFor(server), { origins: [server.url] }));

      for (const origin of ['', null]) {
        await expect(pool.request({ origin: origin as unknown as string, path: '/api/items', method: 'GET' })).rejects.toMatchObject({
          code: ErrorCode.CONFIGURATION_ERROR,
        });
      }

      expect(server.stats().apiRequests).toBe(0);
      await pool.close();
    });

    it(`passes a request by path alone that carries its own Authorization untouched (undici ${version})`, async () => {
      const server = await startServer();
      const pool = new client.Pool(server.url).compose(tokenRelayInterceptor(managerFor(server), { origins: [server.url] }));

      const response = await pool.request({ path: '/api/items', method: 'GET', headers: { authorization: 'Bearer mine' } });
      await response.body.dump();

      expect(response.statusCode).toBe(401);
      expect(server.stats().apiRequestLog.map((entry) => entry.accessToken)).toEqual(['mine']);
      expect(server.stats().tokenRequests).toBe(0);
      await pool.close();
    });
  }
});

describe('tokenRelayInterceptor on an undici 7 agent', () => {
  it("replays under undici 7's own retry interceptor, whose handler speaks undici 7's controller interface", async () => {
    const server = await startServer();
    const manager = managerFor(server);
    const agent = new undici7.Agent();
    const dispatcher = agent.compose(tokenRelayInterceptor(manager, { origins: [server.url] }), undici7.interceptors.retry());
    server.revokeAccessTokens();

    const responses = await Promise.all(
      Array.from({ length: 3 }, () => undici7.request(`${server.url}/api/upload`, { method: 'POST', body: payload, dispatcher })),
    );

    expect(responses.map((response) => response.statusCode)).toEqual([200, 200, 200]);
    expect(await responses[0]?.body.json()).toMatchObject({ bodySha256: sha256(payload) });
    expect(server.stats().tokenRequests).toBe(1);
    await agent.close();
  });
});

describe('tokenRelayInterceptor above a redirect follower', () => {
  /** Dispatchers that follow redirects below the interceptor: undici 6's `maxRedirections`, undici 7's redirect interceptor composed before it. */
  function followingBelow(manager: TokenManager, origins: Origins) {
    const interceptor = tokenRelayInterceptor(manager, { origins });
    const agent6 = new undici.Agent().compose(interceptor);
    const agent7 = new undici7.Agent().compose(undici7.interceptors.redirect({ maxRedirections: 3 }), interceptor);
    const sends = [
      (url: string, options: { method?: 'POST'; body?: string } = {}) => undici.request(url, { ...options, dispatcher: agent6, maxRedirections: 3 }),
      (url: string, options: { method?: 'POST'; body?: string } = {}) => undici7.request(url, { ...options, dispatcher: agent7 }),
    ];
    return { sends, close: () => Promise.all([agent6.close(), agent7.close()]) };
  }

  it('never lets a hop it did not judge carry the bearer to the token endpoint on the same origin: the request fails with CONFIGURATION_ERROR', async () => {
    const server = await startServer();
    const { sends, close } = followingBelow(managerFor(server), [server.url]);

    for (const send of sends) {
      const sent = send(`${server.url}/redirect?status=307&to=/oauth/token`, { method: 'POST', body: 'grant_type=refresh_token' });
      await expect(sent).rejects.toMatchObject({ code: ErrorCode.CONFIGURATION_ERROR });
    }

    expect(server.stats().tokenRequestLog.map((entry) => entry.accessToken)).toEqual([]);
    await close();
  });

  /** Signed in at `server`, refreshing at another server's token endpoint: every URL of `server` may get the bearer. */
  async function tokenEndpointElsewhere(server: OAuthServer) {
    const tokenServer = await startServer();
    return createTokenManager({ tokens: server.issue(), refresh: defaultClientGrant(tokenServer) });
  }

  it('refreshes and replays only for an answer its bearer reached: not for the 401 of another origin at the end of the redirects', async () => {
    const server = await startServer();
    const elsewhere = await startServer();
    const manager = await tokenEndpointElsewhere(server);
    const refreshes: unknown[] = [];
    manager.on('refresh', (tokens) => refreshes.push(tokens));
    const { sends, close } = followingBelow(manager, [server.url]);

    for (const send of sends) {
      const response = await send(`${server.url}/redirect?to=${encodeURIComponent(`${elsewhere.url}/api/items`)}`);
      await response.body.dump();
      expect(response.statusCode).toBe(401);
    }

    expect(refreshes).toEqual([]);
    expect(elsewhere.stats().apiRequestLog.map((entry) => entry.accessToken)).toEqual([undefined, undefined]);
    await close();
  });

  it('lets the follower carry the bearer on hops within an origin whose every URL may have it', async () => {
    const server = await startServer();
    const { sends, close } = followingBelow(await tokenEndpointElsewhere(server), [server.url]);

    for (const send of sends) {
      const response = await send(`${server.url}/redirect?to=/api/items`);
      await response.body.dump();
      expect(response.statusCode).toBe(200);
    }

    expect(server.stats()).toMatchObject({ apiOk: 2, api401: 0 });
    await close();
  });

  it("fails a redirect from the token endpoint's origin with CONFIGURATION_ERROR at its first hop below, even one to another origin, which undici would send without the bearer: that hop is never sent", async () => {
    const server = await startServer();
    const elsewhere = await startServer();
    const { sends, close } = followingBelow(managerFor(server), [server.url]);

    for (const send of sends) {
      await expect(send(`${server.url}/redirect?to=${encodeURIComponent(`${elsewhere.url}/api/items`)}`)).rejects.toMatchObject({
        code: ErrorCode.CONFIGURATION_ERROR,
      });
    }

    expect(elsewhere.stats().apiRequests).toBe(0);
    await close();
  });

  it('with an origins predicate, fails every redirect followed below it with CONFIGURATION_ERROR at its first hop, within the origin or to another', async () => {
    const server = await startServer();
    const elsewhere = await startServer();
    const { sends, close } = followingBelow(await tokenEndpointElsewhere(server), (url) => url.origin === server.url);

    for (const send of sends) {
      for (const to of ['/api/items', `${elsewhere.url}/api/items`]) {
        await expect(send(`${server.url}/redirect?to=${encodeURIComponent(to)}`)).rejects.toMatchObject({ code: ErrorCode.CONFIGURATION_ERROR });
      }
    }

    expect([server.stats().apiRequests, elsewhere.stats().apiRequests]).toEqual([0, 0]);
    await close();
  });
});

describe('tokenRelayInterceptor below the redirect interceptor (composed after it)', () => {
  it('follows redirects and judges every hop: the bearer goes to neither the token endpoint on its origin nor another origin, and on within it (undici 6 and 7)', async () => {
    const server = await startServer();
    const elsewhere = await startServer();
    const interceptor = tokenRelayInterceptor(managerFor(server), { origins: [server.url] });
    const agent6 = new undici.Agent().compose(interceptor, undici.interceptors.redirect({ maxRedirections: 3 }));
    const agent7 = new undici7.Agent().compose(interceptor, undici7.interceptors.redirect({ maxRedirections: 3 }));
    const sends = [
      (url: string, options: { method?: 'POST'; body?: string } = {}) => undici.request(url, { ...options, dispatcher: agent6 }),
      (url: string, options: { method?: 'POST'; body?: string } = {}) => undici7.request(url, { ...options, dispatcher: agent7 }),
    ];

    const statuses: number[][] = [];
    for (const send of sends) {
      const answers = [
        await send(`${server.url}/redirect?status=307&to=/oauth/token`, { method: 'POST', body: 'grant_type=refresh_token' }),
        await send(`${server.url}/redirect?to=${encodeURIComponent(`${elsewhere.url}/api/items`)}`),
        await send(`${server.url}/redirect?to=/api/items`),
      ];
      await Promise.all(answers.map((answer) => answer.body.dump()));
      statuses.push(answers.map((answer) => answer.statusCode));
    }

    expect(statuses).toEqual([
      [400, 401, 200],
      [400, 401, 200],
    ]);
    expect(server.stats().tokenRequestLog.map((entry) => entry.accessToken)).toEqual([undefined, undefined]);
    expect(elsewhere.stats().apiRequestLog.map((entry) => entry.accessToken)).toEqual([undefined, undefined]);
    expect(server.stats()).toMatchObject({ tokenRequests: 2, apiOk: 2 });
    await Promise.all([agent6.close(), agent7.close()]);
  });
});

describe('tokenRelayInterceptor and the WWW-Authenticate of a 401', () => {
  /** An API on 127.0.0.1 that answers every request 401 with two WWW-Authenticate lines, the second naming another error than invalid_token; its URL. */
  async function apiWithTwoChallenges(): Promise<string> {
    const api = createServer((_request, response) => {
      response.setHeader('www-authenticate', ['Basic realm="api"', 'Bearer error="invalid_request"']);
      response.writeHead(401).end();
    });
    rawServers.push(api);
    await new Promise<void>((listening) => api.listen(0, '127.0.0.1', listening));
    return `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
  }

  it("reads every WWW-Authenticate header a 401 carries, as fetch's Headers and Node's http do: no refresh for one that names another error than invalid_token (undici 6 and 7, fetch)", async () => {
    const tokenServer = await startServer();
    const url = await apiWithTwoChallenges();
    const manager = createTokenManager({ tokens: tokenServer.issue(), refresh: defaultClientGrant(tokenServer) });
    const interceptor = tokenRelayInterceptor(manager, { origins: [url] });
    undici.setGlobalDispatcher(originalDispatcher.compose(interceptor));
    const agent7 = new undici7.Agent().compose(interceptor);

    const statuses = [
      await undici.request(`${url}/me`).then(async (response) => (await response.body.dump(), response.statusCode)),
      await undici7.request(`${url}/me`, { dispatcher: agent7 }).then(async (response) => (await response.body.dump(), response.statusCode)),
      await fetch(`${url}/me`).then(async (response) => (await response.arrayBuffer(), response.status)),
      await undici7.fetch(`${url}/me`, { dispatcher: agent7 }).then(async (response) => (await response.arrayBuffer(), response.status)),
    ];

    expect(statuses).toEqual([401, 401, 401, 401]);
    expect(tokenServer.stats().tokenRequests).toBe(0);
    await agent7.close();
  });

  it("shows shouldRefresh a repeated header's lines joined with ', ', as fetch's Headers does, under undici 6 and 7 alike, an undici 7 interceptor below it included", async () => {
    const tokenServer = await startServer();
    const url = await apiWithTwoChallenges();
    const seen: (string | undefined)[] = [];
    const manager = createTokenManager({ tokens: tokenServer.issue(), refresh: defaultClientGrant(tokenServer) });
    const interceptor = tokenRelayInterceptor(manager, { origins: [url], shouldRefresh: (response) => (seen.push(response.header('www-authenticate')), false) });
    const agent6 = new undici.Agent().compose(interceptor);
    const agent7 = new undici7.Agent().compose(interceptor);
    const agent7Below = new undici7.Agent().compose(undici7.interceptors.retry(), interceptor);

    await (await undici.request(`${url}/me`, { dispatcher: agent6 })).body.dump();
    await (await undici7.request(`${url}/me`, { dispatcher: agent7 })).body.dump();
    // An undici 7 interceptor below it hands each header on as a record, a repeated one's lines in an array.
    await (await undici7.request(`${url}/me`, { dispatcher: agent7Below })).body.dump();

    expect(seen).toEqual(Array(3).fill('Basic realm="api", Bearer error="invalid_request"'));
    await Promise.all([agent6.close(), agent7.close(), agent7Below.close()]);
  });
});

describe('tokenRelayInterceptor and a 401 whose body does not end soon', () => {
  /**
   * An API on 127.0.0.1 that answers the bearer `stale` with a 401 whose body `write` sends, and any other bearer
   * with 200. Records whether each 401 was sent whole before its connection closed.
   */
  async function apiRefusing(stale: string, write: (response: ServerResponse) => void) {
    const refusals: { sentWhole: boolean; closed: boolean }[] = [];
    const api = createServer((request, response) => {
      if (request.headers.authorization !== `Bearer ${stale}`) return response.end('ok');
      const refusal = { sentWhole: false, closed: false };
      refusals.push(refusal);
      response.on('finish', () => (refusal.sentWhole = true));
      response.on('close', () => (refusal.closed = true));
      response.writeHead(401, { 'content-type': 'text/plain' });
      write(response);
    });
    rawServers.push(api);
    await new Promise<void>((listening) => api.listen(0, '127.0.0.1', listening));
    return { url: `http://127.0.0.1:${(api.address() as AddressInfo).port}`, refusals };
  }

  /** Signed in with tokens of the OAuth server (its token endpoint elsewhere), the interceptor on the global dispatcher. */
  async function installFor(origin: (stale: string) => Promise<string>) {
    const tokenServer = await startServer();
    const tokens = tokenServer.issue();
    const url = await origin(tokens.accessToken);
    const manager = createTokenManager({ tokens, refresh: defaultClientGrant(tokenServer) });
    undici.setGlobalDispatcher(originalDispatcher.compose(tokenRelayInterceptor(manager, { origins: [url] })));
    return { url, tokenServer };
  }

  it('refreshes and replays at the 401\'s headers, without waiting for a body that drips on, and gives that exchange up', async () => {
    let refusals: { closed: boolean }[] = [];
    const { url, tokenServer } = await installFor(async (stale) => {
      const api = await apiRefusing(stale, (response) => {
        // A kilobyte every 10 ms while the client listens, at most 10,000 times: far longer than the test may take.
        let left = 10_000;
        const drip = () => {
          if (response.destroyed || left-- === 0) return;
          response.write('x'.repeat(1024), () => setTimeout(drip, 10));
        };
        drip();
      });
      refusals = api.refusals;
      return api.url;
    });

    const response = await undici.request(`${url}/me`);

    expect([response.statusCode, await response.body.text()]).toEqual([200, 'ok']);
    expect(tokenServer.stats().tokenRequests).toBe(1);
    await vi.waitFor(() => expect(refusals).toEqual([expect.objectContaining({ closed: true, sentWhole: false })]), { timeout: 5000 });
  });

  it('reads no more of a 401 body than it holds while it decides: a 32 MiB one is never read to its end', async () => {
    let refusals: { closed: boolean }[] = [];
    const { url } = await installFor(async (stale) => {
      const api = await apiRefusing(stale, (response) => {
        // A mebibyte at a time, each once the client has taken the one before (into its socket buffers at least).
        // The test assumes the loopback connection buffers (the kernel's send and receive buffers, a few MiB by
        // default on Linux, macOS and Windows) hold far less than 32 MiB: were they larger, the server could write
        // the whole body into them while the client reads no more than it holds, and sentWhole would be true.
        let left = 32;
        const write = () => {
          while (left-- > 0 && !response.destroyed) if (!response.write(Buffer.alloc(1024 * 1024, 'x'))) return void response.once('drain', write);
          response.end();
        };
        write();
      });
      refusals = api.refusals;
      return api.url;
    });

    const response = await undici.request(`${url}/me`);

    expect([response.statusCode, await response.body.text()]).toEqual([200, 'ok']);
    await vi.waitFor(() => expect(refusals).toEqual([expect.objectContaining({ closed: true, sentWhole: false })]), { timeout: 5000 });
  });
});

/** A dispatch handler's methods, of undici 6's interface and of 7's (which a dispatcher of Node's own undici hands on). */
const handlerMethods = [
  ['onConnect', 'onResponseStarted', 'onHeaders', 'onData', 'onBodySent', 'onRequestStart', 'onResponseStart', 'onResponseData'],
  ['onComplete', 'onError', 'onUpgrade', 'onResponseEnd', 'onResponseError', 'onRequestUpgrade'],
] as const;

/**
 * An interceptor that counts the API exchanges in flight below it, from dispatch to their end, and their peak.
 * It hands on a handler that calls the given one's methods (a class's, too: spreading one would lose them).
 */
function apiInFlightCounter() {
  let inFlight = 0;
  let peak = 0;
  const interceptor: undici.Dispatcher.DispatcherComposeInterceptor = (dispatch) => (options, handler) => {
    if (!options.path.startsWith('/api/')) return dispatch(options, handler);
    inFlight++;
    peak = Math.max(peak, inFlight);
    let over = false;
    const ended = () => {
      if (!over) inFlight--;
      over = true;
    };
    const given = handler as unknown as Record<string, (...args: unknown[]) => unknown>;
    const counted: Record<string, (...args: unknown[]) => unknown> = {};
    for (const [index, names] of handlerMethods.entries()) {
      for (const name of names) {
        if (typeof given[name] !== 'function') continue;
        counted[name] = (...args) => {
          if (index === 1) ended();
          return given[name]?.(...args);
        };
      }
    }
    return dispatch(options, counted as unknown as typeof handler);
  };
  return { interceptor, peak: () => peak };
}

describe('tokenRelayInterceptor with a queue', () => {
  /** Signed in with an expired token, so every request waits for the one refresh; API exchanges counted below the interceptor. */
  async function installQueued(queue?: PQueue) {
    const server = await startServer({ tokenEndpointLatencyMs: 50 });
    const manager = createTokenManager({ tokens: { ...server.issue(), expiresAt: Date.now() - 1_000 }, refresh: defaultClientGrant(server) });
    const counter = apiInFlightCounter();
    undici.setGlobalDispatcher(originalDispatcher.compose(counter.interceptor, tokenRelayInterceptor(manager, { origins: [server.url], queue })));
    const burst = () => Promise.all(Array.from({ length: 50 }, (_, i) => undici.request(`${server.url}/api/items/${i}?delayMs=10`)));
    return { server, counter, burst };
  }

  it('releases 50 requests behind one refresh at most 4 at a time, each counted until its answer ends, none failed', async () => {
    const { server, counter, burst } = await installQueued(new PQueue({ concurrency: 4 }));

    const responses = await burst();
    await Promise.all(responses.map((response) => response.body.dump()));

    expect(responses.map((response) => response.statusCode)).toEqual(Array(50).fill(200));
    expect(server.stats()).toMatchObject({ tokenRequests: 1, apiRequests: 50, apiOk: 50, api401: 0 });
    expect(counter.peak()).toBeLessThanOrEqual(4);
  });

  it('without a queue, releases them together (the burst the queue prevents)', async () => {
    const { server, counter, burst } = await installQueued();

    const responses = await burst();
    await Promise.all(responses.map((response) => response.body.dump()));

    expect(server.stats()).toMatchObject({ tokenRequests: 1, apiOk: 50 });
    expect(counter.peak()).toBeGreaterThan(4);
  });
});

describe('tokenRelayInterceptor and a redirect chain that left origins', () => {
  interface Arrival {
    url: string;
    method: string;
    authorization: string | undefined;
    body: string;
  }

  /**
   * An API and another origin on node:http: the API's `/hop?status=` redirects with that status to the other origin's
   * `/bounce`, which redirects with the same status back to the API's `/account/delete`, which answers 401
   * `invalid_token`. Every arrival recorded, in order.
   */
  async function startBouncingServers() {
    const arrivals: Arrival[] = [];
    const listen = async (answer: (url: URL) => { status: number; location?: string }) => {
      const server = createServer((request, response) => {
        const chunks: Buffer[] = [];
        request.on('data', (chunk: Buffer) => chunks.push(chunk));
        request.on('end', () => {
          const url = new URL(request.url ?? '/', origin);
          arrivals.push({ url: `${url.origin}${url.pathname}`, method: request.method ?? '', authorization: request.headers.authorization, body: Buffer.concat(chunks).toString() });
          const { status, location } = answer(url);
          response.writeHead(status, { ...(location ? { location } : {}), ...(status === 401 ? { 'www-authenticate': 'Bearer error="invalid_token"' } : {}) }).end();
        });
      });
      rawServers.push(server);
      await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
      const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      return origin;
    };
    let apiOrigin = '';
    const otherOrigin = await listen((url) => ({ status: Number(url.searchParams.get('status')), location: `${apiOrigin}/account/delete` }));
    apiOrigin = await listen((url) =>
      url.pathname === '/hop'
        ? { status: Number(url.searchParams.get('status')), location: `${otherOrigin}/bounce?status=${url.searchParams.get('status')}` }
        : { status: 401 },
    );
    return { api: apiOrigin, other: otherOrigin, arrivals };
  }

  /** Signed in with a fresh token, its refreshes counted (no token endpoint: every URL of `origins` may have the bearer). */
  function countingManager() {
    let refreshes = 0;
    const manager = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r0', expiresAt: Date.now() + 3_600_000 },
      refresh: async () => ({ accessToken: `v${++refreshes}`, refreshToken: 'r', expiresAt: Date.now() + 3_600_000 }),
    });
    return { manager, refreshes: () => refreshes };
  }

  /** What each redirect status does to a POST on its next hop: 303 makes it a bodiless GET; undici 7 also makes a 302 POST one, undici 6 does not. */
  const hopMethod = (status: number, version: 6 | 7) => (status === 303 || (status === 302 && version === 7) ? 'GET' : 'POST');

  for (const status of [307, 302, 303]) {
    it(`never puts the bearer back on a hop after the chain left origins, nor refreshes for its 401: the redirect interceptor composed after it, a POST redirected ${status} (undici 6 and 7)`, async () => {
      const { api, other, arrivals } = await startBouncingServers();
      const { manager, refreshes } = countingManager();
      const interceptor = tokenRelayInterceptor(manager, { origins: [api] });
      const agent6 = new undici.Agent().compose(interceptor, undici.interceptors.redirect({ maxRedirections: 3 }));
      const agent7 = new undici7.Agent().compose(interceptor, undici7.interceptors.redirect({ maxRedirections: 3 }));

      for (const [version, send] of [
        [6, () => undici.request(`${api}/hop?status=${status}`, { method: 'POST', body: 'x=1', dispatcher: agent6 })],
        [7, () => undici7.request(`${api}/hop?status=${status}`, { method: 'POST', body: 'x=1', dispatcher: agent7 })],
      ] as const) {
        arrivals.length = 0;
        const response = await send();
        await response.body.dump();

        expect(response.statusCode).toBe(401);
        const method = hopMethod(status, version);
        expect(arrivals).toEqual([
          { url: `${api}/hop`, method: 'POST', authorization: 'Bearer v0', body: 'x=1' },
          { url: `${other}/bounce`, method, authorization: undefined, body: method === 'POST' ? 'x=1' : '' },
          { url: `${api}/account/delete`, method, authorization: undefined, body: method === 'POST' ? 'x=1' : '' },
        ]);
      }
      expect(refreshes()).toBe(0);
      await Promise.all([agent6.close(), agent7.close()]);
    });
  }

  it("leaves a follower below it (undici 6's maxRedirections, undici 7's redirect interceptor composed before it) to drop the bearer for the rest of the chain, as it does, and refreshes for no answer after", async () => {
    const { api, other, arrivals } = await startBouncingServers();
    const { manager, refreshes } = countingManager();
    const interceptor = tokenRelayInterceptor(manager, { origins: [api] });
    const agent6 = new undici.Agent().compose(interceptor);
    const agent7 = new undici7.Agent().compose(undici7.interceptors.redirect({ maxRedirections: 3 }), interceptor);

    for (const send of [
      () => undici.request(`${api}/hop?status=307`, { method: 'POST', body: 'x=1', dispatcher: agent6, maxRedirections: 3 }),
      () => undici7.request(`${api}/hop?status=307`, { method: 'POST', body: 'x=1', dispatcher: agent7 }),
    ]) {
      arrivals.length = 0;
      const response = await send();
      await response.body.dump();

      expect(response.statusCode).toBe(401);
      expect(arrivals.map((arrival) => [arrival.url, arrival.method, arrival.authorization])).toEqual([
        [`${api}/hop`, 'POST', 'Bearer v0'],
        [`${other}/bounce`, 'POST', undefined],
        [`${api}/account/delete`, 'POST', undefined],
      ]);
    }
    expect(refreshes()).toBe(0);
    await Promise.all([agent6.close(), agent7.close()]);
  });

  it("passes on untouched every hop of a chain whose request carried its own Authorization: undici drops it on leaving the origin, and our bearer never takes its place (undici 6 and 7)", async () => {
    const { api, other, arrivals } = await startBouncingServers();
    const { manager, refreshes } = countingManager();
    const interceptor = tokenRelayInterceptor(manager, { origins: [api] });
    const agent6 = new undici.Agent().compose(interceptor, undici.interceptors.redirect({ maxRedirections: 3 }));
    const agent7 = new undici7.Agent().compose(interceptor, undici7.interceptors.redirect({ maxRedirections: 3 }));
    const options = { method: 'POST', body: 'x=1', headers: { authorization: 'Bearer mine' } } as const;

    for (const send of [
      () => undici.request(`${api}/hop?status=307`, { ...options, dispatcher: agent6 }),
      () => undici7.request(`${api}/hop?status=307`, { ...options, dispatcher: agent7 }),
    ]) {
      arrivals.length = 0;
      const response = await send();
      await response.body.dump();

      expect(response.statusCode).toBe(401);
      expect(arrivals.map((arrival) => [arrival.url, arrival.authorization])).toEqual([
        [`${api}/hop`, 'Bearer mine'],
        [`${other}/bounce`, undefined],
        [`${api}/account/delete`, undefined],
      ]);
    }
    expect(refreshes()).toBe(0);
    await Promise.all([agent6.close(), agent7.close()]);
  });

  it("cannot tell a hop of fetch from a new request (fetch follows redirects itself, each hop a new dispatch): on the global dispatcher, a chain back from another origin gets the bearer again and its 401 refreshes, withTokenRelay's fetch on top included", async () => {
    const { api, other, arrivals } = await startBouncingServers();
    const { manager, refreshes } = countingManager();
    undici.setGlobalDispatcher(originalDispatcher.compose(tokenRelayInterceptor(manager, { origins: [api] })));
    const fetches = [fetch, undici.fetch, undici7.fetch, withTokenRelay(capturedFetch, manager, { origins: [api] })] as Array<typeof fetch>;

    for (const send of fetches) {
      arrivals.length = 0;
      const response = await send(`${api}/hop?status=307`, { method: 'POST', body: 'x=1' });
      await response.body?.cancel();

      expect(response.status).toBe(401);
      expect(arrivals.map((arrival) => [arrival.url, arrival.method, arrival.authorization])).toEqual([
        [`${api}/hop`, 'POST', expect.stringMatching(/^Bearer v\d$/)],
        [`${other}/bounce`, 'POST', undefined],
        [`${api}/account/delete`, 'POST', expect.stringMatching(/^Bearer v\d$/)],
      ]);
    }
    // One refresh for each return hop's 401; fetch's body is never sent twice, so none is replayed.
    expect(refreshes()).toBe(fetches.length);
  });

  it("keeps the bearer off the rest of such a chain when withTokenRelay's fetch is sent through a dispatcher without the interceptor, the way out the docs give for fetch", async () => {
    const { api, other, arrivals } = await startBouncingServers();
    const { manager, refreshes } = countingManager();
    undici.setGlobalDispatcher(originalDispatcher.compose(tokenRelayInterceptor(manager, { origins: [api] })));
    const plain6 = new undici.Agent();
    const plain7 = new undici7.Agent();

    for (const send of [
      // Node's fetch takes undici's `dispatcher` option, which its RequestInit type does not list.
      () => withTokenRelay(capturedFetch, manager, { origins: [api] })(`${api}/hop?status=307`, { method: 'POST', body: 'x=1', dispatcher: plain6 } as RequestInit),
      () => withTokenRelay(undici7.fetch, manager, { origins: [api] })(`${api}/hop?status=307`, { method: 'POST', body: 'x=1', dispatcher: plain7 }),
    ]) {
      arrivals.length = 0;
      const response = await send();
      await response.body?.cancel();

      expect(response.status).toBe(401);
      expect(arrivals.map((arrival) => [arrival.url, arrival.method, arrival.authorization])).toEqual([
        [`${api}/hop`, 'POST', 'Bearer v0'],
        [`${other}/bounce`, 'POST', undefined],
        [`${api}/account/delete`, 'POST', undefined],
      ]);
    }
    expect(refreshes()).toBe(0);
    await Promise.all([plain6.close(), plain7.close()]);
  });
});
