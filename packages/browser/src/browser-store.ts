import type { StoredTokens, TokenStoreLock } from '@tokenrelay/core';
import { ErrorCode, TokenRelayError } from '@tokenrelay/core';
import { assertTimerDelay, configurationError, createWriteOrder, delay, notifyListeners, parseStoredTokens, storeError } from '@tokenrelay/core/kit';
import { browserLeaseRecords } from './lease-backend-choice.js';
import { acquireLeaseLock, acquireWebLock, type HeldLock, type WebLockManager } from './locks.js';
import { decodeRecord, encodeRecord, type StoredRecord } from './stored-tokens.js';
import type { BrowserLockMode, BrowserStorage, BrowserStoreOptions, BrowserTokenStore } from './types.js';

const lockModes: readonly BrowserLockMode[] = ['auto', 'web-locks', 'lease'];
/** How long a tab holding the refresh lock waits for another tab's newer write to reach it. */
const REVISION_CATCH_UP_MS = 2_000;
const REVISION_POLL_MS = 10;

function defaultStorage(): BrowserStorage {
  let storage: BrowserStorage | undefined;
  try {
    storage = (globalThis as { localStorage?: BrowserStorage }).localStorage;
  } catch (cause) {
    // Reading localStorage throws a SecurityError where the user blocked site data.
    throw configurationError('browserStore: localStorage is not accessible here; pass options.storage', cause);
  }
  if (!storage) throw configurationError('browserStore: there is no localStorage here; pass options.storage');
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
 * token call when another tab already refreshed. Every write happens under that lock too, and a
 * refresh's write (`expectedRevision`) re-reads the storage first, so a sign-out or sign-in in
 * another tab is never overwritten by a refresh that started before it. New tokens are announced on a
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
    throw configurationError('browserStore: options.key must be a non-empty string');
  }
  const mode = options.lock ?? 'auto';
  if (!lockModes.includes(mode)) throw configurationError(`browserStore: options.lock must be one of ${lockModes.join(', ')}`);
  assertTimerDelay('browserStore', 'lockWaitMs', options.lockWaitMs, 0, true);
  assertTimerDelay('browserStore', 'lockLeaseMs', options.lockLeaseMs, 0, true);
  assertTimerDelay('browserStore', 'lockPollMs', options.lockPollMs, 0, true);

  const { key } = options;
  const storage = options.storage ?? defaultStorage();
  const lockWaitMs = options.lockWaitMs ?? 60_000;
  const lockLeaseMs = options.lockLeaseMs ?? 10_000;
  const lockPollMs = options.lockPollMs ?? 40;
  const sharedName = `tokenrelay:${key}`;
  const locks = (globalThis as { navigator?: { locks?: WebLockManager } }).navigator?.locks;
  if (mode === 'web-locks' && !locks) {
    throw configurationError(
      'browserStore: lock is "web-locks" but navigator.locks is missing (an insecure http: origin or an old browser)',
    );
  }
  const lockKind = mode === 'lease' || !locks ? 'lease' : 'web-locks';
  const leaseName = `${key}:lock`;
  // IndexedDB gives the lease a real compare-and-set; the storage lease is for pages without it.
  const leases = browserLeaseRecords(storage, leaseName);

  /** The newest record this store has seen from any source: its own writes, the storage, other tabs. */
  let newest: StoredRecord | undefined;
  const listeners = new Set<(value: StoredTokens | undefined) => void>();
  /** The lock this store holds, if any: writes inside it need no second lock (Web Locks are not re-entrant). */
  let held: HeldLock | undefined;
  /** This store's reads-then-writes, one at a time. */
  let queue: Promise<unknown> = Promise.resolve();
  /** Sign-ins and sign-outs land in call order, though each waits for the lock on its own. */
  const writeOrder = createWriteOrder();
  /** Writes `value` for the call numbered `ticket`, unless a later call already landed: that one is newer. */
  async function writeInOrder(ticket: number, value: StoredTokens | undefined): Promise<void> {
    if (writeOrder.overtaken(ticket)) return;
    const sequence = write(value);
    writeOrder.landed(ticket);
    await markSequence(sequence);
  }

  /*
   * Web Locks live in the browser process, so every tab sees them at once, while a tab's copy of
   * localStorage and BroadcastChannel messages reach the others later. A tab that takes the refresh
   * lock right after another released it can therefore still read the old tokens and refresh with
   * an already rotated refresh token. So each write also holds a shared "sequence" lock until this
   * tab writes again, taken before the refresh lock is released; a tab taking the refresh lock asks
   * the browser for the newest sequence and waits until its own copy has caught up.
   */
  const sequencePrefix = `${sharedName}:revision:`;
  let releaseSequenceMarker: (() => void) | undefined;

  async function markSequence(sequence: number): Promise<void> {
    if (lockKind !== 'web-locks' || !locks?.query) return;
    const previous = releaseSequenceMarker;
    await new Promise<void>((granted) => {
      void locks.request(`${sequencePrefix}${sequence}`, { mode: 'shared' }, () => {
        granted();
        return new Promise<void>((release) => {
          releaseSequenceMarker = release;
        });
      });
    });
    previous?.();
  }

  async function catchUpWithNewestSequence(signal?: AbortSignal): Promise<void> {
    // Only the Web Locks mode marks sequences (see markSequence): a lease holder would find none.
    if (lockKind !== 'web-locks' || !locks?.query) return;
    const { held: markers = [] } = await locks.query();
    const announced = Math.max(
      -1,
      ...markers.map(({ name }) => (name?.startsWith(sequencePrefix) ? Number(name.slice(sequencePrefix.length)) : -1)),
    );
    await catchUpWith(announced, signal);
  }

  /** Waits until this tab's storage copy (or an announcement) has the sequence `announced` another tab wrote. */
  async function catchUpWith(announced: number, signal?: AbortSignal): Promise<void> {
    const deadline = Date.now() + REVISION_CATCH_UP_MS;
    // Bounded by the deadline; every pass sleeps REVISION_POLL_MS.
    for (;;) {
      const stored = read();
      if (stored && (!newest || stored.sequence > newest.sequence)) newest = stored;
      if ((newest?.sequence ?? -1) >= announced) return;
      if (Date.now() > deadline) {
        throw new TokenRelayError(
          ErrorCode.STORE_ERROR,
          `Another tab stored revision ${announced} of "${key}", but it has not reached this tab within ${REVISION_CATCH_UP_MS} ms`,
          { transient: true },
        );
      }
      await delay(REVISION_POLL_MS, signal);
    }
  }

  function read(): StoredRecord | undefined {
    let text: string | null;
    try {
      text = storage.getItem(key);
    } catch (cause) {
      throw storeError(`Could not read "${key}" from the storage`, cause);
    }
    return decodeRecord(text, key);
  }

  /** The stored record; `undefined` also for a corrupt value, which a sign-in replaces. */
  function storedRecordOrUndefined(): StoredRecord | undefined {
    try {
      return read();
    } catch {
      return undefined;
    }
  }

  /** What this tab knows to be current: its storage copy, or a newer record another tab announced. */
  function current(): StoredTokens | undefined {
    const stored = read();
    // This tab's copy of the storage can lag behind another process's write that the channel
    // already announced; under the lock, trusting the stale copy would refresh twice.
    if (stored && newest && newest.sequence > stored.sequence) return newest.value;
    if (stored) newest = stored;
    return stored?.value;
  }

  function write(value: StoredTokens | undefined): number {
    // A corrupt value is being replaced on purpose (a sign-in); its sequence is lost with it.
    const storedSequence = storedRecordOrUndefined()?.sequence ?? -1;
    const next: StoredRecord = { sequence: Math.max(storedSequence, newest?.sequence ?? -1) + 1, value };
    const text = encodeRecord(next);
    try {
      storage.setItem(key, text);
    } catch (cause) {
      throw storeError(`Could not write "${key}" to the storage`, cause);
    }
    newest = next;
    channel?.postMessage(text);
    return next.sequence;
  }

  async function takeLock(signal: AbortSignal): Promise<HeldLock> {
    if (lockKind !== 'web-locks' || !locks) {
      const lease = await acquireLeaseLock(leases, leaseName, signal, { lockWaitMs, lockLeaseMs, lockPollMs });
      // The lease and the tokens travel apart (and storage reaches other processes late): the
      // previous holder recorded the newest sequence it knew, which this tab must see before reading.
      // Never record less than it was told: a tab that gave up catching up must not hide the sequence.
      const sequenceToRecord = () => Math.max(newest?.sequence ?? -1, lease.previousSequence ?? -1);
      const releaseLease = () => lease.release(sequenceToRecord() < 0 ? undefined : sequenceToRecord());
      try {
        // Nothing under the key (site data cleared) or a corrupt value: no spent token to present.
        if (storedRecordOrUndefined() !== undefined) await catchUpWith(lease.previousSequence ?? -1, signal);
      } catch (error) {
        await releaseLease();
        throw error;
      }
      return { signal: lease.signal, assertHeld: () => lease.assertHeld(), release: releaseLease };
    }
    const lock = await acquireWebLock(locks, sharedName, signal, lockWaitMs);
    try {
      await catchUpWithNewestSequence(signal);
    } catch (error) {
      await lock.release();
      throw error;
    }
    return lock;
  }

  /** Runs `work` under the lock (this store's, or one taken just for it), one at a time. */
  async function underLock<T>(work: () => Promise<T>): Promise<T> {
    const exclusive = () => {
      const running = queue.then(work);
      queue = running.catch(() => undefined);
      return running;
    };
    if (held && !held.signal.aborted) return exclusive();
    const lock = await takeLock(new AbortController().signal);
    try {
      return await exclusive();
    } finally {
      await lock.release();
    }
  }

  /** A record another tab announced (channel) or wrote (storage event). Older or equal sequences are ignored. */
  function receive(text: string | null): void {
    let record: StoredRecord | undefined;
    try {
      record = decodeRecord(text, key);
    } catch {
      // A garbled announcement changes nothing here; get() reports a corrupt store when it reads one.
      return;
    }
    if (record && newest && record.sequence <= newest.sequence) return;
    // No value at all means the site's data was cleared: that is a sign-out.
    newest = record;
    notifyListeners(listeners, record?.value);
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

    get: current,

    async set(value, { expectedRevision } = {}) {
      const stored = parseStoredTokens(value, (problem) => storeError(`Refusing to store invalid tokens under "${key}": ${problem}`));
      if (expectedRevision === undefined) {
        const ticket = writeOrder.take();
        return underLock(async () => {
          await writeInOrder(ticket, stored);
          return true;
        });
      }
      // A refresh's write under a lost lease is refused: another tab may hold newer tokens.
      const lock = held;
      if (lock?.signal.aborted) throw lock.signal.reason;
      return underLock(async () => {
        // Asked of the lease itself, not only its signal: a tab frozen past its lease resumes here before
        // its timers run, and its copy of the storage may not have the newer tokens of the tab that took over.
        await lock?.assertHeld?.();
        await catchUpWithNewestSequence();
        if ((current()?.revision ?? 0) !== expectedRevision) return false;
        await markSequence(write(stored));
        return true;
      });
    },

    clear() {
      const ticket = writeOrder.take();
      // A marker, not removeItem: the sequence must keep growing across a sign-out.
      return underLock(() => writeInOrder(ticket, undefined));
    },

    async lock({ signal }) {
      const lock = await takeLock(signal);
      held = lock;
      let released = false;
      return {
        signal: lock.signal,
        // Only a lease can be lost; a Web Lock leaves the check out.
        ...(lock.assertHeld && { assertHeld: lock.assertHeld }),
        async release() {
          if (released) return;
          released = true;
          if (held === lock) held = undefined;
          // Writes that borrowed this lock finish before it goes.
          await queue;
          await lock.release();
        },
      } satisfies TokenStoreLock;
    },

    subscribe(listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },

    close() {
      // A lock still held goes once the writes that borrowed it finish; the holder's release() then does nothing.
      const lock = held;
      held = undefined;
      if (lock) void queue.then(() => lock.release());
      releaseSequenceMarker?.();
      channel?.close();
      channel = undefined;
      events.removeEventListener?.('storage', onStorage);
      listeners.clear();
    },
  };
}
