/*
 * The manager under a store that hangs: a get, set, clear, lock or release that never settles (a
 * stalled network file system, a Redis that never answers, a frozen lock holder) must never hang a
 * request, a sign-in or a sign-out, and must never make a refresh token be presented twice.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ErrorCode, TokenRelayError } from './errors.js';
import { createTokenManager } from './manager.js';
import type { RefreshHandler, StoredTokens, TokenSet, TokenStore, TokenStoreLock } from './types.js';

afterEach(() => {
  // Also when a test fails before its end; first, as a spy on a fake timer function restores the fake one.
  vi.restoreAllMocks();
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

/** {@link storeOfSession0} whose next `faults.reads` reads and `faults.writes` writes fail. */
function failingStoreOfSession0(overrides: Partial<TokenStore> = {}) {
  const stored = storeOfSession0(overrides);
  const { get, set } = stored.store;
  const faults = { reads: 0, writes: 0 };
  stored.store.get = () => (faults.reads-- > 0 ? Promise.reject(new Error('connection reset')) : get());
  stored.store.set = (value, options) => (faults.writes-- > 0 ? Promise.reject(new Error('disk full')) : set(value, options));
  return { stored, faults };
}

/** {@link storeOfSession0} whose reads, while `hangs.reads`, and writes, while `hangs.writes`, never answer. */
function hangingStoreOfSession0(overrides: Partial<TokenStore> = {}) {
  const stored = storeOfSession0(overrides);
  const { get, set } = stored.store;
  const hangs = { reads: false, writes: false };
  stored.store.get = () => (hangs.reads ? hang() : get());
  stored.store.set = (value, options) => (hangs.writes ? hang() : set(value, options));
  return { stored, hangs };
}

/** A shared {@link storeOfSession0} whose reads, while `reads.hold`, wait until the test calls `reads.waiting`. */
function heldReadsStoreOfSession0() {
  const stored = storeOfSession0({ subscribe: () => () => undefined });
  const get = stored.store.get;
  const reads: { hold: boolean; waiting: (() => void)[] } = { hold: false, waiting: [] };
  stored.store.get = () =>
    reads.hold ? new Promise<StoredTokens | undefined>((resolve) => reads.waiting.push(() => resolve(get()))) : get();
  return { stored, reads };
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
    const { stored, hangs } = hangingStoreOfSession0();
    hangs.writes = true;
    const endpoint = rotatingEndpoint();
    const manager = createTokenManager({ store: stored.store, refresh: endpoint.handler, refreshTimeoutMs: 5_000 });
    await manager.getTokens();
    await vi.advanceTimersByTimeAsync(2_000);

    const first = follow(manager.refresh({ staleAccessToken: 'at.0' }));
    await vi.advanceTimersByTimeAsync(5_000);
    expect(await first.outcome()).toEqual({ code: ErrorCode.STORE_ERROR });
    expect((await manager.getTokens())?.refreshToken).toBe('rt.1');

    // The write given up on never lands: after lateAnswerWaitMs it can land no more, and the next refresh goes on.
    hangs.writes = false;
    await vi.advanceTimersByTimeAsync(60_000);
    const second = follow(manager.refresh({ staleAccessToken: 'at.1' }));
    expect(await second.outcome()).toEqual({ value: expect.objectContaining({ accessToken: 'at.2' }) });
    expect(endpoint.presented).toEqual(['rt.0', 'rt.1']);
    expect(stored.held.value?.tokens.refreshToken).toBe('rt.2');
  });
});

/**
 * An exclusive lock, as every shared store's: a lock() while it is held waits for the release; counts what
 * it was asked, and how often each lock it gave was released. `lose(i)` ends the lease of the i-th lock
 * (its signal aborts, the store frees it); releasing a lost lock frees nothing.
 */
