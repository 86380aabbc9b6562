import { afterEach, describe, expect, it, vi } from 'vitest';
import { ErrorCode, TokenRelayError, isTokenRelayError } from './errors.js';
import { createTokenManager } from './manager.js';
import { memoryStore } from './memory-store.js';
import type { RefreshContext, StoredTokens, TokenSet, TokenStore, TokenStoreLock } from './types.js';

/** What a store holds for `tokens`, at revision `revision`. */
const stored = (tokens: TokenSet, revision = 1): StoredTokens => ({ tokens, revision });

/** A refresh handler whose calls the test settles by hand, counting every call. */
function controlledRefresh() {
  const calls: { context: RefreshContext; resolve: (tokens: TokenSet) => void; reject: (error: unknown) => void }[] = [];
  const handler = (context: RefreshContext) =>
    new Promise<TokenSet>((resolve, reject) => {
      calls.push({ context, resolve, reject });
    });
  return { handler, calls };
}

/** A refresh handler that answers at once with v1, v2, … */
function countingRefresh(extra: Partial<TokenSet> = {}) {
  let count = 0;
  const handler = vi.fn(async () => {
    count++;
    return { accessToken: `v${count}`, ...extra };
  });
  return handler;
}

const flush = () => new Promise((resolve) => setTimeout(resolve, 0));

afterEach(() => {
  vi.useRealTimers();
});

describe('getAccessToken', () => {
  it('reports every failure as a rejection, never a synchronous throw', async () => {
    const aborted = AbortSignal.abort(new Error('gone'));
    const signedOut = createTokenManager({ refresh: countingRefresh() });
    const expired = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r0', expiresAt: Date.now() - 1 },
      refresh: async () => {
        throw new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'dead');
      },
      retry: false,
    });
    const failures = [
      () => signedOut.getAccessToken({ signal: aborted }),
      () => signedOut.getAccessToken(),
      () => expired.getAccessToken(),
    ];
    for (const call of failures) {
      let result: Promise<string> | undefined;
      expect(() => (result = call())).not.toThrow();
      await expect(result).rejects.toBeDefined();
    }
    await expect(expired.getAccessToken()).rejects.toMatchObject({ code: ErrorCode.SESSION_EXPIRED });
  });

  it('releases a waiter one promise step after the refresh settles', async () => {
    const { handler, calls } = controlledRefresh();
    const manager = createTokenManager({ tokens: { accessToken: 'v0', refreshToken: 'r0', expiresAt: Date.now() - 1 }, refresh: handler });
    let released: string | undefined;
    void manager.getAccessToken().then((token) => (released = token));
    await flush();
    let refreshed: TokenSet | undefined;
    manager.on('refresh', (tokens) => (refreshed = tokens));
    calls[0]?.resolve({ accessToken: 'v1', expiresAt: Date.now() + 3_600_000 });
    // Count the microtask turns between the refresh event and the waiter's release.
    let turns = 0;
    while (refreshed === undefined && turns < 100) {
      turns++;
      await Promise.resolve();
    }
    let stepsAfterRefresh = 0;
    while (released === undefined && stepsAfterRefresh < 100) {
      stepsAfterRefresh++;
      await Promise.resolve();
    }
    expect(released).toBe('v1');
    expect(stepsAfterRefresh).toBeLessThanOrEqual(3);
  });
});

