import { delay, storeError } from '@tokenrelay/core/kit';
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
  /**
   * Reads the lease, runs `decide` on it and writes what it returns; resolves with its result.
   * With `settle`, a backend without compare-and-set (the storage) waits after writing until the
   * writes of other tabs have settled, and resolves `superseded` when another tab's write replaced ours.
   */
  update<T>(decide: DecideLease<T>, settle?: SettleOptions<T>): Promise<T>;
}

/** See {@link LeaseBackend.update}. */
export interface SettleOptions<T> {
  readonly signal: AbortSignal;
  readonly superseded: T;
}

/** A lease this tab claimed, bound to the backend it was claimed in: renewed and released there and nowhere else. */
export interface ClaimedLease {
  /** The newest store sequence the previous holders recorded, if any did. */
  readonly previousSequence: number | undefined;
  /** Extends the lease; resolves `false` when it is no longer ours (taken over, or expired). */
  renew(expiresAt: number): Promise<boolean>;
  /** Reads the lease now: `true` while it is still ours and unexpired. Writes nothing. */
  isHeld(): Promise<boolean>;
  /** Frees the lease, recording `sequence` for the next holder; leaves another's lease alone. */
  release(sequence: number | undefined): Promise<void>;
}

/** Where the leases of a store live; each call acts on the lease `leaseKey` it was made for. */
export interface LeaseRecords {
  /** Takes the lease for `owner` until `expiresAt` if it is free or expired; `undefined` when another holds it. */
  claim(owner: string, expiresAt: number, signal: AbortSignal): Promise<ClaimedLease | undefined>;
}

/** How long a storage lease writer waits before checking that its write is the one that stuck. */
export const LEASE_SETTLE_MS = 50;

const isFree = (lease: Lease | undefined, now: number): boolean => !lease?.owner || lease.expiresAt <= now;

const newestSequence = (a: number | undefined, b: number | undefined) => (a === undefined ? b : b === undefined ? a : Math.max(a, b));

/**
 * Takes a free or expired lease. `alongside` reads a lease kept elsewhere that must be free too
 * (the storage lease of a tab that could not open IndexedDB); the next holder waits for the newer
 * sequence of the two.
 */
function claimLease(owner: string, expiresAt: number, alongside?: () => Lease | undefined): DecideLease<{ previousSequence: number | undefined } | undefined> {
  return (lease, now) => {
    const other = alongside?.();
    if (!isFree(lease, now) || !isFree(other, now)) return { result: undefined };
    return { write: { owner, expiresAt }, result: { previousSequence: newestSequence(lease?.sequence, other?.sequence) } };
  };
}

/** Extends `owner`'s lease. An expired one is lost even if nobody took it here: another tab may hold the lease in the other backend. */
const renewLease =
  (owner: string, expiresAt: number): DecideLease<boolean> =>
  (lease, now) =>
    lease?.owner === owner && lease.expiresAt > now ? { write: { owner, expiresAt }, result: true } : { result: false };

/** Whether `owner` still holds the lease. Expired is not held, as for {@link renewLease}. */
const leaseHeldBy =
  (owner: string): DecideLease<boolean> =>
  (lease, now) => ({ result: lease?.owner === owner && lease.expiresAt > now });

/** Frees `owner`'s lease, keeping `sequence` for the next holder (nothing to keep: the lease is removed). */
const releaseLease =
  (owner: string, sequence: number | undefined): DecideLease<void> =>
  (lease) =>
    lease?.owner === owner ? { write: sequence === undefined ? null : { expiresAt: 0, sequence }, result: undefined } : { result: undefined };

/** Claims the lease in `backend`; `settle` for a backend without compare-and-set, `alongside` as in {@link claimLease}. */
export async function claimIn(
  backend: LeaseBackend,
  owner: string,
  expiresAt: number,
  { settle, alongside }: { settle?: AbortSignal; alongside?: () => Lease | undefined } = {},
): Promise<ClaimedLease | undefined> {
  const decide = claimLease(owner, expiresAt, alongside);
  const claimed = await backend.update(decide, settle && { signal: settle, superseded: undefined });
  if (!claimed) return undefined;
  return {
    previousSequence: claimed.previousSequence,
    renew: (until) => backend.update(renewLease(owner, until)),
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
  async function update<T>(decide: DecideLease<T>, settle?: SettleOptions<T>): Promise<T> {
    const decision = decide(read(), Date.now());
    if (decision.write === undefined) return decision.result;
    write(decision.write);
    if (!settle) return decision.result;
    await delay(LEASE_SETTLE_MS, settle.signal);
    return read()?.owner === decision.write?.owner ? decision.result : settle.superseded;
  }
  return { read, update };
}

const DATABASE = 'tokenrelay-leases';
const OBJECT_STORE = 'leases';

function requestResult<T>(request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/**
 * The lease in IndexedDB. The browser runs the readwrite transactions of one origin's object store
 * one after the other, across all its tabs and processes, so reading and writing the lease in one
 * transaction is a real compare-and-set: no two tabs ever hold it at once. `open` (re)opens the
 * database; a failed open is tried again on the next call.
 */
export function indexedDbLeaseBackend(factory: IDBFactory, leaseKey: string): LeaseBackend & { open(): Promise<IDBDatabase> } {
  let database: Promise<IDBDatabase> | undefined;
  const open = () => {
    database ??= (() => {
      const request = factory.open(DATABASE, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(OBJECT_STORE);
      return requestResult(request).then((db) => {
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
      });
    })().catch((cause: unknown) => {
      database = undefined;
      throw storeError(`Could not open the IndexedDB database "${DATABASE}" of the refresh lease`, cause);
    });
    return database;
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
