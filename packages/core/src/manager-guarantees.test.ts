/*
 * The manager's guarantees under faults (issue 8): a refresh token is presented at most once and
 * never rolled back, sign-out and sign-in win over a refresh in flight, a proactive refresh never
 * fails a request the current token covers, and an outage of the token endpoint is not a storm.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ErrorCode, TokenRelayError } from './errors.js';
import { createTokenManager } from './manager.js';
import type { RefreshContext, RefreshHandler, StoredTokens, TokenManager, TokenSet, TokenStore, TokenStoreLock } from './types.js';

afterEach(() => {
  vi.useRealTimers();
});

const flush = async () => {
  for (let round = 0; round < 5; round++) await Promise.resolve();
  await new Promise((resolve) => setImmediate(resolve));
};

/** A token endpoint the test answers by hand; it records every refresh token presented to it. */
function scriptedEndpoint() {
  const calls: { context: RefreshContext; resolve: (tokens: TokenSet) => void; reject: (error: unknown) => void }[] = [];
  const presented: (string | undefined)[] = [];
  const handler: RefreshHandler = (context) =>
    new Promise<TokenSet>((resolve, reject) => {
      presented.push(context.tokens?.refreshToken);
      calls.push({ context, resolve, reject });
    });
  return { handler, calls, presented };
}

/**
 * One store shared by several managers, as processes share a file or a Redis key: compare-and-set
 * writes, an exclusive lock whose loss the test can trigger, and announcements to every manager.
 */
function sharedStore(initial?: StoredTokens) {
  let value = initial;
  let holder: { lost: AbortController } | undefined;
  const queue: (() => void)[] = [];
  const listeners = new Set<(value: StoredTokens | undefined) => void>();
  const announce = () => {
    for (const listener of listeners) listener(value);
  };
  const shared = {
    failNextWrites: 0,
    writes: [] as StoredTokens[],
    get value() {
      return value;
    },
    /** The lock holder's lease runs out (a GC pause, SIGSTOP): its lock signal aborts and the lock is free. */
    loseLock() {
      const lost = holder;
      holder = undefined;
      lost?.lost.abort(new Error('lease expired'));
      queue.shift()?.();
    },
    /** Another process signs out (clear is unconditional). */
    signOutElsewhere() {
      value = undefined;
      announce();
    },
    /** Another process signs in (an unconditional write, one revision higher). */
    signInElsewhere(tokens: TokenSet) {
      value = { tokens, revision: (value?.revision ?? 0) + 1 };
      announce();
    },
    store(): TokenStore {
      return {
        get: () => value,
        set: (next, options) => {
          if (shared.failNextWrites > 0) {
            shared.failNextWrites--;
            throw new Error('disk full');
          }
          if (options?.expectedRevision !== undefined && options.expectedRevision !== (value?.revision ?? 0)) return false;
          value = next;
          shared.writes.push(next);
          announce();
          return true;
        },
        clear: () => {
          value = undefined;
          announce();
        },
        lock: ({ signal }) =>
          new Promise<TokenStoreLock>((resolve, reject) => {
            const grant = () => {
              const lost = new AbortController();
              holder = { lost };
              resolve({
                signal: lost.signal,
                release: () => {
                  if (holder?.lost !== lost) return;
                  holder = undefined;
                  queue.shift()?.();
                },
              });
            };
            if (!holder) {
              grant();
              return;
            }
            queue.push(grant);
            signal.addEventListener('abort', () => {
              queue.splice(queue.indexOf(grant), 1);
              reject(signal.reason);
            });
          }),
        subscribe: (listener) => {
          listeners.add(listener);
          return () => listeners.delete(listener);
        },
      };
    },
  };
  return shared;
}

const session = (n: number, expiresAt?: number): TokenSet => ({
  accessToken: `at.${n}`,
  refreshToken: `rt.${n}`,
  ...(expiresAt === undefined ? {} : { expiresAt }),
});

/** One holder of a shared store that holds session 0 (revision 1); its token calls are answered by hand. */
function holderOfSession0() {
  const shared = sharedStore({ tokens: session(0), revision: 1 });
  const endpoint = scriptedEndpoint();
  const manager = createTokenManager({ store: shared.store(), refresh: endpoint.handler });
  return { shared, endpoint, manager };
}