describe('single flight', () => {
  it('makes one refresh call for many concurrent refreshes and gives every caller the new tokens', async () => {
    const { handler, calls } = controlledRefresh();
    const manager = createTokenManager({ tokens: { accessToken: 'v0', refreshToken: 'r0' }, refresh: handler });
    const waiting = Array.from({ length: 50 }, () => manager.refresh({ staleAccessToken: 'v0' }));
    await flush();
    expect(calls).toHaveLength(1);
    calls[0]?.resolve({ accessToken: 'v1' });
    const results = await Promise.all(waiting);
    expect(new Set(results.map((tokens) => tokens.accessToken))).toEqual(new Set(['v1']));
    expect(calls).toHaveLength(1);
  });

  it('does not refresh again for a 401 that used a token already replaced (the late 401)', async () => {
    const refresh = countingRefresh();
    const manager = createTokenManager({ tokens: { accessToken: 'v0', refreshToken: 'r0' }, refresh });
    await manager.refresh({ staleAccessToken: 'v0' });
    const afterLate401 = await manager.refresh({ staleAccessToken: 'v0' });
    expect(afterLate401.accessToken).toBe('v1');
    expect(refresh).toHaveBeenCalledTimes(1);
  });

  it('makes requests that ask for a token during a refresh wait for the new one', async () => {
    const { handler, calls } = controlledRefresh();
    const manager = createTokenManager({ tokens: { accessToken: 'v0', refreshToken: 'r0' }, refresh: handler });
    const refreshing = manager.refresh({ staleAccessToken: 'v0' });
    const duringRefresh = manager.getAccessToken();
    await flush();
    calls[0]?.resolve({ accessToken: 'v1' });
    await refreshing;
    expect(await duringRefresh).toBe('v1');
  });
});

describe('proactive refresh', () => {
  it('refreshes once in the background before expiry, sending the old token meanwhile (stale-while-revalidate)', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const refresh = countingRefresh({ expiresAt: 1_000_000 + 3_600_000 });
    const manager = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r0', expiresAt: 1_000_000 + 60_000 },
      refresh,
      refreshMarginMs: 10_000,
    });
    expect(await manager.getAccessToken()).toBe('v0');
    vi.setSystemTime(1_000_000 + 49_000);
    expect(await manager.getAccessToken()).toBe('v0');
    expect(refresh).not.toHaveBeenCalled();
    // Inside the margin, 9 s before expiry: the refresh starts, and nobody waits for it.
    vi.setSystemTime(1_000_000 + 51_000);
    const tokens = await Promise.all([manager.getAccessToken(), manager.getAccessToken(), manager.getAccessToken()]);
    expect(tokens).toEqual(['v0', 'v0', 'v0']);
    await vi.advanceTimersByTimeAsync(1);
    expect(await manager.getAccessToken()).toBe('v1');
    expect(refresh).toHaveBeenCalledTimes(1);
  });

  it('makes a request wait for the refresh when its token is within half the margin of expiry', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { handler, calls } = controlledRefresh();
    const manager = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r0', expiresAt: 1_000_000 + 60_000 },
      refresh: handler,
      refreshMarginMs: 10_000,
    });
    vi.setSystemTime(1_000_000 + 51_000);
    expect(await manager.getAccessToken()).toBe('v0'); // starts the refresh in the background
    vi.setSystemTime(1_000_000 + 56_000); // 4 s left: it could expire on its way to the server
    const waiting = manager.getAccessToken();
    calls[0]?.resolve({ accessToken: 'v1', expiresAt: 1_000_000 + 3_600_000 });
    expect(await waiting).toBe('v1');
    expect(calls).toHaveLength(1);
  });

  it('sends a token with 10 s left at once while a slow refresh runs (default margin): only the last 5 s wait', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { handler, calls } = controlledRefresh();
    const manager = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r0', expiresAt: 1_000_000 + 3_600_000 },
      refresh: handler,
    });
    vi.setSystemTime(1_000_000 + 3_600_000 - 20_000);
    expect(await manager.getAccessToken()).toBe('v0'); // inside the 30 s margin: the refresh starts in the background
    vi.setSystemTime(1_000_000 + 3_600_000 - 10_000);
    expect(await manager.getAccessToken()).toBe('v0'); // the refresh still runs; 10 s is plenty to reach the server
    vi.setSystemTime(1_000_000 + 3_600_000 - 4_000);
    const waiting = manager.getAccessToken();
    calls[0]?.resolve({ accessToken: 'v1', expiresAt: Date.now() + 3_600_000 });
    expect(await waiting).toBe('v1');
    expect(calls).toHaveLength(1);
  });

  it('shrinks the margin for a 1 s token so it is refreshed once per lifetime, not on every request', async () => {
    vi.useFakeTimers({ now: 0 });
    let count = 0;
    const refresh = vi.fn(async () => ({ accessToken: `v${++count}`, expiresAt: Date.now() + 1_000 }));
    const manager = createTokenManager({ tokens: { accessToken: 'v0', refreshToken: 'r', expiresAt: 1_000 }, refresh });
    const seen: string[] = [];
    for (let t = 0; t < 3_000; t += 50) {
      vi.setSystemTime(t);
      seen.push(await manager.getAccessToken());
    }
    // A 30 s margin taken literally would refresh on every one of the 60 requests.
    expect(refresh).toHaveBeenCalledTimes(3);
    expect(seen.at(0)).toBe('v0');
    expect(seen.at(-1)).toBe('v3');
  });

  it('keeps using a still-valid token when a proactive refresh fails transiently', async () => {
    vi.useFakeTimers({ now: 0 });
    const refresh = vi.fn(async () => {
      throw new TokenRelayError(ErrorCode.NETWORK_ERROR, 'down', { transient: true });
    });
    const manager = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r', expiresAt: 100_000 },
      refresh,
      retry: false,
    });
    vi.setSystemTime(90_000);
    expect(await manager.getAccessToken()).toBe('v0');
    vi.setSystemTime(100_001);
    await expect(manager.getAccessToken()).rejects.toMatchObject({ code: ErrorCode.REFRESH_FAILED });
  });
});

