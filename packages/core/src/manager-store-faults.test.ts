/*
 * The manager under a store that hangs: a get, set, clear, lock or release that never settles (a
 * stalled network file system, a Redis that never answers, a frozen lock holder) must never hang a
 * request, a sign-in or a sign-out, and must never make a refresh token be presented twice.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ErrorCode } from './errors.js';
import { createTokenManager } from './manager.js';
import type { RefreshHandler, StoredTokens, TokenSet, TokenStore, TokenStoreLock } from './types.js';

afterEach(() => {
  vi.useRealTimers();
});

/** A store call that never settles, whatever signal it was given. */
const hang = <T>() => new Promise<T>(() => undefined);

const session = (n: number, expiresAt?: number): TokenSet => ({
  accessToken: `at.${n}`,
  refreshToken: `rt.${n}`,
  ...(expiresAt === undefined ? {} : { expiresAt }),
});

/** A store with a lock, holding session 0 that expires in 1 s; `faults` replaces its calls. */
function storeOfSession0(faults: Partial<TokenStore> = {}) {
  const held: { value: StoredTokens | undefined } = { value: { tokens: session(0, Date.now() + 1_000), revision: 1 } };
  const store: TokenStore = {
    get: () => held.value,
    set: (value, options) => {
      if (options?.expectedRevision !== undefined && options.expectedRevision !== (held.value?.revision ?? 0)) return false;
      held.value = value;
      return true;
    },
    clear: () => {
      held.value = undefined;
    },
    lock: async () => ({ release: () => undefined }),
    ...faults,
  };
  return { held, store };
}

/** A rotating token endpoint that answers at once and records what it was given. */
function rotatingEndpoint() {
  const presented: (string | undefined)[] = [];
  const handler: RefreshHandler = async ({ tokens }) => {
    presented.push(tokens?.refreshToken);
    return session(presented.length, Date.now() + 60_000);
  };
  return { handler, presented };
}

/** Follows `promise` from now on; `outcome()` says how it ended so far: its value, its error's code, or 'pending'. */
function follow(promise: Promise<unknown>): { outcome: () => Promise<unknown> } {
  let outcome: unknown = 'pending';
  promise.then(
    (value) => (outcome = { value }),
    (error: { code?: string }) => (outcome = { code: error.code }),
  );
  return {
    outcome: async () => {
      await vi.advanceTimersByTimeAsync(0);
      return outcome;
    },
  };
}

