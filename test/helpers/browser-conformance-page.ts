/*
 * The script of the page on which test/browser-store-conformance.test.ts runs the TokenStore
 * conformance suite in real Chromium. Bundled by esbuild (see chromium.ts); it runs in the browser
 * only. The suite's cases are declared here with a runner that records them, and the test runs
 * them one by one through `window.tokenrelayConformance.run()`. Each handle the suite opens is a
 * browserStore in its own same-origin iframe (this page again): its own document, with its own
 * localStorage object, BroadcastChannel and storage events, as another tab has.
 */
import { browserStore, type BrowserTokenStore } from '@tokenrelay/browser';
// The suite's own file: the package's main entry also carries the OAuth server, which needs Node.
import { describeTokenStoreConformance, type ConformanceRunner, type ConformanceSession } from '../../packages/testing/src/store-conformance.js';

/** How the stores of one suite coordinate. */
export interface ConformanceSetup {
  lock: 'web-locks' | 'lease';
  /** Hides BroadcastChannel from the handles, so only `storage` events carry notifications. */
  withoutBroadcastChannel: boolean;
}

/** Which case to run: the suite's name as the test declared it, its setup, and the case's titles. */
export interface ConformanceCase {
  suite: string;
  setup: ConformanceSetup;
  /** The titles of the enclosing describes, then the case's own. */
  titles: readonly string[];
}

/** What the test calls through `page.evaluate`, and what a page asks of the iframes it opens. */
export interface ConformancePage {
  /** Runs one case of the suite; rejects with the case's failure. */
  run(which: ConformanceCase): Promise<void>;
  /** Opens a store on `key` in this document. */
  openStore(key: string, setup: ConformanceSetup): BrowserTokenStore;
}

/** A runner that records the cases instead of running them. */
function recordingRunner(cases: Map<string, () => Promise<void>>): ConformanceRunner {
  const path: string[] = [];
  return {
    describe(name, body) {
      path.push(name);
      try {
        body();
      } finally {
        path.pop();
      }
    },
    it(name, body) {
      cases.set(JSON.stringify([...path, name]), body);
    },
  };
}

/** Loads this page into a new iframe and resolves with its conformance API. */
async function openFrame(frames: HTMLIFrameElement[]): Promise<ConformancePage> {
  const frame = document.createElement('iframe');
  frames.push(frame);
  const loaded = new Promise<void>((resolve, reject) => {
    frame.addEventListener('load', () => resolve(), { once: true });
    frame.addEventListener('error', () => reject(new Error('the handle\'s iframe did not load')), { once: true });
  });
  frame.src = location.href;
  document.body.append(frame);
  await loaded;
  const api = (frame.contentWindow as { tokenrelayConformance?: ConformancePage } | null)?.tokenrelayConformance;
  if (!api) throw new Error('the conformance script did not load in the handle\'s iframe');
  return api;
}

/** Writes the lease `name` as another tab would, in the store's IndexedDB database of leases. */
async function replaceLease(name: string, lease: { owner: string; expiresAt: number }): Promise<void> {
  const request = indexedDB.open('tokenrelay-leases', 1);
  request.onupgradeneeded = () => request.result.createObjectStore('leases');
  const database = await new Promise<IDBDatabase>((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  const transaction = database.transaction('leases', 'readwrite');
  transaction.objectStore('leases').put(lease, name);
  await new Promise<void>((resolve, reject) => {
    transaction.oncomplete = () => resolve();
    transaction.onerror = () => reject(transaction.error);
  });
  database.close();
}

/** A fresh session: a new key, and each `open()` a store in a new iframe, as another tab would hold. */
function session(setup: ConformanceSetup): ConformanceSession {
  const key = `conformance-${crypto.randomUUID()}`;
  const frames: HTMLIFrameElement[] = [];
  const stores: BrowserTokenStore[] = [];
  return {
    async open() {
      const store = (await openFrame(frames)).openStore(key, setup);
      stores.push(store);
      return store;
    },
    // A granted Web Lock cannot be lost (the store never lets it be stolen), so only the lease has this case.
    ...(setup.lock === 'lease'
      ? {
          async loseLock() {
            // The lease ran out and another tab's expired lease replaced it (in IndexedDB, where Chromium keeps leases).
            await replaceLease(`${key}:lock`, { owner: 'another-tab', expiresAt: 0 });
          },
        }
      : {}),
    async cleanup() {
      for (const store of stores) store.close();
      for (const frame of frames) frame.remove();
      localStorage.removeItem(key);
    },
  };
}

const suites = new Map<string, Map<string, () => Promise<void>>>();

const page: ConformancePage = {
  async run({ suite, setup, titles }) {
    let cases = suites.get(suite);
    if (!cases) {
      cases = new Map();
      describeTokenStoreConformance(suite, recordingRunner(cases), () => session(setup));
      suites.set(suite, cases);
    }
    const body = cases.get(JSON.stringify(titles));
    if (!body) throw new Error(`No conformance case ${JSON.stringify(titles)} in "${suite}"`);
    await body();
  },
  openStore(key, { lock, withoutBroadcastChannel }) {
    // Only this iframe's realm loses it: the store looks for BroadcastChannel when it is created.
    if (withoutBroadcastChannel) (globalThis as { BroadcastChannel?: unknown }).BroadcastChannel = undefined;
    return browserStore({ key, lock, lockLeaseMs: 600, lockPollMs: 10 });
  },
};

(globalThis as { tokenrelayConformance?: ConformancePage }).tokenrelayConformance = page;
