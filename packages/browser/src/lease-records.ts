import { abortable, delay, storeError } from '@tokenrelay/core/kit';
import type { BrowserStorage } from './types.js';

/**
 * A lease as stored. A free lease (released, or never taken) has no `owner`; `sequence` is the
 * newest store sequence its last holder knew, which the next holder waits for (see browser-store.ts).
 */
export interface Lease {
  readonly owner?: string;
  readonly expiresAt: number;
  readonly sequence?: number;
}

/** What a decision makes of the lease it read: what the caller learns, and the lease to write (`null` removes it). */
export interface LeaseDecision<T> {
  readonly result: T;
  readonly write?: Lease | null;
}

/** Decides, from the lease as read at `now`, what to write. Pure: a backend may run it inside a transaction. */
export type DecideLease<T> = (lease: Lease | undefined, now: number) => LeaseDecision<T>;

/** One place a lease lives: in IndexedDB, or in the storage. */
export interface LeaseBackend {
  /** Reads the lease, runs `decide` on it and writes what it returns; resolves with its result. */
  update<T>(decide: DecideLease<T>): Promise<T>;
  /**
   * For a backend without compare-and-set (the storage): waits after `owner` wrote the lease until
   * the writes of other tabs have settled; resolves whether `owner`'s write is the one that stuck.
   */
  settled?(owner: string): Promise<boolean>;
}

/** A lease this tab claimed, bound to the backend it was claimed in: renewed and released there and nowhere else. */
export interface ClaimedLease {
  /** The newest store sequence the previous holders recorded, if any did. */
  readonly previousSequence: number | undefined;
  /** When the lease runs out, as written at the claim. */
  readonly expiresAt: number;
  /** Extends the lease to `leaseMs` from the moment it is written; resolves that expiry, or `undefined` when the lease is no longer ours (taken over, or expired). */
  renew(leaseMs: number): Promise<number | undefined>;
  /** Reads the lease now: `true` while it is still ours and unexpired. Writes nothing. */
  isHeld(): Promise<boolean>;
  /** Frees the lease, recording `sequence` for the next holder; leaves another's lease alone. */
  release(sequence: number | undefined): Promise<void>;
}

/** What bounds a claim: the caller's signal, and the time it stops waiting for the lease. */
export interface ClaimBounds {
  readonly signal: AbortSignal;
  readonly deadline: number;
}

/** Where the leases of a store live; each call acts on the lease `leaseKey` it was made for. */
export interface LeaseRecords {
  /**
   * Takes the lease for `owner`, until `leaseMs` after the moment it is written, if it is free or
   * expired; `undefined` when another holds it.
   */
  claim(owner: string, leaseMs: number, bounds: ClaimBounds): Promise<ClaimedLease | undefined>;
}

/** How long a storage lease writer waits before checking that its write is the one that stuck. */
export const LEASE_SETTLE_MS = 50;

const isFree = (lease: Lease | undefined, now: number): boolean => !lease?.owner || lease.expiresAt <= now;

const newestSequence = (a: number | undefined, b: number | undefined) => (a === undefined ? b : b === undefined ? a : Math.max(a, b));

/**
 * Takes a free or expired lease until `leaseMs` after `now`: the expiry is fixed when the lease is
 * written, so waiting before the write (an IndexedDB open) never shortens it. `alongside` reads a
 * lease kept elsewhere that must be free too (the storage lease of a tab that could not open
 * IndexedDB); the next holder waits for the newer sequence of the two.
 */
function claimLease(
  owner: string,
  leaseMs: number,
  alongside?: () => Lease | undefined,
): DecideLease<{ previousSequence: number | undefined; expiresAt: number } | undefined> {
  return (lease, now) => {
    const other = alongside?.();
    if (!isFree(lease, now) || !isFree(other, now)) return { result: undefined };
    const expiresAt = now + leaseMs;
    return { write: { owner, expiresAt }, result: { previousSequence: newestSequence(lease?.sequence, other?.sequence), expiresAt } };
  };
}

/** Extends `owner`'s lease. An expired one is lost even if nobody took it here: another tab may hold the lease in the other backend. */
const renewLease =
  (owner: string, leaseMs: number): DecideLease<number | undefined> =>
  (lease, now) =>
    lease?.owner === owner && lease.expiresAt > now ? { write: { owner, expiresAt: now + leaseMs }, result: now + leaseMs } : { result: undefined };

