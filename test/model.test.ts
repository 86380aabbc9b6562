/*
 * Model-based tests: fast-check drives the real token manager and fetch adapter through random
 * interleavings of requests, answers (200, 401, late 401, 403), clock moves (expiry, refresh
 * timeouts, retry backoff), token endpoint outcomes (success with or without rotation,
 * invalid_grant, 503, invalid_client, a crashing handler; a slow answer that outlives the refresh
 * timeout or is given up after lateAnswerWaitMs), aborts, new sign-ins and sign-outs (also during a
 * refresh), store write failures and store calls (get, set, clear, lock) that reject or hang; in
 * half the runs the store's writes are slow, and in half it is shared with another process that
 * takes its lock, refreshes (announced or not), signs in and signs out — also without the lock,
 * while this manager's token call is open — and the manager's lock can be lost while it holds it.
 * After every step, and after a final drain, the invariants of test/helpers/model-system.ts must
 * hold: among them, a refresh token is presented only while it is the newest and never while an
 * earlier presentation may still be answered, a store missing the manager's write is repaired
 * before the next token call, a replaced session is never written back, no token call comes
 * within the pause after a failed refresh, a session signed out here is never sent, announced or
 * written back, and no request waits for the manager longer than a bound of fake time.
 *
 * Reproducible: the seed is fixed (override with TOKENRELAY_MODEL_SEED, and the number of runs with
 * TOKENRELAY_MODEL_RUNS); a failure prints the seed, the path and the shrunk command list.
 */
import { ErrorCode, createTokenManager, type StoredTokens, type TokenStore } from '@tokenrelay/core';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { modelCommands, modelRunConfig } from './helpers/model-commands.js';
import { ModelSystem, type ModelCoverage } from './helpers/model-system.js';

const seed = Number(process.env.TOKENRELAY_MODEL_SEED ?? 20_250_601);
const numRuns = Number(process.env.TOKENRELAY_MODEL_RUNS ?? 1_000);

beforeAll(() => {
  // setImmediate stays real: the system uses it to let every promise chain finish between commands.
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'], now: Date.UTC(2025, 0, 1) });
});

afterAll(() => {
  vi.useRealTimers();
});

describe('the token manager and fetch adapter under random interleavings', () => {
  it(
    'keep every invariant: one token call at a time with the newest refresh token, no stale sends, one replay at most, every request settles',
    async () => {
      const total: Partial<ModelCoverage> = {};
      await fc.assert(
        fc.asyncProperty(modelRunConfig, modelCommands(40), async (config, commands) => {
          vi.clearAllTimers();
          const system = new ModelSystem(config);
          await system.start();
          try {
            await fc.asyncModelRun(() => ({ model: system, real: system }), commands);
            await system.drainAndCheck();
          } finally {
            for (const [key, count] of Object.entries(system.coverage) as [keyof ModelCoverage, number][]) {
              total[key] = (total[key] ?? 0) + count;
            }
          }
        }),
        { seed, numRuns },
      );
      // The runs must have reached every situation the invariants are about, or they prove little.
      console.warn(`model coverage over ${numRuns} runs (seed ${seed}):`, total);
      for (const [situation, count] of Object.entries(total)) expect(count, situation).toBeGreaterThan(0);
    },
    60_000,
  );
});