describe('a hung store never hangs a request', () => {
  it('releases a request waiting for the store lock a frozen holder keeps, at refreshTimeoutMs, with REFRESH_TIMEOUT', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { store } = storeOfSession0({ lock: () => hang() });
    const manager = createTokenManager({ store, refresh: rotatingEndpoint().handler, refreshTimeoutMs: 5_000 });
    await manager.getTokens();
    await vi.advanceTimersByTimeAsync(2_000);

    const request = follow(manager.getAccessToken());
    await vi.advanceTimersByTimeAsync(5_000);

    expect(await request.outcome()).toEqual({ code: ErrorCode.REFRESH_TIMEOUT });
  });

  it('gives up a lock that never comes after lateAnswerWaitMs, and gives back one the store grants after that', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const late: { grant?: (lock: TokenStoreLock) => void } = {};
    let released = 0;
    const { store } = storeOfSession0({
      // A store that ignores the abort signal and grants the lock much later.
      lock: () => new Promise<TokenStoreLock>((resolve) => (late.grant = resolve)),
    });
    const endpoint = rotatingEndpoint();
    const manager = createTokenManager({ store, refresh: endpoint.handler, refreshTimeoutMs: 5_000, lateAnswerWaitMs: 20_000 });
    await manager.getTokens();
    await vi.advanceTimersByTimeAsync(2_000);
    const errors: string[] = [];
    manager.on('refreshError', (error) => errors.push(error.code));

    manager.getAccessToken().catch(() => undefined);
    await vi.advanceTimersByTimeAsync(20_000);
    late.grant?.({ release: () => void released++ });
    await vi.advanceTimersByTimeAsync(0);

    expect(errors).toEqual([ErrorCode.REFRESH_TIMEOUT, ErrorCode.STORE_ERROR]);
    expect(released).toBe(1);
    expect(endpoint.presented).toEqual([]);
  });

  it('releases the waiters of a refresh whose lock release hangs, and refreshes again afterwards', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { store } = storeOfSession0({ lock: async () => ({ release: () => hang() }) });
    const endpoint = rotatingEndpoint();
    const manager = createTokenManager({ store, refresh: endpoint.handler, refreshTimeoutMs: 5_000 });
    await manager.getTokens();
    await vi.advanceTimersByTimeAsync(2_000);

    const first = follow(manager.refresh({ staleAccessToken: 'at.0' }));
    await vi.advanceTimersByTimeAsync(5_000);
    expect(await first.outcome()).toEqual({ value: session(1, Date.now() - 5_000 + 60_000) });

    const second = follow(manager.refresh({ staleAccessToken: 'at.1' }));
    await vi.advanceTimersByTimeAsync(5_000);
    expect(await second.outcome()).toEqual({ value: expect.objectContaining({ accessToken: 'at.2' }) });
    expect(endpoint.presented).toEqual(['rt.0', 'rt.1']);
  });

  it('rejects a request with STORE_ERROR when the store read at load never answers', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { store } = storeOfSession0({ get: () => hang() });
    const manager = createTokenManager({ store, refresh: rotatingEndpoint().handler, refreshTimeoutMs: 5_000 });

    const request = follow(manager.getAccessToken());
    await vi.advanceTimersByTimeAsync(5_000);

    expect(await request.outcome()).toEqual({ code: ErrorCode.STORE_ERROR });
  });

  it('keeps the rotated tokens of a refresh whose store write hangs, and presents only the new refresh token next', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const writes: { hang: boolean } = { hang: true };
    const stored = storeOfSession0();
    const set = stored.store.set;
    stored.store.set = (value, options) => (writes.hang ? hang() : set(value, options));
    const endpoint = rotatingEndpoint();
    const manager = createTokenManager({ store: stored.store, refresh: endpoint.handler, refreshTimeoutMs: 5_000 });
    await manager.getTokens();
    await vi.advanceTimersByTimeAsync(2_000);

    const first = follow(manager.refresh({ staleAccessToken: 'at.0' }));
    await vi.advanceTimersByTimeAsync(5_000);
    expect(await first.outcome()).toEqual({ code: ErrorCode.STORE_ERROR });
    expect((await manager.getTokens())?.refreshToken).toBe('rt.1');

    writes.hang = false;
    const second = follow(manager.refresh({ staleAccessToken: 'at.1' }));
    expect(await second.outcome()).toEqual({ value: expect.objectContaining({ accessToken: 'at.2' }) });
    expect(endpoint.presented).toEqual(['rt.0', 'rt.1']);
    expect(stored.held.value?.tokens.refreshToken).toBe('rt.2');
  });
});

describe('a hung store never hangs a sign-in or a sign-out', () => {
  it('signs out in memory at once when clear() hangs, rejects it with STORE_ERROR, and lets the next sign-in through', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const stored = storeOfSession0({ clear: () => hang() });
    const manager = createTokenManager({ store: stored.store, refresh: rotatingEndpoint().handler, refreshTimeoutMs: 5_000 });
    await manager.getTokens();

    const signOut = follow(manager.clear());
    expect(manager.currentAccessToken()).toBeUndefined();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(await signOut.outcome()).toEqual({ code: ErrorCode.STORE_ERROR });

    const signIn = follow(manager.setTokens(session(7)));
    expect(await signIn.outcome()).toEqual({ value: undefined });
    expect(stored.held.value?.tokens).toEqual(session(7));
  });

  it('lets a sign-out through after a refresh whose store write hangs', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const stored = storeOfSession0();
    const set = stored.store.set;
    let hangWrites = true;
    stored.store.set = (value, options) => (hangWrites ? hang() : set(value, options));
    const manager = createTokenManager({ store: stored.store, refresh: rotatingEndpoint().handler, refreshTimeoutMs: 5_000 });
    await manager.getTokens();
    await vi.advanceTimersByTimeAsync(2_000);
    manager.refresh({ staleAccessToken: 'at.0' }).catch(() => undefined);
    await vi.advanceTimersByTimeAsync(0);
    hangWrites = false;

    const signOut = follow(manager.clear());
    await vi.advanceTimersByTimeAsync(5_000);

    expect(await signOut.outcome()).toEqual({ value: undefined });
    expect(stored.held.value).toBeUndefined();
    await expect(manager.getAccessToken()).rejects.toMatchObject({ code: ErrorCode.NO_TOKENS });
  });
});
