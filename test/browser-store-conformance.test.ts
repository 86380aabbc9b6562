/*
 * The browser store runs the TokenStore conformance suite in real Chromium, with each way it has
 * to coordinate: Web Locks, the storage lease, and the lease with storage events only (no
 * BroadcastChannel). The cases are declared here, so that vitest lists and times each one, and
 * run in the page (test/helpers/browser-conformance-page.ts), where every handle the suite opens
 * is a browserStore in its own same-origin iframe: its own document, with real localStorage, Web
 * Locks, BroadcastChannel and storage events.
 *
 * What the page cannot show: a lost Web Lock (the browser never takes a granted Web Lock back
 * unless someone steals it, and the store never does), so that case runs for the lease only; and
 * the delays between tabs in separate renderer processes (iframes of one page share one), which
 * test/browser-tabs.test.ts covers with real tabs.
 */
import { describeTokenStoreConformance, type ConformanceRunner } from '@tokenrelay/testing';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, it } from 'vitest';
import type { ConformanceCase, ConformancePage, ConformanceSetup } from './helpers/browser-conformance-page.js';
import { useChromium } from './helpers/chromium.js';

const chromium = useChromium(new URL('./helpers/browser-conformance-page.ts', import.meta.url));
let context: BrowserContext | undefined;
let page: Page | undefined;

beforeAll(async () => {
  context = await chromium.browser().newContext();
  page = await context.newPage();
  await page.goto(chromium.pageUrl());
}, 60_000);

afterAll(async () => {
  await context?.close();
});

function runInPage(which: ConformanceCase): Promise<void> {
  if (!page) throw new Error('beforeAll did not open the page');
  return page.evaluate((args) => {
    const conformance = (globalThis as { tokenrelayConformance?: ConformancePage }).tokenrelayConformance;
    if (!conformance) throw new Error('the conformance page script did not load');
    return conformance.run(args);
  }, which);
}

/** Declares each case with vitest; its body runs the same case in the page. */
function runnerInPage(suite: string, setup: ConformanceSetup): ConformanceRunner {
  // Vitest runs a describe's body later, after its parent's: each keeps the path it was declared at.
  let path: readonly string[] = [];
  return {
    describe(name, body) {
      const declaredAt = [...path, name];
      describe(name, () => {
        const outer = path;
        path = declaredAt;
        try {
          body();
        } finally {
          path = outer;
        }
      });
    },
    it(name, _bodyInNode, timeoutMs) {
      const titles = [...path, name];
      it(name, () => runInPage({ suite, setup, titles }), timeoutMs);
    },
  };
}

const setups: readonly (ConformanceSetup & { title: string })[] = [
  { title: 'Web Locks + BroadcastChannel', lock: 'web-locks', withoutBroadcastChannel: false },
  { title: 'lease + BroadcastChannel', lock: 'lease', withoutBroadcastChannel: false },
  { title: 'lease + storage events', lock: 'lease', withoutBroadcastChannel: true },
];

for (const { title, ...setup } of setups) {
  const suite = `browserStore (${title}) in Chromium`;
  describeTokenStoreConformance(suite, runnerInPage(suite, setup), () => {
    throw new Error('The sessions of this suite are made in the page');
  });
}
