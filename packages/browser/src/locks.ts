import { ErrorCode, TokenRelayError, type TokenStoreLock } from '@tokenrelay/core';
import type { BrowserStorage } from './types.js';

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
/** Polling interval of a tab waiting for a lease, before jitter; jitter keeps waiting tabs out of step. */
const LEASE_POLL_MS = 40;

function lockTimeoutError(name: string, timeoutMs: number): TokenRelayError {
  return new TokenRelayError(
    ErrorCode.STORE_ERROR,
    `Gave up after ${timeoutMs} ms waiting for the refresh lock "${name}" held by another tab (see lockTimeoutMs)`,
    { transient: true },
  );
}

/**
 * Takes the Web Lock `name`: the lock is held for as long as the promise returned to
 * `locks.request` is pending, and the browser releases it itself if the tab goes away.
 */
export function acquireWebLock(
  locks: WebLockManager,
  name: string,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<TokenStoreLock> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<TokenStoreLock>((resolve, reject) => {
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
        return new Promise<void>((release) => resolve({ release: () => release() }));
      })
      .catch((error: unknown) => {
        giveUp(
          new TokenRelayError(ErrorCode.STORE_ERROR, `The Web Locks request for "${name}" failed`, { cause: error }),
        );
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
    throw new TokenRelayError(ErrorCode.STORE_ERROR, `Could not write the refresh lease "${leaseKey}"`, { cause });
  }
}

function randomOwnerId(): string {
  // getRandomValues, not randomUUID: the lease serves insecure origins, where randomUUID does not exist.
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (byte) => byte.toString(16).padStart(2, '0')).join('');
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Options of {@link acquireLeaseLock}. */
export interface LeaseLockOptions {
  /** How long to wait for the lease before rejecting with `STORE_ERROR`. */
  readonly timeoutMs: number;
  /** How long a lease lasts unless renewed. */
  readonly leaseMs: number;
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
  { timeoutMs, leaseMs }: LeaseLockOptions,
): Promise<TokenStoreLock> {
  signal.throwIfAborted();
  const owner = randomOwnerId();
  const deadline = Date.now() + timeoutMs;
  // Bounded in time by the deadline, and so in count: every pass sleeps at least LEASE_POLL_MS.
  for (;;) {
    const lease = readLease(storage, leaseKey);
    if (!lease || lease.expiresAt <= Date.now()) {
      writeLease(storage, leaseKey, { owner, expiresAt: Date.now() + leaseMs });
      await sleep(LEASE_SETTLE_MS, signal);
      if (readLease(storage, leaseKey)?.owner === owner) return holdLease(storage, leaseKey, owner, leaseMs);
    }
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw lockTimeoutError(leaseKey, timeoutMs);
    await sleep(Math.min(remaining, LEASE_POLL_MS * (1 + Math.random())), signal);
  }
}

function holdLease(storage: BrowserStorage, leaseKey: string, owner: string, leaseMs: number): TokenStoreLock {
  const ours = () => readLease(storage, leaseKey)?.owner === owner;
  const renewal = setInterval(() => {
    // A lease taken over (we were too slow, or the clock jumped) is not ours to extend.
    if (!ours()) {
      clearInterval(renewal);
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
    release() {
      if (released) return;
      released = true;
      clearInterval(renewal);
      if (ours()) storage.removeItem(leaseKey);
    },
  };
}
