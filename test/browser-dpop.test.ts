/*
 * browserDpopKey in real Chromium: tabs of one origin (one browser context, so one IndexedDB) that
 * ask for the DPoP key at the same moment end with one key, which script cannot export, and which
 * a reload keeps.
 */
import type { BrowserContext, Page } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import type { DpopPage } from './helpers/browser-dpop-page.js';
import { useChromium } from './helpers/chromium.js';

const chromium = useChromium(new URL('./helpers/browser-dpop-page.ts', import.meta.url));
let context: BrowserContext | undefined;

afterEach(async () => {
  await context?.close();
  context = undefined;
});

/** Calls the page's `window.tokenrelayDpop[method]()`. */
function callPage<M extends keyof DpopPage>(page: Page, method: M): Promise<Awaited<ReturnType<DpopPage[M]>>> {
  return page.evaluate((name: keyof DpopPage): Promise<unknown> => {
    const api = (globalThis as { tokenrelayDpop?: DpopPage }).tokenrelayDpop;
    if (!api) throw new Error('the page script did not load');
    return api[name]();
  }, method) as Promise<Awaited<ReturnType<DpopPage[M]>>>;
}

/** Opens `count` tabs of the page in a new context (an empty IndexedDB), all loaded before any asks for the key. */
async function openTabs(count: number): Promise<Page[]> {
  context = await chromium.browser().newContext();
  const pages = await Promise.all(Array.from({ length: count }, () => context!.newPage()));
  await Promise.all(pages.map((page) => page.goto(chromium.pageUrl())));
  return pages;
}

describe('browserDpopKey in real Chromium', () => {
  it('gives two tabs asking at the same moment one key: the same thumbprint, one stored key', async () => {
    // Each round is a fresh origin storage, so each is a new race to store the first key.
    for (let round = 0; round < 3; round++) {
      const pages = await openTabs(2);

      const thumbprints = await Promise.all(pages.map((page) => callPage(page, 'thumbprint')));

      expect(thumbprints[0]).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(thumbprints[1]).toBe(thumbprints[0]);
      expect(await callPage(pages[0]!, 'storedKeys')).toBe(1);
      await context?.close();
      context = undefined;
    }
  }, 60_000);

  it('keeps a private key that script cannot export', async () => {
    const [page] = await openTabs(1);

    expect(await callPage(page!, 'privateKey')).toEqual({ extractable: false, exportRefused: true });
  }, 30_000);

  it('signs with the same key after a reload, and in a tab opened later', async () => {
    const [page] = await openTabs(1);
    const before = await callPage(page!, 'thumbprint');

    await page!.reload();
    const later = await context!.newPage();
    await later.goto(chromium.pageUrl());

    expect(await callPage(page!, 'thumbprint')).toBe(before);
    expect(await callPage(later, 'thumbprint')).toBe(before);
    expect(await callPage(page!, 'storedKeys')).toBe(1);
  }, 30_000);
});
