import { ErrorCode } from '@tokenrelay/core';
import { forceCloseDatabase, IDBFactory } from 'fake-indexeddb';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { browserLeaseRecords } from './lease-backend-choice.js';
import { REOPEN_AFTER_FAILURE_MS } from './lease-records.js';
import { memoryStorage, neverAborted, openStore, sleep, uniqueKey } from './test-helpers.js';
import type { BrowserStorage, BrowserStoreOptions, BrowserTokenStore } from './types.js';

// Tabs of one origin share one localStorage and one IndexedDB; here each "tab" opens the shared
// (fake) IndexedDB through its own door, which can refuse to open or break its connections, as a
// real one can for one tab (quota, a blocked upgrade, a browser hiccup) while it works for the others.

/** A tab's door to the shared IndexedDB. */
function tabIndexedDb(shared: IDBFactory) {
  const connections: IDBDatabase[] = [];
  let refusals = 0;
  const factory = {
    open(name: string, version?: number) {
      if (refusals > 0) {
        refusals--;
        const refused = { error: new DOMException('refused by the test', 'UnknownError') } as { error: DOMException; onerror?: () => void };
        setTimeout(() => refused.onerror?.());
        return refused;
      }
      const request = shared.open(name, version);
      request.addEventListener('success', () => connections.push(request.result));
      return request;
    },
  } as unknown as IDBFactory;
  return {
    factory,
    /** Refuses the next `count` opens. */
    refuse(count: number) {
      refusals = count;
    },
    /** Closes the tab's connections as the browser does when its database process goes away. */
    breakConnections() {
      // fake-indexeddb types the parameter as the class where it takes the instance.
      for (const connection of connections.splice(0)) forceCloseDatabase(connection as unknown as Parameters<typeof forceCloseDatabase>[0]);
    },
  };
}

type TabDoor = ReturnType<typeof tabIndexedDb>;

/** A store for one tab, created while `door` is the page's `indexedDB`. */
function openTab(door: TabDoor, options: BrowserStoreOptions): BrowserTokenStore {
  vi.stubGlobal('indexedDB', door.factory);
  return openStore({ lock: 'lease', lockPollMs: 5, ...options });
}

/**
 * Views of one storage for tabs in separate processes: a tab sees its own writes at once and the
 * other tabs' writes `lagMs` late. Values only; enough for the lease and its marker.
 */
function laggingStorage(lagMs: number) {
  const writes = new Map<string, Array<{ value: string | null; at: number; by: number }>>();
  let tabs = 0;
  return function view(): BrowserStorage {
    const me = tabs++;
    const write = (key: string, value: string | null) => writes.set(key, [...(writes.get(key) ?? []), { value, at: Date.now(), by: me }]);
    return {
      getItem: (key) => [...(writes.get(key) ?? [])].reverse().find(({ at, by }) => by === me || at <= Date.now() - lagMs)?.value ?? null,
      setItem: (key, value) => write(key, value),
      removeItem: (key) => write(key, null),
    };
  };
}

const leaseIn = (storage: BrowserStorage, key: string) => JSON.parse(storage.getItem(`${key}:lock`) ?? 'null') as { owner?: string } | null;

/**
 * Lets every tab take the lock at the same moment (or `askAfterMs[tab]` later) and hold it for
 * `holdMs`; a tab whose lock fails only records the error. Resolves with the most tabs that held the lock at once.
 */
async function holdersAtOnce(tabs: readonly BrowserTokenStore[], holdMs: number, askAfterMs: readonly number[] = []) {
  let holders = 0;
  let most = 0;
  const errors: unknown[] = [];
  await Promise.all(
    tabs.map(async (tab, index) => {
      await sleep(askAfterMs[index] ?? 0);
      const lock = await tab.lock({ signal: neverAborted() }).catch((error: unknown) => void errors.push(error));
      if (!lock) return;
      holders++;
      most = Math.max(most, holders);
      await sleep(holdMs);
      holders--;
      await lock.release();
    }),
  );
  return { most, errors };
}

