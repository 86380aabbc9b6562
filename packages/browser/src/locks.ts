import { delay, storeError } from '@tokenrelay/core/kit';
import type { BrowserStorage } from './types.js';

/** A lock this tab holds. */
export interface HeldLock {
  /** Aborted when the lock is lost while held (a lease another tab took over); never for a Web Lock. */
  readonly signal: AbortSignal;
  release(): void;
}

/** The part of the Web Locks API (`navigator.locks`) the store uses. */
export interface WebLockManager {
  /** Queues for the lock `name`; it is held until the promise `callback` returns settles. */
  request(
    name: string,
    options: { signal?: AbortSignal; mode?: 'exclusive' | 'shared' },
    callback: () => Promise<void> | undefined,
  ): Promise<unknown>;
  /** The locks held and queued right now, as the browser (not this tab) sees them. */
  query?(): Promise<{ held?: ReadonlyArray<{ name?: string }> }>;
}

/** How long a lease writer waits before checking that its write is the one that stuck. */
const LEASE_SETTLE_MS = 50;

/** Not transient, as in every store: the wait already outlasted any refresh, so retrying would only wait again. */
const lockTimeoutError = (name: string, timeoutMs: number) =>
  storeError(`Gave up after ${timeoutMs} ms waiting for the refresh lock "${name}" held by another tab (see lockWaitMs)`);

/**
 * Takes the Web Lock `name`: the lock is held for as long as the promise returned to
 * `locks.request` is pending, and the browser releases it itself if the tab goes away.
 */
export function acquireWebLock(
  locks: WebLockManager,
  name: string,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<HeldLock> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<HeldLock>((resolve, reject) => {
    // Aborting this controller withdraws our queued request from the browser's lock queue.
    const request = new AbortController();
    let settled = false;
    const settle = () => {
      settled = true;
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    };
    const giveUp = (error: unknown) => {
      if (settled) return;
      settle();
      request.abort(error);
      reject(error);
    };
    const onAbort = () => giveUp(signal.reason);
    const timer = setTimeout(() => giveUp(lockTimeoutError(name, timeoutMs)), timeoutMs);
    signal.addEventListener('abort', onAbort, { once: true });

    locks
      .request(name, { signal: request.signal }, () => {
        // Granted in the same moment we gave up: hand it straight on to the next tab.
        if (settled) return undefined;
        settle();
        // The browser never takes a granted Web Lock back (nobody here uses `steal`): its signal never aborts.
        return new Promise<void>((release) => resolve({ signal: new AbortController().signal, release: () => release() }));
      })
      .catch((error: unknown) => {
        giveUp(storeError(`The Web Locks request for "${name}" failed`, error));
      });
  });
}

interface Lease {
  owner: string;
  expiresAt: number;
}

function readLease(storage: BrowserStorage, leaseKey: string): Lease | undefined {
  try {
    const value: unknown = JSON.parse(storage.getItem(leaseKey) ?? 'null');
    const lease = value as Partial<Lease> | null;
    if (typeof lease?.owner === 'string' && typeof lease.expiresAt === 'number') return lease as Lease;
  } catch {
    // A garbled lease protects nothing; treating it as free lets the next writer replace it.
  }
  return undefined;
}

function writeLease(storage: BrowserStorage, leaseKey: string, lease: Lease): void {
  try {
    storage.setItem(leaseKey, JSON.stringify(lease));
  } catch (cause) {
    throw storeError(`Could not write the refresh lease "${leaseKey}"`, cause);
  }
}

function randomOwnerId(): string {
  // getRandomValues, not randomUUID: the lease serves insecure origins, where randomUUID does not exist.
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (byte) => byte.toString(16).padStart(2, '0')).join('');
}

/** Options of {@link acquireLeaseLock}; see `BrowserStoreOptions`. */
export interface LeaseLockOptions {
  /** How long to wait for the lease before rejecting with `STORE_ERROR`. */
  readonly lockWaitMs: number;
  /** How long a lease lasts unless renewed. */
  readonly lockLeaseMs: number;
  /** Polling interval of a waiting tab, before jitter; jitter keeps waiting tabs out of step. */
  readonly lockPollMs: number;
}

/**
 * Takes a lease stored under `leaseKey`: `{ owner, expiresAt }`. A free or expired lease is
 * written with our owner id, and taken if it still names us after a short settle delay (tabs in
 * other processes see writes late, and the last write wins everywhere). It is renewed while held
 * and removed on release; a tab that dies holding it blocks the others for at most `leaseMs`.
 * Best effort: storage has no compare-and-set, so two tabs can both win if one sees the other's
 * write more than the settle delay late.
 */
export async function acquireLeaseLock(
  storage: BrowserStorage,
  leaseKey: string,
  signal: AbortSignal,
  { lockWaitMs: timeoutMs, lockLeaseMs: leaseMs, lockPollMs }: LeaseLockOptions,
): Promise<HeldLock> {
  signal.throwIfAborted();
  const owner = randomOwnerId();
  const deadline = Date.now() + timeoutMs;
  // Bounded in time by the deadline, and so in count: every pass sleeps at least lockPollMs.
  for (;;) {
    const lease = readLease(storage, leaseKey);
    if (!lease || lease.expiresAt <= Date.now()) {
      writeLease(storage, leaseKey, { owner, expiresAt: Date.now() + leaseMs });
      await delay(LEASE_SETTLE_MS, signal);
      if (readLease(storage, leaseKey)?.owner === owner) return holdLease(storage, leaseKey, owner, leaseMs);
    }
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw lockTimeoutError(leaseKey, timeoutMs);
    await delay(Math.min(remaining, lockPollMs * (1 + Math.random())), signal);
  }
}

function holdLease(storage: BrowserStorage, leaseKey: string, owner: string, leaseMs: number): HeldLock {
  const ours = () => readLease(storage, leaseKey)?.owner === owner;
  const lost = new AbortController();
  const renewal = setInterval(() => {
    // A lease taken over (we were too slow, or the clock jumped) is not ours to extend: it is lost.
    if (!ours()) {
      clearInterval(renewal);
      lost.abort(storeError(`Lost the refresh lease "${leaseKey}": another tab took it over; nothing more is written under it`));
      return;
    }
    try {
      writeLease(storage, leaseKey, { owner, expiresAt: Date.now() + leaseMs });
    } catch {
      // The lease still runs until its expiry; a later renewal may succeed.
    }
  }, leaseMs / 3);
  let released = false;
  return {
    signal: lost.signal,
    release() {
      if (released) return;
      released = true;
      clearInterval(renewal);
      if (ours()) storage.removeItem(leaseKey);
    },
  };
}