// Plain versions of the counterexamples the model found, so a regression names itself.
describe('regressions found by the model', () => {
  it('refreshes for a late 401 when the token that replaced the refused one has expired meanwhile', async () => {
    // Shrunk counterexample: startRequest, signIn(1000 ms), advanceClock(20000), respond 401 to request 0.
    let issued = 0;
    const manager = createTokenManager({
      tokens: { accessToken: 'access-0', refreshToken: 'refresh-0' },
      refresh: async () => {
        issued++;
        return { accessToken: `access-${issued}`, expiresAt: Date.now() + 1_000 };
      },
    });
    expect((await manager.refresh()).accessToken).toBe('access-1');
    await vi.advanceTimersByTimeAsync(2_000);

    // A slow request sent with access-0 gets its 401 now: access-1 is no better, it expired a second ago.
    const tokens = await manager.refresh({ staleAccessToken: 'access-0' });

    expect(tokens.accessToken).toBe('access-2');
    expect(issued).toBe(2);
  });

  it('does not hand out a token that expired while a proactive refresh timed out', async () => {
    // Shrunk counterexample: first token lives 8 s, advanceClock(1000), advanceClock(5000), startRequest, advanceClock(60000).
    const manager = createTokenManager({
      tokens: { accessToken: 'access-0', refreshToken: 'refresh-0', expiresAt: Date.now() + 8_000 },
      // A token endpoint that never answers: the waiters are released at the refresh timeout.
      refresh: ({ signal }) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason))),
      refreshTimeoutMs: 5_000,
      retry: { retries: 1, minDelayMs: 100, maxDelayMs: 100 },
    });
    // 0.5 s before expiry: inside the margin (a quarter of the 8 s lifetime) and within half of it, too
    // close to expiry to be sent while the refresh runs, so the request waits for the refresh.
    await vi.advanceTimersByTimeAsync(7_500);
    const outcome = manager.getAccessToken().then(
      (accessToken) => ({ accessToken }),
      (error: unknown) => ({ error }),
    );
    // By the time the refresh times out, access-0 has been dead for 4.5 s.
    await vi.advanceTimersByTimeAsync(5_000);

    expect(await outcome).toEqual({ error: expect.objectContaining({ code: ErrorCode.REFRESH_TIMEOUT }) });
  });

  it('never sends a token the server refused while a proactive refresh is in flight', async () => {
    // Shrunk counterexample: first token lives 8 s, advanceClock(1000), revokeAccessTokens, advanceClock(5000),
    // startRequest, respond 401 to request 0, startRequest.
    const manager = createTokenManager({
      tokens: { accessToken: 'access-0', refreshToken: 'refresh-0', expiresAt: Date.now() + 8_000 },
      // A token endpoint that has not answered yet.
      refresh: () => new Promise(() => undefined),
    });
    // Inside the margin (a quarter of the 8 s lifetime) but far enough from expiry to be sent while
    // the proactive refresh runs.
    await vi.advanceTimersByTimeAsync(6_000);
    expect(await manager.getAccessToken()).toBe('access-0');

    // The server refuses access-0 (revoked): the request that got the 401 waits for the refresh running.
    void manager.refresh({ staleAccessToken: 'access-0' }).catch(() => undefined);

    // A new request must not go out with the refused token: it waits for the refresh as well.
    let sent: string | undefined;
    void manager.getAccessToken().then((token) => (sent = token), () => undefined);
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toBeUndefined();
    vi.clearAllTimers();
  });

  it('refreshes instead of adopting tokens another process stored when they have expired meanwhile', async () => {
    // Shrunk counterexample (shared store): revokeAccessTokens, otherProcessActs(refresh, 1000 ms, unannounced),
    // advanceClock(1000), startRequest, respond 401 to request 0.
    let stored: StoredTokens | undefined = { tokens: { accessToken: 'access-0', refreshToken: 'refresh-0' }, revision: 1 };
    const store: TokenStore = {
      get: () => stored,
      set: (value) => {
        stored = value;
        return true;
      },
      clear: () => {
        stored = undefined;
      },
      lock: async () => ({ release: () => undefined }),
    };
    const presented: Array<string | undefined> = [];
    const manager = createTokenManager({
      store,
      refresh: async ({ tokens }) => {
        presented.push(tokens?.refreshToken);
        return { accessToken: 'access-2', refreshToken: 'refresh-2', expiresAt: Date.now() + 60_000 };
      },
    });
    expect((await manager.getTokens())?.accessToken).toBe('access-0');
    // Another process refreshes (rotating) and writes the store without telling this one; its token lives 1 s.
    stored = { tokens: { accessToken: 'access-1', refreshToken: 'refresh-1', expiresAt: Date.now() + 1_000 }, revision: 2 };
    await vi.advanceTimersByTimeAsync(2_000);

    // A request sent with access-0 gets a 401. The store's access-1 is no better: it expired a second ago.
    const tokens = await manager.refresh({ staleAccessToken: 'access-0' });

    expect(tokens.accessToken).toBe('access-2');
    expect(presented).toEqual(['refresh-1']);
  });
});