const transientStoreError = { code: ErrorCode.STORE_ERROR, transient: true };

/** The bounds of a claim that nobody gives up on. */
const unbounded = () => ({ signal: neverAborted(), deadline: Date.now() + 60_000 });

describe('lease lock with tabs on different IndexedDB outcomes', () => {
  let shared: IDBFactory;
  beforeEach(() => {
    shared = new IDBFactory();
  });

  it('fails the claim of a tab whose IndexedDB does not open, instead of taking the storage lease, once a tab kept the lease in IndexedDB', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    const healthy = tabIndexedDb(shared);
    const failing = tabIndexedDb(shared);
    failing.refuse(Infinity);
    const tabA = openTab(healthy, { key, storage });
    const tabB = openTab(failing, { key, storage, lockWaitMs: 200 });

    const lockA = await tabA.lock({ signal: neverAborted() });
    await expect(tabB.lock({ signal: neverAborted() })).rejects.toMatchObject(transientStoreError);
    await lockA.release();
    await expect(tabB.lock({ signal: neverAborted() })).rejects.toMatchObject(transientStoreError);
    expect(leaseIn(storage, key)).toBeNull();
  });

  it('never lets a tab whose IndexedDB fails and a tab on IndexedDB hold the lock at once, over many rounds', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    const failing = tabIndexedDb(shared);
    failing.refuse(Infinity);
    const tabs = [openTab(tabIndexedDb(shared), { key, storage }), openTab(failing, { key, storage, lockWaitMs: 200 })];

    for (let round = 0; round < 5; round++) {
      const { most, errors } = await holdersAtOnce(tabs, 100);
      expect(most).toBe(1);
      for (const error of errors) expect(error).toMatchObject(transientStoreError);
    }
  });

  it('keeps a tab on IndexedDB waiting while a tab that fell back before any tab opened IndexedDB holds the storage lease', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    const failing = tabIndexedDb(shared);
    failing.refuse(Infinity);
    const tabA = openTab(failing, { key, storage });
    const tabB = openTab(tabIndexedDb(shared), { key, storage, lockWaitMs: 300 });

    const lockA = await tabA.lock({ signal: neverAborted() });
    expect(leaseIn(storage, key)).toMatchObject({ owner: expect.any(String) });
    await expect(tabB.lock({ signal: neverAborted() })).rejects.toMatchObject({ code: ErrorCode.STORE_ERROR, message: expect.stringContaining('300 ms') });

    await lockA.release();
    const lockB = await tabB.lock({ signal: neverAborted() });
    expect(leaseIn(storage, key)).toBeNull();
    await lockB.release();
  });

  it('lets at most one tab hold the lock when one falls back to the storage lease at the moment another first opens IndexedDB', async () => {
    for (let round = 0; round < 10; round++) {
      const key = uniqueKey();
      const storage = memoryStorage();
      const failing = tabIndexedDb(shared);
      failing.refuse(Infinity);
      const tabs = [openTab(failing, { key, storage, lockWaitMs: 200 }), openTab(tabIndexedDb(shared), { key, storage })];

      const { most, errors } = await holdersAtOnce(tabs, 100);
      expect(most).toBe(1);
      for (const error of errors) expect(error).toMatchObject(transientStoreError);
    }
  });

  describe('with a storage that reaches each tab 40 ms late', () => {
    /** Tab A, whose IndexedDB never opens, and tab B, the first to open IndexedDB, asking for the lock `startAfterMs` apart. */
    function tabsOnLaggingStorage() {
      const key = uniqueKey();
      const view = laggingStorage(40);
      const failing = tabIndexedDb(shared);
      failing.refuse(Infinity);
      return { tabA: openTab(failing, { key, storage: view(), lockWaitMs: 100 }), tabB: openTab(tabIndexedDb(shared), { key, storage: view() }) };
    }

    it('makes a tab that fell back yield when the marker of a tab that just opened IndexedDB reaches it after its claim', async () => {
      const { tabA, tabB } = tabsOnLaggingStorage();

      const { most, errors } = await holdersAtOnce([tabB, tabA], 150, [0, 20]);
      expect(most).toBe(1);
      expect(errors).toEqual([expect.objectContaining(transientStoreError)]);
    });

    it('makes a tab that first opens IndexedDB see a storage lease taken just before, though it reaches that tab late', async () => {
      const { tabA, tabB } = tabsOnLaggingStorage();

      const { most, errors } = await holdersAtOnce([tabA, tabB], 150, [0, 25]);
      expect(most).toBe(1);
      expect(errors).toEqual([]);
    });
  });

  it('returns to IndexedDB a while after a failed open, both where it fell back and where it failed the claim', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    const door = tabIndexedDb(shared);
    const tab = openTab(door, { key, storage, lockWaitMs: 300 });

    door.refuse(1); // no tab has opened IndexedDB yet: the storage lease
    let lock = await tab.lock({ signal: neverAborted() });
    expect(leaseIn(storage, key)).toMatchObject({ owner: expect.any(String) });
    await lock.release();

    await sleep(REOPEN_AFTER_FAILURE_MS);
    lock = await tab.lock({ signal: neverAborted() });
    expect(leaseIn(storage, key)).toBeNull();
    await lock.release();

    door.breakConnections();
    door.refuse(1); // IndexedDB has held the lease: no fallback
    await expect(tab.lock({ signal: neverAborted() })).rejects.toMatchObject(transientStoreError);
    await sleep(REOPEN_AFTER_FAILURE_MS);
    lock = await tab.lock({ signal: neverAborted() });
    expect(leaseIn(storage, key)).toBeNull();
    await lock.release();
  });

  it('loses the lock at its expiry when IndexedDB breaks after the claim, before another tab can take it, and never moves it to the storage', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    const breaking = tabIndexedDb(shared);
    const tabA = openTab(breaking, { key, storage, lockLeaseMs: 300 });
    const tabB = openTab(tabIndexedDb(shared), { key, storage, lockLeaseMs: 300 });
    const lockA = await tabA.lock({ signal: neverAborted() });

    breaking.breakConnections();
    breaking.refuse(Infinity);
    const lockB = await tabB.lock({ signal: neverAborted() });

    expect(lockA.signal.aborted).toBe(true);
    expect(lockA.signal.reason).toMatchObject({ code: ErrorCode.STORE_ERROR, message: expect.stringContaining('Lost the refresh lease') });
    await lockA.release();
    expect(leaseIn(storage, key)).toBeNull();
    await lockB.release();
  });
});

