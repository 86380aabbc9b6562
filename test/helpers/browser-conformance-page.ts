/*
 * The script of the page on which test/browser-store-conformance.test.ts runs the TokenStore
 * conformance suite in real Chromium. Bundled by esbuild (see chromium.ts); it runs in the browser
 * only. The suite's cases are declared here with a runner that records them, and the test runs
 * them one by one through `window.tokenrelayConformance.run()`: every store call happens in the
 * page, on the page's real localStorage, Web Locks and BroadcastChannel.
 */
import { browserStore, type BrowserLockMode, type BrowserTokenStore } from '@tokenrelay/browser';
// The suite's own file: the package's main entry also carries the OAuth server, which needs Node.
import { describeTokenStoreConformance, type ConformanceRunner, type ConformanceSession } from '../../packages/testing/src/store-conformance.js';

/** Which suite and case to run: the suite's name as the test declared it, and the case's titles. */
export interface ConformanceCase {
  /** The name given to describeTokenStoreConformance; it names the lock mode too. */
  suite: string;
  lock: Exclude<BrowserLockMode, 'auto'>;
  /** The titles of the enclosing describes, then the case's own. */
  titles: readonly string[];
}

/** What the test calls through `page.evaluate`. */
export interface ConformancePage {
  /** Runs one case of the suite; rejects with the case's failure. */
  run(which: ConformanceCase): Promise<void>;
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

/** A fresh session: a new key, and a store per `open()` on the page's localStorage, as another tab would hold. */
function session(lock: ConformanceCase['lock']): ConformanceSession {
  const key = `conformance-${crypto.randomUUID()}`;
  const stores: BrowserTokenStore[] = [];
  return {
    open() {
      const store = browserStore({ key, lock, lockLeaseMs: 600, lockPollMs: 10 });
      stores.push(store);
      return store;
    },
    // A granted Web Lock cannot be lost (the store never lets it be stolen), so only the lease has this case.
    ...(lock === 'lease'
      ? {
          async loseLock() {
            // The lease ran out and another tab's expired lease replaced it.
            localStorage.setItem(`${key}:lock`, JSON.stringify({ owner: 'another-tab', expiresAt: 0 }));
          },
        }
      : {}),
    async cleanup() {
      for (const store of stores) store.close();
      localStorage.removeItem(key);
      localStorage.removeItem(`${key}:lock`);
    },
  };
}

const suites = new Map<string, Map<string, () => Promise<void>>>();

const page: ConformancePage = {
  async run({ suite, lock, titles }) {
    let cases = suites.get(suite);
    if (!cases) {
      cases = new Map();
      describeTokenStoreConformance(suite, recordingRunner(cases), () => session(lock));
      suites.set(suite, cases);
    }
    const body = cases.get(JSON.stringify(titles));
    if (!body) throw new Error(`No conformance case ${JSON.stringify(titles)} in "${suite}"`);
    await body();
  },
};

(globalThis as { tokenrelayConformance?: ConformancePage }).tokenrelayConformance = page;
