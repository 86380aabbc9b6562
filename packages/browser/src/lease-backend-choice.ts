import { ErrorCode, TokenRelayError } from '@tokenrelay/core';
import { delay, storeError } from '@tokenrelay/core/kit';
import { claimIn, indexedDbLeaseBackend, LEASE_SETTLE_MS, storageLeaseBackend, type LeaseRecords } from './lease-records.js';
import type { BrowserStorage } from './types.js';

/**
 * The leases of a browser store: in IndexedDB where the page has it, else in `storage`. The
 * backend is chosen per claim, and the claim is renewed and released where it was taken.
 *
 * Tabs on different backends would not see each other's lease, so the storage lease is only for an
 * origin whose IndexedDB has never opened (some private modes refuse it always). The first tab
 * that opens it writes a marker (`<leaseKey>:indexeddb`) to `storage`; from then on a tab whose open
 * fails (quota, a blocked upgrade, a hiccup) fails its claim with a transient `STORE_ERROR`, which
 * the lock's wait counts as a busy lease, instead of taking the storage lease. A tab that took the storage lease
 * before the marker existed is still excluded: an IndexedDB claim also needs the storage lease free.
 * Marker and storage lease cross like Dekker's flags: each side writes its own, then reads the
 * other's after the settle delay, so at least one of two racing tabs sees the other and yields.
 */
export function browserLeaseRecords(storage: BrowserStorage, leaseKey: string): LeaseRecords {
  const inStorage = storageLeaseBackend(storage, leaseKey);
  const factory = (globalThis as { indexedDB?: IDBFactory }).indexedDB;
  if (!factory) return { claim: (owner, leaseMs) => claimIn(inStorage, owner, leaseMs) };
  const inDatabase = indexedDbLeaseBackend(factory, leaseKey);
  const markerKey = `${leaseKey}:indexeddb`;

  const marked = () => {
    try {
      return storage.getItem(markerKey) !== null;
    } catch (cause) {
      throw storeError(`Could not read "${markerKey}" from the storage`, cause);
    }
  };
  async function mark(signal: AbortSignal): Promise<void> {
    if (marked()) return;
    try {
      storage.setItem(markerKey, '1');
    } catch (cause) {
      throw storeError(`Could not write "${markerKey}" to the storage`, cause);
    }
    // A tab that took the storage lease just before sees the marker within the settle delay and yields.
    await delay(LEASE_SETTLE_MS, signal);
  }

  return {
    async claim(owner, leaseMs, bounds) {
      const failure = await inDatabase.open(bounds).then(
        () => undefined,
        (error: unknown) => error,
      );
      bounds.signal.throwIfAborted();
      if (failure === undefined) {
        await mark(bounds.signal);
        return claimIn(inDatabase, owner, leaseMs, inStorage.read);
      }
      if (marked()) {
        throw new TokenRelayError(
          ErrorCode.STORE_ERROR,
          `IndexedDB did not open for the refresh lease "${leaseKey}", where other tabs keep it; try again`,
          { transient: true, cause: failure },
        );
      }
      const claimed = await claimIn(inStorage, owner, leaseMs);
      // A tab opened IndexedDB meanwhile and may claim there without having seen our lease: yield to it.
      if (claimed && marked()) {
        await claimed.release(claimed.previousSequence);
        return undefined;
      }
      return claimed;
    },
  };
}