describe('rotation', () => {
  it('keeps the old refresh token when the response has none', async () => {
    const manager = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r0', scope: 'api' },
      refresh: async () => ({ accessToken: 'v1' }),
    });
    const tokens = await manager.refresh();
    expect(tokens).toMatchObject({ accessToken: 'v1', refreshToken: 'r0', scope: 'api' });
  });

  it('carries the session data forward across refreshes, writes it to the store and drops it on sign-out', async () => {
    const store = memoryStore();
    const sessionData = { dpopKey: { kty: 'EC', crv: 'P-256' } };
    const manager = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r0', tokenType: 'DPoP', sessionData },
      store,
      refresh: async () => ({ accessToken: 'v1', tokenType: 'DPoP' }),
    });
    await manager.refresh();
    expect((await store.get())?.tokens).toMatchObject({ accessToken: 'v1', sessionData });
    expect(manager.tokenType).toBe('DPoP');
    await manager.clear();
    expect(await store.get()).toBeUndefined();
    expect(manager.tokenType).toBeUndefined();
  });

  it('replaces the refresh token when a new one comes and presents the newest one next time', async () => {
    const presented: (string | undefined)[] = [];
    let count = 0;
    const manager = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r0' },
      refresh: async ({ tokens }) => {
        presented.push(tokens?.refreshToken);
        count++;
        return { accessToken: `v${count}`, refreshToken: `r${count}` };
      },
    });
    await manager.refresh();
    await manager.refresh();
    expect(presented).toEqual(['r0', 'r1']);
    expect((await manager.getTokens())?.refreshToken).toBe('r2');
  });

  it('persists the new tokens to the store before any waiting request gets them', async () => {
    const order: string[] = [];
    const inner = memoryStore();
    const store: TokenStore = {
      get: inner.get,
      clear: inner.clear,
      set: async (value, options) => {
        await flush();
        order.push(`stored ${value.tokens.refreshToken}`);
        return inner.set(value, options);
      },
    };
    const manager = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r0' },
      store,
      refresh: async () => ({ accessToken: 'v1', refreshToken: 'r1' }),
    });
    await manager.getAccessToken();
    order.length = 0;
    await manager.refresh().then(() => order.push('released'));
    expect(order).toEqual(['stored r1', 'released']);
  });
});