function exclusiveLock() {
  const lock = { held: false, waiting: [] as (() => void)[], asked: 0, askedWhileHeld: 0, releases: [] as number[] };
  const lost: AbortController[] = [];
  const free = () => {
    lock.held = false;
    lock.waiting.shift()?.();
  };
  const take = async (): Promise<TokenStoreLock> => {
    lock.asked++;
    if (lock.held) lock.askedWhileHeld++;
    // Bounded by the test: each release wakes one waiter.
    while (lock.held) await new Promise<void>((wake) => lock.waiting.push(wake));
    lock.held = true;
    const index = lost.push(new AbortController()) - 1;
    lock.releases.push(0);
    const { signal } = lost[index] as AbortController;
    return {
      signal,
      release: () => {
        lock.releases[index] = (lock.releases[index] ?? 0) + 1;
        if (!signal.aborted) free();
      },
    };
  };
  const lose = (index: number) => {
    lost[index]?.abort(new Error('lease expired'));
    free();
  };
  return { lock, take, lose };
}

describe('this manager never asks the store for a lock it holds', () => {
  it('the next refresh takes over the lock a refresh kept for a write it gave up on', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const writes = { hang: true, land: () => undefined as void };
    const { lock, take } = exclusiveLock();
    const stored = storeOfSession0({ lock: take });
    const set = stored.store.set;
    stored.store.set = (value, options) =>
      writes.hang ? new Promise<boolean>((landed) => (writes.land = () => landed(set(value, options) as boolean))) : set(value, options);
    const endpoint = rotatingEndpoint();
    const manager = createTokenManager({ store: stored.store, refresh: endpoint.handler, refreshTimeoutMs: 5_000 });
    await manager.getTokens();
    await vi.advanceTimersByTimeAsync(2_000);

    const first = follow(manager.refresh({ staleAccessToken: 'at.0' }));
    await vi.advanceTimersByTimeAsync(5_000);
    expect(await first.outcome()).toEqual({ code: ErrorCode.STORE_ERROR });

    // The write of rt.1 may still land: the lock stays held, and this manager goes on under it once that write landed.
    writes.hang = false;
    const second = follow(manager.refresh({ staleAccessToken: 'at.1' }));
    await vi.advanceTimersByTimeAsync(1_000);
    expect(endpoint.presented).toEqual(['rt.0']);
    writes.land();
    expect(await second.outcome()).toEqual({ value: expect.objectContaining({ accessToken: 'at.2' }) });
    expect(endpoint.presented).toEqual(['rt.0', 'rt.1']);
    expect(stored.held.value).toMatchObject({ revision: 3, tokens: { refreshToken: 'rt.2' } });
    expect(lock).toMatchObject({ asked: 1, askedWhileHeld: 0 });
    // Nothing of ours may land any more: released.
    expect(lock.held).toBe(false);
  });

  it("a refresh of a new session waits until the replaced session's refresh gives the lock back", async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { lock, take } = exclusiveLock();
    const { stored, hangs } = hangingStoreOfSession0({ lock: take });
    const endpoint = rotatingEndpoint();
    const manager = createTokenManager({ store: stored.store, refresh: endpoint.handler, refreshTimeoutMs: 5_000 });
    await manager.getTokens();
    await vi.advanceTimersByTimeAsync(2_000);

    // The refresh of session 0 holds the lock while its read of the store hangs; a sign-in replaces the session.
    hangs.reads = true;
    const replacedRefresh = follow(manager.refresh({ staleAccessToken: 'at.0' }));
    await vi.advanceTimersByTimeAsync(0);
    expect(lock.held).toBe(true);
    hangs.reads = false;
    await manager.setTokens(session(5, Date.now() + 60_000));
    const newSessionRefresh = follow(manager.refresh({ staleAccessToken: 'at.5' }));
    await vi.advanceTimersByTimeAsync(5_000);

    expect(await newSessionRefresh.outcome()).toEqual({ value: expect.objectContaining({ accessToken: 'at.1' }) });
    expect(await replacedRefresh.outcome()).toEqual({ value: expect.objectContaining({ accessToken: 'at.5' }) });
    expect(endpoint.presented).toEqual(['rt.5']);
    expect(lock).toMatchObject({ asked: 2, askedWhileHeld: 0 });
  });

  it('a refresh after two sign-ins in a row waits until the refresh of the first session gives the lock back', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { lock, take } = exclusiveLock();
    const { stored, hangs } = hangingStoreOfSession0({ lock: take });
    const endpoint = rotatingEndpoint();
    const manager = createTokenManager({ store: stored.store, refresh: endpoint.handler, refreshTimeoutMs: 5_000 });
    await manager.getTokens();
    await vi.advanceTimersByTimeAsync(2_000);

    // The refresh of session 0 holds the lock while its read hangs; the refresh of session 5 waits for it
    // and is replaced in turn by session 6, whose refresh must wait for the first one still.
    hangs.reads = true;
    const first = follow(manager.refresh({ staleAccessToken: 'at.0' }));
    await vi.advanceTimersByTimeAsync(0);
    hangs.reads = false;
    await manager.setTokens(session(5, Date.now() + 60_000));
    const second = follow(manager.refresh({ staleAccessToken: 'at.5' }));
    await vi.advanceTimersByTimeAsync(0);
    await manager.setTokens(session(6, Date.now() + 60_000));
    const third = follow(manager.refresh({ staleAccessToken: 'at.6' }));
    await vi.advanceTimersByTimeAsync(5_000);

    expect(await third.outcome()).toEqual({ value: expect.objectContaining({ accessToken: 'at.1' }) });
    // The replaced refreshes were settled by the sign-ins with the new sessions.
    expect(await first.outcome()).toEqual({ value: expect.objectContaining({ accessToken: 'at.5' }) });
    expect(await second.outcome()).toEqual({ value: expect.objectContaining({ accessToken: 'at.6' }) });
    expect(endpoint.presented).toEqual(['rt.6']);
    expect(lock).toMatchObject({ asked: 2, askedWhileHeld: 0 });
  });

  it('a refresh after a sign-in during the first load waits until the load gives back the lock it took to seed the store', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { lock, take } = exclusiveLock();
    const stored = storeOfSession0({ lock: take });
    stored.held.value = undefined;
    // The first read finds the store empty; the seeding's read under the lock hangs.
    let reads = 0;
    const get = stored.store.get;
    stored.store.get = () => (++reads === 2 ? hang() : get());
    const endpoint = rotatingEndpoint();
    const manager = createTokenManager({
      store: stored.store,
      tokens: session(0, Date.now() + 600_000),
      refresh: endpoint.handler,
      refreshTimeoutMs: 5_000,
    });
    const loading = follow(manager.getTokens());
    await vi.advanceTimersByTimeAsync(0);
    expect(lock.held).toBe(true);
    await manager.setTokens(session(5, Date.now() + 600_000));
    const refreshed = follow(manager.refresh({ staleAccessToken: 'at.5' }));
    await vi.advanceTimersByTimeAsync(5_000);

    expect(await refreshed.outcome()).toEqual({ value: expect.objectContaining({ accessToken: 'at.1' }) });
    // The load's own read under the lock never answered.
    expect(await loading.outcome()).toEqual({ code: ErrorCode.STORE_ERROR });
    expect(endpoint.presented).toEqual(['rt.5']);
    expect(lock).toMatchObject({ asked: 2, askedWhileHeld: 0 });
  });
});

