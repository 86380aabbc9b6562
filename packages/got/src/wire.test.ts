import { readFileSync } from 'node:fs';
import { createServer, type RequestListener } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { inspect } from 'node:util';
import { createTokenManager, type TokenManager } from '@tokenrelay/core';
import got, { type BeforeRequestHook, type RequestError } from 'got';
import PQueue from 'p-queue';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { tokenRelayHooks } from './index.js';

/**
 * A server on 127.0.0.1 that records the `Authorization` of every request it gets (`seen`), and its method,
 * URL, `Authorization` and body (`sent`). `/hop?status=<3xx>&to=<URL>` answers that redirect; `/hang` is never
 * answered (it ends when the client goes); `/flaky` answers its first request 503; anything else answers with
 * the `Authorization`: 200, or 401 (an expired token) when `accepts` names the only one it takes and this is another.
 * With `tls`, it serves https, with {@link loopbackTls}'s certificate.
 */
async function startServer({ accepts, tls = false }: { accepts?: string; tls?: boolean } = {}) {
  const seen: string[] = [];
  const sent: string[] = [];
  const listener: RequestListener = (request, response) => {
    const authorization = request.headers.authorization ?? 'none';
    seen.push(`${request.url} ${authorization}`);
    if (request.url === '/hang') return;
    let body = '';
    request.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
    request.on('end', () => {
      sent.push(`${request.method} ${request.url} ${authorization} ${body}`.trimEnd());
      const { pathname, searchParams } = new URL(request.url ?? '/', 'http://127.0.0.1');
      if (pathname === '/hop') return response.writeHead(Number(searchParams.get('status')), { location: searchParams.get('to') ?? '/' }).end();
      if (pathname === '/flaky' && seen.filter((line) => line.startsWith('/flaky ')).length === 1) return response.writeHead(503).end();
      const refused = accepts !== undefined && authorization !== accepts;
      response.writeHead(refused ? 401 : 200, refused ? { 'www-authenticate': 'Bearer error="invalid_token"' } : {}).end(authorization);
    });
  };
  const server = tls ? createTlsServer({ key: loopbackTls, cert: loopbackTls }, listener) : createServer(listener);
  await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
  const url = `${tls ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const close = () => {
    server.closeAllConnections();
    return new Promise<void>((closed) => server.close(() => closed()));
  };
  running.push(close);
  return { url, seen, sent, close };
}

/** A self-signed certificate for 127.0.0.1 and its key, for an https server (`startServer({ tls: true })`); got trusts it with `https: { certificateAuthority: loopbackTls }`. */
const loopbackTls = readFileSync(new URL('fixtures/loopback-tls.pem', import.meta.url));

/** The URL of `server`'s redirect to `to`. */
const hop = (server: { url: string }, status: number, to: string) => `${server.url}/hop?status=${status}&to=${encodeURIComponent(to)}`;

/** The path and query of `url`, as its server records it. */
const pathOf = (url: string) => url.slice(new URL(url).origin.length);

const running: (() => Promise<void>)[] = [];
afterEach(() => Promise.all(running.splice(0).map((close) => close())));

/** How long a test waits for a state the server reaches: generous, for a loaded 2-core CI machine. */
const patience = { timeout: 5_000 };

const freshManager = (accessToken = 'v2', tokenEndpoint?: string) =>
  createTokenManager({
    tokens: { accessToken, refreshToken: 'r1', expiresAt: Date.now() + 3_600_000 },
    refresh: Object.assign(async () => ({ accessToken: 'v3' }), { tokenEndpoint }),
    retry: false,
  });

/** A manager like {@link freshManager}'s that counts its refreshes. */
function countingManager(accessToken = 'v2') {
  let refreshes = 0;
  const manager = createTokenManager({
    tokens: { accessToken, refreshToken: 'r1', expiresAt: Date.now() + 3_600_000 },
    refresh: async () => (refreshes++, { accessToken: 'v3' }),
    retry: false,
  });
  return { manager, refreshes: () => refreshes };
}

/** A `beforeRequest` hook, run after ours, that sends the request to `url` instead. */
const retargetTo =
  (url: string): BeforeRequestHook =>
  (options) => {
    options.url = new URL(url);
  };

describe('tokenRelayHooks and a later beforeRequest hook that changes the URL', () => {
  it('sends no bearer to another origin a later hook retargets the request to', async () => {
    const api = await startServer();
    const elsewhere = await startServer();
    const client = got.extend({ hooks: tokenRelayHooks(freshManager(), { origins: [api.url] }) }, { hooks: { beforeRequest: [retargetTo(`${elsewhere.url}/x`)] } });

    expect(await client.get(`${api.url}/me`).text()).toBe('none');
    expect(elsewhere.seen).toEqual(['/x none']);
    expect(api.seen).toEqual([]);
  });

  it('sends no bearer to another origin a later hook reaches by changing prefixUrl', async () => {
    const api = await startServer();
    const elsewhere = await startServer();
    const retarget: BeforeRequestHook = (options) => {
      options.prefixUrl = `${elsewhere.url}/`;
    };
    const client = got.extend({ prefixUrl: api.url, hooks: tokenRelayHooks(freshManager(), { origins: [api.url] }) }, { hooks: { beforeRequest: [retarget] } });

    expect(await client.get('me?page=2').text()).toBe('none');
    expect(elsewhere.seen).toEqual(['/me?page=2 none']);
  });

  it("sends no bearer to the token endpoint on the API's origin that a later hook retargets the request to", async () => {
    const api = await startServer();
    const manager = freshManager('v2', `${api.url}/oauth/token`);
    const client = got.extend({ hooks: tokenRelayHooks(manager, { origins: [api.url] }) }, { hooks: { beforeRequest: [retargetTo(`${api.url}/oauth/token`)] } });

    expect(await client.post(`${api.url}/me`, { body: 'x' }).text()).toBe('none');
    expect(api.seen).toEqual(['/oauth/token none']);
  });

  it('keeps the bearer on a request a later hook retargets to another origin it may go to', async () => {
    const api = await startServer();
    const other = await startServer();
    const client = got.extend({ hooks: tokenRelayHooks(freshManager(), { origins: [api.url, other.url] }) }, { hooks: { beforeRequest: [retargetTo(`${other.url}/x`)] } });

    expect(await client.get(`${api.url}/me`).text()).toBe('Bearer v2');
    expect(other.seen).toEqual(['/x Bearer v2']);
  });

  it('keeps the bearer on the retries and redirect hops of a request it sent', async () => {
    const seen: string[] = [];
    const api = createServer((request, response) => {
      seen.push(`${request.url} ${request.headers.authorization ?? 'none'}`);
      if (request.url === '/moved') return response.writeHead(302, { location: '/flaky' }).end();
      if (seen.length === 2) return response.writeHead(503).end();
      response.end(request.headers.authorization ?? 'none');
    });
    await new Promise<void>((listening) => api.listen(0, '127.0.0.1', listening));
    const url = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
    running.push(() => new Promise<void>((closed) => api.close(() => closed())));
    const client = got.extend({ hooks: tokenRelayHooks(freshManager(), { origins: [url] }), retry: { limit: 1, backoffLimit: 1 } });

    expect(await client.get(`${url}/moved`).text()).toBe('Bearer v2');
    // The redirect, its hop (answered 503) and got's retry of the hop.
    expect(seen).toEqual(['/moved Bearer v2', '/flaky Bearer v2', '/flaky Bearer v2']);
  });
});

describe('tokenRelayHooks and a redirect chain that left origins', () => {
  it.each([
    [307, 'POST /account/delete none x=1'],
    [302, 'POST /account/delete none x=1'],
    [303, 'GET /account/delete none'],
  ])(
    'never puts the bearer back on the hop that a %i of a server outside origins sends back to the API, nor refreshes for its 401',
    async (status, lastHop) => {
      // The API takes only v3, the token a refresh gets.
      const api = await startServer({ accepts: 'Bearer v3' });
      const elsewhere = await startServer();
      const { manager, refreshes } = countingManager();
      const client = got.extend({ hooks: tokenRelayHooks(manager, { origins: [api.url] }), retry: { limit: 0 }, throwHttpErrors: false });
      // The server outside origins chooses the API URL the request goes back to, with its method and body.
      const bounce = hop(elsewhere, status, `${api.url}/account/delete`);
      const first = hop(api, 307, bounce);

      const response = await client.post(first, { body: 'x=1' });

      expect(api.sent).toEqual([`POST ${pathOf(first)} Bearer v2 x=1`, lastHop]);
      expect(elsewhere.sent).toEqual([`POST ${pathOf(bounce)} none x=1`]);
      expect(response.statusCode).toBe(401);
      expect(refreshes()).toBe(0);
    },
  );

  it('never puts the bearer on the hop into origins of a request that started outside them, nor refreshes for its 401, and the next request has it', async () => {
    const api = await startServer({ accepts: 'Bearer v2' });
    const elsewhere = await startServer();
    const { manager, refreshes } = countingManager();
    const client = got.extend({ hooks: tokenRelayHooks(manager, { origins: [api.url] }), retry: { limit: 0 }, throwHttpErrors: false });

    expect((await client.post(hop(elsewhere, 307, `${api.url}/account/delete`), { body: 'x=1' })).statusCode).toBe(401);
    expect(api.sent).toEqual(['POST /account/delete none x=1']);
    expect(refreshes()).toBe(0);
    expect(await client.get(`${api.url}/me`).text()).toBe('Bearer v2');
  });

  it('never puts the bearer on the hop back to the API of a request a later hook sent outside origins', async () => {
    const api = await startServer();
    const elsewhere = await startServer();
    // A later hook sends the first HTTP request (to /me) outside origins, whose server redirects it back to the API.
    const retargetMe: BeforeRequestHook = (options) => {
      if (new URL(options.url ?? '').pathname === '/me') options.url = new URL(hop(elsewhere, 307, `${api.url}/account/delete`));
    };
    const client = got.extend({ hooks: tokenRelayHooks(freshManager(), { origins: [api.url] }), retry: { limit: 0 } }, { hooks: { beforeRequest: [retargetMe] } });

    expect(await client.post(`${api.url}/me`, { body: 'x=1' }).text()).toBe('none');
    expect(api.sent).toEqual(['POST /account/delete none x=1']);
  });

  it('never puts the bearer on the https hop of a request that started over http on the same host when origins lists only https, nor refreshes for its 401', async () => {
    const api = await startServer({ accepts: 'Bearer v2', tls: true });
    const plain = await startServer();
    const { manager, refreshes } = countingManager();
    const client = got.extend({
      hooks: tokenRelayHooks(manager, { origins: [api.url] }),
      https: { certificateAuthority: loopbackTls },
      retry: { limit: 0 },
      throwHttpErrors: false,
    });
    // The same host over http: a man in the middle of that plaintext hop chooses where its redirect goes.
    const upgrade = hop(plain, 301, `${api.url}/me`);

    expect((await client.get(upgrade)).statusCode).toBe(401);
    expect(plain.seen).toEqual([`${pathOf(upgrade)} none`]);
    expect(api.seen).toEqual(['/me none']);
    expect(refreshes()).toBe(0);
    // Sent over https from the start, the request carries it.
    expect(await client.get(`${api.url}/me`).text()).toBe('Bearer v2');
  });

  it("never puts the bearer on got's retries of a hop back to the API after the chain left origins", async () => {
    const api = await startServer();
    const elsewhere = await startServer();
    const client = got.extend({ hooks: tokenRelayHooks(freshManager(), { origins: [api.url] }), retry: { limit: 1, backoffLimit: 1 } });
    const first = hop(api, 302, hop(elsewhere, 302, `${api.url}/flaky`));

    expect(await client.get(first).text()).toBe('none');
    // The redirect, the hop back (answered 503) and got's retry of that hop.
    expect(api.seen).toEqual([`${pathOf(first)} Bearer v2`, '/flaky none', '/flaky none']);
  });

  it('never puts the bearer back on the hop to the API of a request that a refresh released into the queue, after the chain left origins', async () => {
    const api = await startServer({ accepts: 'Bearer v3' });
    const elsewhere = await startServer();
    const { manager, refreshes } = countingManager();
    await manager.setTokens({ accessToken: 'v1', refreshToken: 'r1', expiresAt: Date.now() - 1_000 });
    const client = got.extend({
      hooks: tokenRelayHooks(manager, { origins: [api.url], queue: new PQueue({ concurrency: 1 }) }),
      retry: { limit: 0 },
      throwHttpErrors: false,
    });
    const first = hop(api, 307, hop(elsewhere, 307, `${api.url}/account/delete`));

    expect((await client.post(first, { body: 'x=1' })).statusCode).toBe(401);
    expect(api.sent).toEqual([`POST ${pathOf(first)} Bearer v3 x=1`, 'POST /account/delete none x=1']);
    // The one refresh is the one the expired token needed before the request was sent.
    expect(refreshes()).toBe(1);
  });

  it('replays a request whose redirect chain stayed within origins with the new bearer', async () => {
    const api = await startServer({ accepts: 'Bearer v3' });
    const other = await startServer({ accepts: 'Bearer v3' });
    const { manager, refreshes } = countingManager();
    const client = got.extend({ hooks: tokenRelayHooks(manager, { origins: [api.url, other.url] }), retry: { limit: 0 } });
    const first = hop(api, 307, `${other.url}/account`);

    expect(await client.post(first, { body: 'x=1' }).text()).toBe('Bearer v3');
    expect(refreshes()).toBe(1);
    expect(api.sent).toEqual([`POST ${pathOf(first)} Bearer v2 x=1`]);
    expect(other.sent).toEqual(['POST /account Bearer v2 x=1', 'POST /account Bearer v3 x=1']);
  });
});

describe('tokenRelayHooks and the Authorization of others', () => {
  it('gives each of two tokenRelayHooks on one got instance its own origins and token, with one token call each', async () => {
    const first = await startServer({ accepts: 'Bearer v2' });
    const second = await startServer({ accepts: 'Bearer w2' });
    let refreshes = 0;
    /** A manager whose `<name>1` expired; its refresh answers `<name>2`. */
    const managerOf = (name: string) =>
      createTokenManager({
        tokens: { accessToken: `${name}1`, refreshToken: 'r1', expiresAt: Date.now() - 1_000 },
        refresh: async () => (refreshes++, { accessToken: `${name}2` }),
        retry: false,
      });
    const client = got.extend(
      { hooks: tokenRelayHooks(managerOf('v'), { origins: [first.url] }) },
      { hooks: tokenRelayHooks(managerOf('w'), { origins: [second.url] }), retry: { limit: 0 } },
    );

    const answers = await Promise.all([1, 2, 3].flatMap((i) => [client.get(`${first.url}/${i}`).text(), client.get(`${second.url}/${i}`).text()]));

    expect(answers).toEqual(['Bearer v2', 'Bearer w2', 'Bearer v2', 'Bearer w2', 'Bearer v2', 'Bearer w2']);
    expect(refreshes).toBe(2);
    expect([...first.seen].sort()).toEqual(['/1 Bearer v2', '/2 Bearer v2', '/3 Bearer v2']);
    expect([...second.seen].sort()).toEqual(['/1 Bearer w2', '/2 Bearer w2', '/3 Bearer w2']);
  });

  it('replays, after one token call each, the requests of two tokenRelayHooks on one got instance whose tokens expired', async () => {
    const first = await startServer({ accepts: 'Bearer v2' });
    const second = await startServer({ accepts: 'Bearer w2' });
    let refreshes = 0;
    /** A manager whose `<name>1` the server no longer takes; its refresh answers `<name>2`. */
    const managerOf = (name: string) =>
      createTokenManager({ tokens: { accessToken: `${name}1`, refreshToken: 'r1' }, refresh: async () => (refreshes++, { accessToken: `${name}2` }), retry: false });
    const client = got.extend(
      { hooks: tokenRelayHooks(managerOf('v'), { origins: [first.url] }) },
      { hooks: tokenRelayHooks(managerOf('w'), { origins: [second.url] }), retry: { limit: 0 } },
    );

    expect(await client.get(`${first.url}/a`).text()).toBe('Bearer v2');
    expect(await client.get(`${second.url}/b`).text()).toBe('Bearer w2');
    expect(refreshes).toBe(2);
    expect(first.seen).toEqual(['/a Bearer v1', '/a Bearer v2']);
    expect(second.seen).toEqual(['/b Bearer w1', '/b Bearer w2']);
  });

  it("puts the second set's bearer on a cross-origin hop to an origin of its own after the first set's bearer went to the first, and refreshes only its token for that hop's 401", async () => {
    const shared = await startServer();
    const own = await startServer({ accepts: 'Bearer v3' });
    const first = countingManager('a2');
    const second = countingManager('b2');
    // The first set may send its bearer to `shared` only; the second to both, so it may follow `shared`'s redirect to `own`.
    const client = got.extend(
      { hooks: tokenRelayHooks(first.manager, { origins: [shared.url] }) },
      { hooks: tokenRelayHooks(second.manager, { origins: [shared.url, own.url] }), retry: { limit: 0 } },
    );
    const start = hop(shared, 302, `${own.url}/me`);

    expect(await client.get(start).text()).toBe('Bearer v3');
    expect(shared.seen).toEqual([`${pathOf(start)} Bearer a2`]);
    // The hop, answered 401, and its replay after the second set's refresh.
    expect(own.seen).toEqual(['/me Bearer b2', '/me Bearer v3']);
    expect([first.refreshes(), second.refreshes()]).toEqual([0, 1]);
  });

  it('lets an Authorization a later beforeRequest hook sets win over our bearer', async () => {
    const api = await startServer();
    const { manager, refreshes } = countingManager();
    const own: BeforeRequestHook = (options) => {
      options.headers.authorization = 'Basic later';
    };
    const client = got.extend({ hooks: tokenRelayHooks(manager, { origins: [api.url] }) }, { hooks: { beforeRequest: [own] } });

    expect(await client.get(`${api.url}/me`).text()).toBe('Basic later');
    expect(refreshes()).toBe(0);
    expect(api.seen).toEqual(['/me Basic later']);
  });

  it('neither refreshes nor replays when a 401 answers the Authorization a later beforeRequest hook set', async () => {
    const api = await startServer({ accepts: 'Bearer v3' });
    const { manager, refreshes } = countingManager();
    const own: BeforeRequestHook = (options) => {
      options.headers.authorization = 'Basic later';
    };
    const client = got.extend({ hooks: tokenRelayHooks(manager, { origins: [api.url] }), retry: { limit: 0 }, throwHttpErrors: false }, { hooks: { beforeRequest: [own] } });

    expect((await client.get(`${api.url}/me`)).statusCode).toBe(401);
    expect(refreshes()).toBe(0);
    expect(api.seen).toEqual(['/me Basic later']);
  });

  it('neither refreshes nor replays when a 401 answers a request whose Authorization a later beforeRequest hook deleted', async () => {
    const api = await startServer({ accepts: 'Bearer v3' });
    const { manager, refreshes } = countingManager();
    const withoutAuthorization: BeforeRequestHook = (options) => {
      delete options.headers.authorization;
    };
    const client = got.extend(
      { hooks: tokenRelayHooks(manager, { origins: [api.url] }), retry: { limit: 0 }, throwHttpErrors: false },
      { hooks: { beforeRequest: [withoutAuthorization] } },
    );

    expect((await client.get(`${api.url}/me`)).statusCode).toBe(401);
    expect(refreshes()).toBe(0);
    expect(api.seen).toEqual(['/me none']);
  });

  /** A `beforeRequest` hook that sets `Authorization` as written, not as got's lowercase key. */
  const capitalised: BeforeRequestHook = (options) => {
    (options.headers as Record<string, string>).Authorization = 'Basic later';
  };

  it('neither refreshes nor replays when a 401 answers an Authorization a later beforeRequest hook set with capitals', async () => {
    const api = await startServer({ accepts: 'Bearer v3' });
    const { manager, refreshes } = countingManager();
    const client = got.extend({ hooks: tokenRelayHooks(manager, { origins: [api.url] }), retry: { limit: 0 }, throwHttpErrors: false }, { hooks: { beforeRequest: [capitalised] } });

    expect((await client.get(`${api.url}/me`)).statusCode).toBe(401);
    expect(refreshes()).toBe(0);
    expect(api.seen).toEqual(['/me Basic later']);
  });

  it('sends every redirect hop with the Authorization a later beforeRequest hook set with capitals, never our bearer', async () => {
    const api = await startServer();
    const client = got.extend({ hooks: tokenRelayHooks(freshManager(), { origins: [api.url] }), retry: { limit: 0 } }, { hooks: { beforeRequest: [capitalised] } });
    const first = hop(api, 302, `${api.url}/x`);

    expect(await client.get(first).text()).toBe('Basic later');
    expect(api.seen).toEqual([`${pathOf(first)} Basic later`, '/x Basic later']);
  });

  it('leaves the Authorization an earlier beforeRequest hook set with capitals, and refreshes nothing for its 401', async () => {
    const api = await startServer({ accepts: 'Bearer v3' });
    const { manager, refreshes } = countingManager();
    const client = got.extend({ hooks: { beforeRequest: [capitalised] } }, { hooks: tokenRelayHooks(manager, { origins: [api.url] }), retry: { limit: 0 }, throwHttpErrors: false });

    expect((await client.get(`${api.url}/me`)).statusCode).toBe(401);
    expect(refreshes()).toBe(0);
    expect(api.seen).toEqual(['/me Basic later']);
  });

  it("puts no bearer on the cross-origin hop (where got drops it) of a request sent with the caller's own Authorization, nor refreshes for its 401", async () => {
    const api = await startServer();
    const other = await startServer({ accepts: 'Bearer v3' });
    const { manager, refreshes } = countingManager();
    const client = got.extend({ hooks: tokenRelayHooks(manager, { origins: [api.url, other.url] }), retry: { limit: 0 }, throwHttpErrors: false });
    const first = hop(api, 302, `${other.url}/x`);

    expect((await client.get(first, { headers: { authorization: 'Basic mine' } })).statusCode).toBe(401);
    expect(api.seen).toEqual([`${pathOf(first)} Basic mine`]);
    expect(other.seen).toEqual(['/x none']);
    expect(refreshes()).toBe(0);
  });

  it("lets a caller's Authorization merged into the options win over our bearer", async () => {
    const api = await startServer();
    const client = got.extend({ hooks: tokenRelayHooks(freshManager(), { origins: [api.url] }) }).extend({ headers: { authorization: 'Basic merged' } });

    expect(await client.get(`${api.url}/me`).text()).toBe('Basic merged');
    expect(await client.get(`${api.url}/me`, { headers: { authorization: 'Basic mine' } }).text()).toBe('Basic mine');
  });
});

describe('two tokenRelayHooks on one got instance, each with a queue', () => {
  /** `queue` counting the places taken in it. */
  const counted = (queue: PQueue) => {
    let places = 0;
    const add = queue.add.bind(queue);
    return Object.assign(queue, { add: ((task: () => unknown) => (places++, add(task))) as PQueue['add'], places: () => places });
  };
  const expiredManager = (accessToken: string) =>
    createTokenManager({
      tokens: { accessToken, refreshToken: 'r1', expiresAt: Date.now() - 1_000 },
      refresh: async () => ({ accessToken: `${accessToken}-refreshed` }),
      retry: false,
    });

  it('sends a request released by the first set through one place of a queue both sets share, never waiting for a second', async () => {
    const first = await startServer();
    const second = await startServer();
    const queue = counted(new PQueue({ concurrency: 1 }));
    const client = got.extend(
      { hooks: tokenRelayHooks(expiredManager('v1'), { origins: [first.url], queue }) },
      { hooks: tokenRelayHooks(freshManager('w1'), { origins: [second.url], queue }), retry: { limit: 0 } },
    );

    // The signal bounds a wait that would otherwise never end.
    expect(await client.get(`${first.url}/x`, { signal: AbortSignal.timeout(5_000) }).text()).toBe('Bearer v1-refreshed');
    expect(queue.places()).toBe(1);
  });

  it("sends each set's released requests through its own queue only", async () => {
    const first = await startServer();
    const second = await startServer();
    const firstQueue = counted(new PQueue({ concurrency: 1 }));
    const secondQueue = counted(new PQueue({ concurrency: 1 }));
    const client = got.extend(
      { hooks: tokenRelayHooks(expiredManager('v1'), { origins: [first.url], queue: firstQueue }) },
      { hooks: tokenRelayHooks(expiredManager('w1'), { origins: [second.url], queue: secondQueue }), retry: { limit: 0 } },
    );

    expect(await client.get(`${first.url}/x`).text()).toBe('Bearer v1-refreshed');
    expect([firstQueue.places(), secondQueue.places()]).toEqual([1, 0]);
    expect(await client.get(`${second.url}/y`).text()).toBe('Bearer w1-refreshed');
    expect([firstQueue.places(), secondQueue.places()]).toEqual([1, 1]);
  });
});

/** How an error of got's shows when it is logged: as JSON and inspected. */
const logged = (error: unknown) => `${JSON.stringify(error)}\n${inspect(error, { depth: 6 })}`;

/** The request's error: it must reject. */
const failureOf = (request: Promise<unknown>) =>
  request.then(
    () => Promise.reject(new Error('expected a rejection')),
    (error: unknown) => error as RequestError,
  );

describe("got's errors that run no beforeError hook (an aborted signal, AbortSignal.timeout, promise.cancel())", () => {
  const client = (manager: TokenManager, url: string, queue?: PQueue) =>
    got.extend({ hooks: tokenRelayHooks(manager, { origins: [url], queue }), retry: { limit: 0 } });

  /** Until the server has got `count` requests. */
  const arrived = (server: { seen: string[] }, count = 1) => vi.waitFor(() => expect(server.seen).toHaveLength(count), patience);

  /** A manager whose token is `access-token-one` (expired if `expired`); its refresh waits for `release()`, then answers `access-token-two`. */
  function gatedManager({ expired = false } = {}) {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let refreshes = 0;
    const manager = createTokenManager({
      tokens: { accessToken: 'access-token-one', refreshToken: 'r1', ...(expired && { expiresAt: Date.now() - 1_000 }) },
      refresh: async () => {
        refreshes++;
        await gate;
        return { accessToken: 'access-token-two', expiresAt: Date.now() + 3_600_000 };
      },
      retry: false,
    });
    return { manager, release, refreshes: () => refreshes };
  }

  it('leaves no access token of ours in the error of a request whose signal aborts in flight', async () => {
    const api = await startServer();
    const controller = new AbortController();
    const failure = failureOf(client(freshManager('access-token-one'), api.url).get(`${api.url}/hang`, { signal: controller.signal }));
    await arrived(api);
    controller.abort();

    const error = await failure;
    expect(error.name).toBe('AbortError');
    expect(api.seen).toEqual(['/hang Bearer access-token-one']);
    expect(logged(error)).not.toContain('access-token-one');
  });

  it('leaves no access token of ours in the error of a request whose signal aborts while it waits for a refresh', async () => {
    const api = await startServer({ accepts: 'Bearer access-token-two' });
    const { manager, refreshes } = gatedManager();
    const controller = new AbortController();
    const failure = failureOf(client(manager, api.url).get(`${api.url}/me`, { signal: controller.signal }));
    await vi.waitFor(() => expect(refreshes()).toBe(1), patience);
    controller.abort();

    const error = await failure;
    expect(error.name).toBe('AbortError');
    expect(api.seen).toEqual(['/me Bearer access-token-one']);
    expect(logged(error)).not.toContain('access-token-one');
  });

  it('leaves no access token of ours in the error of a request whose signal times out (as AbortSignal.timeout does) in flight', async () => {
    const api = await startServer();
    const controller = new AbortController();
    const failure = failureOf(client(freshManager('access-token-one'), api.url).get(`${api.url}/hang`, { signal: controller.signal }));
    await arrived(api);
    // The reason AbortSignal.timeout gives, from which got makes its TimeoutError.
    controller.abort(new DOMException('The operation timed out', 'TimeoutError'));

    const error = await failure;
    expect(error.name).toBe('TimeoutError');
    expect(api.seen).toEqual(['/hang Bearer access-token-one']);
    expect(logged(error)).not.toContain('access-token-one');
  });

  it('leaves no access token of ours in the error of a request cancelled in flight', async () => {
    const api = await startServer();
    const request = client(freshManager('access-token-one'), api.url).get(`${api.url}/hang`);
    const failure = failureOf(request);
    await arrived(api);
    request.cancel();

    const error = await failure;
    expect(error.name).toBe('CancelError');
    expect(logged(error)).not.toContain('access-token-one');
  });

  it('leaves no access token of ours in the error of a request cancelled while it waits for a refresh', async () => {
    const api = await startServer({ accepts: 'Bearer access-token-two' });
    const { manager, refreshes } = gatedManager();
    const request = client(manager, api.url).get(`${api.url}/me`);
    const failure = failureOf(request);
    await vi.waitFor(() => expect(refreshes()).toBe(1), patience);
    request.cancel();

    const error = await failure;
    expect(error.name).toBe('CancelError');
    expect(logged(error)).not.toContain('access-token-one');
  });

  it('leaves no access token of ours in the error of a released request whose signal aborts while it waits in the queue', async () => {
    const api = await startServer();
    const { manager, release } = gatedManager({ expired: true });
    const queue = new PQueue({ concurrency: 1 });
    // The test holds the queue's only place: the released request waits behind it.
    let freePlace!: () => void;
    const held = queue.add(() => new Promise<void>((free) => (freePlace = free)));
    const controller = new AbortController();
    const failure = failureOf(client(manager, api.url, queue).get(`${api.url}/me`, { signal: controller.signal }));
    release();
    await vi.waitFor(() => expect(queue.size).toBe(1), patience);
    controller.abort();

    const error = await failure;
    freePlace();
    await held;
    expect(error.name).toBe('AbortError');
    expect(api.seen).toEqual([]);
    expect(logged(error)).not.toContain('access-token-two');
  });

  it('leaves no access token of ours in the error of a request whose token type changed while a later hook ran', async () => {
    const api = await startServer();
    const manager = freshManager('access-token-one');
    // The session's token type changes between our beforeRequest and the request's creation; the bearer sent stays what it was.
    const retyping: BeforeRequestHook = () => manager.setTokens({ accessToken: 'access-token-one', refreshToken: 'r1', tokenType: 'DPoP' });
    const controller = new AbortController();
    const retyped = got.extend(client(manager, api.url), { hooks: { beforeRequest: [retyping] } });
    const failure = failureOf(retyped.get(`${api.url}/hang`, { signal: controller.signal }));
    await arrived(api);
    controller.abort();

    const error = await failure;
    expect(api.seen).toEqual(['/hang Bearer access-token-one']);
    expect(logged(error)).not.toContain('access-token-one');
  });

  it("keeps the caller's own Authorization in the error of a request cancelled in flight", async () => {
    const api = await startServer();
    const request = client(freshManager('access-token-one'), api.url).get(`${api.url}/hang`, { headers: { authorization: 'Basic mine' } });
    const failure = failureOf(request);
    await arrived(api);
    request.cancel();

    const error = await failure;
    expect(api.seen).toEqual(['/hang Basic mine']);
    expect(error.options.headers.authorization).toBe('Basic mine');
  });
});