/** Whether `owner` still holds the lease. Expired is not held, as for {@link renewLease}. */
const leaseHeldBy =
  (owner: string): DecideLease<boolean> =>
  (lease, now) => ({ result: lease?.owner === owner && lease.expiresAt > now });

/** Frees `owner`'s lease, keeping `sequence` for the next holder (nothing to keep: the lease is removed). */
const releaseLease =
  (owner: string, sequence: number | undefined): DecideLease<void> =>
  (lease) =>
    lease?.owner === owner ? { write: sequence === undefined ? null : { expiresAt: 0, sequence }, result: undefined } : { result: undefined };

/** Claims the lease in `backend`, settling where the backend needs it; `alongside` as in {@link claimLease}. */
export async function claimIn(
  backend: LeaseBackend,
  owner: string,
  leaseMs: number,
  alongside?: () => Lease | undefined,
): Promise<ClaimedLease | undefined> {
  const claimed = await backend.update(claimLease(owner, leaseMs, alongside));
  // Settled whatever the caller's signal does meanwhile: a lease written and then abandoned would
  // block every tab for leaseMs. The caller sees its abort after the claim and releases the lease.
  if (!claimed || (backend.settled && !(await backend.settled(owner)))) return undefined;
  return {
    ...claimed,
    renew: (ms) => backend.update(renewLease(owner, ms)),
    isHeld: () => backend.update(leaseHeldBy(owner)),
    release: (sequence) => backend.update(releaseLease(owner, sequence)),
  };
}

function parseLease(value: unknown): Lease | undefined {
  const lease = value as Partial<Lease> | null | undefined;
  if (typeof lease?.expiresAt !== 'number') return undefined;
  return {
    expiresAt: lease.expiresAt,
    ...(typeof lease.owner === 'string' && lease.owner !== '' ? { owner: lease.owner } : {}),
    ...(typeof lease.sequence === 'number' ? { sequence: lease.sequence } : {}),
  };
}

/**
 * The lease in a {@link BrowserStorage}, for pages without IndexedDB (and Node tests): written,
 * then re-read after a settle delay, because the storage has no compare-and-set. Best effort: two
 * tabs can both win if one sees the other's write more than the settle delay late. `read` gives
 * the lease as this tab sees it now.
 */
export function storageLeaseBackend(storage: BrowserStorage, leaseKey: string): LeaseBackend & { read(): Lease | undefined } {
  const read = (): Lease | undefined => {
    try {
      return parseLease(JSON.parse(storage.getItem(leaseKey) ?? 'null'));
    } catch {
      // A garbled lease protects nothing; treating it as free lets the next writer replace it.
      return undefined;
    }
  };
  const write = (lease: Lease | null) => {
    try {
      if (lease === null) storage.removeItem(leaseKey);
      else storage.setItem(leaseKey, JSON.stringify(lease));
    } catch (cause) {
      throw storeError(`Could not write the refresh lease "${leaseKey}"`, cause);
    }
  };
  async function update<T>(decide: DecideLease<T>): Promise<T> {
    const decision = decide(read(), Date.now());
    if (decision.write !== undefined) write(decision.write);
    return decision.result;
  }
  async function settled(owner: string): Promise<boolean> {
    await delay(LEASE_SETTLE_MS);
    return read()?.owner === owner;
  }
  return { read, update, settled };
}

const DATABASE = 'tokenrelay-leases';
const OBJECT_STORE = 'leases';

/** After a failed open, how long claims skip opening: where IndexedDB never opens, every poll would only fail again. */
export const REOPEN_AFTER_FAILURE_MS = 1_000;

/** The longest a claim waits for IndexedDB to open: an open that hangs counts as a failed one. */
const OPEN_LIMIT_MS = 3_000;

