/*
 * The conformance suite of the TokenStore contract (see `TokenStore` in @tokenrelay/core): every
 * store tokenrelay ships runs it, and so can yours. Framework-neutral: pass your test runner's
 * `describe` and `it` (vitest, jest, mocha, node:test all fit); failures throw plain Errors.
 */
import type { StoredTokens, TokenStore } from '@tokenrelay/core';

/** What the suite needs from your test runner. */
export interface ConformanceRunner {
  describe(name: string, body: () => void): void;
  it(name: string, body: () => Promise<void>, timeoutMs?: number): void;
}

/** One session's stores, made fresh for each test. */
export interface ConformanceSession {
  /**
   * A new handle on this test's session: another instance of the store on the same file, key or
   * storage, as another process or tab would hold. Called several times per test.
   */
  open(): TokenStore | Promise<TokenStore>;
  /**
   * Makes `store`'s held lock lost, as if its holder froze past its lease and another holder took
   * over (e.g. delete the Redis lock key, age the lease). Leave it out for stores whose locks
   * cannot be lost; the lost-lock cases are then not run.
   */
  loseLock?(store: TokenStore): Promise<void>;
  /** Frees what `open` created (connections, temp files). */
  cleanup?(): Promise<void>;
}

/** Options of {@link describeTokenStoreConformance}. */
export interface ConformanceOptions {
  /**
   * How long to wait for a notification or a lost-lock signal before a case fails, in milliseconds.
   * @default 5_000
   */
  waitMs?: number;
}

class ConformanceError extends Error {
  override name = 'ConformanceError';
}

function check(condition: boolean, message: string): void {
  if (!condition) throw new ConformanceError(message);
}

const same = (a: unknown, b: unknown) => JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));
function sorted(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sorted);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(
    Object.keys(value)
      .sort()
      .map((key) => [key, sorted((value as Record<string, unknown>)[key])]),
  );
}

