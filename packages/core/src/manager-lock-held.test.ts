/*
 * A lock holder frozen past its lease (SIGSTOP, a closed laptop lid, a long GC pause) resumes before
 * any timer of its store runs, so the lock's signal does not know yet that another process took the
 * lock over. The manager asks the store (`assertHeld`) right before presenting the refresh token.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ErrorCode, TokenRelayError } from './errors.js';
import { createTokenManager } from './manager.js';
import type { RefreshHandler, StoredTokens, TokenSet, TokenStore, TokenStoreLock } from './types.js';

afterEach(() => {
  vi.useRealTimers();
});

const session = (n: number, expiresAt: number): TokenSet => ({ accessToken: `at.${n}`, refreshToken: `rt.${n}`, expiresAt });

/**
 * A shared store whose lock has an owner, and whose locks' signals never abort (their timers have not
 * run yet). `takeOver()` is another process taking the lock after our lease and refreshing.
 */
function sharedStore() {
  const state: { value: StoredTokens | undefined; owner: string | undefined; checks: number } = {
    value: { tokens: session(0, Date.now() + 1_000), revision: 1 },
    owner: undefined,
    checks: 0,
  };
  let handles = 0;
  const takeOver = () => {
    state.owner = 'another process';
    state.value = { tokens: session(1, Date.now() + 3_600_000), revision: 2 };
  };
  const store: TokenStore = {
    get: () => state.value,
    set: (value, options) => {
      if (options?.expectedRevision !== undefined && options.expectedRevision !== (state.value?.revision ?? 0)) return false;
      state.value = value;
      return true;
    },
    clear: () => {
      state.value = undefined;
    },
    lock: async (): Promise<TokenStoreLock> => {
      const owner = `handle ${++handles}`;
      state.owner = owner;
      return {
        signal: new AbortController().signal,
        async assertHeld() {
          state.checks++;
          if (state.owner !== owner) throw new Error('the lock is held by another process');
        },
        release: () => {
          if (state.owner === owner) state.owner = undefined;
        },
      };
    },
  };
  return { state, store, takeOver };
}

/** A rotating token endpoint that records the refresh tokens presented to it. */
function rotatingEndpoint(fail?: () => Error | undefined) {
  const presented: (string | undefined)[] = [];
  const handler: RefreshHandler = async ({ tokens }) => {
    presented.push(tokens?.refreshToken);
    const failure = fail?.();
    if (failure) throw failure;
    return session(100 + presented.length, Date.now() + 3_600_000);
  };
  return { handler, presented };
}

describe('a refresh under a lock the store no longer gives us', () => {
  it('makes no token call, fails with the transient STORE_ERROR, and the next refresh takes the tokens the new holder stored', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { store, state, takeOver } = sharedStore();
    const { handler, presented } = rotatingEndpoint();
    const manager = createTokenManager({ store, refresh: handler });
    await manager.getTokens();
    // Frozen right after reading the store under the lock; meanwhile the lease ran out and another
    // process took the lock over and spent rt.0.
    const get = store.get.bind(store);
    store.get = () => {
      const value = get();
      if (state.owner?.startsWith('handle')) takeOver();
      return value;
    };

    const failed = manager.refresh().catch((error: unknown) => error);
    await vi.advanceTimersByTimeAsync(0);
    const error = await failed;

    expect(error).toBeInstanceOf(TokenRelayError);
    expect(error).toMatchObject({ code: ErrorCode.STORE_ERROR, transient: true });
    expect(presented).toEqual([]);

    store.get = get;
    await vi.advanceTimersByTimeAsync(2_000);
    await expect(manager.refresh()).resolves.toMatchObject({ refreshToken: 'rt.1' });
    expect(presented).toEqual([]);
    expect(state.value?.tokens.refreshToken).toBe('rt.1');
  });

  it('asks the store again before a retry: a lock lost during the back-off means no second token call', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { store, state, takeOver } = sharedStore();
    const { handler, presented } = rotatingEndpoint(() => {
      // The first attempt fails with a retryable error; the lease runs out during the back-off.
      takeOver();
      return new TokenRelayError(ErrorCode.REFRESH_FAILED, 'HTTP 503', { transient: true, status: 503 });
    });
    const manager = createTokenManager({ store, refresh: handler, retry: { retries: 2, minDelayMs: 100 } });
    await manager.getTokens();

    const failed = manager.refresh().catch((error: unknown) => error);
    await vi.advanceTimersByTimeAsync(1_000);

    expect(await failed).toMatchObject({ code: ErrorCode.STORE_ERROR, transient: true });
    expect(presented).toEqual(['rt.0']);
    expect(state.checks).toBe(2);
  });

  it('makes no token call when the store cannot say whether the lock is still held', async () => {
    const { store } = sharedStore();
    const lock = store.lock?.bind(store) as NonNullable<TokenStore['lock']>;
    store.lock = async (options) => ({
      ...(await lock(options)),
      assertHeld: () => Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:6379')),
    });
    const { handler, presented } = rotatingEndpoint();
    const manager = createTokenManager({ store, refresh: handler });

    await expect(manager.refresh()).rejects.toMatchObject({ code: ErrorCode.STORE_ERROR, transient: true });
    expect(presented).toEqual([]);
  });

  it('gives up on a lock check that never answers at refreshTimeoutMs, without a token call', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { store } = sharedStore();
    const lock = store.lock?.bind(store) as NonNullable<TokenStore['lock']>;
    store.lock = async (options) => ({ ...(await lock(options)), assertHeld: () => new Promise<void>(() => undefined) });
    const { handler, presented } = rotatingEndpoint();
    const manager = createTokenManager({ store, refresh: handler, refreshTimeoutMs: 5_000 });
    const refreshErrors: string[] = [];
    manager.on('refreshError', (error) => refreshErrors.push(error.code));

    const failed = manager.refresh().catch((error: unknown) => error);
    await vi.advanceTimersByTimeAsync(5_000);

    // The waiter is released by the refresh's own bound; the refresh ends with the failed check.
    expect(await failed).toMatchObject({ code: ErrorCode.REFRESH_TIMEOUT });
    expect(refreshErrors).toEqual([ErrorCode.REFRESH_TIMEOUT, ErrorCode.STORE_ERROR]);
    expect(presented).toEqual([]);
  });

  it('presents the refresh token once the store confirms the lock, and asks once per attempt', async () => {
    const { store, state } = sharedStore();
    const { handler, presented } = rotatingEndpoint();
    const manager = createTokenManager({ store, refresh: handler });

    await expect(manager.refresh()).resolves.toMatchObject({ refreshToken: 'rt.101' });
    expect(presented).toEqual(['rt.0']);
    expect(state.checks).toBe(1);
  });
});
