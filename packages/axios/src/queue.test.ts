import type { DpopSender, RequestQueue } from '@tokenrelay/core/kit';
import axios, { AxiosHeaders, type AxiosAdapter } from 'axios';
import PQueue from 'p-queue';
import { describe, expect, it } from 'vitest';
import { gatedManager, inFlightCounter } from '../../../test/helpers/queue-fixtures.js';
import { attachDpop, attachTokenRelay } from './index.js';

const API = 'https://api.example.test';

/** An axios transport that answers after a few milliseconds, tracking how many requests are in flight. */
function countingAdapter(accept: (authorization: unknown) => boolean) {
  const counter = inFlightCounter();
  const adapter: AxiosAdapter = async (config) => {
    await counter.hold();
    const ok = accept(AxiosHeaders.from(config.headers).get('Authorization'));
    const response = {
      data: ok ? 'ok' : 'expired',
      status: ok ? 200 : 401,
      statusText: ok ? 'OK' : 'Unauthorized',
      headers: ok ? {} : { 'www-authenticate': 'Bearer error="invalid_token"' },
      config,
    };
    if (!ok) throw new axios.AxiosError('Request failed with status code 401', 'ERR_BAD_REQUEST', config, undefined, response);
    return response;
  };
  return { adapter, maxInFlight: counter.maxInFlight, resetPeak: counter.resetPeak };
}

describe('attachTokenRelay with a queue (p-queue)', () => {
  it('sends the requests a refresh released through the queue, at most its concurrency at a time', async () => {
    const { manager, release, refreshes } = gatedManager({ accessToken: 'v1', refreshToken: 'r1', expiresAt: Date.now() - 1_000 });
    const transport = countingAdapter((authorization) => authorization === 'Bearer v2');
    const api = axios.create({ baseURL: API, adapter: transport.adapter });
    attachTokenRelay(api, manager, { queue: new PQueue({ concurrency: 8 }) });

    const responses = Array.from({ length: 40 }, (_, i) => api.get(`/items/${i}`));
    release();

    expect((await Promise.all(responses)).map((response) => response.status)).toEqual(Array(40).fill(200));
    expect(refreshes()).toBe(1);
    expect(transport.maxInFlight()).toBeLessThanOrEqual(8);
  });

  it('never queues a request that did not wait, and queues each replay once', async () => {
    const { manager, release, refreshes } = gatedManager({ accessToken: 'v1', refreshToken: 'r1' });
    const transport = countingAdapter((authorization) => authorization === 'Bearer v2');
    const queue = new PQueue({ concurrency: 2 });
    const api = axios.create({ baseURL: API, adapter: transport.adapter });
    attachTokenRelay(api, manager, { queue });

    // v1 looks fresh: the 20 first sends go out together; their replays after the refresh are queued.
    const responses = Array.from({ length: 20 }, (_, i) => api.get(`/items/${i}`));
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(transport.maxInFlight()).toBe(20);
    transport.resetPeak();
    release();

    expect((await Promise.all(responses)).map((response) => response.status)).toEqual(Array(20).fill(200));
    expect(refreshes()).toBe(1);
    expect(transport.maxInFlight()).toBeLessThanOrEqual(2);
    expect(queue.size + queue.pending).toBe(0);
  });

  for (const order of ['attachDpop first', 'attachTokenRelay first'] as const) {
    it(`queues each replay once and signs each attempt once with DPoP attached too (${order})`, async () => {
      const { manager, release } = gatedManager({ accessToken: 'v1', refreshToken: 'r1' });
      const transport = countingAdapter((authorization) => authorization === 'Bearer v2');
      const queued: string[] = [];
      const pQueue = new PQueue({ concurrency: 2 });
      const queue: RequestQueue = { add: (task) => (queued.push('task'), pQueue.add(task)) };
      const signed: unknown[] = [];
      const sender: DpopSender = { send: (request) => (signed.push(request.authorization), request.attempt('proof')) };
      const api = axios.create({ baseURL: API, adapter: transport.adapter });
      if (order === 'attachDpop first') attachDpop(api, sender);
      attachTokenRelay(api, manager, { queue });
      if (order === 'attachTokenRelay first') attachDpop(api, sender);

      // v1 looks fresh: the first sends go out unqueued; their replays after the refresh are queued.
      const responses = Array.from({ length: 4 }, (_, i) => api.get(`/items/${i}`));
      await new Promise((resolve) => setTimeout(resolve, 30));
      release();

      expect((await Promise.all(responses)).map((response) => response.status)).toEqual(Array(4).fill(200));
      expect(queued).toHaveLength(4);
      expect([...signed].sort()).toEqual([...Array(4).fill('Bearer v1'), ...Array(4).fill('Bearer v2')]);
    });
  }
});
