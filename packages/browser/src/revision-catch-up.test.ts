import { getEventListeners } from 'node:events';
import { ErrorCode, type StoredTokens } from '@tokenrelay/core';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { WebLockManager } from './locks.js';
import { memoryStorage, openStore, uniqueKey } from './test-helpers.js';

/**
 * A small Web Locks manager shared by the "tabs" of one test, like the browser's: exclusive and
 * shared modes, FIFO waiting, and query() of the held locks.
 */
function browserLocks(): WebLockManager {
  const held: { name: string; mode: 'exclusive' | 'shared' }[] = [];
  const waiting: (() => void)[] = [];
  const free = (name: string, mode: 'exclusive' | 'shared') =>
    !held.some((lock) => lock.name === name && (mode === 'exclusive' || lock.mode === 'exclusive'));
  return {
    async request(name, { mode = 'exclusive' }, callback) {
      while (!free(name, mode)) await new Promise<void>((wake) => waiting.push(wake));
      const lock = { name, mode };
      held.push(lock);
      try {
        await callback();
      } finally {
        held.splice(held.indexOf(lock), 1);
        for (const wake of waiting.splice(0)) wake();
      }
    },
    query: async () => ({ held: held.map(({ name }) => ({ name })) }),
  };
}

const v1: StoredTokens = { revision: 1, tokens: { accessToken: 'access-1', refreshToken: 'refresh-1' } };
const v2: StoredTokens = { revision: 2, tokens: { accessToken: 'access-2', refreshToken: 'refresh-2' } };

describe('browserStore with Web Locks when another tab’s write has not reached this tab yet', () => {
  beforeEach(() => {
    vi.stubGlobal('navigator', { locks: browserLocks() });
    // No channel: the announcement is late too, which is when the stale copy would be trusted.
    vi.stubGlobal('BroadcastChannel', undefined);
  });
  afterEach(() => {
    vi.unstubAllGlobals();
  });

  /** Two tabs whose localStorage copies are separate; `propagate` delivers tab A's value to tab B. */
  async function twoTabsAfterARefresh() {
    const key = uniqueKey();
    const storageA = memoryStorage();
    const storageB = memoryStorage();
    const tabA = openStore({ key, storage: storageA });
    const tabB = openStore({ key, storage: storageB });
    const propagate = () => storageB.setItem(key, storageA.getItem(key) ?? '');
    await tabA.set(v1);
    propagate();
    const lockA = await tabA.lock({ signal: new AbortController().signal });
    await tabA.set(v2, { expectedRevision: 1 }); // tab A refreshed with refresh-1: refresh-1 is spent
    await lockA.release();
    return { tabB, propagate };
  }

  it('makes the tab that takes the lock wait until the newer tokens reach it, instead of reading the spent ones', async () => {
    const { tabB, propagate } = await twoTabsAfterARefresh();
    expect(await tabB.get()).toEqual(v1); // the stale copy

    const locked = tabB.lock({ signal: new AbortController().signal });
    const outcome = vi.fn();
    void locked.then(outcome);
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(outcome).not.toHaveBeenCalled();

    propagate();
    const lock = await locked;
    expect(await tabB.get()).toEqual(v2);
    await lock.release();
  });

  it('keeps at most one abort listener on the caller\'s signal while it polls for the newer tokens, and none once it has the lock', async () => {
    const { tabB, propagate } = await twoTabsAfterARefresh();
    const caller = new AbortController();

    const locked = tabB.lock({ signal: caller.signal });
    // Long enough for many polls of the storage.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(getEventListeners(caller.signal, 'abort').length).toBeLessThanOrEqual(1);

    propagate();
    const lock = await locked;
    expect(getEventListeners(caller.signal, 'abort')).toHaveLength(0);
    await lock.release();
  });

  it('gives up with STORE_ERROR, releasing the lock, when the newer tokens never arrive', async () => {
    const { tabB, propagate } = await twoTabsAfterARefresh();
    const error = await tabB.lock({ signal: new AbortController().signal }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: ErrorCode.STORE_ERROR, message: expect.stringContaining('has not reached this tab') });
    // The refresh lock was released: once the tokens arrive, the next attempt gets it at once.
    propagate();
    const lock = await tabB.lock({ signal: AbortSignal.timeout(1_000) });
    expect(await tabB.get()).toEqual(v2);
    await lock.release();
  }, 10_000);
});