describe('the lock a refresh kept for a write it gave up on', () => {
  it('is released when lost, and the next refresh takes a lock of its own', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { lock, take, lose } = exclusiveLock();
    const { stored, hangs } = hangingStoreOfSession0({ lock: take });
    hangs.writes = true;
    const endpoint = rotatingEndpoint();
    const manager = createTokenManager({ store: stored.store, refresh: endpoint.handler, refreshTimeoutMs: 5_000 });
    await manager.getTokens();
    await vi.advanceTimersByTimeAsync(2_000);

    // Both refreshes give up on their writes and keep their locks; the first lock's lease runs out between them.
    const first = follow(manager.refresh({ staleAccessToken: 'at.0' }));
    await vi.advanceTimersByTimeAsync(5_000);
    lose(0);
    const second = follow(manager.refresh({ staleAccessToken: 'at.1' }));
    await vi.advanceTimersByTimeAsync(0);
    // The lost lock is given back as soon as the next refresh finds it.
    expect(lock.releases[0]).toBe(1);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(await first.outcome()).toEqual({ code: ErrorCode.STORE_ERROR });
    // The second one, under a lock of its own, first writes again the tokens the store missed (which hangs too):
    // its caller is released at refreshTimeoutMs.
    expect(await second.outcome()).toEqual({ code: ErrorCode.REFRESH_TIMEOUT });
    expect(endpoint.presented).toEqual(['rt.0']);
    hangs.writes = false;
    await vi.advanceTimersByTimeAsync(120_000);

    // Each lock the store gave is released once (a lost one too: it may hold a file handle or a connection).
    expect(lock.releases).toEqual([1, 1]);
    expect(lock.held).toBe(false);
  });

  it('keeps no process alive while it waits for the write to settle', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    // The timers the manager set and has not cleared, by their delay.
    const pending = new Map<ReturnType<typeof setTimeout>, number | undefined>();
    const setTimer = globalThis.setTimeout;
    const clearTimer = globalThis.clearTimeout;
    vi.spyOn(globalThis, 'setTimeout').mockImplementation(((callback: () => void, delay?: number) => {
      const timer = setTimer(callback, delay);
      pending.set(timer, delay);
      return timer;
    }) as typeof setTimeout);
    vi.spyOn(globalThis, 'clearTimeout').mockImplementation((timer) => {
      pending.delete(timer as ReturnType<typeof setTimeout>);
      clearTimer(timer);
    });
    const { lock, take } = exclusiveLock();
    const stored = storeOfSession0({ lock: take, set: () => hang() });
    const manager = createTokenManager({
      store: stored.store,
      refresh: rotatingEndpoint().handler,
      refreshTimeoutMs: 5_000,
      lateAnswerWaitMs: 3_600_000,
    });
    await manager.getTokens();
    await vi.advanceTimersByTimeAsync(2_000);

    const refreshed = follow(manager.refresh({ staleAccessToken: 'at.0' }));
    await vi.advanceTimersByTimeAsync(5_000);
    expect(await refreshed.outcome()).toEqual({ code: ErrorCode.STORE_ERROR });
    expect(lock.held).toBe(true);
    const keeping = [...pending].filter(([, delay]) => delay === 3_600_000).map(([timer]) => timer);
    expect(keeping).toHaveLength(1);
    expect(keeping[0]?.hasRef()).toBe(false);
  });
});

