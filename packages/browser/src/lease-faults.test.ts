import { ErrorCode, type StoredTokens } from '@tokenrelay/core';
import { IDBFactory } from 'fake-indexeddb';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { REOPEN_AFTER_FAILURE_MS } from './lease-records.js';
import { memoryStorage, neverAborted, openStore, sleep, uniqueKey } from './test-helpers.js';
import type { BrowserStorage, BrowserStoreOptions, BrowserTokenStore } from './types.js';

// The lease lock when things go wrong around it: an abort mid-claim, a slow, failing, hung or
// blocked IndexedDB open, a closed store. Each "tab" opens the shared (fake) IndexedDB through its
// own door, which the test makes misbehave.

type Door = (shared: IDBFactory, name: string, version?: number) => IDBOpenDBRequest;

/** The request of an open that never completes; `onblocked` fires when `blocked`. */
function pendingRequest(blocked: boolean): IDBOpenDBRequest {
  const request = {} as { onblocked?: () => void };
  if (blocked) setTimeout(() => request.onblocked?.());
  return request as unknown as IDBOpenDBRequest;
}

/** An open that succeeds `ms` late. */
function slowRequest(shared: IDBFactory, ms: number, name: string, version?: number): IDBOpenDBRequest {
  const request = {} as Record<string, unknown> & { [handler: string]: ((event: Event) => void) | unknown };
  setTimeout(() => {
    const real = shared.open(name, version);
    for (const type of ['upgradeneeded', 'success', 'error'] as const) {
      real.addEventListener(type, (event) => {
        request.result = type === 'error' ? undefined : real.result;
        request.error = type === 'error' ? real.error : null;
        (request[`on${type}`] as ((event: Event) => void) | undefined)?.(event);
      });
    }
  }, ms);
  return request as unknown as IDBOpenDBRequest;
}

const refusedRequest = (): IDBOpenDBRequest => {
  const request = { error: new DOMException('refused by the test', 'UnknownError') } as { onerror?: () => void };
  setTimeout(() => request.onerror?.());
  return request as unknown as IDBOpenDBRequest;
};

/** A tab's door to the shared IndexedDB: each open goes through the next of `doors` (the last one repeats); counts opens. */
function tabIndexedDb(shared: IDBFactory, ...doors: Door[]) {
  const door = { opens: 0, factory: {} as IDBFactory };
  door.factory = {
    open: (name: string, version?: number) => {
      const next = doors[Math.min(door.opens, doors.length - 1)] ?? ((db: IDBFactory) => db.open(name, version));
      door.opens++;
      return next(shared, name, version);
    },
  } as unknown as IDBFactory;
  return door;
}

const opening: Door = (shared, name, version) => shared.open(name, version);
const refusing: Door = () => refusedRequest();
const hanging: Door = () => pendingRequest(false);
const blocking: Door = () => pendingRequest(true);
const slow =
  (ms: number): Door =>
  (shared, name, version) =>
    slowRequest(shared, ms, name, version);

function openTab(door: { factory: IDBFactory } | undefined, options: BrowserStoreOptions): BrowserTokenStore {
  vi.stubGlobal('indexedDB', door?.factory);
  return openStore({ lock: 'lease', lockPollMs: 5, ...options });
}

const leaseIn = (storage: BrowserStorage, key: string) => JSON.parse(storage.getItem(`${key}:lock`) ?? 'null') as { owner?: string } | null;
/** Marks IndexedDB as where the tabs of `key` keep the lease, as the first tab that opened it does. */
const markIndexedDb = (storage: BrowserStorage, key: string) => storage.setItem(`${key}:lock:indexeddb`, '1');

/** How `promise` ended within `ms`: its value or error, or 'pending'. */
function outcomeWithin<T>(promise: Promise<T>, ms: number): Promise<{ value: T } | { error: unknown } | 'pending'> {
  return Promise.race([
    promise.then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    ),
    sleep(ms).then(() => 'pending' as const),
  ]);
}

const session: StoredTokens = { revision: 1, tokens: { accessToken: 'access-1', refreshToken: 'refresh-1' } };

describe('storage lease', () => {
  it('frees a lease whose claim was aborted during the settle delay, so that no tab waits for it to run out', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    const tabA = openTab(undefined, { key, storage });
    const tabB = openTab(undefined, { key, storage, lockWaitMs: 300 });
    const controller = new AbortController();
    const reason = new Error('request cancelled');

    const locking = tabA.lock({ signal: controller.signal });
    setTimeout(() => controller.abort(reason), 10);

    await expect(locking).rejects.toBe(reason);
    expect(leaseIn(storage, key)).toBeNull();
    const lockB = await tabB.lock({ signal: neverAborted() });
    await lockB.release();
  });

  it('lets a Node process exit while a lease is held: its renewal and expiry timers are unref’d', async () => {
    const tab = openTab(undefined, { key: uniqueKey(), storage: memoryStorage() });
    const timersKeepingAlive = () => process.getActiveResourcesInfo().filter((resource) => resource === 'Timeout').length;
    const before = timersKeepingAlive();

    const lock = await tab.lock({ signal: neverAborted() });
    expect(timersKeepingAlive()).toBe(before);
    await lock.release();
  });

  it('frees a lease still held when the store is closed', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    const tabA = openTab(undefined, { key, storage });
    const tabB = openTab(undefined, { key, storage, lockWaitMs: 300 });
    await tabA.lock({ signal: neverAborted() });

    tabA.close();

    const lockB = await tabB.lock({ signal: neverAborted() });
    await lockB.release();
  });
});

