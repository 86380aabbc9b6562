/*
 * One refresh across browser tabs, in real Chromium: three tabs of one page (one browser
 * context, so they share localStorage, Web Locks and BroadcastChannel) call the API of
 * @tokenrelay/testing, whose token endpoint rotates refresh tokens and revokes the whole grant
 * on a reuse. A second refresh with the same refresh token would show as a revoked family.
 */
import { defaultClient, startOAuthServer, type OAuthServer } from '@tokenrelay/testing';
import type { BrowserContext, Page } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import type { BurstResult, TabApi, TabConfig, TabCounters, TryLockResult } from './helpers/browser-tab-page.js';
import { useChromium } from './helpers/chromium.js';

const TABS = 3;
const REQUESTS_PER_TAB = 10;

const chromium = useChromium(new URL('./helpers/browser-tab-page.ts', import.meta.url));
let context: BrowserContext | undefined;
let oauthServer: OAuthServer | undefined;

afterEach(async () => {
  await context?.close();
  context = undefined;
  await oauthServer?.close();
  oauthServer = undefined;
});

type TabCall =
  | { method: 'start'; arg: TabConfig }
  | { method: 'burst'; arg: number }
  | { method: 'tryLock'; arg: number }
  | { method: 'counters' | 'holdLock'; arg?: undefined };

/** Calls the page's `window.tokenrelayTab[method](arg)`. */
function callTab(page: Page, call: TabCall): Promise<unknown> {
  return page.evaluate(({ method, arg }) => {
    const api = (globalThis as { tokenrelayTab?: TabApi }).tokenrelayTab;
    if (!api) throw new Error('the tab script did not load');
    return (api[method] as (value: unknown) => Promise<unknown>)(arg);
  }, call);
}

const burst = (page: Page, count: number) => callTab(page, { method: 'burst', arg: count }) as Promise<BurstResult>;
const counters = (page: Page) => callTab(page, { method: 'counters' }) as Promise<TabCounters>;
const tryLock = (page: Page, timeoutMs: number) =>
  callTab(page, { method: 'tryLock', arg: timeoutMs }) as Promise<TryLockResult>;

interface SessionOptions {
  lock: TabConfig['lock'];
  withoutBroadcastChannel?: boolean;
}

/** Opens the tabs of one signed-in session: the first tab signs in, the others load the session from the store. */
async function openTabs(server: OAuthServer, options: SessionOptions, count = TABS): Promise<Page[]> {
  context = await chromium.browser().newContext();
  const config: TabConfig = {
    key: 'tokenrelay:browser-tabs-test',
    tokenEndpoint: server.tokenEndpoint,
    apiUrl: server.url,
    clientId: defaultClient.clientId,
    clientSecret: defaultClient.clientSecret ?? '',
    lock: options.lock,
    lockTimeoutMs: 30_000,
    ...(options.withoutBroadcastChannel ? { withoutBroadcastChannel: true } : {}),
  };
  const pages: Page[] = [];
  for (let index = 0; index < count; index++) {
    const page = await context.newPage();
    page.setDefaultTimeout(20_000);
    await page.goto(chromium.pageUrl());
    await callTab(page, { method: 'start', arg: index === 0 ? { ...config, signIn: server.issue() } : config });
    pages.push(page);
  }
  return pages;
}

interface ExpiryRound {
  tokenRequests: number;
  tokenCallsByTab: number[];
  announcementsByTab: number[];
  adoptionsUnderLockByTab: number[];
}

/**
 * Revokes every access token, fires a burst of requests in all tabs at once, and checks the
 * outcome: every request succeeds, one token call in total, and every tab ends on its token.
 */
async function expireAndBurst(server: OAuthServer, pages: Page[]): Promise<ExpiryRound> {
  const before = await Promise.all(pages.map(counters));
  const tokenRequestsBefore = server.stats().tokenRequests;
  const revokedAt = Date.now();
  server.revokeAccessTokens();

  const results = await Promise.all(pages.map((page) => burst(page, REQUESTS_PER_TAB)));

  expect(results.flatMap((result) => result.failures)).toEqual([]);
  expect(results.map((result) => result.ok)).toEqual(Array(pages.length).fill(REQUESTS_PER_TAB));
  const stats = server.stats();
  expect(stats.tokenRequests - tokenRequestsBefore).toBe(1);
  expect(stats.familiesRevoked).toBe(0);
  expect(stats.tokenErrors).toEqual({});

  // The tabs that did not refresh learn of the new token from the one that did, by the
  // announcement or from the store under the lock; announcements may land just after the burst.
  let after: TabCounters[] = [];
  const learned = (tab: number) =>
    after[tab]!.announcements > before[tab]!.announcements ||
    after[tab]!.refreshEvents - after[tab]!.tokenCalls > before[tab]!.refreshEvents - before[tab]!.tokenCalls;
  await expect
    .poll(
      async () => {
        after = await Promise.all(pages.map(counters));
        return new Set(after.map((tab) => tab.accessToken)).size;
      },
      { timeout: 5_000, interval: 50 },
    )
    .toBe(1);
  const tokenCallsByTab = after.map((tab, index) => tab.tokenCalls - before[index]!.tokenCalls);
  expect(tokenCallsByTab.reduce((sum, calls) => sum + calls, 0)).toBe(1);
  const refresher = tokenCallsByTab.indexOf(1);
  for (let index = 0; index < pages.length; index++) {
    if (index !== refresher) expect(learned(index), `tab ${index} got the token from the refreshing tab`).toBe(true);
  }

  // Every request that succeeded after the revocation carried the one new token.
  const newToken = after[0]!.accessToken;
  const okAfterRevocation = stats.apiRequestLog.filter((entry) => entry.at >= revokedAt && entry.status === 200);
  expect(okAfterRevocation).toHaveLength(pages.length * REQUESTS_PER_TAB);
  expect(okAfterRevocation.every((entry) => entry.accessToken === newToken)).toBe(true);

  return {
    tokenRequests: stats.tokenRequests - tokenRequestsBefore,
    tokenCallsByTab,
    announcementsByTab: after.map((tab, index) => tab.announcements - before[index]!.announcements),
    adoptionsUnderLockByTab: after.map(
      (tab, index) => tab.refreshEvents - tab.tokenCalls - (before[index]!.refreshEvents - before[index]!.tokenCalls),
    ),
  };
}

