import { createTokenManager } from '@tokenrelay/core';
import PQueue from 'p-queue';
import { describe, expect, it } from 'vitest';
import { gatedManager, inFlightCounter } from '../../../test/helpers/queue-fixtures.js';
import { withTokenRelay } from './index.js';

const API = 'https://api.example.test';

/** A fetch that answers each request after a few milliseconds, tracking how many are in flight. */
function countingFetch(accept: (authorization: string | null) => boolean) {
  const counter = inFlightCounter();
  const fetchImpl = async (_input: string | URL | Request, init?: RequestInit) => {
    await counter.hold();
    const ok = accept(new Headers(init?.headers).get('authorization'));
    return new Response(ok ? 'ok' : 'expired', {
      status: ok ? 200 : 401,
      headers: ok ? {} : { 'www-authenticate': 'Bearer error="invalid_token"' },
    });
  };
  return { fetchImpl, maxInFlight: counter.maxInFlight, resetPeak: counter.resetPeak };
}

const expired = { accessToken: 'v1', refreshToken: 'r1', expiresAt: Date.now() - 1_000 };

describe('withTokenRelay with a queue (p-queue)', () => {
  it('sends the requests a refresh released through the queue, at most its concurrency at a time', async () => {
    const { manager, release, refreshes } = gatedManager(expired);
    const server = countingFetch((authorization) => authorization === 'Bearer v2');
    const api = withTokenRelay(server.fetchImpl, manager, { origins: [API], queue: new PQueue({ concurrency: 8 }) });

    const responses = Array.from({ length: 40 }, (_, i) => api(`${API}/items/${i}`));
    release();

    expect((await Promise.all(responses)).map((response) => response.status)).toEqual(Array(40).fill(200));
    expect(refreshes()).toBe(1);
    expect(server.maxInFlight()).toBeLessThanOrEqual(8);
  });

  it('without a queue, releases them all at once (the burst the queue prevents)', async () => {
    const { manager, release } = gatedManager(expired);
    const server = countingFetch((authorization) => authorization === 'Bearer v2');
    const api = withTokenRelay(server.fetchImpl, manager, { origins: [API] });

    const responses = Array.from({ length: 40 }, (_, i) => api(`${API}/items/${i}`));
    release();
    await Promise.all(responses);

    expect(server.maxInFlight()).toBe(40);
  });

  it('never queues a request that did not wait for a refresh', async () => {
    const manager = createTokenManager({
      tokens: { accessToken: 'v1', refreshToken: 'r1', expiresAt: Date.now() + 3_600_000 },
      refresh: async () => ({ accessToken: 'v2' }),
    });
    const server = countingFetch(() => true);
    const api = withTokenRelay(server.fetchImpl, manager, { origins: [API], queue: new PQueue({ concurrency: 1 }) });

    await Promise.all(Array.from({ length: 20 }, (_, i) => api(`${API}/items/${i}`)));

    expect(server.maxInFlight()).toBe(20);
  });

  it('sends the replays after a refresh through the queue', async () => {
    const { manager, release, refreshes } = gatedManager({ accessToken: 'v1', refreshToken: 'r1' });
    const server = countingFetch((authorization) => authorization === 'Bearer v2');
    const queue = new PQueue({ concurrency: 3 });
    const api = withTokenRelay(server.fetchImpl, manager, { origins: [API], queue });

    // v1 looks fresh: all 20 go out at once, get 401, and wait for one refresh; their replays are queued.
    const responses = Array.from({ length: 20 }, (_, i) => api(`${API}/items/${i}`));
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(server.maxInFlight()).toBe(20);
    server.resetPeak();
    release();

    expect((await Promise.all(responses)).map((response) => response.status)).toEqual(Array(20).fill(200));
    expect(refreshes()).toBe(1);
    expect(server.maxInFlight()).toBeLessThanOrEqual(3);
    expect(queue.size + queue.pending).toBe(0);
  });

  it('lets an aborted request leave the queue at once', async () => {
    const { manager, release } = gatedManager(expired);
    let answer!: () => void;
    const blocked = new Promise<void>((resolve) => (answer = resolve));
    const fetchImpl = async (_input: string | URL | Request, _init?: RequestInit) => {
      await blocked;
      return new Response('ok');
    };
    const api = withTokenRelay(fetchImpl, manager, { origins: [API], queue: new PQueue({ concurrency: 1 }) });

    const first = api(`${API}/first`);
    const controller = new AbortController();
    const second = api(`${API}/second`, { signal: controller.signal });
    release();
    await new Promise((resolve) => setTimeout(resolve, 10));
    controller.abort(new Error('caller gave up'));

    await expect(second).rejects.toThrow('caller gave up');
    answer();
    expect((await first).status).toBe(200);
  });
});