describe('a refresh token is presented at most once', () => {
  it('never repeats a token request that outlived the refresh timeout: later refreshes join it and adopt its late answer', async () => {
    vi.useFakeTimers({ now: 0 });
    const endpoint = scriptedEndpoint();
    const manager = createTokenManager({ tokens: session(0), refresh: endpoint.handler, refreshTimeoutMs: 500 });

    const first = manager.refresh({ staleAccessToken: 'at.0' }).catch((error: unknown) => error);
    await vi.advanceTimersByTimeAsync(500);
    expect(await first).toMatchObject({ code: ErrorCode.REFRESH_TIMEOUT });

    // The request is still open at the server; the next 401 joins it instead of presenting rt.0 again.
    const second = manager.refresh({ staleAccessToken: 'at.0' });
    await vi.advanceTimersByTimeAsync(400);
    endpoint.calls[0]?.resolve(session(2));

    expect(await second).toMatchObject({ accessToken: 'at.2', refreshToken: 'rt.2' });
    expect(endpoint.presented).toEqual(['rt.0']);
    expect(await manager.getTokens()).toMatchObject({ refreshToken: 'rt.2' });
  });

  it('adopts a late answer that comes when nobody waits any more, and refreshes from it next time', async () => {
    vi.useFakeTimers({ now: 0 });
    const endpoint = scriptedEndpoint();
    const refreshes: TokenSet[] = [];
    const manager = createTokenManager({ tokens: session(0), refresh: endpoint.handler, refreshTimeoutMs: 500 });
    manager.on('refresh', (tokens) => refreshes.push(tokens));

    const first = manager.refresh({ staleAccessToken: 'at.0' }).catch((error: unknown) => error);
    await vi.advanceTimersByTimeAsync(1_500);
    expect(await first).toMatchObject({ code: ErrorCode.REFRESH_TIMEOUT });
    endpoint.calls[0]?.resolve(session(2));
    await vi.advanceTimersByTimeAsync(1);

    expect(refreshes).toMatchObject([{ accessToken: 'at.2' }]);
    expect(await manager.getAccessToken()).toBe('at.2');
    const next = manager.refresh({ staleAccessToken: 'at.2' });
    await vi.advanceTimersByTimeAsync(1);
    endpoint.calls[1]?.resolve(session(3));
    await next;
    expect(endpoint.presented).toEqual(['rt.0', 'rt.2']);
  });

  it('does not repeat a token request whose connection broke after it was sent (inDoubt), even when the policy retries transient errors', async () => {
    let calls = 0;
    const manager = createTokenManager({
      tokens: session(0),
      refresh: async () => {
        calls++;
        throw new TokenRelayError(ErrorCode.NETWORK_ERROR, 'socket hang up', { transient: true, inDoubt: true });
      },
      retry: { retries: 3, minDelayMs: 0, maxDelayMs: 0, shouldRetry: () => true },
    });
    await expect(manager.refresh({ staleAccessToken: 'at.0' })).rejects.toMatchObject({ code: ErrorCode.REFRESH_FAILED });
    expect(calls).toBe(1);
  });

  it('retries a failure that certainly did not reach the server (connection refused, a complete 503)', async () => {
    let calls = 0;
    const manager = createTokenManager({
      tokens: session(0),
      refresh: async () => {
        calls++;
        if (calls < 3) throw new TokenRelayError(ErrorCode.NETWORK_ERROR, 'ECONNREFUSED', { transient: true });
        return session(1);
      },
      retry: { retries: 2, minDelayMs: 0, maxDelayMs: 0 },
    });
    expect((await manager.refresh({ staleAccessToken: 'at.0' })).accessToken).toBe('at.1');
    expect(calls).toBe(3);
  });

  it('puts its newest tokens into a store that missed its write before it refreshes again, instead of presenting the store’s spent refresh token', async () => {
    const { shared, endpoint, manager } = holderOfSession0();
    expect(await manager.getAccessToken()).toBe('at.0');

    shared.failNextWrites = 1;
    const first = manager.refresh({ staleAccessToken: 'at.0' });
    await flush();
    endpoint.calls[0]?.resolve(session(2));
    await expect(first).rejects.toMatchObject({ code: ErrorCode.STORE_ERROR });
    expect(shared.value?.tokens.refreshToken).toBe('rt.0');
    expect((await manager.getTokens())?.refreshToken).toBe('rt.2');

    const second = manager.refresh({ staleAccessToken: 'at.2' });
    await flush();
    expect(shared.value).toMatchObject({ tokens: { refreshToken: 'rt.2' }, revision: 2 });
    endpoint.calls[1]?.resolve(session(3));
    await second;

    expect(endpoint.presented).toEqual(['rt.0', 'rt.2']);
    expect(shared.value).toMatchObject({ tokens: { refreshToken: 'rt.3' }, revision: 3 });
  });

  it('after losing the store lock mid-refresh, writes and announces nothing, and stores its tokens first under the next lock', async () => {
    const { shared, endpoint, manager } = holderOfSession0();
    const refreshes: TokenSet[] = [];
    manager.on('refresh', (tokens) => refreshes.push(tokens));
    expect(await manager.getAccessToken()).toBe('at.0');

    const refreshing = manager.refresh({ staleAccessToken: 'at.0' });
    await flush();
    shared.loseLock(); // frozen past its lease while the token request was out
    endpoint.calls[0]?.resolve(session(2));
    expect((await refreshing).accessToken).toBe('at.2');
    expect(shared.writes).toEqual([]);
    expect(refreshes).toEqual([]);

    const next = manager.refresh({ staleAccessToken: 'at.2' });
    await flush();
    expect(shared.value?.tokens.refreshToken).toBe('rt.2');
    endpoint.calls[1]?.resolve(session(3));
    await next;
    expect(endpoint.presented).toEqual(['rt.0', 'rt.2']);
  });

  it.each([
    ['an access token with CR LF', { accessToken: 'at\r\nx-evil: 1', refreshToken: 'rt' }],
    ['an access token outside Latin-1', { accessToken: 'at-ü-€', refreshToken: 'rt' }],
    ['an access token with a NUL', { accessToken: 'at\u0000', refreshToken: 'rt' }],
    ['expiresAt NaN', { accessToken: 'at', expiresAt: Number.NaN }],
    ['expiresAt Infinity', { accessToken: 'at', expiresAt: Number.POSITIVE_INFINITY }],
  ])('refuses a handler result with %s before storing it, keeping the stored tokens', async (_, result) => {
    const shared = sharedStore({ tokens: session(0), revision: 1 });
    let calls = 0;
    const manager = createTokenManager({
      store: shared.store(),
      refresh: async () => {
        calls++;
        return result as TokenSet;
      },
    });
    await expect(manager.refresh({ staleAccessToken: 'at.0' })).rejects.toMatchObject({
      code: ErrorCode.INVALID_TOKEN_RESPONSE,
    });
    expect(shared.value).toEqual({ tokens: session(0), revision: 1 });
    expect(await manager.getTokens()).toEqual(session(0));
    expect(calls).toBe(1);
  });

  it('refuses tokens it is given that no HTTP client could send, or an expiresAt in seconds, with CONFIGURATION_ERROR', async () => {
    const refresh = async () => session(1);
    expect(() => createTokenManager({ refresh, tokens: { accessToken: 'a\nb' } })).toThrow(
      expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR }),
    );
    const inSeconds = Math.floor(Date.now() / 1000) + 3600;
    expect(() => createTokenManager({ refresh, tokens: { accessToken: 'a', expiresAt: inSeconds } })).toThrow(/seconds/);
    const manager = createTokenManager({ refresh });
    await expect(manager.setTokens({ accessToken: 'a', expiresAt: inSeconds })).rejects.toMatchObject({
      code: ErrorCode.CONFIGURATION_ERROR,
    });
    await expect(manager.setTokens({ accessToken: 'tab\there' })).rejects.toMatchObject({ code: ErrorCode.CONFIGURATION_ERROR });
  });
});