/** Opens the database; rejects, and closes a connection that arrives later, when the open is blocked. */
function connect(factory: IDBFactory): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const request = factory.open(DATABASE, 1);
    let blocked = false;
    request.onupgradeneeded = () => request.result.createObjectStore(OBJECT_STORE);
    request.onsuccess = () => (blocked ? request.result.close() : resolve(request.result));
    request.onerror = () => reject(request.error);
    // A connection of an older version elsewhere that does not close would keep this open waiting for ever.
    request.onblocked = () => {
      blocked = true;
      reject(new Error('the open is blocked by another connection to the database'));
    };
  });
}

/** `promise`, or a rejection with `timedOut()` at `deadline`. */
function beforeDeadline<T>(promise: Promise<T>, deadline: number, timedOut: () => unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(timedOut()), Math.max(0, deadline - Date.now()));
    (timer as { unref?: () => void }).unref?.();
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/**
 * The lease in IndexedDB. The browser runs the readwrite transactions of one origin's object store
 * one after the other, across all its tabs and processes, so reading and writing the lease in one
 * transaction is a real compare-and-set: no two tabs ever hold it at once. `open` (re)opens the
 * database, within `bounds` when given; after a failed open it fails at once, without opening,
 * for {@link REOPEN_AFTER_FAILURE_MS}.
 */
export function indexedDbLeaseBackend(factory: IDBFactory, leaseKey: string): LeaseBackend & { open(bounds?: ClaimBounds): Promise<IDBDatabase> } {
  let database: Promise<IDBDatabase> | undefined;
  let lastFailure: { at: number; error: unknown } | undefined;
  const opening = (): Promise<IDBDatabase> => {
    const connecting: Promise<IDBDatabase> = connect(factory).then(
      (db) => {
        // An open given up at a claim's deadline that succeeded late: nobody waits for it.
        if (database !== connecting) {
          db.close();
          throw storeError(`Gave up opening the IndexedDB database "${DATABASE}" of the refresh lease`);
        }
        // A newer version opened elsewhere waits for every connection to close: let it, and reopen later.
        db.onversionchange = () => {
          db.close();
          database = undefined;
        };
        // Closed by the browser (site data cleared, its database process gone): open again on the next call.
        db.onclose = () => {
          database = undefined;
        };
        return db;
      },
      (cause: unknown) => {
        if (database === connecting) database = undefined;
        const error = storeError(`Could not open the IndexedDB database "${DATABASE}" of the refresh lease`, cause);
        lastFailure = { at: Date.now(), error };
        throw error;
      },
    );
    return connecting;
  };
  const open = (bounds?: ClaimBounds): Promise<IDBDatabase> => {
    if (!database) {
      if (lastFailure && Date.now() - lastFailure.at < REOPEN_AFTER_FAILURE_MS) return Promise.reject(lastFailure.error);
      database = opening();
    }
    if (!bounds) return database;
    const pending = database;
    const timedOut = () => {
      // A hung open is never waited for again, nor tried again at once: the next claim after the pause opens afresh.
      if (database === pending) database = undefined;
      const error = storeError(`The IndexedDB database "${DATABASE}" of the refresh lease did not open within ${OPEN_LIMIT_MS} ms`);
      lastFailure = { at: Date.now(), error };
      return error;
    };
    // An open that hangs (a known WebKit bug) costs a claim a few seconds, not the whole lock wait.
    return abortable(beforeDeadline(pending, Math.min(bounds.deadline, Date.now() + OPEN_LIMIT_MS), timedOut), bounds.signal);
  };
  async function update<T>(decide: DecideLease<T>): Promise<T> {
    const db = await open();
    return new Promise<T>((resolve, reject) => {
      let result: T;
      const failed = () => reject(storeError(`Could not update the refresh lease "${leaseKey}"`, transaction.error));
      const transaction = db.transaction(OBJECT_STORE, 'readwrite');
      const leases = transaction.objectStore(OBJECT_STORE);
      const get = leases.get(leaseKey);
      get.onsuccess = () => {
        const decision = decide(parseLease(get.result), Date.now());
        result = decision.result;
        if (decision.write === null) leases.delete(leaseKey);
        else if (decision.write) leases.put(decision.write, leaseKey);
      };
      // Only a committed transaction counts: the lease is ours once it is durable for every tab.
      transaction.oncomplete = () => resolve(result);
      transaction.onerror = failed;
      transaction.onabort = failed;
    });
  }
  return { open, update };
}
