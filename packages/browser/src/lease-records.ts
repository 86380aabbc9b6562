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

/** The outcome of a claim: whether we hold the lease now, and the sequence its previous holder recorded. */
export interface LeaseClaim {
  readonly taken: boolean;
  readonly sequence: number | undefined;
}

/** Where the leases of a store live; each call acts on the lease `leaseKey` it was made for. */
export interface LeaseRecords {
  /** Takes the lease for `owner` until `expiresAt` if it is free or expired. */
  claim(owner: string, expiresAt: number, signal: AbortSignal): Promise<LeaseClaim>;
  /** Extends `owner`'s lease; resolves `false` when the lease is no longer `owner`'s. */
  renew(owner: string, expiresAt: number): Promise<boolean>;
  /** Frees `owner`'s lease, recording `sequence` for the next holder; leaves another's lease alone. */
  release(owner: string, sequence: number | undefined): Promise<void>;
}

/** How long a storage lease writer waits before checking that its write is the one that stuck. */
const LEASE_SETTLE_MS = 50;

const isFree = (lease: Lease | undefined, now: number) => !lease?.owner || lease.expiresAt <= now;

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
 * Leases in a {@link BrowserStorage}, for pages without IndexedDB (and Node tests): written, then
 * re-read after a settle delay, because the storage has no compare-and-set. Best effort: two tabs
 * can both win if one sees the other's write more than the settle delay late.
 */
function storageLeaseRecords(storage: BrowserStorage, leaseKey: string): LeaseRecords {
  const read = (): Lease | undefined => {
    try {
      return parseLease(JSON.parse(storage.getItem(leaseKey) ?? 'null'));
    } catch {
      // A garbled lease protects nothing; treating it as free lets the next writer replace it.
      return undefined;
    }
  };
  const write = (lease: Lease) => {
    try {
      storage.setItem(leaseKey, JSON.stringify(lease));
    } catch (cause) {
      throw storeError(`Could not write the refresh lease "${leaseKey}"`, cause);
    }
  };
  return {
    async claim(owner, expiresAt, signal) {
      const before = read();
      if (!isFree(before, Date.now())) return { taken: false, sequence: undefined };
      write({ owner, expiresAt });
      await delay(LEASE_SETTLE_MS, signal);
      return { taken: read()?.owner === owner, sequence: before?.sequence };
    },
    async renew(owner, expiresAt) {
      if (read()?.owner !== owner) return false;
      write({ owner, expiresAt });
      return true;
    },
    async release(owner, sequence) {
      if (read()?.owner !== owner) return;
      if (sequence === undefined) storage.removeItem(leaseKey);
      else write({ expiresAt: 0, sequence });
    },
  };
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
 * The leases of a browser store: in IndexedDB where the page has it, else in `storage`. Some
 * private modes have an `indexedDB` that refuses to open; there, too, the storage lease is the
 * best there is.
 */
export function browserLeaseRecords(storage: BrowserStorage, leaseKey: string): LeaseRecords {
  const inStorage = storageLeaseRecords(storage, leaseKey);
  const factory = (globalThis as { indexedDB?: IDBFactory }).indexedDB;
  if (!factory) return inStorage;
  const inDatabase = indexedDbLeaseRecords(factory, leaseKey);
  let chosen: Promise<LeaseRecords> | undefined;
  const records = () => (chosen ??= inDatabase.opened().then(() => inDatabase, () => inStorage));
  return {
    claim: async (owner, expiresAt, signal) => (await records()).claim(owner, expiresAt, signal),
    renew: async (owner, expiresAt) => (await records()).renew(owner, expiresAt),
    release: async (owner, sequence) => (await records()).release(owner, sequence),
  };
}

/**
 * Leases in IndexedDB. The browser runs the readwrite transactions of one origin's object store
 * one after the other, across all its tabs and processes, so reading and writing the lease in one
 * transaction is a real compare-and-set: no two tabs ever hold it at once.
 */
function indexedDbLeaseRecords(factory: IDBFactory, leaseKey: string): LeaseRecords & { opened(): Promise<unknown> } {
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
        return db;
      });
    })().catch((cause: unknown) => {
      database = undefined;
      throw storeError(`Could not open the IndexedDB database "${DATABASE}" of the refresh lease`, cause);
    });
    return database;
  };
  /** Reads the lease and, if `decide` returns one, writes it, all in one readwrite transaction. */
  async function update<T>(decide: (lease: Lease | undefined) => { write?: Lease; result: T }): Promise<T> {
    const db = await open();
    return new Promise<T>((resolve, reject) => {
      let result: T;
      const transaction = db.transaction(OBJECT_STORE, 'readwrite');
      const leases = transaction.objectStore(OBJECT_STORE);
      const get = leases.get(leaseKey);
      get.onsuccess = () => {
        const decision = decide(parseLease(get.result));
        result = decision.result;
        if (decision.write) leases.put(decision.write, leaseKey);
      };
      // Only a committed transaction counts: the lease is ours once it is durable for every tab.
      transaction.oncomplete = () => resolve(result);
      transaction.onerror = () => reject(storeError(`Could not update the refresh lease "${leaseKey}"`, transaction.error));
      transaction.onabort = () => reject(storeError(`Could not update the refresh lease "${leaseKey}"`, transaction.error));
    });
  }
  return {
    opened: open,
    claim(owner, expiresAt) {
      return update<LeaseClaim>((lease) =>
        isFree(lease, Date.now())
          ? { write: { owner, expiresAt }, result: { taken: true, sequence: lease?.sequence } }
          : { result: { taken: false, sequence: undefined } },
      );
    },
    renew(owner, expiresAt) {
      return update((lease) => (lease?.owner === owner ? { write: { owner, expiresAt }, result: true } : { result: false }));
    },
    release(owner, sequence) {
      return update((lease) =>
        lease?.owner === owner ? { write: { expiresAt: 0, ...(sequence === undefined ? {} : { sequence }) }, result: undefined } : { result: undefined },
      );
    },
  };
}
