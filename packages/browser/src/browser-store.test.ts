import { ErrorCode, TokenRelayError, createTokenManager, isTokenRelayError, type RefreshContext, type StoredTokens, type TokenSet } from '@tokenrelay/core';
import { describe, expect, it, vi } from 'vitest';
import { browserStore } from './browser-store.js';
import { memoryStorage, openStore, uniqueKey } from './test-helpers.js';

const t1: TokenSet = { accessToken: 'access-one', refreshToken: 'refresh-one', expiresAt: 1_900_000_000_000 };
const t2: TokenSet = { accessToken: 'access-two', refreshToken: 'refresh-two', tokenType: 'Bearer', scope: 'read' };
const v1: StoredTokens = { revision: 1, tokens: t1 };
const v2: StoredTokens = { revision: 2, tokens: t2 };

/** The raw record stored under a key, as another tab would have written it. */
const storedValue = (sequence: number, value: StoredTokens | null) =>
  JSON.stringify({ version: 2, sequence, ...(value ?? { tokens: null }) });

/** Records what a store's subscribers receive. */
function record(store: ReturnType<typeof browserStore>) {
  const received: Array<StoredTokens | undefined> = [];
  store.subscribe((value) => received.push(value));
  return received;
}

async function storeError(read: () => unknown): Promise<TokenRelayError> {
  const error = await Promise.resolve()
    .then(read)
    .then(
      () => undefined,
      (caught: unknown) => caught,
    );
  expect(isTokenRelayError(error)).toBe(true);
  expect((error as TokenRelayError).code).toBe(ErrorCode.STORE_ERROR);
  return error as TokenRelayError;
}

describe('browserStore: reading and writing tokens', () => {
  it('stores tokens as versioned JSON under its key and reads them back', async () => {
    const storage = memoryStorage();
    const store = openStore({ key: 'session', storage });

    await store.set(v1);

    expect(JSON.parse(storage.entries.get('session') ?? '')).toEqual({ version: 2, sequence: 0, revision: 1, tokens: t1 });
    expect(await store.get()).toEqual(v1);
  });

  it('reads undefined when nothing is stored, and after clear(), which keeps only a sequence marker', async () => {
    const storage = memoryStorage();
    const store = openStore({ key: 'session', storage });
    expect(await store.get()).toBeUndefined();

    await store.set(v1);
    await store.clear();

    expect(await store.get()).toBeUndefined();
    expect(JSON.parse(storage.entries.get('session') ?? '')).toEqual({ version: 2, sequence: 1, tokens: null });
  });

  it('gives every write a higher sequence than any record it has seen, across a sign-out', async () => {
    const storage = memoryStorage();
    storage.setItem('session', storedValue(41, v1));
    const store = openStore({ key: 'session', storage });

    await store.clear();
    await store.set(v2);

    expect(JSON.parse(storage.entries.get('session') ?? '').sequence).toBe(43);
  });

  it('reports a stored value that is not JSON as a STORE_ERROR that names the key and quotes nothing', async () => {
    const storage = memoryStorage();
    storage.setItem('session', '{"accessToken":"secret-access-token"');
    const store = openStore({ key: 'session', storage });

    const error = await storeError(() => store.get());

    expect(error.message).toContain('"session"');
    expect(error.message).toContain('not valid JSON');
    expect(`${error.message} ${String(error)} ${JSON.stringify(error)}`).not.toContain('secret-access-token');
  });

  it.each([
    ['a bare token set without the envelope', JSON.stringify(t1), 'format version'],
    ['another format version', JSON.stringify({ version: 1, revision: 0, tokens: t1 }), 'format version'],
    ['a sequence that is not a whole number', JSON.stringify({ version: 2, sequence: 1.5, revision: 1, tokens: t1 }), 'sequence'],
    ['a revision of 0', JSON.stringify({ version: 2, sequence: 0, revision: 0, tokens: t1 }), 'revision'],
    ['tokens without accessToken', storedValue(0, { revision: 1, tokens: { refreshToken: 'secret-refresh' } as unknown as TokenSet }), 'accessToken'],
    ['an expiresAt that is a string', JSON.stringify({ version: 2, sequence: 0, revision: 1, tokens: { ...t1, expiresAt: 'soon' } }), 'expiresAt'],
    ['a refreshToken that is a number', JSON.stringify({ version: 2, sequence: 0, revision: 1, tokens: { ...t1, refreshToken: 7 } }), 'refreshToken'],
    ['an array', '[]', 'not a JSON object'],
  ])('reports %s as a STORE_ERROR instead of treating it as signed out', async (_, value, reason) => {
    const storage = memoryStorage();
    storage.setItem('session', value);
    const store = openStore({ key: 'session', storage });

    const error = await storeError(() => store.get());

    expect(error.message).toContain(reason);
    expect(error.message).not.toContain('secret-refresh');
  });

  it('fails a manager that loads a corrupt value with STORE_ERROR, and leaves the value in place', async () => {
    const storage = memoryStorage();
    storage.setItem('session', 'garbage');
    const manager = createTokenManager({ store: openStore({ key: 'session', storage }), refresh: async () => t2 });

    const error = await storeError(() => manager.getAccessToken());

    // The manager passes the store's own STORE_ERROR on, which names the key.
    expect(error.message).toContain('"session"');
    expect(storage.entries.get('session')).toBe('garbage');
  });

  it('lets a sign-in (set) replace a corrupt value', async () => {
    const storage = memoryStorage();
    storage.setItem('session', 'garbage');
    const store = openStore({ key: 'session', storage });

    await store.set(v1);

    expect(await store.get()).toEqual(v1);
  });

  it('wraps a failing storage in a STORE_ERROR with the cause kept', async () => {
    const quota = new Error('QuotaExceededError');
    const store = openStore({
      key: 'session',
      storage: {
        getItem: () => null,
        setItem: () => {
          throw quota;
        },
        removeItem: () => undefined,
      },
    });

    const error = await storeError(() => store.set(v1));

    // Writes take the lock first: here the lease, in the same failing storage.
    expect(error.message).toBe('Could not write the refresh lease "session:lock" (https://github.com/tokenrelay/tokenrelay/blob/main/docs/errors.md#store_error)');
    expect(error.cause).toBe(quota);
  });
});