describe('sign-out and a new sign-in win over a refresh in flight', () => {
  it('setTokens during a refresh whose handler ignores its signal: getAccessToken returns the new session at once, and the store ends with it', async () => {
    const { shared, endpoint, manager } = holderOfSession0();
    await manager.getTokens();
    const refreshing = manager.refresh({ staleAccessToken: 'at.0' });
    await flush();

    await manager.setTokens(session(9));
    expect(await manager.getAccessToken()).toBe('at.9');
    expect(await refreshing).toMatchObject({ accessToken: 'at.9' });
    endpoint.calls[0]?.resolve(session(1)); // the old refresh answers late
    await flush();

    expect(shared.value?.tokens).toEqual(session(9));
    expect(await manager.getAccessToken()).toBe('at.9');
  });

  it('clear() during a refresh whose store write is slow: once clear() resolves the store is empty and stays empty', async () => {
    const shared = sharedStore({ tokens: session(0), revision: 1 });
    const inner = shared.store();
    let finishWrite: (() => void) | undefined;
    const slow: TokenStore = {
      ...inner,
      set: async (value, options) => {
        await new Promise<void>((resolve) => {
          finishWrite = resolve;
        });
        return inner.set(value, options);
      },
    };
    const manager = createTokenManager({ store: slow, refresh: async () => session(1) });
    await manager.getTokens();
    const refreshing = manager.refresh({ staleAccessToken: 'at.0' }).catch((error: unknown) => error);
    await flush();
    expect(finishWrite).toBeDefined();

    const clearing = manager.clear();
    await expect(manager.getAccessToken()).rejects.toMatchObject({ code: ErrorCode.NO_TOKENS });
    finishWrite?.();
    await clearing;
    await refreshing;
    await flush();

    expect(shared.value).toBeUndefined();
    await expect(manager.getAccessToken()).rejects.toMatchObject({ code: ErrorCode.NO_TOKENS });
  });

  it('never writes or announces a refresh whose session another process signed out while its token call was in flight', async () => {
    const { shared, endpoint, manager } = holderOfSession0();
    const refreshes: TokenSet[] = [];
    manager.on('refresh', (tokens) => refreshes.push(tokens));
    await manager.getTokens();

    const refreshing = manager.refresh({ staleAccessToken: 'at.0' });
    await flush();
    shared.signOutElsewhere();
    endpoint.calls[0]?.resolve(session(1));

    await expect(refreshing).rejects.toMatchObject({ code: ErrorCode.NO_TOKENS });
    expect(shared.value).toBeUndefined();
    expect(refreshes).toEqual([]);
    await expect(manager.getAccessToken()).rejects.toMatchObject({ code: ErrorCode.NO_TOKENS });
  });

  it('keeps the session another process signed in while its own token call for the old session was in flight', async () => {
    const { shared, endpoint, manager } = holderOfSession0();
    await manager.getTokens();

    const refreshing = manager.refresh({ staleAccessToken: 'at.0' });
    await flush();
    shared.signInElsewhere(session(7));
    endpoint.calls[0]?.resolve(session(1));

    expect(await refreshing).toMatchObject({ accessToken: 'at.7' });
    expect(shared.value?.tokens).toEqual(session(7));
    expect(await manager.getAccessToken()).toBe('at.7');
  });
  it.each([
    // Session 0 has expired: a request waits for its refresh.
    ['a waiting request', 9_000, (manager: TokenManager) => manager.getAccessToken()],
    // A request's 401 refreshes session 0.
    ['refresh()', undefined, (manager: TokenManager) => manager.refresh({ staleAccessToken: 'at.0' }).then((tokens) => tokens.accessToken)],
  ])('never hands %s the expired token of a session signed in elsewhere during its refresh: it refreshes that session first', async (_, expiresAt, ask) => {
    vi.useFakeTimers({ now: 10_000 });
    const shared = sharedStore({ tokens: session(0, expiresAt), revision: 1 });
    const endpoint = scriptedEndpoint();
    const manager = createTokenManager({ store: shared.store(), refresh: endpoint.handler });
    await manager.getTokens();
    const token = ask(manager);
    await vi.advanceTimersByTimeAsync(0);
    expect(endpoint.presented).toEqual(['rt.0']);

    // Another process signs in meanwhile with a 1 s token, which expires before session 0's refresh token is refused.
    shared.signInElsewhere(session(1, 11_000));
    await vi.advanceTimersByTimeAsync(1_000);
    endpoint.calls[0]?.reject(new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'invalid_grant'));
    await vi.advanceTimersByTimeAsync(0);

    expect(endpoint.presented).toEqual(['rt.0', 'rt.1']);
    endpoint.calls[1]?.resolve(session(2, 71_000));
    expect(await token).toBe('at.2');
  });
});