function checkSame(actual: unknown, expected: unknown, what: string): void {
  check(same(actual, expected), `${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

async function eventually(condition: () => boolean | Promise<boolean>, waitMs: number, what: string): Promise<void> {
  const deadline = Date.now() + waitMs;
  // Bounded by the deadline.
  while (!(await condition())) {
    if (Date.now() > deadline) throw new ConformanceError(`${what} did not happen within ${waitMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const session = (revision: number, extra: Partial<StoredTokens> = {}): StoredTokens => ({
  revision,
  tokens: {
    accessToken: `access-${revision}`,
    refreshToken: `refresh-${revision}`,
    expiresAt: 1_900_000_000_000 + revision,
    tokenType: 'Bearer',
    scope: 'read write',
    raw: { instance_url: 'https://example.my.salesforce.com', issued_at: '1700000000000', nested: { kept: [1, 'two'] } },
    // What the app keeps with the session, e.g. @tokenrelay/dpop's key: lost, the session's refresh token is unusable.
    sessionData: { dpopKey: { kty: 'EC', crv: 'P-256', x: 'x-coordinate', y: 'y-coordinate', d: 'private-part' }, nested: { kept: [1, 'two'] } },
  },
  ...extra,
});

/**
 * Declares the contract's test cases for one store with your runner's `describe`/`it`.
 *
 * @example
 * ```ts
 * import { describe, it } from 'vitest'
 * import { describeTokenStoreConformance } from '@tokenrelay/testing'
 *
 * describeTokenStoreConformance('postgresStore', { describe, it }, async () => {
 *   const key = `session-${crypto.randomUUID()}`
 *   return { open: () => postgresStore({ pool, key }), cleanup: () => pool.query('DELETE …') }
 * })
 * ```
 */
export function describeTokenStoreConformance(
  name: string,
  runner: ConformanceRunner,
  makeSession: () => ConformanceSession | Promise<ConformanceSession>,
  options: ConformanceOptions = {},
): void {
  const waitMs = options.waitMs ?? 5_000;
  const timeoutMs = waitMs * 3;

  /** Runs `body` with a fresh session, cleaned up afterwards. */
  const withSession = (body: (session: ConformanceSession) => Promise<void>) => async () => {
    const current = await makeSession();
    try {
      await body(current);
    } finally {
      await current.cleanup?.();
    }
  };
  const test = (title: string, body: (session: ConformanceSession) => Promise<void>) =>
    runner.it(title, withSession(body), timeoutMs);

  runner.describe(`${name} keeps the TokenStore contract`, () => {
    test('reads undefined from an empty store', async ({ open }) => {
      const store = await open();
      check((await store.get()) === undefined, 'get() of an empty store is not undefined');
    });

    test('reads back every field it was given, unknown raw fields, the sessionData and sessionExpired included, from another handle', async ({ open }) => {
      const writer = await open();
      const value = session(3, { sessionExpired: true });
      check((await writer.set(value)) === true, 'an unconditional set() did not resolve true');
      checkSame(await writer.get(), value, 'get() after set()');
      checkSame(await (await open()).get(), value, 'get() from another handle');
    });

    test('writes with expectedRevision 0 only into an empty store (seeding)', async ({ open }) => {
      const [a, b] = [await open(), await open()];
      check((await a.set(session(1), { expectedRevision: 0 })) === true, 'seeding an empty store was refused');
      check((await b.set(session(1, { tokens: { accessToken: 'late-seed' } }), { expectedRevision: 0 })) === false, 'a second seed was written');
      checkSame(await b.get(), session(1), 'the first seed');
    });

    test('writes a refresh only over the revision it read (compare-and-set)', async ({ open }) => {
      const [a, b] = [await open(), await open()];
      await a.set(session(1));
      check((await a.set(session(2), { expectedRevision: 1 })) === true, 'a write over the revision read was refused');
      check((await b.set(session(2, { tokens: { accessToken: 'stale' } }), { expectedRevision: 1 })) === false, 'a stale write was accepted');
      checkSame(await b.get(), session(2), 'the store after a refused write');
    });

    test('lets exactly one of many concurrent writers with the same expectedRevision win', async ({ open }) => {
      const stores = await Promise.all(Array.from({ length: 6 }, () => open()));
      await stores[0]?.set(session(1));
      const results = await Promise.all(
        stores.map((store, index) => store.set({ revision: 2, tokens: { accessToken: `writer-${index}` } }, { expectedRevision: 1 })),
      );
      check(results.filter(Boolean).length === 1, `${results.filter(Boolean).length} of 6 concurrent compare-and-sets won`);
      const winner = results.indexOf(true);
      checkSame((await stores[0]?.get())?.tokens.accessToken, `writer-${winner}`, 'the stored winner');
    });

    test('clears unconditionally, and a refresh that read before the sign-out writes nothing', async ({ open }) => {
      const [refresher, signOut] = [await open(), await open()];
      await refresher.set(session(4));
      const read = await refresher.get();
      await signOut.clear();
      check((await refresher.get()) === undefined, 'get() after clear() is not undefined');
      check((await refresher.set(session(5), { expectedRevision: read?.revision ?? -1 })) === false, 'a refresh resurrected a signed-out session');
      check((await signOut.get()) === undefined, 'the signed-out store holds tokens again');
      await signOut.clear(); // clearing an empty store is fine
    });

    test('lets a sign-in (unconditional set) win over a refresh that read the old session', async ({ open }) => {
      const [refresher, signIn] = [await open(), await open()];
      await refresher.set(session(4));
      await signIn.set(session(9, { tokens: { accessToken: 'new-user' } }));
      check((await refresher.set(session(5), { expectedRevision: 4 })) === false, 'a refresh overwrote a new sign-in');
      checkSame((await refresher.get())?.tokens.accessToken, 'new-user', 'the signed-in session');
    });

    test('signs out during a refresh held under the lock: the refresh\'s write is refused', async ({ open }) => {
      const [refresher, signOut] = [await open(), await open()];
      await refresher.set(session(1));
      const lock = await refresher.lock?.({ signal: new AbortController().signal });
      const read = await refresher.get();
      // The sign-out may wait for the lock (file, browser) or not (Redis, memory): either way it must win.
      const cleared = Promise.resolve(signOut.clear());
      const written = await refresher.set(session(2), { expectedRevision: read?.revision ?? -1 });
      await lock?.release();
      await cleared;
      check((await signOut.get()) === undefined, `the refresh ${written ? 'was written and ' : ''}survived the sign-out`);
    });

    test('lands one handle\'s sign-ins and sign-outs in the order they were called, also when they wait for a lock', async ({ open }) => {
      const [writer, holder] = [await open(), await open()];
      // Held by another handle, the lock makes a store that writes under it queue these calls (file, browser).
      const lock = await holder.lock?.({ signal: new AbortController().signal });
      const signIn = Promise.resolve(writer.set(session(6, { tokens: { accessToken: 'signed-in' } })));
      const signOut = Promise.resolve(writer.clear());
      const nextSignIn = Promise.resolve(writer.set(session(8, { tokens: { accessToken: 'signed-in-again' } })));
      const lastSignOut = Promise.resolve(writer.clear());
      await new Promise((resolve) => setTimeout(resolve, 50));
      await lock?.release();
      await Promise.all([signIn, signOut, nextSignIn, lastSignOut]);
      check((await holder.get()) === undefined, 'a sign-in landed after the sign-out called after it');
    });

    runner.describe('lock', () => {
      test('is exclusive between handles, and a waiter gets it once it is released', async ({ open }) => {
        const [a, b] = [await open(), await open()];
        if (!a.lock || !b.lock) return;
        const first = await a.lock({ signal: new AbortController().signal });
        let second = false;
        const waiting = b.lock({ signal: new AbortController().signal }).then((lock) => {
          second = true;
          return lock;
        });
        await new Promise((resolve) => setTimeout(resolve, 100));
        check(!second, 'two handles held the lock at once');
        await first.release();
        await (await waiting).release();
      });

      test('stops waiting with the signal\'s reason when the signal aborts', async ({ open }) => {
        const [a, b] = [await open(), await open()];
        if (!a.lock || !b.lock) return;
        const held = await a.lock({ signal: new AbortController().signal });
        const controller = new AbortController();
        const reason = new Error('caller gave up');
        const waiting = b.lock({ signal: controller.signal });
        controller.abort(reason);
        const outcome = await waiting.then(
          () => 'resolved',
          (error: unknown) => error,
        );
        await held.release();
        check(outcome === reason, 'lock() did not reject with the signal\'s reason');
      });
    });

    runner.describe('lost lock', () => {
      test('aborts the lock\'s signal and refuses the holder\'s refresh write once another holder took over', async (current) => {
        const [frozen, successor] = [await current.open(), await current.open()];
        if (!frozen.lock || !successor.lock || !current.loseLock) return;
        await frozen.set(session(1));
        const lock = await frozen.lock({ signal: new AbortController().signal });
        await current.loseLock(frozen);
        const taken = await successor.lock({ signal: AbortSignal.timeout(waitMs) });
        await eventually(() => lock.signal?.aborted === true, waitMs, 'the lost lock\'s signal aborting');
        const write = await Promise.resolve(frozen.set(session(2), { expectedRevision: 1 })).then(
          (written) => (written ? 'written' : 'refused'),
          () => 'rejected',
        );
        await taken.release();
        await lock.release();
        check(write !== 'written', 'a holder that lost its lock still wrote');
        checkSame(await successor.get(), session(1), 'the store after the lost holder\'s write');
      });

      // A holder frozen past its lease resumes before its timers run: only asking the store right
      // before presenting the refresh token keeps it from spending a token the new holder spent.
      test('reports through assertHeld, at once, that another holder took the lock over', async (current) => {
        const [frozen, successor] = [await current.open(), await current.open()];
        if (!frozen.lock || !successor.lock || !current.loseLock) return;
        const lock = await frozen.lock({ signal: new AbortController().signal });
        const assertHeld = lock.assertHeld?.bind(lock);
        const whileHeld = await assertHeld?.().then(
          () => 'resolved',
          () => 'rejected',
        );
        await current.loseLock(frozen);
        const taken = await successor.lock({ signal: AbortSignal.timeout(waitMs) });
        const afterTakeover = await assertHeld?.().then(
          () => 'resolved',
          () => 'rejected',
        );
        const signalAborted = lock.signal?.aborted === true;
        await taken.release();
        await lock.release();
        check(assertHeld !== undefined, 'a lock that can be lost has no assertHeld()');
        check(whileHeld === 'resolved', 'assertHeld() rejected while the lock was held');
        check(afterTakeover === 'rejected', 'assertHeld() resolved for a lock another holder took over');
        check(signalAborted, 'assertHeld() found the lock lost, but the lock\'s signal did not abort');
      });
    });

    runner.describe('subscribe', () => {
      test('tells another handle about each write and clear', async ({ open }) => {
        const [writer, reader] = [await open(), await open()];
        if (!reader.subscribe) return;
        const heard: (StoredTokens | undefined)[] = [];
        const unsubscribe = reader.subscribe((value) => heard.push(value));
        try {
          // Let subscriptions that connect asynchronously (pub/sub, watchers) settle first.
          await new Promise((resolve) => setTimeout(resolve, 200));
          await writer.set(session(1));
          await eventually(() => heard.some((value) => value?.revision === 1), waitMs, 'the write notification');
          await writer.clear();
          await eventually(() => heard.at(-1) === undefined, waitMs, 'the clear notification');
          checkSame(heard.find((value) => value?.revision === 1), session(1), 'the notified value');
        } finally {
          unsubscribe();
        }
      });
    });

    test('closes idempotently', async ({ open }) => {
      const store = await open();
      await store.close?.();
      await store.close?.();
    });
  });
}