describe('dead refresh token', () => {
  it('rejects every waiter with SESSION_EXPIRED, fires sessionExpired once and fails fast afterwards', async () => {
    const { handler, calls } = controlledRefresh();
    const manager = createTokenManager({ tokens: { accessToken: 'v0', refreshToken: 'r0' }, refresh: handler });
    const sessionExpired = vi.fn();
    manager.on('sessionExpired', sessionExpired);
    const waiting = Array.from({ length: 10 }, () => manager.refresh({ staleAccessToken: 'v0' }));
    await flush();
    calls[0]?.reject(new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'invalid_grant', { status: 400, oauthError: 'invalid_grant' }));
    const results = await Promise.allSettled(waiting);
    for (const result of results) {
      expect(result.status).toBe('rejected');
      expect((result as PromiseRejectedResult).reason).toMatchObject({ code: ErrorCode.SESSION_EXPIRED });
    }
    await expect(manager.getAccessToken()).rejects.toMatchObject({ code: ErrorCode.SESSION_EXPIRED });
    await expect(manager.refresh()).rejects.toMatchObject({ code: ErrorCode.SESSION_EXPIRED });
    expect(calls).toHaveLength(1);
    expect(sessionExpired).toHaveBeenCalledTimes(1);
  });

  it('works again after setTokens gives it a new session', async () => {
    let fail = true;
    const manager = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r0' },
      refresh: async () => {
        if (fail) throw new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'dead');
        return { accessToken: 'v2' };
      },
    });
    await expect(manager.refresh()).rejects.toMatchObject({ code: ErrorCode.SESSION_EXPIRED });
    fail = false;
    await manager.setTokens({ accessToken: 'v1', refreshToken: 'r1' });
    expect(await manager.getAccessToken()).toBe('v1');
    expect((await manager.refresh()).accessToken).toBe('v2');
  });
});

describe('transient failures', () => {
  it('retries transient failures with backoff and succeeds without the waiters noticing', async () => {
    let attempts = 0;
    const manager = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r0' },
      refresh: async () => {
        attempts++;
        if (attempts < 3) throw new TokenRelayError(ErrorCode.TOKEN_ENDPOINT_ERROR, '503', { status: 503, transient: true });
        return { accessToken: 'v1' };
      },
      retry: { retries: 2, minDelayMs: 1, maxDelayMs: 5 },
    });
    expect((await manager.refresh()).accessToken).toBe('v1');
    expect(attempts).toBe(3);
  });

  it('rejects waiters with REFRESH_FAILED when retries are exhausted, keeping the cause', async () => {
    const refreshError = vi.fn();
    const cause = new TokenRelayError(ErrorCode.TOKEN_ENDPOINT_ERROR, 'HTTP 503', { status: 503, transient: true });
    const refresh = vi.fn(async () => {
      throw cause;
    });
    const manager = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r0' },
      refresh,
      retry: { retries: 3, minDelayMs: 1, maxDelayMs: 2 },
    });
    manager.on('refreshError', refreshError);
    const error = await manager.refresh().catch((e: unknown) => e);
    expect(error).toMatchObject({ code: ErrorCode.REFRESH_FAILED, status: 503 });
    expect((error as Error).cause).toBe(cause);
    expect(refresh).toHaveBeenCalledTimes(4);
    expect(refreshError).toHaveBeenCalledTimes(1);
    // Not a dead session: the next request may try again.
    expect((await manager.getTokens())?.accessToken).toBe('v0');
  });

  it('waits at least as long as Retry-After asks, within maxDelayMs', async () => {
    vi.useFakeTimers();
    let attempts = 0;
    const manager = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r0' },
      refresh: async () => {
        attempts++;
        if (attempts === 1) {
          throw new TokenRelayError(ErrorCode.TOKEN_ENDPOINT_ERROR, '429', { status: 429, transient: true, retryAfterMs: 2_000 });
        }
        return { accessToken: 'v1' };
      },
      retry: { minDelayMs: 1, maxDelayMs: 10_000 },
    });
    const refreshing = manager.refresh();
    await vi.advanceTimersByTimeAsync(1_999);
    expect(attempts).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect((await refreshing).accessToken).toBe('v1');
  });

  it('releases waiters at the refresh timeout but keeps the token request open until lateAnswerWaitMs, even if the handler ignores its signal', async () => {
    vi.useFakeTimers();
    const signals: AbortSignal[] = [];
    const manager = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r0' },
      refresh: ({ signal }) => {
        signals.push(signal);
        return new Promise<TokenSet>(() => undefined);
      },
      refreshTimeoutMs: 1_000,
      lateAnswerWaitMs: 5_000,
      retry: { retries: 1, minDelayMs: 10, maxDelayMs: 10 },
    });
    const refreshing = manager.refresh().catch((error: unknown) => error);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(await refreshing).toMatchObject({ code: ErrorCode.REFRESH_TIMEOUT, transient: true });
    // The request may have reached the server: it is neither aborted nor repeated.
    expect(signals).toHaveLength(1);
    expect(signals[0]?.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(4_000);
    expect(signals[0]?.aborted).toBe(true);
    expect(signals).toHaveLength(1);
  });

  it('does not retry a non-transient error and passes it through as it is', async () => {
    const refresh = vi.fn(async () => {
      throw new TokenRelayError(ErrorCode.INVALID_TOKEN_RESPONSE, 'HTML');
    });
    const manager = createTokenManager({ tokens: { accessToken: 'v0', refreshToken: 'r0' }, refresh });
    await expect(manager.refresh()).rejects.toMatchObject({ code: ErrorCode.INVALID_TOKEN_RESPONSE });
    expect(refresh).toHaveBeenCalledTimes(1);
  });

  it('wraps a foreign error thrown by a custom handler in REFRESH_FAILED', async () => {
    const manager = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r0' },
      refresh: async () => {
        throw new Error('boom');
      },
    });
    const error = await manager.refresh().catch((e: unknown) => e);
    expect(isTokenRelayError(error)).toBe(true);
    expect(error).toMatchObject({ code: ErrorCode.REFRESH_FAILED });
    expect((error as Error).cause).toEqual(new Error('boom'));
  });
});