describe('a refresh that ends with tokens that have already expired', () => {
  it.each([
    ['getAccessToken', (manager: ReturnType<typeof createTokenManager>) => manager.getAccessToken()],
    ['refresh', (manager: ReturnType<typeof createTokenManager>) => manager.refresh({ staleAccessToken: 'at.0' }).then((tokens) => tokens.accessToken)],
  ])('looks once more, never again, for ten concurrent %s calls: two token calls, and the second answer is what they get', async (_, ask) => {
    vi.useFakeTimers({ now: 10_000 });
    let calls = 0;
    // Every answer has expired before it arrives (a token endpoint whose clock is far behind ours).
    const refresh: RefreshHandler = async () => {
      calls++;
      return { accessToken: `at.${calls}`, refreshToken: `rt.${calls}`, expiresAt: 5_000 };
    };
    const manager = createTokenManager({ tokens: { accessToken: 'at.0', refreshToken: 'rt.0', expiresAt: 9_000 }, refresh });
    const answers = await Promise.all(Array.from({ length: 10 }, () => ask(manager)));
    expect(calls).toBe(2);
    expect(new Set(answers)).toEqual(new Set(['at.2']));
  });
});

describe('a dead session is shared through the store', () => {
  it('tells every holder of the store, so no other process presents the dead refresh token again', async () => {
    const shared = sharedStore({ tokens: session(0), revision: 1 });
    const endpointA = scriptedEndpoint();
    const endpointB = scriptedEndpoint();
    const a = createTokenManager({ store: shared.store(), refresh: endpointA.handler });
    const b = createTokenManager({ store: shared.store(), refresh: endpointB.handler });
    const expiredInB = vi.fn();
    b.on('sessionExpired', expiredInB);
    await Promise.all([a.getTokens(), b.getTokens()]);

    const refreshing = a.refresh({ staleAccessToken: 'at.0' });
    await flush();
    endpointA.calls[0]?.reject(new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'invalid_grant', { oauthError: 'invalid_grant' }));
    await expect(refreshing).rejects.toMatchObject({ code: ErrorCode.SESSION_EXPIRED });

    await expect(b.refresh({ staleAccessToken: 'at.0' })).rejects.toMatchObject({ code: ErrorCode.SESSION_EXPIRED });
    await expect(b.getAccessToken()).rejects.toMatchObject({ code: ErrorCode.SESSION_EXPIRED });
    expect(endpointB.calls).toHaveLength(0);
    expect(expiredInB).toHaveBeenCalledTimes(1);
    expect(shared.value).toMatchObject({ sessionExpired: true });

    // A sign-in anywhere ends it for everyone, and signed-out stays distinct from expired.
    await a.setTokens(session(5));
    expect(await b.getAccessToken()).toBe('at.5');
    await a.clear();
    await expect(b.getAccessToken()).rejects.toMatchObject({ code: ErrorCode.NO_TOKENS });
  });
});