describe('IndexedDB lease', () => {
  let shared: IDBFactory;
  beforeEach(() => {
    shared = new IDBFactory();
  });

  it('fixes the expiry when the lease is written, so a claim that waited for a slow open still holds the lease for lockLeaseMs', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    const tabA = openTab(tabIndexedDb(shared, slow(100), opening), { key, storage, lockLeaseMs: 120 });
    const tabB = openTab(tabIndexedDb(shared), { key, storage, lockWaitMs: 100 });

    const lockA = await tabA.lock({ signal: neverAborted() });
    await expect(tabB.lock({ signal: neverAborted() })).rejects.toMatchObject({ code: ErrorCode.STORE_ERROR, message: expect.stringContaining('100 ms') });
    expect(lockA.signal.aborted).toBe(false);
    await lockA.release();
  });

  it('keeps a sign-in waiting, rather than failing it at once, while IndexedDB fails to open in a tab where others keep the lease there', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    markIndexedDb(storage, key);
    const tab = openTab(tabIndexedDb(shared, refusing, opening), { key, storage, lockWaitMs: 3_000 });

    expect(await tab.set(session)).toBe(true);
    expect(tab.get()).toEqual(session);
    expect(leaseIn(storage, key)).toBeNull();
  });

  it('opens IndexedDB at most once a second where it never opens, however often a waiting tab polls', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    const tabA = openTab(tabIndexedDb(shared, refusing), { key, storage });
    const door = tabIndexedDb(shared, refusing);
    const tabB = openTab(door, { key, storage, lockWaitMs: 500 });
    const lockA = await tabA.lock({ signal: neverAborted() });

    await expect(tabB.lock({ signal: neverAborted() })).rejects.toMatchObject({ code: ErrorCode.STORE_ERROR, message: expect.stringContaining('500 ms') });
    expect(door.opens).toBe(1);
    await lockA.release();
  });

  it('gives up an IndexedDB open that never completes at the end of the lock wait, and opens afresh for a claim after the pause that follows a failed open', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    markIndexedDb(storage, key);
    const door = tabIndexedDb(shared, hanging, opening);
    const tab = openTab(door, { key, storage, lockWaitMs: 200 });

    const first = await outcomeWithin(tab.lock({ signal: neverAborted() }), 2_000);
    expect(first).toEqual({ error: expect.objectContaining({ code: ErrorCode.STORE_ERROR }) });
    await sleep(REOPEN_AFTER_FAILURE_MS);
    const second = await outcomeWithin(tab.lock({ signal: neverAborted() }), 2_000);
    expect(second).toEqual({ value: expect.objectContaining({ release: expect.any(Function) }) });
    expect(door.opens).toBe(2);
    if (typeof second === 'object' && 'value' in second) await second.value.release();
  });

  it('stops waiting for an IndexedDB open that never completes when the lock’s signal aborts', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    markIndexedDb(storage, key);
    const tab = openTab(tabIndexedDb(shared, hanging), { key, storage });
    const controller = new AbortController();
    const reason = new Error('request cancelled');
    setTimeout(() => controller.abort(reason), 50);

    expect(await outcomeWithin(tab.lock({ signal: controller.signal }), 2_000)).toEqual({ error: reason });
  });

  it('does not wait for an IndexedDB open that is blocked, and takes the storage lease where no tab has opened IndexedDB', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    const tab = openTab(tabIndexedDb(shared, blocking), { key, storage });

    const locked = await outcomeWithin(tab.lock({ signal: neverAborted() }), 2_000);
    expect(locked).toEqual({ value: expect.objectContaining({ release: expect.any(Function) }) });
    expect(leaseIn(storage, key)).toMatchObject({ owner: expect.any(String) });
    if (typeof locked === 'object' && 'value' in locked) await locked.value.release();
  });

  it('takes the storage lease after a few seconds where no tab has opened IndexedDB and its open hangs, not after the whole lock wait', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    const tab = openTab(tabIndexedDb(shared, hanging), { key, storage, lockWaitMs: 60_000 });

    const locked = await outcomeWithin(tab.lock({ signal: neverAborted() }), 8_000);
    expect(locked).toEqual({ value: expect.objectContaining({ release: expect.any(Function) }) });
    expect(leaseIn(storage, key)).toMatchObject({ owner: expect.any(String) });
    if (typeof locked === 'object' && 'value' in locked) await locked.value.release();
  }, 15_000);
});
