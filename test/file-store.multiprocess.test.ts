/*
 * Real Node processes (child_process, IPC) sharing one fileStore against the embedded OAuth server
 * with rotating refresh tokens and reuse detection (RFC 9700): the cross-process refresh lock.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TokenSet } from '@tokenrelay/core';
import { fileStore } from '@tokenrelay/core/node';
import { defaultClient, startOAuthServer, type OAuthServer, type OAuthServerOptions } from '@tokenrelay/testing';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  burst,
  disposeWorkers,
  isRefreshing,
  startBurst,
  startWorkers,
  stopWorkers,
  type TokenWorker,
  type WorkerConfig,
} from './helpers/worker-pool.js';

let directory: string;
const servers: OAuthServer[] = [];

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), 'tokenrelay-multiprocess-'));
});

afterEach(async () => {
  await stopWorkers();
  await Promise.all(servers.splice(0).map((server) => server.close()));
  await rm(directory, { recursive: true, force: true });
});

afterAll(disposeWorkers);

/** Counts outcomes: `{ '200': 75 }`, `{ SESSION_EXPIRED: 75 }`, … */
const tally = (outcomes: readonly string[]) =>
  outcomes.reduce<Record<string, number>>((counts, outcome) => ({ ...counts, [outcome]: (counts[outcome] ?? 0) + 1 }), {});

/**
 * A signed-in session in a token file, and `count` processes sharing it, each with its own
 * createTokenManager + fileStore + withTokenRelay.
 */
async function setUp(
  count: number,
  serverOptions: OAuthServerOptions,
  worker: { lockLeaseMs?: number; gateRefreshes?: boolean; store?: 'file' | 'memory' } = {},
) {
  const server = await startOAuthServer({ requestLogLimit: 20_000, ...serverOptions });
  servers.push(server);
  const path = join(directory, 'tokens', '_session.json');
  const signIn = server.issue();
  await fileStore(path, { watch: false }).set({ revision: 1, tokens: signIn });
  const config: WorkerConfig = {
    apiUrl: server.url,
    tokenEndpoint: server.tokenEndpoint,
    clientId: defaultClient.clientId,
    clientSecret: defaultClient.clientSecret ?? '',
    store: worker.store === 'memory' ? { kind: 'memory', tokens: signIn } : { kind: 'file', path, lockLeaseMs: worker.lockLeaseMs },
    gateRefreshes: worker.gateRefreshes ?? false,
  };
  const workers = await startWorkers(count, config);
  const stored = async (): Promise<TokenSet | undefined> => (await fileStore(path, { watch: false }).get())?.tokens;
  return { server, signIn, workers, stored };
}

/** Waits for the next worker to enter its refresh handler (it then holds the lock). */
function nextRefresh(workers: readonly TokenWorker[], timeout: number) {
  return vi.waitFor(
    () => {
      for (const worker of workers) {
        const message = worker.take(isRefreshing);
        if (message) return { worker, at: message.at };
      }
      throw new Error('no worker has started a refresh yet');
    },
    { timeout, interval: 10 },
  );
}

/**
 * Makes the token endpoint slow, revokes the access token, starts 25 requests in every worker,
 * and SIGKILLs the worker holding the lock once the server has read its whole token request (the
 * refresh token is in its log). Resolves with the moment of the kill and the survivors' outcomes.
 */
async function killHolderWhileServerWorksOnItsRequest(server: OAuthServer, signIn: TokenSet, workers: readonly TokenWorker[]) {
  server.failNextTokenRequests(1, { kind: 'slow', delayMs: 1_000 });
  server.revokeAccessTokens();
  const outcomes = startBurst(workers, 1, 25);
  // The killed worker's outcome rejects the moment it dies; it is asserted on below.
  for (const outcome of outcomes) outcome.catch(() => undefined);

  const holder = await nextRefresh(workers, 30_000);
  await vi.waitFor(() => expect(server.stats().tokenRequestLog[0]?.params.refresh_token).toBe(signIn.refreshToken), {
    timeout: 10_000,
    interval: 5,
  });
  await holder.worker.kill();
  const killedAt = Date.now();
  await expect(outcomes[workers.indexOf(holder.worker)]).rejects.toThrow(/exited \(SIGKILL\)/);

  const survivorOutcomes = await Promise.all(outcomes.filter((_, index) => workers[index] !== holder.worker));
  return { killedAt, survivorOutcomes };
}