describe('a proactive refresh never fails a request the current token covers', () => {
  it('gives every concurrent caller the still-valid token when the token endpoint answers 503', async () => {
    vi.useFakeTimers({ now: 0 });
    let calls = 0;
    const manager = createTokenManager({
      tokens: { ...session(0), expiresAt: 100_000 },
      refresh: async () => {
        calls++;
        throw new TokenRelayError(ErrorCode.TOKEN_ENDPOINT_ERROR, 'HTTP 503', { status: 503, transient: true });
      },
      retry: false,
    });
    vi.setSystemTime(90_000); // inside the margin, still valid
    const tokens = await Promise.all(Array.from({ length: 10 }, () => manager.getAccessToken()));
    expect(tokens).toEqual(Array.from({ length: 10 }, () => 'at.0'));
    expect(calls).toBe(1);
  });

  it('does not fall back to a token the server refused', async () => {
    vi.useFakeTimers({ now: 0 });
    const manager = createTokenManager({
      tokens: { ...session(0), expiresAt: 100_000 },
      refresh: async () => {
        throw new TokenRelayError(ErrorCode.TOKEN_ENDPOINT_ERROR, 'HTTP 503', { status: 503, transient: true });
      },
      retry: false,
    });
    const waiting = manager.getAccessToken();
    const refreshing = manager.refresh({ staleAccessToken: 'at.0' });
    await expect(refreshing).rejects.toMatchObject({ code: ErrorCode.REFRESH_FAILED });
    // getAccessToken came first and the token was fresh then; after the 401 it is refused.
    expect(await waiting).toBe('at.0');
    await expect(manager.getAccessToken()).rejects.toMatchObject({ code: ErrorCode.REFRESH_FAILED });
  });
});