/** Prints the measured counts into the test output, for the record. */
function report(title: string, rounds: ExpiryRound[]): void {
  const lines = rounds.map(
    (round, index) =>
      `  expiry ${index + 1}: token calls ${round.tokenRequests}, by tab [${round.tokenCallsByTab.join(', ')}], ` +
      `announcements [${round.announcementsByTab.join(', ')}], adopted under the lock [${round.adoptionsUnderLockByTab.join(', ')}]`,
  );
  process.stdout.write(`${title}\n${lines.join('\n')}\n`);
}

const setups = [
  { title: 'Web Locks + BroadcastChannel', lock: 'auto', withoutBroadcastChannel: false, lockKind: 'web-locks', expiries: 5 },
  { title: 'lease lock + storage event (no Web Locks, no BroadcastChannel)', lock: 'lease', withoutBroadcastChannel: true, lockKind: 'lease', expiries: 3 },
] as const;

describe.each(setups)('@tokenrelay/browser in real Chromium: $title', ({ title, lock, withoutBroadcastChannel, lockKind, expiries }) => {
  async function openSession(): Promise<{ server: OAuthServer; pages: Page[] }> {
    const server = await startOAuthServer({ rotateRefreshTokens: true, reuseDetection: true, tokenEndpointLatencyMs: 100 });
    oauthServer = server;
    const pages = await openTabs(server, { lock, withoutBroadcastChannel });
    expect((await Promise.all(pages.map(counters))).map((tab) => tab.lockKind)).toEqual(Array(TABS).fill(lockKind));
    return { server, pages };
  }

  it(`makes exactly one token call per expiry for bursts in ${TABS} tabs, ${expiries} expiries in a row`, async () => {
    const { server, pages } = await openSession();

    const rounds: ExpiryRound[] = [];
    for (let expiry = 0; expiry < expiries; expiry++) rounds.push(await expireAndBurst(server, pages));

    report(`${title}, ${TABS} tabs × ${REQUESTS_PER_TAB} requests:`, rounds);
    expect(server.stats().tokenRequests).toBe(expiries);
    expect(server.stats().maxInFlightTokenRequests).toBe(1);
  }, 90_000);

  it('hands a refresh made in one tab to idle tabs, whose next requests then need no refresh at all', async () => {
    const { server, pages } = await openSession();
    const before = await Promise.all(pages.map(counters));
    server.revokeAccessTokens();

    expect(await burst(pages[0]!, REQUESTS_PER_TAB)).toEqual({ ok: REQUESTS_PER_TAB, failures: [] });
    const refreshed = (await counters(pages[0]!)).accessToken;
    for (const page of pages.slice(1)) {
      await expect.poll(async () => (await counters(page)).accessToken, { timeout: 5_000, interval: 50 }).toBe(refreshed);
    }
    const idle = await Promise.all(pages.slice(1).map(counters));
    expect(idle.map((tab, index) => tab.announcements - before[index + 1]!.announcements)).toEqual([1, 1]);
    expect(idle.map((tab) => [tab.tokenCalls, tab.refreshEvents])).toEqual([
      [0, 0],
      [0, 0],
    ]);

    const api401Before = server.stats().api401;
    const results = await Promise.all(pages.slice(1).map((page) => burst(page, REQUESTS_PER_TAB)));
    expect(results.flatMap((result) => result.failures)).toEqual([]);
    expect(server.stats()).toMatchObject({ api401: api401Before, tokenRequests: 1, familiesRevoked: 0 });
  }, 60_000);
});

describe('@tokenrelay/browser in real Chromium: the Web Lock', () => {
  it('gives up waiting for a held Web Lock with STORE_ERROR, and gets it as soon as the holding tab closes', async () => {
    oauthServer = await startOAuthServer({ rotateRefreshTokens: true });
    const [holder, waiter] = await openTabs(oauthServer, { lock: 'web-locks' }, 2);
    await callTab(holder!, { method: 'holdLock' });

    const timedOut = await tryLock(waiter!, 1_000);
    expect(timedOut).toMatchObject({ acquired: false, errorCode: 'STORE_ERROR' });
    expect(timedOut.waitedMs).toBeGreaterThanOrEqual(950);

    const waiting = tryLock(waiter!, 15_000);
    await holder!.close();
    expect(await waiting).toMatchObject({ acquired: true });
  }, 60_000);
});
