/*
 * Helpers for this package's own tests (not exported): an in-memory Storage standing in for
 * localStorage, and stores that are closed after each test.
 */
import { afterEach, beforeEach, vi } from 'vitest';
import { browserStore } from './browser-store.js';
import type { BrowserStorage, BrowserStoreOptions, BrowserTokenStore } from './types.js';

/** A Map-backed {@link BrowserStorage}; `entries` exposes the raw strings to the test. */
export function memoryStorage(): BrowserStorage & { readonly entries: Map<string, string> } {
  const entries = new Map<string, string>();
  return {
    entries,
    getItem: (key) => entries.get(key) ?? null,
    setItem: (key, value) => {
      entries.set(key, String(value));
    },
    removeItem: (key) => {
      entries.delete(key);
    },
  };
}

// These tests model a page without Web Locks, where 'auto' takes the storage lease. Node 24 has a
// navigator.locks (20 and 22 have none), so it is hidden here; revision-catch-up.test.ts stubs its
// own Web Locks, and real ones run in Chromium (test/browser-tabs.test.ts).
beforeEach(() => {
  vi.stubGlobal('navigator', undefined);
});
afterEach(() => {
  vi.unstubAllGlobals();
});

const openStores: BrowserTokenStore[] = [];
afterEach(() => {
  for (const store of openStores.splice(0)) store.close();
});

/** A store closed after the test. */
export function openStore(options: BrowserStoreOptions): BrowserTokenStore {
  const store = browserStore(options);
  openStores.push(store);
  return store;
}

let keyCounter = 0;
/** A key no other test uses: BroadcastChannel names are shared by the whole process. */
export const uniqueKey = (): string => `test-${crypto.randomUUID()}-${keyCounter++}`;

/** Resolves after `ms`. */
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A signal that never aborts. */
export const neverAborted = () => new AbortController().signal;

/**
 * Lets every tab take the lock at the same moment and hold it for `holdMs`; resolves with the most
 * tabs that held it at once (1 for a lock that works).
 */
export async function mostHoldersAtOnce(tabs: readonly BrowserTokenStore[], holdMs: number): Promise<number> {
  let holders = 0;
  let most = 0;
  await Promise.all(
    tabs.map(async (tab) => {
      const lock = await tab.lock({ signal: neverAborted() });
      holders++;
      most = Math.max(most, holders);
      await sleep(holdMs);
      holders--;
      await lock.release();
    }),
  );
  return most;
}