describe('a write given up on, under the lock the next refresh takes over', () => {
  /**
   * A store whose compare-and-set is "re-read, then write" without a queue of its own (docs/stores.md #2 allows it
   * under the lock): a write that `stall()` holds has passed its revision check and lands when the test calls
   * `land()`. `revisions` lists the revision the store holds after each write.
   */
  function reReadThenWriteStore() {
    const { lock, take } = exclusiveLock();
    const stored = storeOfSession0({ lock: take });
    const revisions: number[] = [];
    const stalls = { next: false, land: () => undefined as void };
    stored.store.set = async (value, options) => {
      if (options?.expectedRevision !== undefined && options.expectedRevision !== (stored.held.value?.revision ?? 0)) return false;
      if (stalls.next) {
        stalls.next = false;
        await new Promise<void>((land) => (stalls.land = land));
      }
      stored.held.value = value;
      revisions.push(value.revision);
      return true;
    };
    return { stored, lock, revisions, stalls };
  }

  it('presents no refresh token until that write has settled, and fails with STORE_ERROR when it does not within the store-call limit', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { stored, revisions, stalls } = reReadThenWriteStore();
    const endpoint = rotatingEndpoint();
    const manager = createTokenManager({ store: stored.store, refresh: endpoint.handler, refreshTimeoutMs: 5_000 });
    const failures: string[] = [];
    manager.on('refreshError', (error) => failures.push(error.code));
    await manager.getTokens();
    await vi.advanceTimersByTimeAsync(2_000);

    // The write of rt.1 passes its revision check, then stalls past the store-call limit: given up on.
    stalls.next = true;
    const first = follow(manager.refresh({ staleAccessToken: 'at.0' }));
    await vi.advanceTimersByTimeAsync(5_000);
    expect(await first.outcome()).toEqual({ code: ErrorCode.STORE_ERROR });
    // The next refresh takes the kept lock over; the stalled write has not landed within its limit either.
    // Its caller is released at refreshTimeoutMs as always; the refresh itself fails with STORE_ERROR.
    const second = follow(manager.refresh({ staleAccessToken: 'at.1' }));
    await vi.advanceTimersByTimeAsync(5_000);
    expect(await second.outcome()).toEqual({ code: ErrorCode.REFRESH_TIMEOUT });
    expect(failures).toEqual([ErrorCode.STORE_ERROR, ErrorCode.REFRESH_TIMEOUT, ErrorCode.STORE_ERROR]);
    expect(endpoint.presented).toEqual(['rt.0']);

    // The stalled write lands; another holder of the store refreshes from what it holds.
    stalls.land();
    await vi.advanceTimersByTimeAsync(0);
    const other = createTokenManager({ store: stored.store, refresh: endpoint.handler, refreshTimeoutMs: 5_000 });
    const third = follow(other.refresh({ staleAccessToken: (await other.getTokens())?.accessToken as string }));
    expect(await third.outcome()).toEqual({ value: expect.objectContaining({ accessToken: 'at.2' }) });
    expect(endpoint.presented).toEqual(['rt.0', 'rt.1']);
    expect(revisions).toEqual([2, 3]);
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

describe('a sign-in or sign-out while a refused refresh reads the store', () => {
  /** A shared store whose reads wait until the test lets them through, and a token endpoint that refuses rt.0. */
  async function refusedWhileReading() {
    vi.useFakeTimers({ now: 1_000_000 });
    const { stored, reads } = heldReadsStoreOfSession0();
    const manager = createTokenManager({
      store: stored.store,
      refresh: async () => {
        // The store read that follows the refusal waits for the test.
        reads.hold = true;
        throw new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'invalid_grant', { status: 400, oauthError: 'invalid_grant' });
      },
    });
    await manager.getTokens();
    await vi.advanceTimersByTimeAsync(2_000);
    const expiries: string[] = [];
    manager.on('sessionExpired', (error) => expiries.push(error.code));
    const refreshing = follow(manager.refresh({ staleAccessToken: 'at.0' }));
    await vi.advanceTimersByTimeAsync(0);
    const readDone = () => {
      reads.hold = false;
      for (const resolve of reads.waiting.splice(0)) resolve();
    };
    return { manager, stored, expiries, refreshing, readDone };
  }

  it('keeps a new sign-in alive when the refresh of the old session is refused meanwhile', async () => {
    const { manager, expiries, refreshing, readDone } = await refusedWhileReading();

    // The sign-in reads the store too (to number its revision): both reads go on together.
    const signIn = manager.setTokens(session(7));
    readDone();
    await signIn;

    expect(await refreshing.outcome()).toEqual({ value: session(7) });
    expect(expiries).toEqual([]);
    expect(await manager.getAccessToken()).toBe('at.7');
  });

  it('neither fires sessionExpired nor marks the store after a sign-out during the refused refresh', async () => {
    const { manager, stored, expiries, refreshing, readDone } = await refusedWhileReading();

    const signOut = manager.clear();
    readDone();
    await signOut;

    expect(await refreshing.outcome()).toEqual({ code: ErrorCode.NO_TOKENS });
    expect(expiries).toEqual([]);
    expect(stored.held.value).toBeUndefined();
    await expect(manager.getAccessToken()).rejects.toMatchObject({ code: ErrorCode.NO_TOKENS });
  });
});

describe('a sign-in while a fenced refresh reads the store', () => {
  it('keeps the new sign-in when the refresh finds another holder replaced the session and reads what it holds', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { stored, reads } = heldReadsStoreOfSession0();
    const manager = createTokenManager({
      store: stored.store,
      refresh: async () => {
        // Another holder signs in another user meanwhile, without telling this one; the write that
        // follows is fenced, and the read after it waits for the test.
        stored.held.value = { tokens: session(5), revision: 2 };
        reads.hold = true;
        return session(1, Date.now() + 60_000);
      },
    });
    await manager.getTokens();
    await vi.advanceTimersByTimeAsync(2_000);
    const refreshing = follow(manager.refresh({ staleAccessToken: 'at.0' }));
    await vi.advanceTimersByTimeAsync(0);

    const signIn = manager.setTokens(session(7));
    reads.hold = false;
    for (const resolve of reads.waiting.splice(0)) resolve();
    await signIn;

    expect(await refreshing.outcome()).toEqual({ value: session(7) });
    expect((await manager.getTokens())?.accessToken).toBe('at.7');
    expect(stored.held.value?.tokens).toEqual(session(7));
  });
});

describe('a store read that fails after the refresh token is refused', () => {
  it('expires the session (sessionExpired fires) instead of taking the unreadable store for a sign-out', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const stored = storeOfSession0({ subscribe: () => () => undefined });
    const get = stored.store.get;
    let failReads = false;
    stored.store.get = () => (failReads ? Promise.reject(new Error('connection reset')) : get());
    const manager = createTokenManager({
      store: stored.store,
      refresh: async () => {
        failReads = true;
        throw new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'invalid_grant', { status: 400, oauthError: 'invalid_grant' });
      },
    });
    await manager.getTokens();
    const expiries: string[] = [];
    manager.on('sessionExpired', (error) => expiries.push(error.code));

    await expect(manager.refresh({ staleAccessToken: 'at.0' })).rejects.toMatchObject({ code: ErrorCode.SESSION_EXPIRED });

    expect(expiries).toEqual([ErrorCode.SESSION_EXPIRED]);
    await expect(manager.getAccessToken()).rejects.toMatchObject({ code: ErrorCode.SESSION_EXPIRED });
  });
});

