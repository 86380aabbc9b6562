import { ErrorCode, TokenRelayError, type TokenSet } from '@tokenrelay/core';
import { acquireLeaseLock, acquireWebLock, type WebLockManager } from './locks.js';
import { decodeStoredTokens, encodeStoredTokens, type StoredTokens } from './stored-tokens.js';
import type { BrowserLockMode, BrowserStorage, BrowserStoreOptions, BrowserTokenStore } from './types.js';

const lockModes: readonly BrowserLockMode[] = ['auto', 'web-locks', 'lease'];
/** How long a tab holding the refresh lock waits for another tab's newer write to reach it. */
const REVISION_CATCH_UP_MS = 2_000;
const REVISION_POLL_MS = 10;

const configError = (message: string, cause?: unknown) =>
  new TokenRelayError(ErrorCode.CONFIGURATION_ERROR, message, cause === undefined ? {} : { cause });

function assertPositive(name: string, value: number | undefined): void {
  if (value !== undefined && !(Number.isFinite(value) && value > 0)) {
    throw configError(`browserStore: ${name} must be a finite number > 0`);
  }
}

function defaultStorage(): BrowserStorage {
  let storage: BrowserStorage | undefined;
  try {
    storage = (globalThis as { localStorage?: BrowserStorage }).localStorage;
  } catch (cause) {
    // Reading localStorage throws a SecurityError where the user blocked site data.
    throw configError('browserStore: localStorage is not accessible here; pass options.storage', cause);
  }
  if (!storage) throw configError('browserStore: there is no localStorage here; pass options.storage');
  return storage;
}

type GlobalEvents = {
  addEventListener?(type: 'storage', listener: (event: StorageEvent) => void): void;
  removeEventListener?(type: 'storage', listener: (event: StorageEvent) => void): void;
};

/**
 * A token store for browser tabs that share one session. Tokens live in `localStorage` (or the
 * given storage) under `key`. Around each refresh the manager takes a cross-tab lock (Web Locks,
 * or a best-effort storage lease where Web Locks are missing), re-reads the store and skips the
 * token call when another tab already refreshed. New tokens are announced on a
 * `BroadcastChannel`, so the other tabs use them at once without a storage round trip; the
 * `storage` event is the fallback where BroadcastChannel is missing.
 *
 * Browser-only: it uses no Node API. Call `close()` when the session's manager is no longer used.
 *
 * @throws TokenRelayError `CONFIGURATION_ERROR` (synchronously) for invalid options, no
 *   `localStorage`, or `lock: 'web-locks'` where the page has no `navigator.locks`.
 * @example
 * ```ts
 * const store = browserStore({ key: 'tokenrelay:example-api' })
 * const manager = createTokenManager({
 *   store,
 *   refresh: refreshTokenGrant({ tokenEndpoint: 'https://auth.example.com/oauth/token', clientId: 'spa' }),
 * })
 * ```
 */
