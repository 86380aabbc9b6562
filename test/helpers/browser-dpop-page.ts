/*
 * The script of the page on which test/browser-dpop.test.ts checks browserDpopKey in real Chromium.
 * Bundled by esbuild (see chromium.ts); it runs in the browser only.
 */
import { browserDpopKey, createDpop } from '@tokenrelay/dpop';

/** What the test calls through `page.evaluate`. */
export interface DpopPage {
  /** The thumbprint of the key this tab signs with (made or read from IndexedDB). */
  thumbprint(): Promise<string>;
  /** What the tab can learn of its private key: whether it says it is extractable, and whether exporting it fails. */
  privateKey(): Promise<{ extractable: boolean; exportRefused: boolean }>;
  /** How many keys the origin's IndexedDB holds. */
  storedKeys(): Promise<number>;
}

const key = browserDpopKey();
const dpop = createDpop({ key });

const page: DpopPage = {
  thumbprint: () => dpop.thumbprint(),
  async privateKey() {
    const { privateKey } = await key();
    const exportRefused = await crypto.subtle.exportKey('jwk', privateKey).then(
      () => false,
      () => true,
    );
    return { extractable: privateKey.extractable, exportRefused };
  },
  storedKeys: () =>
    new Promise((resolve, reject) => {
      const opening = indexedDB.open('tokenrelay-dpop');
      opening.onerror = () => reject(opening.error);
      opening.onsuccess = () => {
        const counting = opening.result.transaction('keys').objectStore('keys').count();
        counting.onerror = () => reject(counting.error);
        counting.onsuccess = () => {
          opening.result.close();
          resolve(counting.result);
        };
      };
    }),
};

(globalThis as { tokenrelayDpop?: DpopPage }).tokenrelayDpop = page;
