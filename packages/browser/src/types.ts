import type { StoredTokens, TokenStore, TokenStoreLock, TokenStoreSetOptions } from '@tokenrelay/core';

/**
 * The part of the Web Storage API the store uses. `localStorage` and `sessionStorage` are ones;
 * so is any object with these three methods (an in-memory one in tests, an encrypting wrapper).
 */
export interface BrowserStorage {
  /** The value under `key`, or `null` when there is none. */
  getItem(key: string): string | null;
  /** Stores `value` under `key`; may throw (a full quota), which the store reports as `STORE_ERROR`. */
  setItem(key: string, value: string): void;
  /** Removes `key`; used for the lease lock only. */
  removeItem(key: string): void;
}

/**
 * How tabs take turns refreshing:
 * - `'web-locks'`: the Web Locks API (`navigator.locks`). The browser grants the lock to one tab
 *   at a time and releases it by itself when the holding tab closes or crashes.
 * - `'lease'`: a lease (an owner id and an expiry, renewed while held) for browsers or pages
 *   without Web Locks: in IndexedDB, taken atomically, or in the storage (best effort) where
 *   IndexedDB is missing too. See the README.
 * - `'auto'`: Web Locks where the page has them, else the lease.
 */
export type BrowserLockMode = 'auto' | 'web-locks' | 'lease';

/** Options of {@link browserStore}. */
export interface BrowserStoreOptions {
  /**
   * The storage key the tokens live under. It also names the lock (`tokenrelay:<key>`), the
   * lease (`<key>:lock`) and the BroadcastChannel (`tokenrelay:<key>`), so every tab of one
   * session must use the same key, and two sessions different keys.
   * @example 'tokenrelay:example-api'
   */
  key: string;
  /**
   * Where the tokens are kept. Tabs share tokens only through a storage they share, which
   * `localStorage` is and `sessionStorage` is not.
   * @default globalThis.localStorage
   */
  storage?: BrowserStorage;
  /**
   * How tabs take turns refreshing; see {@link BrowserLockMode}. `'web-locks'` where the page
   * has no `navigator.locks` (an insecure `http:` origin other than localhost, an old browser)
   * throws a `CONFIGURATION_ERROR`.
   * @default 'auto'
   */
  lock?: BrowserLockMode;
  /**
   * How long a tab waits for another tab's refresh before `lock()` rejects with a
   * `TokenRelayError` of code `STORE_ERROR` (and the waiting requests fail with it). Keep it
   * above the longest refresh a tab can make: the manager's `refreshTimeoutMs` × attempts.
   * @default 60_000
   */
  lockWaitMs?: number;
  /**
   * The `'lease'` lock only: how long a lease lasts unless its holder renews it (every third of
   * this while the refresh runs). It is how long a tab that closed mid-refresh blocks the others.
   * @default 10_000
   */
  lockLeaseMs?: number;
  /**
   * The `'lease'` lock only: how often a waiting tab looks at the lease again, in milliseconds
   * (plus up to as much again of jitter, so waiting tabs do not move in step).
   * @default 40
   */
  lockPollMs?: number;
}

/**
 * A {@link TokenStore} for browser tabs, with a cross-tab `lock` and `subscribe`. Created by
 * {@link browserStore}.
 */
export interface BrowserTokenStore extends TokenStore {
  /** Reads what the storage holds (or a newer write another tab announced); `undefined` when signed out. */
  get(): StoredTokens | undefined;
  /**
   * Stores the session under the cross-tab lock (this tab's, or one taken for the write). With
   * `expectedRevision`, writes only if the newest value any tab wrote has that revision.
   */
  set(value: StoredTokens, options?: TokenStoreSetOptions): Promise<boolean>;
  /** Signs out under the cross-tab lock; keeps a marker so that other tabs see the sign-out as newest. */
  clear(): Promise<void>;
  /**
   * Takes the cross-tab refresh lock; rejects with `STORE_ERROR` after `lockWaitMs`, or with
   * `signal.reason`. With the lease, its `signal` aborts when another tab took the lease over.
   */
  lock(options: { signal: AbortSignal }): Promise<TokenStoreLock & { readonly signal: AbortSignal }>;
  /** Calls `listener` with what another tab (or another store on the same key) wrote; returns an unsubscribe function. */
  subscribe(listener: (value: StoredTokens | undefined) => void): () => void;
  /** The lock in use: `'web-locks'` or `'lease'` (what `'auto'` chose). */
  readonly lockKind: 'web-locks' | 'lease';
  /**
   * Stops listening to other tabs: closes the BroadcastChannel, removes the `storage` listener
   * and drops every subscriber. A lock still held is freed once the writes under it finish (its
   * `release()` then does nothing). The store still reads, writes and locks. Safe to call twice.
   */
  close(): void;
}