export function browserStore(options: BrowserStoreOptions): BrowserTokenStore {
  if (typeof options?.key !== 'string' || options.key === '') {
    throw configError('browserStore: options.key must be a non-empty string');
  }
  const mode = options.lock ?? 'auto';
  if (!lockModes.includes(mode)) throw configError(`browserStore: options.lock must be one of ${lockModes.join(', ')}`);
  assertPositive('lockTimeoutMs', options.lockTimeoutMs);
  assertPositive('leaseMs', options.leaseMs);

  const { key } = options;
  const storage = options.storage ?? defaultStorage();
  const lockTimeoutMs = options.lockTimeoutMs ?? 60_000;
  const leaseMs = options.leaseMs ?? 10_000;
  const sharedName = `tokenrelay:${key}`;
  const locks = (globalThis as { navigator?: { locks?: WebLockManager } }).navigator?.locks;
  if (mode === 'web-locks' && !locks) {
    throw configError(
      'browserStore: lock is "web-locks" but navigator.locks is missing (an insecure http: origin or an old browser)',
    );
  }
  const lockKind = mode === 'lease' || !locks ? 'lease' : 'web-locks';

  /** The newest value this store has seen from any source: its own writes, the storage, other tabs. */
  let newest: StoredTokens | undefined;
  const listeners = new Set<(tokens: TokenSet | undefined) => void>();

  /*
   * Web Locks live in the browser process, so every tab sees them at once, while a tab's copy of
   * localStorage and BroadcastChannel messages reach the others later. A tab that takes the refresh
   * lock right after another released it can therefore still read the old tokens and refresh with
   * an already rotated refresh token. So each write also holds a shared "revision" lock until this
   * tab writes again, taken before the refresh lock is released; a tab taking the refresh lock asks
   * the browser for the newest revision and waits until its own copy has caught up.
   */
  const revisionPrefix = `${sharedName}:revision:`;
  let releaseRevisionMarker: (() => void) | undefined;

  async function markRevision(revision: number): Promise<void> {
    if (lockKind !== 'web-locks' || !locks?.query) return;
    const previous = releaseRevisionMarker;
    await new Promise<void>((granted) => {
      void locks.request(`${revisionPrefix}${revision}`, { mode: 'shared' }, () => {
        granted();
        return new Promise<void>((release) => {
          releaseRevisionMarker = release;
        });
      });
    });
    previous?.();
  }

  async function catchUpWithNewestRevision(signal: AbortSignal): Promise<void> {
    if (!locks?.query) return;
    const { held = [] } = await locks.query();
    const announced = Math.max(
      -1,
      ...held.map(({ name }) => (name?.startsWith(revisionPrefix) ? Number(name.slice(revisionPrefix.length)) : -1)),
    );
    const deadline = Date.now() + REVISION_CATCH_UP_MS;
    for (;;) {
      const stored = read();
      if (stored && (!newest || stored.revision > newest.revision)) newest = stored;
      if ((newest?.revision ?? -1) >= announced) return;
      if (Date.now() > deadline) {
        throw new TokenRelayError(
          ErrorCode.STORE_ERROR,
          `Another tab stored revision ${announced} of "${key}", but it has not reached this tab within ${REVISION_CATCH_UP_MS} ms`,
          { transient: true },
        );
      }
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, REVISION_POLL_MS);
        signal.addEventListener('abort', () => (clearTimeout(timer), reject(signal.reason)), { once: true });
      });
    }
  }

  function read(): StoredTokens | undefined {
    let text: string | null;
    try {
      text = storage.getItem(key);
    } catch (cause) {
      throw new TokenRelayError(ErrorCode.STORE_ERROR, `Could not read "${key}" from the storage`, { cause });
    }
    return decodeStoredTokens(text, key);
  }

  function write(tokens: TokenSet | null): number {
    let storedRevision = -1;
    try {
      storedRevision = read()?.revision ?? -1;
    } catch {
      // A corrupt value is being replaced on purpose (a sign-in); its revision is lost with it.
    }
    const next: StoredTokens = { revision: Math.max(storedRevision, newest?.revision ?? -1) + 1, tokens };
    const text = encodeStoredTokens(next);
    try {
      storage.setItem(key, text);
    } catch (cause) {
      throw new TokenRelayError(ErrorCode.STORE_ERROR, `Could not write "${key}" to the storage`, { cause });
    }
    newest = next;
    channel?.postMessage(text);
    return next.revision;
  }

  /** A value another tab announced (channel) or wrote (storage event). Older or equal revisions are ignored. */
  function receive(text: string | null): void {
    let stored: StoredTokens | undefined;
    try {
      stored = decodeStoredTokens(text, key);
    } catch {
      // A garbled announcement changes nothing here; get() reports a corrupt store when it reads one.
      return;
    }
    if (stored && newest && stored.revision <= newest.revision) return;
    // No value at all means the site's data was cleared: that is a sign-out.
    newest = stored;
    const tokens = stored?.tokens ?? undefined;
    for (const listener of [...listeners]) {
      try {
        listener(tokens);
      } catch (error) {
        // One subscriber's bug must not keep the others from the new tokens.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  let channel: BroadcastChannel | undefined;
  if (typeof BroadcastChannel === 'function') {
    channel = new BroadcastChannel(sharedName);
    channel.onmessage = (event: MessageEvent<unknown>) => {
      if (typeof event.data === 'string') receive(event.data);
    };
    // In Node (tests, server rendering) an open channel would keep the process alive.
    (channel as { unref?: () => void }).unref?.();
  }
  const onStorage = (event: StorageEvent) => {
    if (event.storageArea !== storage) return;
    // key null: storage.clear() in another tab removed everything, our value included.
    if (event.key === key) receive(event.newValue);
    else if (event.key === null) receive(null);
  };
  const events = globalThis as GlobalEvents;
  events.addEventListener?.('storage', onStorage);

  return {
    lockKind,

    get() {
      const stored = read();
      // This tab's copy of the storage can lag behind another process's write that the channel
      // already announced; under the lock, trusting the stale copy would refresh twice.
      if (stored && newest && newest.revision > stored.revision) return newest.tokens ?? undefined;
      if (stored) newest = stored;
      return stored?.tokens ?? undefined;
    },

    set(tokens) {
      return markRevision(write(tokens));
    },

    clear() {
      // A marker, not removeItem: the revision must keep growing across a sign-out.
      return markRevision(write(null));
    },

    async lock({ signal }) {
      if (lockKind !== 'web-locks' || !locks) {
        return acquireLeaseLock(storage, `${key}:lock`, signal, { timeoutMs: lockTimeoutMs, leaseMs });
      }
      const lock = await acquireWebLock(locks, sharedName, signal, lockTimeoutMs);
      try {
        await catchUpWithNewestRevision(signal);
      } catch (error) {
        lock.release();
        throw error;
      }
      return lock;
    },

    subscribe(listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },

    close() {
      releaseRevisionMarker?.();
      channel?.close();
      channel = undefined;
      events.removeEventListener?.('storage', onStorage);
      listeners.clear();
    },
  };
}