describe('an outage is not a storm', () => {
  it('pauses after a failed refresh: requests fail fast with the last error, then one probe, longer pauses, and recovery', async () => {
    vi.useFakeTimers({ now: 0 });
    let calls = 0;
    let down = true;
    const manager = createTokenManager({
      tokens: session(0),
      refresh: async () => {
        calls++;
        if (down) throw new TokenRelayError(ErrorCode.TOKEN_ENDPOINT_ERROR, 'HTTP 503', { status: 503, transient: true });
        return session(calls);
      },
      retry: { retries: 2, minDelayMs: 10, maxDelayMs: 10, pauseAfterFailureMs: 400, maxPauseAfterFailureMs: 1_000 },
    });
    const first = manager.refresh({ staleAccessToken: 'at.0' }).catch((error: unknown) => error);
    await vi.advanceTimersByTimeAsync(100);
    expect(await first).toMatchObject({ code: ErrorCode.REFRESH_FAILED, transient: true });
    expect(calls).toBe(3); // the first refresh retries within itself

    // Within the pause (≥ 300 ms): no token call, however many requests fail.
    for (let i = 0; i < 20; i++) {
      await expect(manager.refresh({ staleAccessToken: 'at.0' })).rejects.toMatchObject({ code: ErrorCode.REFRESH_FAILED });
    }
    expect(calls).toBe(3);

    await vi.advanceTimersByTimeAsync(400);
    await expect(manager.refresh({ staleAccessToken: 'at.0' })).rejects.toBeDefined();
    expect(calls).toBe(4); // one probe, no retries

    down = false;
    await vi.advanceTimersByTimeAsync(1_000);
    expect((await manager.refresh({ staleAccessToken: 'at.0' })).accessToken).toBe('at.5');
    expect(calls).toBe(5);
  });

  it('makes no token call per request after a permanent failure such as invalid_client', async () => {
    vi.useFakeTimers({ now: 0 });
    let calls = 0;
    const manager = createTokenManager({
      tokens: session(0),
      refresh: async () => {
        calls++;
        throw new TokenRelayError(ErrorCode.TOKEN_ENDPOINT_ERROR, 'invalid_client', { status: 401, oauthError: 'invalid_client' });
      },
    });
    for (let i = 0; i < 50; i++) {
      await expect(manager.refresh({ staleAccessToken: 'at.0' })).rejects.toMatchObject({ oauthError: 'invalid_client' });
    }
    expect(calls).toBe(1);
  });
});

describe('grants that need no refresh token', () => {
  it('acquires the first tokens on the first request, once for many concurrent ones', async () => {
    const endpoint = scriptedEndpoint();
    const handler = Object.assign(endpoint.handler, { needsRefreshToken: false as const });
    const manager = createTokenManager({ refresh: handler });
    expect(await manager.getTokens()).toBeUndefined();
    const requests = Array.from({ length: 5 }, () => manager.getAccessToken());
    await flush();
    expect(endpoint.calls).toHaveLength(1);
    expect(endpoint.calls[0]?.context.tokens).toBeUndefined();
    endpoint.calls[0]?.resolve({ accessToken: 'machine-1' });
    expect(await Promise.all(requests)).toEqual(Array.from({ length: 5 }, () => 'machine-1'));
  });

  /** A handler that acquires (needsRefreshToken: false) whose first token request breaks after it was sent. */
  function brokenOnce(tokens: TokenSet) {
    const presented: (string | undefined)[] = [];
    const refresh = Object.assign(
      async ({ tokens: from }: RefreshContext) => {
        presented.push(from?.refreshToken);
        if (presented.length === 1) throw new TokenRelayError(ErrorCode.NETWORK_ERROR, 'socket hang up', { transient: true, inDoubt: true });
        return { accessToken: 'machine-2' };
      },
      { needsRefreshToken: false as const },
    );
    const manager = createTokenManager({ tokens, refresh, retry: { retries: 2, minDelayMs: 0, maxDelayMs: 0 } });
    return { manager, presented };
  }

  it('asks again after a token request that may have reached the server unanswered: it spends nothing', async () => {
    const { manager, presented } = brokenOnce({ accessToken: 'machine-1' });

    expect((await manager.refresh({ staleAccessToken: 'machine-1' })).accessToken).toBe('machine-2');
    expect(presented).toEqual([undefined, undefined]);
  });

  it('never asks again when the tokens it is handed hold a refresh token, which a handler of its own may present', async () => {
    const { manager, presented } = brokenOnce({ accessToken: 'at.1', refreshToken: 'rt.1' });

    await expect(manager.refresh({ staleAccessToken: 'at.1' })).rejects.toMatchObject({ code: ErrorCode.REFRESH_FAILED });
    expect(presented).toEqual(['rt.1']);
  });
});
