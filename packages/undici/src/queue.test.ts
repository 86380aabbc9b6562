import { ErrorCode, createTokenManager } from '@tokenrelay/core';
import PQueue from 'p-queue';
import { describe, expect, it, vi } from 'vitest';
import type { DpopSender } from '@tokenrelay/core/kit';
import { gatedManager } from '../../../test/helpers/queue-fixtures.js';
import type { FakeHandler, Sent } from './test-helpers.js';
import { tokenRelayInterceptor, type TokenRelayInterceptorOptions } from './index.js';

const API = 'https://api.example.test';



/** What one caller's handler saw, in order. */
type Seen = [event: string, detail?: unknown][];

const expired = { accessToken: 'v1', refreshToken: 'r1', expiresAt: Date.now() - 1_000 };
const expiredChallenge = ['www-authenticate', 'Bearer error="invalid_token"'].map((text) => Buffer.from(text));
const scopeChallenge = ['www-authenticate', 'Bearer error="insufficient_scope"'].map((text) => Buffer.from(text));
const authorizationOf = (sent: Sent) => (sent.headers as Record<string, string> | undefined)?.authorization;

/**
 * A next dispatcher whose exchanges take a few milliseconds from headers to end, counting how many are
 * in flight from dispatch to end. `path` picks the fate: `/hang` is answered only when aborted,
 * `/reset` breaks after connecting, `/upgrade` upgrades, `/forbidden` answers a 401 no refresh cures;
 * anything else answers 200 to `Bearer v2` and 401 to any other token.
 */