describe('a sign-in whose store read fails', () => {
  it('does not take the unreadable store for an empty one: when its write fails too, the next refresh stores the rotated tokens instead of rolling back to the old session', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { stored, faults } = failingStoreOfSession0();
    const endpoint = rotatingEndpoint();
    const manager = createTokenManager({ store: stored.store, refresh: endpoint.handler });
    await manager.getTokens();

    faults.reads = 1;
    faults.writes = 1;
    await expect(manager.setTokens(session(7))).rejects.toMatchObject({ code: ErrorCode.STORE_ERROR });
    const refreshed = await manager.refresh({ staleAccessToken: 'at.7' });

    expect(endpoint.presented).toEqual(['rt.7']);
    expect(refreshed.accessToken).toBe('at.1');
    expect((await manager.getTokens())?.accessToken).toBe('at.1');
    expect(stored.held.value?.tokens.refreshToken).toBe('rt.1');
  });
});

describe('a sign-out while the manager writes tokens the store missed', () => {
  /** A store with a lock whose writes wait for the test while `hold` is set. */
  function heldWrites(initial: StoredTokens | undefined) {
    const stored = storeOfSession0({ subscribe: () => () => undefined });
    stored.held.value = initial;
    const set = stored.store.set;
    const writes: { hold: boolean; waiting: (() => void)[] } = { hold: false, waiting: [] };
    stored.store.set = (value, options) =>
      writes.hold ? new Promise<boolean>((resolve) => writes.waiting.push(() => resolve(set(value, options)))) : set(value, options);
    const land = () => {
      writes.hold = false;
      for (const write of writes.waiting.splice(0)) write();
    };
    return { stored, writes, land };
  }

  it('leaves the store empty when clear() comes while a refresh first writes the sign-in the store missed', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    // An empty store: a clear() leaves no revision behind that could fence the late write out.
    const { stored, writes, land } = heldWrites(undefined);
    const endpoint = rotatingEndpoint();
    const manager = createTokenManager({ store: stored.store, refresh: endpoint.handler });
    await manager.getTokens();
    const set = stored.store.set;
    stored.store.set = () => Promise.reject(new Error('disk full'));
    await expect(manager.setTokens(session(7))).rejects.toMatchObject({ code: ErrorCode.STORE_ERROR });
    stored.store.set = set;

    // The refresh finds the store behind memory and writes the sign-in there first: that write is slow.
    writes.hold = true;
    const refreshing = follow(manager.refresh({ staleAccessToken: 'at.7' }));
    await vi.advanceTimersByTimeAsync(0);
    const signOut = follow(manager.clear());
    await vi.advanceTimersByTimeAsync(0);
    land();

    expect(await signOut.outcome()).toEqual({ value: undefined });
    expect(await refreshing.outcome()).toEqual({ code: ErrorCode.NO_TOKENS });
    expect(stored.held.value).toBeUndefined();
    expect(endpoint.presented).toEqual([]);
  });

  it('leaves the store empty when clear() comes while the first load seeds it with the initial tokens', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { stored, writes, land } = heldWrites(undefined);
    const manager = createTokenManager({ tokens: session(0), store: stored.store, refresh: rotatingEndpoint().handler });

    writes.hold = true;
    const loading = follow(manager.getTokens());
    await vi.advanceTimersByTimeAsync(0);
    const signOut = follow(manager.clear());
    await vi.advanceTimersByTimeAsync(0);
    land();

    expect(await signOut.outcome()).toEqual({ value: undefined });
    expect(await loading.outcome()).toEqual({ value: undefined });
    expect(stored.held.value).toBeUndefined();
  });
});