describe('browserStore: options', () => {
  it.each([
    ['an empty key', { key: '' }],
    ['a lock mode it does not know', { key: 'k', lock: 'mutex' as 'lease' }],
    ['a lockWaitMs of 0', { key: 'k', lockWaitMs: 0 }],
    ['a lockLeaseMs that is not finite', { key: 'k', lockLeaseMs: Number.POSITIVE_INFINITY }],
    ['a negative lockPollMs', { key: 'k', lockPollMs: -1 }],
    ['a lockWaitMs longer than a timer keeps (it would give up at once)', { key: 'k', lockWaitMs: 2 ** 31 }],
    ['a lockLeaseMs longer than a timer keeps (it would be renewed every millisecond)', { key: 'k', lockLeaseMs: 2 ** 33 }],
  ])('throws a CONFIGURATION_ERROR for %s', (_, options) => {
    expect(() => browserStore({ storage: memoryStorage(), ...options })).toThrowError(
      expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR }),
    );
  });

  it('throws a CONFIGURATION_ERROR asking for options.storage where there is no localStorage', () => {
    expect(globalThis).not.toHaveProperty('localStorage');
    expect(() => browserStore({ key: 'k' })).toThrowError(
      expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR, message: expect.stringContaining('options.storage') }),
    );
  });

  it('falls back to the lease lock where navigator.locks is missing, and refuses to when Web Locks are required', () => {
    expect((globalThis as { navigator?: { locks?: unknown } }).navigator?.locks).toBeUndefined();

    expect(openStore({ key: uniqueKey(), storage: memoryStorage() }).lockKind).toBe('lease');
    expect(() => browserStore({ key: 'k', storage: memoryStorage(), lock: 'web-locks' })).toThrowError(
      expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR, message: expect.stringContaining('navigator.locks') }),
    );
  });
});