describe('cancellation', () => {
  it('rejects an aborted waiter at once while the refresh completes for the others', async () => {
    const { handler, calls } = controlledRefresh();
    const manager = createTokenManager({ tokens: { accessToken: 'v0', refreshToken: 'r0' }, refresh: handler });
    const controller = new AbortController();
    const other = manager.refresh({ staleAccessToken: 'v0' });
    const aborted = manager.getAccessToken({ signal: controller.signal });
    const abortedWaiter = manager.refresh({ signal: controller.signal });
    const settled = Promise.allSettled([aborted, abortedWaiter]);
    controller.abort();
    for (const result of await settled) {
      expect(result).toMatchObject({ status: 'rejected', reason: { name: 'AbortError' } });
    }
    expect(calls[0]?.context.signal.aborted).toBe(false);
    calls[0]?.resolve({ accessToken: 'v1' });
    expect((await other).accessToken).toBe('v1');
  });

  it('rejects with the abort reason when the signal is already aborted', async () => {
    const manager = createTokenManager({ tokens: { accessToken: 'v0' }, refresh: countingRefresh() });
    const reason = new Error('gone');
    await expect(manager.getAccessToken({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  });
});

describe('session replacement', () => {
  it('lets setTokens during a refresh win over the refresh result', async () => {
    const { handler, calls } = controlledRefresh();
    const manager = createTokenManager({ tokens: { accessToken: 'v0', refreshToken: 'r0' }, refresh: handler });
    const refreshing = manager.refresh();
    await flush();
    await manager.setTokens({ accessToken: 'signed-in-again', refreshToken: 'r9' });
    expect(calls[0]?.context.signal.aborted).toBe(true);
    calls[0]?.resolve({ accessToken: 'late' });
    expect((await refreshing).accessToken).toBe('signed-in-again');
    expect((await manager.getTokens())?.accessToken).toBe('signed-in-again');
  });

  it('fails with NO_TOKENS after clear() and without initial tokens', async () => {
    const manager = createTokenManager({ refresh: countingRefresh() });
    await expect(manager.getAccessToken()).rejects.toMatchObject({ code: ErrorCode.NO_TOKENS });
    await manager.setTokens({ accessToken: 'v0' });
    expect(await manager.getAccessToken()).toBe('v0');
    await manager.clear();
    await expect(manager.getAccessToken()).rejects.toMatchObject({ code: ErrorCode.NO_TOKENS });
  });
});

describe('stores', () => {
  it('prefers tokens already in the store over the initial ones and seeds an empty store', async () => {
    const holding = memoryStore(stored({ accessToken: 'stored', refreshToken: 'r-stored' }));
    const fromStore = createTokenManager({ tokens: { accessToken: 'seed' }, store: holding, refresh: countingRefresh() });
    expect(await fromStore.getAccessToken()).toBe('stored');

    const empty = memoryStore();
    const seeded = createTokenManager({ tokens: { accessToken: 'seed' }, store: empty, refresh: countingRefresh() });
    expect(await seeded.getAccessToken()).toBe('seed');
    expect(await empty.get()).toMatchObject({ tokens: { accessToken: 'seed' }, revision: 1 });
  });

  it('reports a failing store as STORE_ERROR but keeps the new tokens in memory', async () => {
    const inner = memoryStore();
    let failWrites = false;
    const store: TokenStore = {
      ...inner,
      set: (value, options) => {
        if (failWrites) throw new Error('disk full');
        return inner.set(value, options);
      },
    };
    const manager = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r0' },
      store,
      refresh: async () => ({ accessToken: 'v1', refreshToken: 'r1' }),
    });
    await manager.getAccessToken();
    failWrites = true;
    await expect(manager.refresh()).rejects.toMatchObject({ code: ErrorCode.STORE_ERROR });
    expect(await manager.getTokens()).toMatchObject({ accessToken: 'v1', refreshToken: 'r1' });
  });

  it('under a store lock, adopts tokens another process stored instead of calling the token endpoint', async () => {
    const shared = memoryStore(stored({ accessToken: 'v0', refreshToken: 'r0' }));
    const lockEvents: string[] = [];
    const store: TokenStore = {
      ...shared,
      lock: async (): Promise<TokenStoreLock> => {
        lockEvents.push('locked');
        // Meanwhile another process refreshed and wrote its result.
        await shared.set(stored({ accessToken: 'v1-elsewhere', refreshToken: 'r1' }, 2));
        return { release: () => void lockEvents.push('released') };
      },
    };
    const refresh = countingRefresh();
    const manager = createTokenManager({ store, refresh });
    expect(await manager.getAccessToken()).toBe('v0');
    const tokens = await manager.refresh({ staleAccessToken: 'v0' });
    expect(tokens).toMatchObject({ accessToken: 'v1-elsewhere', refreshToken: 'r1' });
    expect(refresh).not.toHaveBeenCalled();
    expect(lockEvents).toEqual(['locked', 'released']);
  });

  it('takes the store lock once per refresh and releases it after storing', async () => {
    const shared = memoryStore(stored({ accessToken: 'v0', refreshToken: 'r0' }));
    const events: string[] = [];
    const store: TokenStore = {
      ...shared,
      set: (value, options) => {
        events.push(`set ${value.tokens.accessToken}`);
        return shared.set(value, options);
      },
      lock: async () => {
        events.push('lock');
        return { release: () => void events.push('release') };
      },
    };
    const manager = createTokenManager({ store, refresh: countingRefresh() });
    await Promise.all([manager.refresh(), manager.refresh(), manager.refresh()]);
    expect(events).toEqual(['lock', 'set v1', 'release']);
  });

  it('stops waiting for the store lock as soon as the store announces tokens another holder obtained', async () => {
    const shared = memoryStore(stored({ accessToken: 'v0', refreshToken: 'r0' }));
    let announce: ((value: StoredTokens | undefined) => void) | undefined;
    let lockSignal: AbortSignal | undefined;
    const store: TokenStore = {
      ...shared,
      // Another process holds the lock for longer than this test lasts: only the announcement can end the wait.
      lock: ({ signal }) =>
        new Promise<TokenStoreLock>((_, reject) => {
          lockSignal = signal;
          signal.addEventListener('abort', () => reject(signal.reason), { once: true });
        }),
      subscribe: (listener) => {
        announce = listener;
        return () => undefined;
      },
    };
    const refresh = countingRefresh();
    const manager = createTokenManager({ store, refresh });
    expect(await manager.getAccessToken()).toBe('v0');
    const refreshing = manager.refresh({ staleAccessToken: 'v0' });
    await flush();
    expect(lockSignal?.aborted).toBe(false);
    announce?.(stored({ accessToken: 'v1-elsewhere', refreshToken: 'r1' }, 2));
    expect(await refreshing).toMatchObject({ accessToken: 'v1-elsewhere', refreshToken: 'r1' });
    expect(lockSignal?.aborted).toBe(true);
    expect(refresh).not.toHaveBeenCalled();
  });

  it('treats an empty store under the lock as a sign-out elsewhere and never resurrects the session', async () => {
    const shared = memoryStore(stored({ accessToken: 'v0', refreshToken: 'r0' }));
    const store: TokenStore = {
      ...shared,
      lock: async () => {
        await shared.clear(); // another process signed out meanwhile
        return { release: () => undefined };
      },
    };
    const refresh = countingRefresh();
    const manager = createTokenManager({ store, refresh });
    expect(await manager.getAccessToken()).toBe('v0');
    await expect(manager.refresh({ staleAccessToken: 'v0' })).rejects.toMatchObject({ code: ErrorCode.NO_TOKENS });
    expect(refresh).not.toHaveBeenCalled();
    expect(await shared.get()).toBeUndefined();
    await expect(manager.getAccessToken()).rejects.toMatchObject({ code: ErrorCode.NO_TOKENS });
  });

  it('seeds an empty lockable store under its lock and keeps tokens another process stored first', async () => {
    const shared = memoryStore();
    const events: string[] = [];
    const store: TokenStore = {
      ...shared,
      lock: async () => {
        events.push('lock');
        await shared.set(stored({ accessToken: 'rotated-elsewhere', refreshToken: 'r7' }, 2)); // a faster process seeded and refreshed
        return { release: () => void events.push('release') };
      },
    };
    const manager = createTokenManager({ tokens: { accessToken: 'seed', refreshToken: 'r0' }, store, refresh: countingRefresh() });
    expect(await manager.getAccessToken()).toBe('rotated-elsewhere');
    expect(await shared.get()).toMatchObject({ tokens: { refreshToken: 'r7' } });
    expect(events).toEqual(['lock', 'release']);
  });

  it('adopts tokens announced by the store subscription', async () => {
    let announce: ((value: StoredTokens | undefined) => void) | undefined;
    const store: TokenStore = {
      ...memoryStore(stored({ accessToken: 'v0', refreshToken: 'r0' })),
      subscribe: (listener) => {
        announce = listener;
        return () => undefined;
      },
    };
    const manager = createTokenManager({ store, refresh: countingRefresh() });
    expect(await manager.getAccessToken()).toBe('v0');
    announce?.(stored({ accessToken: 'v5', refreshToken: 'r5' }, 2));
    expect(await manager.getAccessToken()).toBe('v5');
  });
});

describe('options and events', () => {
  it('rejects invalid options with CONFIGURATION_ERROR', () => {
    const refresh = countingRefresh();
    expect(() => createTokenManager({} as never)).toThrow(expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR }));
    expect(() => createTokenManager({ refresh, refreshMarginMs: -1 })).toThrow(/refreshMarginMs/);
    expect(() => createTokenManager({ refresh, tokens: { accessToken: '' } })).toThrow(/accessToken/);
  });

  it('refuses a wait longer than a timer can keep (2^31 ms), which would release every request and abort its token request at once', () => {
    const refresh = countingRefresh();
    for (const name of ['refreshTimeoutMs', 'lateAnswerWaitMs'] as const) {
      expect(() => createTokenManager({ refresh, [name]: 2 ** 31 })).toThrow(expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR }));
      expect(() => createTokenManager({ refresh, [name]: 2 ** 31 - 1 })).not.toThrow();
    }
    expect(() => createTokenManager({ refresh, retry: { maxDelayMs: 2 ** 31 } })).toThrow(expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR }));
  });

  it('takes a refresh margin or a pause longer than a timer keeps: no timer waits for them (a 30-day margin for year-long tokens)', () => {
    const refresh = countingRefresh();
    expect(() => createTokenManager({ refresh, refreshMarginMs: 30 * 86_400_000 })).not.toThrow();
    expect(() => createTokenManager({ refresh, retry: { pauseAfterFailureMs: 2 ** 31, maxPauseAfterFailureMs: 2 ** 32 } })).not.toThrow();
  });

  it('emits refresh with the new tokens and stops after unsubscribe', async () => {
    const manager = createTokenManager({ tokens: { accessToken: 'v0', refreshToken: 'r0' }, refresh: countingRefresh() });
    const listener = vi.fn();
    const off = manager.on('refresh', listener);
    await manager.refresh();
    off();
    await manager.refresh();
    expect(listener).toHaveBeenCalledTimes(1);
    expect(listener).toHaveBeenCalledWith(expect.objectContaining({ accessToken: 'v1', refreshToken: 'r0' }));
  });
});
