/*
 * Proof that one Redis store coordinates separate Node processes: 8 worker processes share one
 * session through redisStore, on one redis-server and on a Redis Cluster of three nodes, and hit a
 * real OAuth server with rotating refresh tokens and reuse detection. The workers are real
 * processes (child_process.fork), so nothing is shared but Redis.
 */
import { ErrorCode, type TokenSet } from '@tokenrelay/core';
import { redisStore, type RedisTokenStore } from '@tokenrelay/redis';
import { defaultClient, startOAuthServer, type OAuthServer } from '@tokenrelay/testing';
import type { Cluster, Redis } from 'ioredis';
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { startFleet, stopFleet, type BurstResult, type RedisWorker, type RedisWorkerConfig } from './helpers/redis-fleet.js';
import { startRedisCluster, type RedisCluster } from './helpers/redis-cluster.js';
import { connectRedis, type RedisEndpoint } from './helpers/redis-connection.js';
import { startRedisServer, type RedisServer } from './helpers/redis-server.js';
import { presentedRefreshTokens, tokenRequestInFlight } from './helpers/token-requests.js';

const PROCESSES = 8;
const REQUESTS_PER_PROCESS = 25;
const EXPIRIES = 20;
/** Short, so a crashed holder's lock runs out quickly in the crash tests. */
const CRASH_LEASE_MS = 2_000;
// Long enough that a survivor finishing before it proves the announcement, not the lease, ended its wait.
const ANNOUNCED_CRASH_LEASE_MS = 10_000;
const BURST_TIMEOUT_MS = 30_000;

let redis: RedisServer;
let cluster: RedisCluster;
let oauth: OAuthServer | undefined;
let client: Redis | Cluster | undefined;
const workers: RedisWorker[] = [];

beforeAll(async () => {
  redis = await startRedisServer();
  cluster = await startRedisCluster();
}, 60_000);
afterEach(async () => {
  await stopFleet(workers.splice(0));
  await oauth?.close();
  await client?.quit().catch(() => client?.disconnect());
  oauth = undefined;
  client = undefined;
}, 30_000);
afterAll(async () => {
  await redis?.stop();
  await cluster?.stop();
});

/** A fresh OAuth server (rotation + reuse detection), a signed-in session in Redis, and the workers' config. */
async function setUp(lockLeaseMs: number, endpoint: RedisEndpoint = { port: redis.port }) {
  oauth = await startOAuthServer({ rotateRefreshTokens: true, reuseDetection: true });
  client = connectRedis(endpoint);
  // A hash tag, so that the key and its lock share one slot on a cluster (a single server ignores it).
  const key = `{tokenrelay-mp:${randomUUID()}}`;
  // The parent reads the store only; every refresh happens in the workers.
  const store: RedisTokenStore = redisStore({ client, key });
  const signedIn = oauth.issue();
  await store.set({ revision: 1, tokens: signedIn });
  const config: RedisWorkerConfig = {
    redis: endpoint,
    key,
    tokenEndpoint: oauth.tokenEndpoint,
    apiOrigin: oauth.url,
    clientId: defaultClient.clientId,
    clientSecret: defaultClient.clientSecret as string,
    lockLeaseMs,
    lockWaitMs: 20_000,
    lockPollMs: 1_000,
  };
  return { server: oauth, store, signedIn, config };
}

/**
 * Called once the lock holder is dead: when its lease ends, by Redis' own count. Nobody can take
 * the lock before that, so whatever the survivors do after the takeover happens later.
 */
async function leaseEndOfDeadHolder(key: string): Promise<number> {
  const askedAt = Date.now();
  const remainingMs = (await client?.pttl(`${key}:lock`)) ?? -2;
  expect(remainingMs, 'the dead holder\'s lock should still be there').toBeGreaterThan(0);
  return askedAt + remainingMs;
}

/** Clock slack between Redis' expiry and Date.now() in this process (same machine, millisecond clocks). */
const CLOCK_SLACK_MS = 5;

async function launch(count: number, config: RedisWorkerConfig): Promise<RedisWorker[]> {
  const started = await startFleet(count, config);
  workers.push(...started);
  return started;
}

/** Revokes every access token, then fires a burst in each worker; resolves with their results. */
async function expiry(server: OAuthServer, fleet: readonly RedisWorker[]): Promise<BurstResult[]> {
  server.revokeAccessTokens();
  for (const worker of fleet) worker.burst(REQUESTS_PER_PROCESS);
  return Promise.all(fleet.map((worker) => worker.next('burst-done', BURST_TIMEOUT_MS)));
}

/** After a crash test: one more expiry for the survivors, refreshed with the refresh token Redis holds. */
async function expectStoredRefreshTokenIsLive(server: OAuthServer, store: RedisTokenStore, survivors: readonly RedisWorker[]) {
  const stored = (await store.get())?.tokens as TokenSet;
  const before = server.stats().tokenRequests;
  const results = await expiry(server, survivors);
  expect(results.flatMap((result) => result.failures)).toEqual([]);
  expect(server.stats().tokenRequests - before).toBe(1);
  expect(presentedRefreshTokens(server).at(-1)).toBe(stored.refreshToken);
  expect(server.stats().familiesRevoked).toBe(0);
}

