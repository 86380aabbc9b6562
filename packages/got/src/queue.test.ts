import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createTokenManager, type TokenManager } from '@tokenrelay/core';
import got, { type ExtendOptions, type RequestFunction } from 'got';
import PQueue from 'p-queue';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { gatedManager } from '../../../test/helpers/queue-fixtures.js';
import { tokenRelayHooks } from './index.js';

/**
 * An API on 127.0.0.1 that counts the requests in flight (from arrival to the end of the answer).
 * `/hang` is never answered (it ends when the client goes), `/held` is answered 200 when the test
 * calls `answerHeld()`, `/reset` breaks the connection, `/error` answers 500, `/flaky` 503 the first
 * time and 200 after, `/moved` redirects to `/items/moved` (`/moved-dripping` too, with a body that never ends); anything else answers after a few
 * milliseconds 200 to `Bearer v2` (`/cached` one that may be cached) and 401 (an expired token) to anything else.
 */
let server: Server;
let baseUrl: string;
let paths: string[] = [];
let inFlight = 0;
let maxInFlight = 0;
let held: (() => void)[] = [];
const answerHeld = () => held.splice(0).forEach((answer) => answer());

beforeAll(async () => {
  server = createServer((request, response) => {
    const path = request.url ?? '';
    paths.push(path);
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    response.once('close', () => inFlight--);
    if (path === '/hang') return;
    if (path === '/held') return void held.push(() => response.end('ok'));
    if (path === '/moved') return response.writeHead(302, { location: '/items/moved' }).end();
    // A redirect whose body never ends (it ends when the client goes).
    if (path === '/moved-dripping') return void response.writeHead(302, { location: '/items/moved', 'content-length': '100' }).write('x');
    if (path === '/reset') return request.socket.destroy();
    if (path === '/error' || (path === '/flaky' && paths.filter((seen) => seen === path).length === 1)) {
      response.statusCode = path === '/error' ? 500 : 503;
      return response.end('down');
    }
    const ok = path === '/flaky' || request.headers.authorization === 'Bearer v2';
    setTimeout(() => {
      const cacheable = path === '/cached' ? { 'cache-control': 'public, max-age=60' } : {};
      response.writeHead(ok ? 200 : 401, ok ? cacheable : { 'www-authenticate': 'Bearer error="invalid_token"' });
      response.end(ok ? 'ok' : 'no');
    }, 5);
  });
  await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

beforeEach(() => {
  paths = [];
  held = [];
  maxInFlight = inFlight;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((closed) => server.close(() => closed()));
});

const expired = { accessToken: 'v1', refreshToken: 'r1', expiresAt: Date.now() - 1_000 };

/** A got instance with the hooks and `queue`; got's own retries off unless a request asks for them. */
function client(manager: TokenManager, queue: PQueue | undefined, options: ExtendOptions = {}) {
  return got.extend({ prefixUrl: baseUrl, hooks: tokenRelayHooks(manager, { origins: [baseUrl], queue }), retry: { limit: 0 } }, options);
}

/** How long a test waits for a state the server or the queue reaches: generous, for a loaded 2-core CI machine. */
const patience = { timeout: 5_000 };

/** Every place of `queue` given back, and none waiting. */
const queueIsEmpty = (queue: PQueue) => vi.waitFor(() => expect([queue.pending, queue.size]).toEqual([0, 0]), patience);

describe('tokenRelayHooks with a queue (p-queue)', () => {
  it('sends the requests a refresh released through the queue, never more than its concurrency in flight at the server', async () => {
    const { manager, release, refreshes } = gatedManager(expired);
    const queue = new PQueue({ concurrency: 4 });
    const api = client(manager, queue);

    const answers = Array.from({ length: 50 }, (_, i) => api.get(`items/${i}`).text());
    release();

    expect(await Promise.all(answers)).toEqual(Array(50).fill('ok'));
    expect(refreshes()).toBe(1);
    expect(paths).toHaveLength(50);
    expect(maxInFlight).toBeLessThanOrEqual(4);
    await queueIsEmpty(queue);
  });

  it('never queues a request whose token was fresh', async () => {
    const manager = createTokenManager({
      tokens: { accessToken: 'v2', refreshToken: 'r2', expiresAt: Date.now() + 3_600_000 },
      refresh: async () => ({ accessToken: 'v3' }),
    });
    const queue = new PQueue({ concurrency: 1 });
    const add = vi.spyOn(queue, 'add');
    const api = client(manager, queue);

    expect(await Promise.all(Array.from({ length: 10 }, (_, i) => api.get(`items/${i}`).text()))).toEqual(Array(10).fill('ok'));
    expect(add).not.toHaveBeenCalled();
  });

  it('sends the replays after a refresh through the queue', async () => {
    // v1 looks fresh: all 20 go out at once, unqueued, get 401, and wait for one refresh; their replays are queued.
    const { manager, release, refreshes } = gatedManager({ accessToken: 'v1', refreshToken: 'r1' });
    const queue = new PQueue({ concurrency: 3 });
    const add = vi.spyOn(queue, 'add');
    const api = client(manager, queue);

    const answers = Array.from({ length: 20 }, (_, i) => api.get(`items/${i}`).text());
    await vi.waitFor(() => expect([paths.length, inFlight, refreshes()]).toEqual([20, 0, 1]), patience);
    expect(add).not.toHaveBeenCalled();
    maxInFlight = 0;
    release();

    expect(await Promise.all(answers)).toEqual(Array(20).fill('ok'));
    expect(paths).toHaveLength(40);
    expect(add).toHaveBeenCalledTimes(20);
    expect(maxInFlight).toBeLessThanOrEqual(3);
    await queueIsEmpty(queue);
  });

  // Each request below waited for the refresh, ahead of another one in a queue of one place: the second is
  // answered only if the first gave its place back, however it ended.
  it.each([
    ['an answer', (api: typeof got) => api.get('items/1').text(), 'ok', 2],
    ['a server error', (api: typeof got) => api.get('error').text(), /status code 500/, 2],
    ['a connection reset', (api: typeof got) => api.get('reset').text(), /socket hang up|ECONNRESET/, 2],
    // The first attempt and got's retry of it each take a place.
    ["got's own retry", (api: typeof got) => api.get('flaky', { retry: { limit: 1, backoffLimit: 1 } }).text(), 'ok', 3],
    [
      'a later beforeRequest hook throwing',
      (api: typeof got) =>
        api
          .get('items/1', {
            hooks: {
              beforeRequest: [
                () => {
                  throw new Error('refused by a later hook');
                },
              ],
            },
          })
          .text(),
      /refused by a later hook/,
      // Never sent: it never takes a place.
      1,
    ],
  ])('gives its queue place back when a released request ends with %s', async (_, send, outcome, places) => {
    const { manager, release } = gatedManager(expired);
    const queue = new PQueue({ concurrency: 1 });
    const add = vi.spyOn(queue, 'add');
    const api = client(manager, queue);

    const first = send(api).then(
      (body) => body,
      (error: unknown) => (error as Error).message,
    );
    const second = api.get('items/2').text();
    release();

    expect(await first).toMatch(outcome);
    expect(await second).toBe('ok');
    expect(add).toHaveBeenCalledTimes(places);
    await queueIsEmpty(queue);
  });

  it('takes no place for a released request got answers from its cache', async () => {
    const { manager, release, refreshes } = gatedManager(expired);
    const queue = new PQueue({ concurrency: 1 });
    const add = vi.spyOn(queue, 'add');
    const api = client(manager, queue, { cache: new Map() });
    const cached = api.get('cached').text();
    release();
    expect(await cached).toBe('ok');

    // Expired again: the next request waits for a refresh, and is released to find its answer in got's cache.
    await manager.setTokens(expired);
    expect(await api.get('cached').text()).toBe('ok');
    expect(refreshes()).toBe(2);
    expect(paths).toEqual(['/cached']);
    expect(add).toHaveBeenCalledTimes(1);
    await queueIsEmpty(queue);
  });

  it('holds the place of a streamed request until its body is read, and of one the caller destroys until then', async () => {
    const { manager, release } = gatedManager(expired);
    const queue = new PQueue({ concurrency: 1 });
    const api = client(manager, queue);

    const read = api.stream('items/1');
    const destroyed = api.stream('hang');
    const last = api.stream('items/3');
    release();

    expect((await read.toArray()).join('')).toBe('ok');
    await vi.waitFor(() => expect(paths).toEqual(['/items/1', '/hang']), patience);
    expect(queue.pending).toBe(1);
    destroyed.destroy();
    expect((await last.toArray()).join('')).toBe('ok');
    await queueIsEmpty(queue);
  });

  /** Two requests released by one refresh through a queue of one place: the first sent (and hanging), the second queued. */
  async function oneSentOneQueued(signals: { first?: AbortSignal; second?: AbortSignal } = {}) {
    const { manager, release } = gatedManager(expired);
    const queue = new PQueue({ concurrency: 1 });
    const api = client(manager, queue);
    // Each with a signal: a request's wait for the token takes as many steps as the other's, so they are queued in order.
    const first = api.get('hang', { signal: signals.first ?? new AbortController().signal });
    const second = api.get('items/2', { signal: signals.second ?? new AbortController().signal });
    release();
    await vi.waitFor(() => expect(paths).toEqual(['/hang']), patience);
    return { queue, first, second };
  }

  it.each([
    ["got's retry", 'flaky', { retry: { limit: 1, backoffLimit: 1 } }, ['/flaky', '/held', '/flaky']],
    ['a redirect hop', 'moved', {}, ['/moved', '/held', '/items/moved']],
  ])('sends %s of a released request through the queue again, behind the requests waiting there', async (_, path, options, sent) => {
    const { manager, release } = gatedManager(expired);
    const queue = new PQueue({ concurrency: 1 });
    const api = client(manager, queue);
    // Each with a signal: a request's wait for the token takes as many steps as the other's, so they are queued in order.
    const first = api.get(path, { ...options, signal: new AbortController().signal }).text();
    const waiting = api.get('held', { signal: new AbortController().signal }).text();
    release();

    // The first request's place went to the one waiting behind it, which holds it: the next request of the first waits its turn.
    await vi.waitFor(() => expect([paths, queue.size]).toEqual([sent.slice(0, 2), 1]), patience);
    answerHeld();
    expect(await first).toBe('ok');
    expect(await waiting).toBe('ok');
    expect(paths).toEqual(sent);
    await queueIsEmpty(queue);
  });

  it('gives the place of a redirect whose body never ends to its hop, which would otherwise wait for it forever', async () => {
    const { manager, release } = gatedManager(expired);
    const queue = new PQueue({ concurrency: 1 });
    const api = client(manager, queue, { timeout: { request: 10_000 } });
    const moved = api.get('moved-dripping').text();
    release();

    expect(await moved).toBe('ok');
    expect(paths).toEqual(['/moved-dripping', '/items/moved']);
    await queueIsEmpty(queue);
  });

  it('never sends the redirect hop of a released request cancelled while the hop waits in the queue, and gives its place back', async () => {
    const { manager, release } = gatedManager(expired);
    const queue = new PQueue({ concurrency: 1 });
    const api = client(manager, queue);
    const moved = api.get('moved', { signal: new AbortController().signal });
    const waiting = api.get('held', { signal: new AbortController().signal }).text();
    release();
    await vi.waitFor(() => expect([paths, queue.size]).toEqual([['/moved', '/held'], 1]), patience);

    moved.cancel();
    await expect(moved).rejects.toMatchObject({ name: 'CancelError' });
    answerHeld();
    expect(await waiting).toBe('ok');
    await queueIsEmpty(queue);
    expect(paths).toEqual(['/moved', '/held']);
  });

  it('never sends the redirect hop of a request cancelled while the hop waits for a refresh that releases it into the queue', async () => {
    const { manager, release, refreshes } = gatedManager({ accessToken: 'v2', refreshToken: 'r2', expiresAt: Date.now() + 3_600_000 });
    const queue = new PQueue({ concurrency: 1 });
    const api = client(manager, queue);
    // Sent with a fresh token, unqueued; its token expires before the hop, which waits for the refresh.
    const moved = api.get('moved', { hooks: { beforeRedirect: [() => manager.setTokens(expired)] } });
    await vi.waitFor(() => expect(refreshes()).toBe(1), patience);
    const waiting = api.get('held').text();
    moved.cancel();
    await expect(moved).rejects.toMatchObject({ name: 'CancelError' });
    release();

    await vi.waitFor(() => expect(paths).toEqual(['/moved', '/held']), patience);
    answerHeld();
    expect(await waiting).toBe('ok');
    await queueIsEmpty(queue);
    expect(paths).toEqual(['/moved', '/held']);
  });

  it('sends a released request through the queue when a later beforeRequest hook gives it a request function of its own', async () => {
    const { manager, release } = gatedManager(expired);
    const queue = new PQueue({ concurrency: 1 });
    const ownRequest = vi.fn<RequestFunction>((url, options, callback) => httpRequest(url, options, callback));
    const api = client(manager, queue, {
      hooks: {
        beforeRequest: [
          (options) => {
            options.request = ownRequest;
          },
        ],
      },
    });
    const first = api.get('held', { signal: new AbortController().signal }).text();
    const second = api.get('items/2', { signal: new AbortController().signal }).text();
    release();

    await vi.waitFor(() => expect([paths, queue.size]).toEqual([['/held'], 1]), patience);
    answerHeld();
    expect([await first, await second]).toEqual(['ok', 'ok']);
    expect(ownRequest).toHaveBeenCalledTimes(2);
    await queueIsEmpty(queue);
  });

  it('lets a request whose signal aborts while it is queued leave at once, never sent', async () => {
    const abort = new AbortController();
    const { queue, first, second } = await oneSentOneQueued({ second: abort.signal });
    abort.abort();

    // The first still hangs, holding the one place: the second left the queue without waiting for it.
    await expect(second).rejects.toMatchObject({ name: 'AbortError' });
    expect(queue.pending).toBe(1);
    first.cancel();
    await expect(first).rejects.toMatchObject({ name: 'CancelError' });
    await queueIsEmpty(queue);
    expect(paths).toEqual(['/hang']);
  });

  it('gives the place of a request whose signal aborts in flight to the next one in the queue', async () => {
    const abort = new AbortController();
    const { queue, first, second } = await oneSentOneQueued({ first: abort.signal });
    abort.abort();

    await expect(first).rejects.toMatchObject({ name: 'AbortError' });
    expect((await second).body).toBe('ok');
    await queueIsEmpty(queue);
  });

  it('gives the place of a request cancelled in flight (promise.cancel()) to the next one in the queue', async () => {
    const { queue, first, second } = await oneSentOneQueued();
    first.cancel();

    await expect(first).rejects.toMatchObject({ name: 'CancelError' });
    expect((await second).body).toBe('ok');
    await queueIsEmpty(queue);
  });

  it('never sends a request cancelled while it is queued, and gives its place back', async () => {
    const { queue, first, second } = await oneSentOneQueued();
    second.cancel();

    await expect(second).rejects.toMatchObject({ name: 'CancelError' });
    first.cancel();
    await expect(first).rejects.toMatchObject({ name: 'CancelError' });
    await queueIsEmpty(queue);
    expect(paths).toEqual(['/hang']);
  });
});

describe('tokenRelayHooks and a request cancelled while its hop waits', () => {
  it('never sends the redirect hop of a request cancelled while the hop waits for a refresh, without a queue', async () => {
    const { manager, release, refreshes } = gatedManager({ accessToken: 'v2', refreshToken: 'r2', expiresAt: Date.now() + 3_600_000 });
    const api = client(manager, undefined);
    const sent = vi.fn<RequestFunction>((url, options, callback) => httpRequest(url, options, callback));
    // Sent with a fresh token; its token expires before the hop, which waits for the refresh.
    const moved = api.get('moved', { request: sent, hooks: { beforeRedirect: [() => manager.setTokens(expired)] } });
    await vi.waitFor(() => expect(refreshes()).toBe(1), patience);
    // Waits for the same refresh after the hop, so it is answered only after the hop would have been sent.
    const after = api.get('items/2').text();
    moved.cancel();
    await expect(moved).rejects.toMatchObject({ name: 'CancelError' });
    release();

    expect(await after).toBe('ok');
    expect(sent).toHaveBeenCalledTimes(1);
    expect(paths).toEqual(['/moved', '/items/2']);
  });
});
