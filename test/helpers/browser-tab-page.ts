/*
 * The script of the test page that test/browser-tabs.test.ts opens in several Chromium tabs.
 * Bundled by esbuild from the package sources (see chromium.ts); it runs in the browser only.
 * Each tab signs in to the shared session through @tokenrelay/browser and calls the API with
 * @tokenrelay/fetch; the test drives it through `window.tokenrelayTab` and reads its counters.
 */
import { browserStore, type BrowserLockMode, type BrowserTokenStore } from '@tokenrelay/browser';
import { createTokenManager, isTokenRelayError, refreshTokenGrant, type TokenManager, type TokenSet } from '@tokenrelay/core';
import { withTokenRelay } from '@tokenrelay/fetch';

/** How the test configures one tab. */
export interface TabConfig {
  /** The browserStore key; the same in every tab of one session. */
  key: string;
  tokenEndpoint: string;
  /** The API origin (startOAuthServer's url). */
  apiUrl: string;
  clientId: string;
  clientSecret: string;
  lock: BrowserLockMode;
  lockTimeoutMs: number;
  /** Tokens of a sign-in in this tab; the other tabs load the session from the store. */
  signIn?: TokenSet;
  /** Simulates a browser without BroadcastChannel, so only the `storage` event tells other tabs. */
  withoutBroadcastChannel?: boolean;
}

/** What a tab observed, for the test's assertions. */
export interface TabCounters {
  /** Calls of this tab's refresh handler, i.e. token-endpoint calls made by this tab. */
  tokenCalls: number;
  /** Token sets another tab announced to this one (BroadcastChannel, or the storage event). */
  announcements: number;
  /** The manager's `refresh` events: its own refreshes plus tokens it adopted from the store under the lock. */
  refreshEvents: number;
  accessToken: string | undefined;
  lockKind: string;
}

/** The result of a burst of API requests. */
export interface BurstResult {
  ok: number;
  failures: string[];
}

/** The result of {@link TabApi.tryLock}. */
export interface TryLockResult {
  acquired: boolean;
  errorCode: string | undefined;
  waitedMs: number;
}

/** What the test calls through `page.evaluate`. */
export interface TabApi {
  start(config: TabConfig): Promise<void>;
  burst(count: number): Promise<BurstResult>;
  counters(): Promise<TabCounters>;
  /** Takes the refresh lock and never releases it: only closing the tab frees it. */
  holdLock(): Promise<void>;
  /** Tries to take the refresh lock through a second store on the key, waiting at most `timeoutMs`; releases it at once. */
  tryLock(timeoutMs: number): Promise<TryLockResult>;
}

let config: TabConfig | undefined;
let store: BrowserTokenStore | undefined;
let manager: TokenManager | undefined;
let api: typeof fetch | undefined;
let apiUrl = '';
const counters = { tokenCalls: 0, announcements: 0, refreshEvents: 0 };

function started<T>(value: T | undefined): T {
  if (value === undefined) throw new Error('tokenrelayTab.start() was not called');
  return value;
}

const tab: TabApi = {
  async start(tabConfig) {
    config = tabConfig;
    if (config.withoutBroadcastChannel) {
      (globalThis as { BroadcastChannel?: unknown }).BroadcastChannel = undefined;
    }
    apiUrl = config.apiUrl;
    store = browserStore({ key: config.key, lock: config.lock, lockWaitMs: config.lockTimeoutMs });
    const grant = refreshTokenGrant({
      tokenEndpoint: config.tokenEndpoint,
      clientId: config.clientId,
      clientSecret: config.clientSecret,
    });
    const countedGrant = Object.assign(
      (context: Parameters<typeof grant>[0]) => {
        counters.tokenCalls++;
        return grant(context);
      },
      { tokenEndpoint: grant.tokenEndpoint },
    );
    const storeToWatch = store;
    manager = createTokenManager({
      refresh: countedGrant,
      store: {
        ...storeToWatch,
        subscribe: (listener) =>
          storeToWatch.subscribe((tokens) => {
            if (tokens) counters.announcements++;
            listener(tokens);
          }),
      },
    });
    manager.on('refresh', () => {
      counters.refreshEvents++;
    });
    if (config.signIn) await manager.setTokens(config.signIn);
    api = withTokenRelay(fetch, manager, { origins: [config.apiUrl] });
  },

  async burst(count) {
    const call = started(api);
    const results = await Promise.allSettled(
      Array.from({ length: count }, (_, index) => call(`${apiUrl}/api/items/${index}`)),
    );
    const failures: string[] = [];
    for (const result of results) {
      if (result.status === 'rejected') {
        const reason: unknown = result.reason;
        failures.push(isTokenRelayError(reason) ? `${reason.code}: ${reason.message}` : String(reason));
      } else if (result.value.status !== 200) {
        failures.push(`HTTP ${result.value.status}`);
      }
    }
    return { ok: count - failures.length, failures };
  },

  async counters() {
    const tokens = await started(manager).getTokens();
    return { ...counters, accessToken: tokens?.accessToken, lockKind: started(store).lockKind };
  },

  async holdLock() {
    await started(store).lock({ signal: new AbortController().signal });
  },

  async tryLock(timeoutMs) {
    const { key, lock: lockMode } = started(config);
    const probe = browserStore({ key, lock: lockMode, lockWaitMs: timeoutMs });
    const begin = performance.now();
    try {
      const lock = await probe.lock({ signal: new AbortController().signal });
      await lock.release();
      return { acquired: true, errorCode: undefined, waitedMs: performance.now() - begin };
    } catch (error) {
      return {
        acquired: false,
        errorCode: isTokenRelayError(error) ? error.code : String(error),
        waitedMs: performance.now() - begin,
      };
    } finally {
      probe.close();
    }
  },
};

(globalThis as { tokenrelayTab?: TabApi }).tokenrelayTab = tab;