const backends = [
  { backend: 'one redis-server', endpoint: (): RedisEndpoint => ({ port: redis.port }) },
  { backend: 'a Redis Cluster of three nodes', endpoint: (): RedisEndpoint => ({ clusterPorts: cluster.nodes.map((node) => node.port) }) },
];

describe.each(backends)('redisStore on $backend shared by separate Node processes', ({ backend, endpoint }) => {
  it(
    `makes exactly one token request per expiry for ${PROCESSES} processes × ${REQUESTS_PER_PROCESS} concurrent requests, ${EXPIRIES} expiries in a row`,
    async () => {
      const { server, store, config } = await setUp(10_000, endpoint());
      const fleet = await launch(PROCESSES, config);
      const tokenCallsPerExpiry: number[] = [];
      const failures: string[] = [];
      let succeeded = 0;
      const startedAt = Date.now();

      for (let round = 0; round < EXPIRIES; round++) {
        const before = server.stats().tokenRequests;
        const storedBefore = (await store.get())?.tokens as TokenSet;
        const results = await expiry(server, fleet);
        tokenCallsPerExpiry.push(server.stats().tokenRequests - before);
        failures.push(...results.flatMap((result) => result.failures));
        succeeded += results.reduce((sum, result) => sum + result.ok, 0);
        // Each refresh presents the refresh token Redis held, and Redis then holds the rotated one.
        expect(presentedRefreshTokens(server).at(-1)).toBe(storedBefore.refreshToken);
        expect((await store.get())?.tokens.refreshToken).not.toBe(storedBefore.refreshToken);
      }

      // The figures for docs/many-processes.md; the assertions below are what the test checks.
      const stats = server.stats();
      process.stdout.write(
        `redisStore on ${backend}, ${PROCESSES} processes × ${EXPIRIES} expiries: token calls per expiry [${tokenCallsPerExpiry.join(', ')}], ` +
          `failed requests ${failures.length}, families revoked ${stats.familiesRevoked}, ${Date.now() - startedAt} ms\n`,
      );
      expect(tokenCallsPerExpiry).toEqual(Array(EXPIRIES).fill(1));
      expect(failures).toEqual([]);
      expect(succeeded).toBe(PROCESSES * REQUESTS_PER_PROCESS * EXPIRIES);
      expect(stats.tokenRequests).toBe(EXPIRIES);
      expect(stats.tokenErrors).toEqual({});
      expect(stats.refreshTokenReuses).toBe(0);
      expect(stats.familiesRevoked).toBe(0);
      expect(stats.maxInFlightTokenRequests).toBe(1);

      // Quitting its own Redis client is all a worker does: the store must not keep it alive.
      const exits = await stopFleet(workers.splice(0));
      expect(exits).toEqual(Array(PROCESSES).fill({ code: 0, signal: null }));
    },
    120_000,
  );
});

