import { isTokenRelayError } from '@tokenrelay/core';
import { delay, storeError } from '@tokenrelay/core/kit';
import type { ClaimedLease, LeaseRecords } from './lease-records.js';

/** A lock this tab holds. */
export interface HeldLock {
  /** Aborted when the lock is lost while held (a lease another tab took over); never for a Web Lock. */
  readonly signal: AbortSignal;
  /** Rejects (and aborts `signal`) unless the lease is still ours; a Web Lock, which cannot be lost, has none. */
  assertHeld?(): Promise<void>;
  release(): void | Promise<void>;
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

/** Options of {@link acquireLeaseLock}; see `BrowserStoreOptions`. */
export interface LeaseLockOptions {
  /** How long to wait for the lease before rejecting with `STORE_ERROR`. */
  readonly lockWaitMs: number;
  /** How long a lease lasts unless renewed. */
  readonly lockLeaseMs: number;
  /** Polling interval of a waiting tab, before jitter; jitter keeps waiting tabs out of step. */
  readonly lockPollMs: number;
}

/** A lease this tab holds. */
export interface HeldLease extends HeldLock {
  /** Reads the lease where it was claimed, for a tab that resumed (a closed lid, a frozen tab) before its renewal ran. */
  assertHeld(): Promise<void>;
  /** The newest store sequence the previous holder knew when it released the lease, if it recorded one. */
  readonly previousSequence: number | undefined;
  /** Frees the lease, recording `sequence` (the newest this tab knows) for the next holder. */
  release(sequence?: number): Promise<void>;
}

function randomOwnerId(): string {
  // getRandomValues, not randomUUID: the lease serves insecure origins, where randomUUID does not exist.
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (byte) => byte.toString(16).padStart(2, '0')).join('');
}

/** Lets a Node process (tests, server rendering) exit while a lease is held, as file-lock.ts does. */
const unref = (timer: ReturnType<typeof setTimeout>) => (timer as { unref?: () => void }).unref?.();

/**
 * Takes the lease `leaseName` in `leases`: `{ owner, expiresAt }`, claimed when free or expired.
 * It is renewed while held and freed on release; a tab that dies holding it blocks the others for
 * at most `leaseMs`. A claim that fails transiently (IndexedDB did not open, where other tabs keep
 * the lease) counts as a busy lease: the wait goes on, and at its end rejects with that failure.
 */
export async function acquireLeaseLock(
  leases: LeaseRecords,
  leaseName: string,
  signal: AbortSignal,
  { lockWaitMs: timeoutMs, lockLeaseMs: leaseMs, lockPollMs }: LeaseLockOptions,
): Promise<HeldLease> {
  signal.throwIfAborted();
  const owner = randomOwnerId();
  const deadline = Date.now() + timeoutMs;
  let failure: { error: unknown } | undefined;
  // Bounded in time by the deadline, and so in count: every pass sleeps at least lockPollMs.
  for (;;) {
    const claimed = await leases.claim(owner, leaseMs, { signal, deadline }).then(
      (lease) => {
        failure = undefined;
        return lease;
      },
      (error: unknown) => {
        signal.throwIfAborted();
        // A storage that cannot be written stays broken; a transient failure may pass while we wait.
        if (!(isTokenRelayError(error) && error.transient)) throw error;
        failure = { error };
        return undefined;
      },
    );
    if (claimed) {
      if (!signal.aborted) return holdLease(claimed, leaseName, leaseMs);
      // Given back, or left to run out: the caller gets its abort either way.
      await claimed.release(claimed.previousSequence).catch(() => undefined);
      signal.throwIfAborted();
    }
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw failure ? failure.error : lockTimeoutError(leaseName, timeoutMs);
    await delay(Math.min(remaining, lockPollMs * (1 + Math.random())), signal);
  }
}

function holdLease(claimed: ClaimedLease, leaseName: string, leaseMs: number): HeldLease {
  const lost = new AbortController();
  const lose = () => {
    stop();
    lost.abort(storeError(`Lost the refresh lease "${leaseName}": it ran out unrenewed or another tab took it over; nothing more is written under it`));
  };
  // A lease whose renewals keep failing (its backend broke after the claim) runs out, and then another
  // tab may take it: give it up a little before, so that the two never overlap however timers round.
  const loseBefore = (until: number) => {
    const timer = setTimeout(lose, until - Date.now() - leaseMs / 10);
    unref(timer);
    return timer;
  };
  let expiry = loseBefore(claimed.expiresAt);
  const renewal = setInterval(() => {
    claimed.renew(leaseMs).then(
      (until) => {
        if (released || lost.signal.aborted) return;
        // A lease taken over (we were too slow, or the clock jumped) is not ours to extend: it is lost.
        if (until === undefined) return lose();
        clearTimeout(expiry);
        expiry = loseBefore(until);
      },
      () => {
        // The lease still runs until its expiry; a later renewal may succeed.
      },
    );
  }, leaseMs / 3);
  unref(renewal);
  const stop = () => {
    clearInterval(renewal);
    clearTimeout(expiry);
  };
  let released = false;
  return {
    signal: lost.signal,
    previousSequence: claimed.previousSequence,
    async assertHeld() {
      if (!lost.signal.aborted && !(await claimed.isHeld())) lose();
      if (lost.signal.aborted) throw lost.signal.reason;
    },
    async release(sequence) {
      if (released) return;
      released = true;
      stop();
      // A lease that could not be freed (or whose backend hangs) runs out by itself within leaseMs.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const ranOut = new Promise<void>((given) => {
        timer = setTimeout(given, leaseMs);
        unref(timer);
      });
      await Promise.race([claimed.release(sequence).catch(() => undefined), ranOut]);
      clearTimeout(timer);
    },
  };
}