describe('browserLeaseRecords', () => {
  it('hands an IndexedDB claim the sequence a holder of the storage lease recorded, when that one is the newer', async () => {
    const shared = new IDBFactory();
    const storage = memoryStorage();
    const key = `${uniqueKey()}:lock`;
    const failing = tabIndexedDb(shared);
    failing.refuse(1);
    vi.stubGlobal('indexedDB', failing.factory);
    const inStorage = browserLeaseRecords(storage, key);
    vi.stubGlobal('indexedDB', tabIndexedDb(shared).factory);
    const inDatabase = browserLeaseRecords(storage, key);

    const first = await inDatabase.claim('tab-b', 10_000, unbounded());
    await first?.release(3);
    storage.removeItem(`${key}:indexeddb`); // as if tab A fell back before tab B's marker reached it
    const fallback = await inStorage.claim('tab-a', 10_000, unbounded());
    expect(JSON.parse(storage.getItem(key) ?? 'null')).toMatchObject({ owner: 'tab-a' });
    await fallback?.release(7);

    const next = await inDatabase.claim('tab-b', 10_000, unbounded());
    expect(next?.previousSequence).toBe(7);
  });

  it('does not renew a lease that expired, though no other tab took it', async () => {
    vi.stubGlobal('indexedDB', new IDBFactory());
    const leases = browserLeaseRecords(memoryStorage(), `${uniqueKey()}:lock`);

    const claimed = await leases.claim('tab-a', 50, unbounded());
    await sleep(80);
    expect(await claimed?.renew(10_000)).toBeUndefined();
  });
});