describe('redisStore on one redis-server when a lock holder crashes', () => {
  it(
    'lets another process take over after the lease when the lock holder is SIGKILLed before its token request leaves, and keeps the session',
    async () => {
      const { server, store, signedIn, config } = await setUp(CRASH_LEASE_MS);
      const [doomed, ...survivors] = (await launch(3, config)) as [RedisWorker, ...RedisWorker[]];

      server.revokeAccessTokens();
      doomed.burst(REQUESTS_PER_PROCESS, 'before-token-request');
      await doomed.next('refreshing', 10_000);
      for (const worker of survivors) worker.burst(REQUESTS_PER_PROCESS);
      doomed.process.kill('SIGKILL');
      expect(await doomed.exited(5_000)).toEqual({ code: null, signal: 'SIGKILL' });
      const leaseEnd = await leaseEndOfDeadHolder(config.key);
      const results = await Promise.all(survivors.map((worker) => worker.next('burst-done', BURST_TIMEOUT_MS)));

      expect(results.flatMap((result) => result.failures)).toEqual([]);
      // One survivor refreshed, once, after the dead holder's lease ran out; the other used its tokens.
      expect(presentedRefreshTokens(server)).toEqual([signedIn.refreshToken]);
      expect(server.stats().tokenRequestLog[0]?.at).toBeGreaterThanOrEqual(leaseEnd - CLOCK_SLACK_MS);
      expect(server.stats().familiesRevoked).toBe(0);
      expect((await store.get())?.tokens.refreshToken).not.toBe(signedIn.refreshToken);
      await expectStoredRefreshTokenIsLive(server, store, survivors);
    },
    120_000,
  );

  it(
    'lets the others adopt the stored tokens without a token request when the holder is SIGKILLed after storing them but before releasing the lock',
    async () => {
      // A long lease: the survivors must not need it to run out, because the store announces what the holder stored.
      const { server, store, signedIn, config } = await setUp(ANNOUNCED_CRASH_LEASE_MS);
      const [doomed, ...survivors] = (await launch(3, config)) as [RedisWorker, ...RedisWorker[]];
      // A slow token endpoint, so the survivors are already waiting for the lock when the tokens land.
      server.failNextTokenRequests(1, { kind: 'slow', delayMs: 1_500 });

      server.revokeAccessTokens();
      doomed.burst(REQUESTS_PER_PROCESS, 'after-store');
      await doomed.next('refreshing', 10_000);
      for (const worker of survivors) worker.burst(REQUESTS_PER_PROCESS);
      await vi.waitFor(() => expect(server.stats().api401).toBe(REQUESTS_PER_PROCESS * (1 + survivors.length)), {
        timeout: 10_000,
        interval: 10,
      });
      // Every survivor request had its 401 (so its process went for the lock) before the token response left.
      expect(server.stats().tokenRequestLog[0]?.status).toBeUndefined();
      await doomed.next('stored', 10_000);
      doomed.process.kill('SIGKILL');
      expect(await doomed.exited(5_000)).toEqual({ code: null, signal: 'SIGKILL' });
      const leaseEnd = await leaseEndOfDeadHolder(config.key);
      const results = await Promise.all(survivors.map((worker) => worker.next('burst-done', BURST_TIMEOUT_MS)));

      // The survivors did not wait for the dead holder's lease: the announcement of the stored tokens ended their
      // wait for the lock, and they adopted those tokens.
      expect(Date.now()).toBeLessThan(leaseEnd);
      expect(results.flatMap((result) => result.failures)).toEqual([]);
      expect(presentedRefreshTokens(server)).toEqual([signedIn.refreshToken]);
      expect(server.stats().familiesRevoked).toBe(0);
      expect((await store.get())?.tokens.refreshToken).not.toBe(signedIn.refreshToken);
      await expectStoredRefreshTokenIsLive(server, store, survivors);
    },
    120_000,
  );

  it(
    'ends the session cleanly when the holder is SIGKILLed while a slow token endpoint is processing its request: the rotation it caused is lost with it',
    async () => {
      const { server, store, signedIn, config } = await setUp(CRASH_LEASE_MS);
      const [doomed, ...survivors] = (await launch(3, config)) as [RedisWorker, ...RedisWorker[]];
      // The server answers the dead process's request 300 ms after it arrives, long before the lease runs out.
      server.failNextTokenRequests(1, { kind: 'slow', delayMs: 300 });

      server.revokeAccessTokens();
      doomed.burst(REQUESTS_PER_PROCESS);
      await doomed.next('refreshing', 10_000);
      await tokenRequestInFlight(server);
      for (const worker of survivors) worker.burst(REQUESTS_PER_PROCESS);
      doomed.process.kill('SIGKILL');
      expect(await doomed.exited(5_000)).toEqual({ code: null, signal: 'SIGKILL' });
      const leaseEnd = await leaseEndOfDeadHolder(config.key);
      const results = await Promise.all(survivors.map((worker) => worker.next('burst-done', BURST_TIMEOUT_MS)));

      const stats = server.stats();
      // The first survivor's token request came only after the dead holder's lease ran out.
      expect(stats.tokenRequestLog[1]?.at).toBeGreaterThanOrEqual(leaseEnd - CLOCK_SLACK_MS);
      // The server did process the dead process's request: it rotated the refresh token and sent
      // the new one into a closed socket. Nobody alive ever saw it, so Redis still holds the
      // sign-in's refresh token, which the server now treats as spent.
      expect(stats.tokenRequestLog[0]).toMatchObject({ status: 200, injected: 'slow' });
      expect(stats.tokenSuccesses).toBe(1);
      // The first survivor, after the lease, finds Redis unchanged and presents that token: a reuse,
      // and the server revokes the whole family (RFC 9700). It marks the session dead in Redis, so the
      // other survivors fail without presenting the dead token again.
      expect(presentedRefreshTokens(server)).toEqual(Array(1 + 1).fill(signedIn.refreshToken));
      expect(stats.tokenErrors).toEqual({ invalid_grant: 1 });
      expect(stats.refreshTokenReuses).toBe(1);
      expect(stats.familiesRevoked).toBe(1);
      // Every request fails promptly with SESSION_EXPIRED (sign in again); nothing hangs.
      for (const result of results) {
        expect(result).toMatchObject({ ok: 0, failures: Array(REQUESTS_PER_PROCESS).fill(ErrorCode.SESSION_EXPIRED) });
      }
      // Redis was neither cleared nor rolled back: it holds the last refresh token any live process received.
      expect((await store.get())?.tokens).toEqual(signedIn);
    },
    120_000,
  );
});
