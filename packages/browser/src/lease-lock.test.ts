import { ErrorCode, type TokenStoreLock } from '@tokenrelay/core';
import { describe, expect, it } from 'vitest';
import { memoryStorage, mostHoldersAtOnce, neverAborted, openStore, sleep, uniqueKey } from './test-helpers.js';

// test-helpers.ts hides navigator.locks, so every store here uses the storage lease: the fallback for
// pages without Web Locks. The Web Locks path runs in real Chromium (test/browser-tabs.test.ts).


/** Settles to 'pending' if `promise` has not settled within `ms`. */
function stateAfter(promise: Promise<unknown>, ms: number): Promise<'resolved' | 'rejected' | 'pending'> {
  return Promise.race([
    promise.then(
      () => 'resolved' as const,
      () => 'rejected' as const,
    ),
    sleep(ms).then(() => 'pending' as const),
  ]);
}

function twoTabs(options: { lockWaitMs?: number; lockLeaseMs?: number } = {}) {
  const key = uniqueKey();
  const storage = memoryStorage();
  return {
    key,
    storage,
    tabA: openStore({ key, storage, lock: 'lease', ...options }),
    tabB: openStore({ key, storage, lock: 'lease', ...options }),
  };
}

describe('lease lock (where Web Locks are missing)', () => {
  it('gives the lock to one tab at a time, and to the waiting tab once it is released', async () => {
    const { key, storage, tabA, tabB } = twoTabs();
    expect(tabA.lockKind).toBe('lease');
    const lockA = await tabA.lock({ signal: neverAborted() });
    expect(JSON.parse(storage.getItem(`${key}:lock`) ?? '')).toEqual({
      owner: expect.any(String),
      expiresAt: expect.any(Number),
    });

    const waitingB = tabB.lock({ signal: neverAborted() });
    expect(await stateAfter(waitingB, 400)).toBe('pending');

    await lockA.release();
    const lockB = await waitingB;
    await lockB.release();
    expect(storage.getItem(`${key}:lock`)).toBeNull();
  });

  it('frees the lease with the newest sequence its holder knew, for the next holder to wait for', async () => {
    const { key, storage, tabA } = twoTabs();
    await tabA.set({ revision: 1, tokens: { accessToken: 'access-1', refreshToken: 'refresh-1' } });

    expect(JSON.parse(storage.getItem(`${key}:lock`) ?? '')).toEqual({ expiresAt: 0, sequence: 0 });
  });

  it('lets only one of many tabs that ask at the same moment hold the lock', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    const tabs = Array.from({ length: 5 }, () => openStore({ key, storage, lock: 'lease' }));

    expect(await mostHoldersAtOnce(tabs, 30)).toBe(1);
  });

  it('rejects a waiting tab with a STORE_ERROR after lockWaitMs', async () => {
    const { tabA, tabB } = twoTabs({ lockWaitMs: 300 });
    const lockA = await tabA.lock({ signal: neverAborted() });

    const started = Date.now();
    await expect(tabB.lock({ signal: neverAborted() })).rejects.toMatchObject({
      code: ErrorCode.STORE_ERROR,
      message: expect.stringContaining('300 ms'),
    });
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    await lockA.release();
  });

  it('stops waiting with the abort reason when the signal aborts', async () => {
    const { tabA, tabB } = twoTabs();
    const lockA = await tabA.lock({ signal: neverAborted() });
    const controller = new AbortController();
    const reason = new Error('session replaced');

    const waitingB = tabB.lock({ signal: controller.signal });
    setTimeout(() => controller.abort(reason), 100);

    await expect(waitingB).rejects.toBe(reason);
    await lockA.release();
  });

  it('takes over the lease of a tab that died holding it once the lease expires', async () => {
    const { key, storage, tabB } = twoTabs({ lockWaitMs: 5_000 });
    storage.setItem(`${key}:lock`, JSON.stringify({ owner: 'closed-tab', expiresAt: Date.now() + 400 }));

    const started = Date.now();
    const lockB = await tabB.lock({ signal: neverAborted() });

    expect(Date.now() - started).toBeGreaterThanOrEqual(390);
    expect(JSON.parse(storage.getItem(`${key}:lock`) ?? '').owner).not.toBe('closed-tab');
    await lockB.release();
  });

  it('treats a garbled lease as free', async () => {
    const { key, storage, tabB } = twoTabs({ lockWaitMs: 1_000 });
    storage.setItem(`${key}:lock`, '{"owner":');

    const lockB = await tabB.lock({ signal: neverAborted() });
    await lockB.release();
  });

  it('renews the lease while the refresh runs, so a refresh longer than lockLeaseMs keeps it', async () => {
    const { tabA, tabB } = twoTabs({ lockLeaseMs: 300, lockWaitMs: 900 });
    const lockA = await tabA.lock({ signal: neverAborted() });

    await expect(tabB.lock({ signal: neverAborted() })).rejects.toMatchObject({ code: ErrorCode.STORE_ERROR });

    await lockA.release();
    const lockB: TokenStoreLock = await tabB.lock({ signal: neverAborted() });
    await lockB.release();
  });

  it('does not remove a lease that another tab took over', async () => {
    const { key, storage, tabA } = twoTabs({ lockLeaseMs: 300 });
    const lockA = await tabA.lock({ signal: neverAborted() });
    const other = JSON.stringify({ owner: 'other-tab', expiresAt: Date.now() + 10_000 });
    storage.setItem(`${key}:lock`, other);

    await lockA.release();
    await lockA.release();

    expect(storage.getItem(`${key}:lock`)).toBe(other);
  });

  it('refuses a refresh write under a lease another tab took over before this tab’s timers noticed', async () => {
    const { key, storage, tabA } = twoTabs({ lockLeaseMs: 5_000 });
    await tabA.set({ revision: 1, tokens: { accessToken: 'at-1', refreshToken: 'rt-1' } });
    const lockA = await tabA.lock({ signal: neverAborted() });
    // As after a freeze past the lease: another tab holds it now, and A's renewal has not run yet.
    storage.setItem(`${key}:lock`, JSON.stringify({ owner: 'other-tab', expiresAt: Date.now() + 10_000 }));

    await expect(tabA.set({ revision: 2, tokens: { accessToken: 'at-2', refreshToken: 'rt-2' } }, { expectedRevision: 1 })).rejects.toMatchObject({
      code: ErrorCode.STORE_ERROR,
    });
    expect((await tabA.get())?.tokens.accessToken).toBe('at-1');
    expect(lockA.signal?.aborted).toBe(true);
    await lockA.release();
  });
});