describe('8 processes sharing a file store', () => {
  it(
    'make exactly one token request per expiry, 20 expiries in a row, with no failed request and the family intact',
    async () => {
      const { server, signIn, workers, stored } = await setUp(8, {
        rotateRefreshTokens: true,
        reuseDetection: true,
        tokenEndpointLatencyMs: 100,
      });
      const tokenCallsPerExpiry: number[] = [];
      const startedAt = Date.now();

      for (let round = 1; round <= 20; round++) {
        const before = server.stats().tokenRequests;
        server.revokeAccessTokens(); // every process's access token dies at once, as at expiry
        const outcomes = (await burst(workers, round, 25)).flat();
        expect(tally(outcomes), `round ${round}`).toEqual({ '200': 8 * 25 });
        tokenCallsPerExpiry.push(server.stats().tokenRequests - before);
      }

      const stats = server.stats();
      // The figures for docs/many-processes.md; the assertions below are what the test checks.
      process.stdout.write(
        `fileStore, 8 processes × 20 expiries: token calls per expiry [${tokenCallsPerExpiry.join(', ')}], ` +
          `families revoked ${stats.familiesRevoked}, ${Date.now() - startedAt} ms\n`,
      );
      expect(tokenCallsPerExpiry).toEqual(Array(20).fill(1));
      expect(stats).toMatchObject({
        tokenRequests: 20,
        tokenSuccesses: 20,
        refreshTokenReuses: 0,
        familiesRevoked: 0,
        maxInFlightTokenRequests: 1,
      });
      // Each refresh presented the refresh token the previous one issued: the rotation chain never forked.
      const presented = stats.tokenRequestLog.map((entry) => entry.params.refresh_token);
      expect(presented[0]).toBe(signIn.refreshToken);
      expect(new Set(presented).size).toBe(20);
      // The file holds the newest tokens: an unused refresh token and the access token of the last replays.
      const newest = await stored();
      expect(presented).not.toContain(newest?.refreshToken);
      const lastRound = stats.apiRequestLog.filter((entry) => entry.path.startsWith('/api/round-20/') && entry.status === 200);
      expect(lastRound).toHaveLength(8 * 25);
      expect(lastRound.every((entry) => entry.accessToken === newest?.accessToken)).toBe(true);
    },
    120_000,
  );

  it(
    'without the shared store (a memory store per process) make 8 token requests for one expiry and get the family revoked',
    async () => {
      // The control experiment: the same setup minus the file store's lock. Seven processes present
      // the refresh token the first one already rotated, and reuse detection ends the session.
      const { server, workers } = await setUp(8, { rotateRefreshTokens: true, reuseDetection: true, tokenEndpointLatencyMs: 100 }, { store: 'memory' });

      server.revokeAccessTokens();
      const outcomes = tally((await burst(workers, 1, 25)).flat());

      expect(server.stats()).toMatchObject({ tokenRequests: 8, tokenSuccesses: 1, refreshTokenReuses: 7, familiesRevoked: 1 });
      expect(outcomes.SESSION_EXPIRED).toBeGreaterThanOrEqual(7 * 25);
    },
    120_000,
  );
});

