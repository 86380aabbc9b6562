import { ErrorCode, type StoredTokens } from '@tokenrelay/core';
import { IDBFactory } from 'fake-indexeddb';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { memoryStorage, mostHoldersAtOnce, neverAborted, openStore, sleep, uniqueKey } from './test-helpers.js';

// Each "tab" here has its own copy of the storage, as tabs in separate renderer processes have,
// and shares one IndexedDB (fake-indexeddb), where the lease lives when the page has IndexedDB.


const v1: StoredTokens = { revision: 1, tokens: { accessToken: 'access-1', refreshToken: 'refresh-1' } };
const v2: StoredTokens = { revision: 2, tokens: { accessToken: 'access-2', refreshToken: 'refresh-2' } };

describe('lease lock in IndexedDB, with tabs whose storage copies lag behind each other', () => {
  beforeEach(() => {
    vi.stubGlobal('indexedDB', new IDBFactory());
    // No channel: the announcement is late too, which is when the stale copy would be trusted.
    vi.stubGlobal('BroadcastChannel', undefined);
  });
  afterEach(() => {
    vi.unstubAllGlobals();
  });

  it('lets only one of many tabs that ask at the same moment hold the lock, though no tab sees another’s storage', async () => {
    const key = uniqueKey();
    const tabs = Array.from({ length: 5 }, () => openStore({ key, storage: memoryStorage(), lock: 'lease', lockPollMs: 5 }));

    expect(await mostHoldersAtOnce(tabs, 20)).toBe(1);
  });

  /** Tab A refreshes under the lease; `propagate` delivers tab A's storage value to tab B's copy. */
  async function twoTabsAfterARefresh() {
    const key = uniqueKey();
    const storageA = memoryStorage();
    const storageB = memoryStorage();
    const tabA = openStore({ key, storage: storageA, lock: 'lease' });
    const tabB = openStore({ key, storage: storageB, lock: 'lease' });
    const propagate = () => storageB.setItem(key, storageA.getItem(key) ?? '');
    await tabA.set(v1);
    propagate();
    const lockA = await tabA.lock({ signal: neverAborted() });
    await tabA.set(v2, { expectedRevision: 1 }); // tab A refreshed with refresh-1: refresh-1 is spent
    await lockA.release();
    return { tabB, propagate };
  }

  it('makes the tab that takes the lease next wait until the tokens its previous holder wrote reach it, instead of reading the spent ones', async () => {
    const { tabB, propagate } = await twoTabsAfterARefresh();
    expect(tabB.get()).toEqual(v1); // the stale copy

    const locked = tabB.lock({ signal: neverAborted() });
    const outcome = vi.fn();
    void locked.then(outcome);
    await sleep(100);
    expect(outcome).not.toHaveBeenCalled();

    propagate();
    const lock = await locked;
    expect(tabB.get()).toEqual(v2);
    await lock.release();
  });

  it('gives up with STORE_ERROR, freeing the lease, when the newer tokens never arrive', async () => {
    const { tabB, propagate } = await twoTabsAfterARefresh();
    const error = await tabB.lock({ signal: neverAborted() }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: ErrorCode.STORE_ERROR, message: expect.stringContaining('has not reached this tab') });

    propagate();
    const lock = await tabB.lock({ signal: AbortSignal.timeout(1_000) });
    expect(tabB.get()).toEqual(v2);
    await lock.release();
  }, 10_000);
});

describe('lease lock where IndexedDB refuses to open (some private modes)', () => {
  afterEach(() => {
    vi.unstubAllGlobals();
  });

  it('keeps the lease in the storage instead', async () => {
    const refusing = {
      open() {
        const request = { error: new DOMException('private mode', 'InvalidStateError') } as { onerror?: () => void };
        setTimeout(() => request.onerror?.());
        return request;
      },
    };
    vi.stubGlobal('indexedDB', refusing);
    const key = uniqueKey();
    const storage = memoryStorage();
    const tab = openStore({ key, storage, lock: 'lease' });

    const lock = await tab.lock({ signal: neverAborted() });
    expect(JSON.parse(storage.getItem(`${key}:lock`) ?? '')).toMatchObject({ owner: expect.any(String) });
    await lock.release();
  });
});