describe('browserStore: announcements between tabs (BroadcastChannel)', () => {
  it('announces new tokens to the other stores on the key, and not to the writer', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    const writer = openStore({ key, storage });
    const reader = openStore({ key, storage });
    const toWriter = record(writer);
    const toReader = record(reader);

    await writer.set(v1);
    await writer.set(v2);

    await vi.waitFor(() => expect(toReader).toEqual([v1, v2]), { timeout: 2_000 });
    expect(toWriter).toEqual([]);
  });

  it('announces a sign-out as undefined', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    const writer = openStore({ key, storage });
    const toReader = record(openStore({ key, storage }));

    await writer.set(v1);
    await writer.clear();

    await vi.waitFor(() => expect(toReader).toEqual([v1, undefined]), { timeout: 2_000 });
  });

  it('ignores announcements that are garbled or older than what the tab has seen', async () => {
    const key = uniqueKey();
    const toReader = record(openStore({ key, storage: memoryStorage() }));
    const otherTab = new BroadcastChannel(`tokenrelay:${key}`);
    try {
      otherTab.postMessage(storedValue(5, v1));
      otherTab.postMessage(storedValue(3, v2));
      otherTab.postMessage('{"version":2,"sequence":9,"tokens":');
      otherTab.postMessage({ not: 'a string' });
      otherTab.postMessage(storedValue(5, v2));
      otherTab.postMessage(storedValue(6, v2));

      await vi.waitFor(() => expect(toReader).toEqual([v1, v2]), { timeout: 2_000 });
    } finally {
      otherTab.close();
    }
  });

  it('reads announced tokens that are newer than its own lagging copy of the storage', async () => {
    // Two tabs in two browser processes: each has its own copy of localStorage, synchronised late.
    const key = uniqueKey();
    const storageA = memoryStorage();
    const storageB = memoryStorage();
    storageA.setItem(key, storedValue(0, v1));
    storageB.setItem(key, storedValue(0, v1));
    const tabA = openStore({ key, storage: storageA });
    const tabB = openStore({ key, storage: storageB });
    const toB = record(tabB);

    await tabA.set(v2, { expectedRevision: 1 });
    await vi.waitFor(() => expect(toB).toEqual([v2]), { timeout: 2_000 });

    expect(await tabB.get()).toEqual(v2);
    storageB.setItem(key, storedValue(1, v2)); // the storage catches up
    expect(await tabB.get()).toEqual(v2);
  });

  it('stops delivering announcements after close()', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    const closed = openStore({ key, storage });
    const toClosed = record(closed);
    const toOpen = record(openStore({ key, storage }));
    closed.close();
    closed.close();

    await openStore({ key, storage }).set(v1);

    await vi.waitFor(() => expect(toOpen).toEqual([v1]), { timeout: 2_000 });
    expect(toClosed).toEqual([]);
  });

  it('stops delivering to a listener after it unsubscribes', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    const reader = openStore({ key, storage });
    const received: Array<StoredTokens | undefined> = [];
    const unsubscribe = reader.subscribe((value) => received.push(value));
    const writer = openStore({ key, storage });

    await writer.set(v1);
    await vi.waitFor(() => expect(received).toEqual([v1]), { timeout: 2_000 });
    unsubscribe();
    const probe = record(openStore({ key, storage }));
    await writer.set(v2);
    await vi.waitFor(() => expect(probe).toEqual([v2]), { timeout: 2_000 });

    expect(received).toEqual([v1]);
  });
});

describe('browserStore with createTokenManager: two tabs, one refresh', () => {
  /** A token endpoint with rotation: each refresh token works once, a reuse is fatal. */
  function rotatingRefresh() {
    let valid = t1.refreshToken;
    let calls = 0;
    const refresh = async ({ tokens }: RefreshContext): Promise<TokenSet> => {
      calls++;
      await new Promise((resolve) => setTimeout(resolve, 100));
      if (tokens?.refreshToken !== valid) {
        throw new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'refresh token reused');
      }
      valid = `refresh-${calls + 1}`;
      return { accessToken: `access-${calls + 1}`, refreshToken: valid };
    };
    return { refresh, calls: () => calls };
  }

  it('makes one refresh for two tabs that refresh at once; the other tab adopts the stored tokens', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    const endpoint = rotatingRefresh();
    const tabA = createTokenManager({ store: openStore({ key, storage }), tokens: t1, refresh: endpoint.refresh });
    const tabB = createTokenManager({ store: openStore({ key, storage }), tokens: t1, refresh: endpoint.refresh });
    await Promise.all([tabA.getTokens(), tabB.getTokens()]);

    const [a, b] = await Promise.all([
      tabA.refresh({ staleAccessToken: t1.accessToken }),
      tabB.refresh({ staleAccessToken: t1.accessToken }),
    ]);

    expect(endpoint.calls()).toBe(1);
    expect(a).toEqual(b);
    expect(a).toEqual({ accessToken: 'access-2', refreshToken: 'refresh-2' });
  });

  it('hands a refresh made in one tab to the other through the announcement, with no lock or token call there', async () => {
    const key = uniqueKey();
    const storage = memoryStorage();
    const endpoint = rotatingRefresh();
    const storeB = openStore({ key, storage });
    const lockB = vi.spyOn(storeB, 'lock');
    const tabA = createTokenManager({ store: openStore({ key, storage }), tokens: t1, refresh: endpoint.refresh });
    const tabB = createTokenManager({ store: storeB, tokens: t1, refresh: endpoint.refresh });
    await Promise.all([tabA.getTokens(), tabB.getTokens()]);
    // Seeding the empty store takes the lock (so a late tab never overwrites rotated tokens); the handoff must not.
    lockB.mockClear();

    const fresh = await tabA.refresh();
    await vi.waitFor(async () => expect(await tabB.getTokens()).toEqual(fresh), { timeout: 2_000 });

    expect(await tabB.refresh({ staleAccessToken: t1.accessToken })).toEqual(fresh);
    expect(endpoint.calls()).toBe(1);
    expect(lockB).not.toHaveBeenCalled();
  });
});