function countingNext() {
  const sent: Sent[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const next = (options: Sent, handler: FakeHandler) => {
    sent.push(options);
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    let over = false;
    const end = (finish: () => void) => {
      if (over) return;
      over = true;
      inFlight--;
      finish();
    };
    queueMicrotask(() => handler.onConnect((reason) => end(() => handler.onError(reason ?? new Error('aborted')))));
    if (options.path === '/hang') return true;
    setTimeout(() => {
      if (options.path === '/reset') return end(() => handler.onError(new Error('socket hang up')));
      if (options.path === '/upgrade') return end(() => handler.onUpgrade?.(101, [], {}));
      const ok = options.path !== '/forbidden' && authorizationOf(options) === 'Bearer v2';
      handler.onHeaders(ok ? 200 : 401, ok ? [] : options.path === '/forbidden' ? scopeChallenge : expiredChallenge, () => {}, '');
      // The body comes later: a slot freed at the headers would let more exchanges in flight than the queue allows.
      setTimeout(() => end(() => (handler.onData(Buffer.from(ok ? 'ok' : 'no')), handler.onComplete(null))), 2);
    }, 2);
    return true;
  };
  return { next, sent, inFlight: () => inFlight, maxInFlight: () => maxInFlight, resetPeak: () => (maxInFlight = inFlight) };
}

function setUp(manager: Parameters<typeof tokenRelayInterceptor>[0], options: Omit<TokenRelayInterceptorOptions, 'origins'> = {}) {
  const server = countingNext();
  const dispatch = tokenRelayInterceptor(manager, { origins: [API], ...options })(server.next);
  /** Dispatches `path`; returns what its handler saw, and the abort it was given. */
  const request = (path: string) => {
    const seen: Seen = [];
    let abort: (reason?: Error) => void = () => {};
    dispatch({ origin: API, path }, {
      onConnect: (given: (reason?: Error) => void) => {
        abort = given;
        seen.push(['connect']);
      },
      onHeaders: (status: number) => (seen.push(['headers', status]), true),
      onData: () => true,
      onComplete: () => void seen.push(['complete']),
      onError: (error: Error) => void seen.push(['error', error]),
      onUpgrade: (status: number) => void seen.push(['upgrade', status]),
    });
    return { seen, abort: (reason: Error) => abort(reason) };
  };
  return { ...server, request };
}

const ends = (seen: Seen) => seen.filter(([event]) => event === 'complete' || event === 'error' || event === 'upgrade');
const allEnded = (requests: { seen: Seen }[]) => vi.waitFor(() => expect(requests.every(({ seen }) => ends(seen).length === 1)).toBe(true));

describe('tokenRelayInterceptor with a queue (p-queue)', () => {
  it('sends the dispatches a refresh released through the queue, at most its concurrency in flight until each exchange ends', async () => {
    const { manager, release, refreshes } = gatedManager(expired);
    const { request, maxInFlight } = setUp(manager, { queue: new PQueue({ concurrency: 8 }) });

    const requests = Array.from({ length: 40 }, (_, i) => request(`/items/${i}`));
    release();
    await allEnded(requests);

    expect(requests.map(({ seen }) => ends(seen)[0])).toEqual(Array(40).fill(['complete']));
    expect(refreshes()).toBe(1);
    expect(maxInFlight()).toBeLessThanOrEqual(8);
  });

  it('without a queue, releases them all at once (the burst the queue prevents)', async () => {
    const { manager, release } = gatedManager(expired);
    const { request, maxInFlight } = setUp(manager);

    const requests = Array.from({ length: 40 }, (_, i) => request(`/items/${i}`));
    release();
    await allEnded(requests);

    expect(maxInFlight()).toBe(40);
  });

  it('never queues a dispatch whose token was fresh', async () => {
    const manager = createTokenManager({
      tokens: { accessToken: 'v2', refreshToken: 'r2', expiresAt: Date.now() + 3_600_000 },
      refresh: async () => ({ accessToken: 'v3' }),
    });
    const queue = new PQueue({ concurrency: 1 });
    const add = vi.spyOn(queue, 'add');
    const { request, maxInFlight } = setUp(manager, { queue });

    const requests = Array.from({ length: 20 }, (_, i) => request(`/items/${i}`));
    await allEnded(requests);

    expect(add).not.toHaveBeenCalled();
    expect(maxInFlight()).toBe(20);
  });

  it('sends the replays after a refresh through the queue', async () => {
    const { manager, release, refreshes } = gatedManager({ accessToken: 'v1', refreshToken: 'r1' });
    const queue = new PQueue({ concurrency: 3 });
    const add = vi.spyOn(queue, 'add');
    const { request, sent, inFlight, maxInFlight, resetPeak } = setUp(manager, { queue });

    // v1 looks fresh: all 20 go out at once, unqueued, get 401, and wait for one refresh; their replays are queued.
    const requests = Array.from({ length: 20 }, (_, i) => request(`/items/${i}`));
    await vi.waitFor(() => expect([sent.length, inFlight(), refreshes()]).toEqual([20, 0, 1]));
    expect(add).not.toHaveBeenCalled();
    resetPeak();
    release();
    await allEnded(requests);

    expect(requests.map(({ seen }) => ends(seen)[0])).toEqual(Array(20).fill(['complete']));
    expect(refreshes()).toBe(1);
    expect(add).toHaveBeenCalledTimes(20);
    expect(maxInFlight()).toBeLessThanOrEqual(3);
    expect(queue.size + queue.pending).toBe(0);
  });

  /** Two dispatches released by one refresh through a queue of one slot: the first sent (and hanging), the second queued. */
  async function oneSentOneQueued() {
    const { manager, release } = gatedManager(expired);
    const queue = new PQueue({ concurrency: 1 });
    const { request, sent } = setUp(manager, { queue });
    const first = request('/hang');
    const second = request('/items/1');
    release();
    await vi.waitFor(() => expect(sent).toHaveLength(1));
    return { queue, sent, first, second };
  }

  it('lets a dispatch aborted while queued leave at once: its handler gets the reason once, and it is never sent', async () => {
    const { queue, sent, first, second } = await oneSentOneQueued();
    const reason = new Error('caller gave up');
    second.abort(reason);

    // The first still hangs, holding the one slot: the second left the queue without waiting for it.
    await vi.waitFor(() => expect(second.seen).toEqual([['connect'], ['error', reason]]));
    first.abort(new Error('done waiting'));
    await vi.waitFor(() => expect(queue.size + queue.pending).toBe(0));
    expect(sent.map((options) => options.path)).toEqual(['/hang']);
    expect(second.seen).toHaveLength(2);
  });

  it('frees the slot of an exchange the caller aborts in flight, for the next one in the queue', async () => {
    const { queue, first, second } = await oneSentOneQueued();
    const reason = new Error('caller gave up');
    first.abort(reason);
    await allEnded([first, second]);

    expect(first.seen).toEqual([['connect'], ['error', reason]]);
    expect(second.seen).toEqual([['connect'], ['headers', 200], ['complete']]);
    expect(queue.size + queue.pending).toBe(0);
  });

  it('frees every slot whatever ends the exchange: an error, an upgrade, a failure handed over, a replay that fails again', async () => {
    const { manager, release } = gatedManager(expired);
    const queue = new PQueue({ concurrency: 1 });
    const { request } = setUp(manager, { queue });

    // One at a time: a slot that one of them kept would stall all that follow it.
    const requests = ['/reset', '/upgrade', '/forbidden', '/items/1', '/reset', '/upgrade', '/forbidden'].map(request);
    release();
    await allEnded(requests);

    expect(requests.map(({ seen }) => ends(seen)[0]?.[0])).toEqual(['error', 'upgrade', 'complete', 'complete', 'error', 'upgrade', 'complete']);
    expect(requests[2]?.seen).toEqual([['connect'], ['headers', 401], ['complete']]);
    expect(queue.size + queue.pending).toBe(0);
  });

  it('frees every slot of dispatches refused before they are sent: a DPoP-bound session without proofs, a DPoP send that fails', async () => {
    const dpopBound = createTokenManager({
      tokens: expired,
      refresh: async () => ({ accessToken: 'd2', refreshToken: 'r2', tokenType: 'DPoP', expiresAt: Date.now() + 3_600_000 }),
    });
    const unsigned = new Error('no signing key');
    const dpop: DpopSender = { send: () => Promise.reject(unsigned) };
    const refused = setUp(dpopBound, { queue: new PQueue({ concurrency: 1 }) });

    const requests = Array.from({ length: 3 }, (_, i) => refused.request(`/items/${i}`));
    await allEnded(requests);
    const manager = createTokenManager({ tokens: expired, refresh: async () => ({ accessToken: 'v2', refreshToken: 'r2', expiresAt: Date.now() + 3_600_000 }) });
    const signed = setUp(manager, { queue: new PQueue({ concurrency: 1 }), dpop });
    const failed = Array.from({ length: 3 }, (_, i) => signed.request(`/items/${i}`));
    await allEnded(failed);

    expect(requests.map(({ seen }) => ends(seen)[0])).toEqual(
      Array(3).fill(['error', expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR })]),
    );
    expect(failed.map(({ seen }) => ends(seen)[0])).toEqual(Array(3).fill(['error', unsigned]));
    expect([refused.sent, signed.sent]).toEqual([[], []]);
  });
});
