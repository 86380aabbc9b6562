/*
 * The browser's DPoP key: a non-extractable key pair kept in IndexedDB (which stores CryptoKeys
 * as they are, unreadable by script), made once and shared by every tab of the origin.
 */
import { configurationError } from '@tokenrelay/core/kit';
import { generateDpopKey, keptUnlessFailed, type DpopAlgorithm } from './proof.js';

/** Options of {@link browserDpopKey}. */
export interface BrowserDpopKeyOptions {
  /**
   * The key's name in the origin's IndexedDB: one name, one key, shared by every tab. Use one per
   * session you keep apart (e.g. per authorization server).
   * @default 'default'
   */
  name?: string;
  /**
   * The algorithm of a key made here (a key already stored keeps its own).
   * @default 'ES256'
   */
  algorithm?: DpopAlgorithm;
}

const DATABASE = 'tokenrelay-dpop';
const KEYS = 'keys';

function openDatabase(): Promise<IDBDatabase> {
  const indexedDB = (globalThis as { indexedDB?: IDBFactory }).indexedDB;
  if (!indexedDB) return Promise.reject(configurationError('browserDpopKey needs IndexedDB, which this runtime lacks'));
  return new Promise((resolve, reject) => {
    const opening = indexedDB.open(DATABASE, 1);
    opening.onupgradeneeded = () => opening.result.createObjectStore(KEYS);
    opening.onsuccess = () => resolve(opening.result);
    opening.onerror = () => reject(opening.error);
  });
}

/**
 * Reads the key stored under `name`; when there is none, stores `candidate` (if given). One
 * readwrite transaction, so of two tabs racing to store their candidate, exactly one wins and both
 * read the winner.
 */
function readOrStore(database: IDBDatabase, name: string, candidate: CryptoKeyPair | undefined): Promise<CryptoKeyPair | undefined> {
  return new Promise((resolve, reject) => {
    const transaction = database.transaction(KEYS, candidate ? 'readwrite' : 'readonly');
    const keys = transaction.objectStore(KEYS);
    let result: CryptoKeyPair | undefined;
    const reading = keys.get(name);
    reading.onsuccess = () => {
      result = reading.result as CryptoKeyPair | undefined;
      if (result === undefined && candidate) {
        keys.add(candidate, name);
        result = candidate;
      }
    };
    transaction.oncomplete = () => resolve(result);
    transaction.onerror = transaction.onabort = () => reject(transaction.error);
  });
}

/**
 * A DPoP key for browsers: a non-extractable key pair in IndexedDB under `name`, made by the first
 * tab that needs it and used by every tab after, across reloads, so one key binds the session's
 * tokens whichever tab refreshes. Pair it with `@tokenrelay/browser`'s store.
 *
 * @example
 * ```ts
 * const dpop = createDpop({ key: browserDpopKey() })
 * ```
 */
export function browserDpopKey(options: BrowserDpopKeyOptions = {}): () => Promise<CryptoKeyPair> {
  const name = options.name ?? 'default';
  return keptUnlessFailed(async () => {
    const database = await openDatabase();
    try {
      return (
        (await readOrStore(database, name, undefined)) ??
        // Made outside the transaction (which would commit while we await the key), stored only if no tab stored one meanwhile.
        (await readOrStore(database, name, await generateDpopKey({ algorithm: options.algorithm })))!
      );
    } finally {
      database.close();
    }
  });
}