describe('a lock holder killed (SIGKILL) in the middle of a refresh', () => {
  const leaseMs = 3_000;

  it(
    'before its token request left: another process takes over after the lease, and one token request serves all',
    async () => {
      const { server, signIn, workers, stored } = await setUp(4, { rotateRefreshTokens: true, reuseDetection: true }, { lockLeaseMs: leaseMs, gateRefreshes: true });
      server.revokeAccessTokens();
      const outcomes = startBurst(workers, 1, 25);
      // The killed worker's outcome rejects the moment it dies; it is asserted on below.
      for (const outcome of outcomes) outcome.catch(() => undefined);

      const holder = await nextRefresh(workers, 30_000);
      await holder.worker.kill();
      const killedAt = Date.now();
      await expect(outcomes[workers.indexOf(holder.worker)]).rejects.toThrow(/exited \(SIGKILL\)/);
      const survivors = workers.filter((worker) => worker !== holder.worker);
      const successor = await nextRefresh(survivors, leaseMs + 15_000);
      successor.worker.send({ type: 'proceed' });

      const survivorOutcomes = await Promise.all(outcomes.filter((_, index) => workers[index] !== holder.worker));
      expect(tally(survivorOutcomes.flat())).toEqual({ '200': 3 * 25 });
      // It waited for the lease of the dead holder rather than stealing a live lock.
      expect(successor.at - killedAt).toBeGreaterThanOrEqual(leaseMs / 2);
      for (const worker of survivors) expect(worker.take(isRefreshing)).toBeUndefined();

      const stats = server.stats();
      expect(stats).toMatchObject({ tokenRequests: 1, tokenSuccesses: 1, familiesRevoked: 0 });
      expect(stats.tokenRequestLog[0]?.params.refresh_token).toBe(signIn.refreshToken);
      // The rotated refresh token was stored, and is not the one presented.
      const newest = await stored();
      expect(newest?.refreshToken).toBeDefined();
      expect(newest?.refreshToken).not.toBe(signIn.refreshToken);
      expect(newest?.accessToken).not.toBe(signIn.accessToken);
    },
    120_000,
  );

  it(
    'after the server received its token request, with rotation and reuse detection: the session is lost, promptly and visibly, and the store keeps the last refresh token any process received',
    async () => {
      const { server, signIn, workers, stored } = await setUp(4, { rotateRefreshTokens: true, reuseDetection: true }, { lockLeaseMs: leaseMs });
      // The first token response takes a while, so the holder can be killed while the server works on it.
      const { killedAt, survivorOutcomes } = await killHolderWhileServerWorksOnItsRequest(server, signIn, workers);
      const stats = server.stats();

      // What really happens: the server does not notice that its client died. It finishes the
      // request — rotates the refresh token, issues a new one — and writes the answer to a closed
      // socket. The new refresh token exists only in that lost answer; the old one is now "used".
      expect(stats.tokenRequestLog[0]).toMatchObject({ status: 200, injected: 'slow' });
      // The next process takes the lock only after the dead holder's lease, so it never raced the
      // request in flight. It finds the store unchanged and, as it must, presents the refresh token
      // it holds: to the server that is a reuse of a rotated token, indistinguishable from theft,
      // and RFC 9700 reuse detection revokes the whole family. No client can avoid this: the token
      // that would have saved the session never arrived. (A server with a reuse grace period,
      // like Auth0's leeway or Okta's, would accept it.)
      const takeover = stats.tokenRequestLog[1];
      expect(takeover?.at ?? 0).toBeGreaterThanOrEqual(killedAt + leaseMs / 2);
      expect(stats.maxInFlightTokenRequests).toBe(1);
      expect(stats.familiesRevoked).toBe(1);
      // The first survivor marks the session dead in the store: the others learn it from there,
      // without presenting the dead refresh token again.
      expect(stats).toMatchObject({ tokenRequests: 1 + 1, tokenSuccesses: 1, refreshTokenReuses: 1, tokenErrors: { invalid_grant: 1 } });
      expect(stats.tokenRequestLog.every((entry) => entry.params.refresh_token === signIn.refreshToken)).toBe(true);
      // Every request of the survivors ends, with the error that tells the app to sign in again.
      expect(tally(survivorOutcomes.flat())).toEqual({ SESSION_EXPIRED: 3 * 25 });
      // The store was never lost, corrupted or rolled back: it still holds the newest refresh token any
      // process ever received, ready for the app to replace after the new sign-in.
      expect(await stored()).toEqual(signIn);
    },
    120_000,
  );

  it(
    'after the server received its token request, without rotation: another process takes over after the lease and every request succeeds',
    async () => {
      const { server, signIn, workers, stored } = await setUp(4, { rotateRefreshTokens: false }, { lockLeaseMs: leaseMs });
      const { killedAt, survivorOutcomes } = await killHolderWhileServerWorksOnItsRequest(server, signIn, workers);

      // The lost answer costs one extra token request and a lease of waiting, nothing more: the
      // refresh token stays valid when the server does not rotate it.
      expect(tally(survivorOutcomes.flat())).toEqual({ '200': 3 * 25 });
      const stats = server.stats();
      expect(stats).toMatchObject({ tokenRequests: 2, tokenSuccesses: 2, familiesRevoked: 0, maxInFlightTokenRequests: 1 });
      expect(stats.tokenRequestLog[1]?.at ?? 0).toBeGreaterThanOrEqual(killedAt + leaseMs / 2);
      const newest = await stored();
      expect(newest?.refreshToken).toBe(signIn.refreshToken);
      expect(newest?.accessToken).not.toBe(signIn.accessToken);
    },
    120_000,
  );
});