describe('a sign-in the store missed, then another holder wrote', () => {
  it('writes the sign-in over a refresh of the old session that another holder stored meanwhile, instead of rolling back to it', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const { stored, faults } = failingStoreOfSession0({ subscribe: () => () => undefined });
    const endpoint = rotatingEndpoint();
    const manager = createTokenManager({ store: stored.store, refresh: endpoint.handler });
    await manager.getTokens();
    faults.reads = 1;
    faults.writes = 1;
    await expect(manager.setTokens(session(7))).rejects.toMatchObject({ code: ErrorCode.STORE_ERROR });
    // Another holder refreshes the old session, without telling this one.
    stored.held.value = { tokens: session(5), revision: 2 };

    const refreshed = await manager.refresh({ staleAccessToken: 'at.7' });

    expect(endpoint.presented).toEqual(['rt.7']);
    expect(refreshed.accessToken).toBe('at.1');
    expect(stored.held.value?.tokens.refreshToken).toBe('rt.1');
  });
});

describe('a slow store, and the bounds of one refresh', () => {
  it('keeps the lock of a refresh whose write was given up on until that write lands, so no other holder presents the spent refresh token', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    let landWrite: (() => void) | undefined;
    const stored = storeOfSession0();
    const set = stored.store.set;
    let released = 0;
    stored.store.lock = async () => ({ release: () => void released++ });
    stored.store.set = (value, options) =>
      new Promise<boolean>((landed) => {
        landWrite = () => landed(set(value, options) as boolean);
      });
    const manager = createTokenManager({ store: stored.store, refresh: rotatingEndpoint().handler, refreshTimeoutMs: 5_000 });
    await manager.getTokens();
    await vi.advanceTimersByTimeAsync(2_000);

    const first = follow(manager.refresh({ staleAccessToken: 'at.0' }));
    await vi.advanceTimersByTimeAsync(6_000);
    expect(await first.outcome()).toEqual({ code: ErrorCode.STORE_ERROR });
    // Given up on, but it may still land: the lock is kept.
    expect(released).toBe(0);
    landWrite?.();
    await vi.advanceTimersByTimeAsync(0);
    expect(released).toBe(1);
    expect(stored.held.value?.tokens.refreshToken).toBe('rt.1');
  });

  it('keeps the lock while its repair write of tokens the store missed, given up on, may still land', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const stored = storeOfSession0();
    const set = stored.store.set;
    let released = 0;
    let landWrite: (() => void) | undefined;
    const writes = { failing: 1, hanging: 0 };
    stored.store.lock = async () => ({ release: () => void released++ });
    stored.store.set = (value, options) => {
      if (writes.failing-- > 0) return Promise.reject(new Error('disk full'));
      if (writes.hanging-- > 0) return new Promise<boolean>((landed) => (landWrite = () => landed(set(value, options) as boolean)));
      return set(value, options);
    };
    const manager = createTokenManager({ store: stored.store, refresh: rotatingEndpoint().handler, refreshTimeoutMs: 5_000 });
    await manager.getTokens();
    await vi.advanceTimersByTimeAsync(2_000);
    // The refresh's write fails: rt.1 lives in memory only, the store still holds rt.0.
    await expect(manager.refresh({ staleAccessToken: 'at.0' })).rejects.toMatchObject({ code: ErrorCode.STORE_ERROR });
    expect(released).toBe(1);

    // The next refresh first writes rt.1 over what the store missed; that write hangs and is given up on.
    writes.hanging = 1;
    manager.refresh({ staleAccessToken: 'at.1' }).catch(() => undefined);
    await vi.advanceTimersByTimeAsync(6_000);
    expect(released).toBe(1);
    landWrite?.();
    await vi.advanceTimersByTimeAsync(0);
    expect(released).toBe(2);
  });

  it('gives back the lock of a refresh whose write never lands after lateAnswerWaitMs', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const stored = storeOfSession0();
    let released = 0;
    stored.store.lock = async () => ({ release: () => void released++ });
    stored.store.set = () => hang();
    const manager = createTokenManager({ store: stored.store, refresh: rotatingEndpoint().handler, refreshTimeoutMs: 5_000, lateAnswerWaitMs: 20_000 });
    await manager.getTokens();
    await vi.advanceTimersByTimeAsync(2_000);

    manager.refresh({ staleAccessToken: 'at.0' }).catch(() => undefined);
    await vi.advanceTimersByTimeAsync(6_000);
    expect(released).toBe(0);
    await vi.advanceTimersByTimeAsync(20_000);
    expect(released).toBe(1);
  });

  it('gives a store 5 s per call even with refreshTimeoutMs 0', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const stored = storeOfSession0();
    const { get, set } = stored.store;
    const slowly = <T>(value: T) => new Promise<T>((settle) => setTimeout(() => settle(value), 1_000));
    stored.store.get = async () => slowly(await get());
    stored.store.set = async (value, options) => slowly(await set(value, options));
    const manager = createTokenManager({ store: stored.store, refresh: rotatingEndpoint().handler, refreshTimeoutMs: 0 });
    const loaded = follow(manager.getTokens());
    await vi.advanceTimersByTimeAsync(1_000);
    expect(await loaded.outcome()).toEqual({ value: session(0, 1_001_000) });

    const signIn = follow(manager.setTokens(session(7, Date.now() + 60_000)));
    await vi.advanceTimersByTimeAsync(2_000);
    expect(await signIn.outcome()).toEqual({ value: undefined });
    expect(stored.held.value?.tokens.accessToken).toBe('at.7');
  });
});
