/*
 * Separate Node processes share one session through redisStore under steady traffic, with access
 * tokens that live 2 s (so each process refreshes ahead of expiry, under the lock) on an OAuth server
 * with rotating refresh tokens and reuse detection. Then Redis loses the session's data without
 * anyone signing out: FLUSHALL, redis-server killed (SIGKILL) and started again without persistence,
 * eviction by a cache Redis under memory pressure. The session must go on in every process: no
 * request told "signed out", no refresh token presented twice, one token call per access token.
 */
import { redisStore, type RedisTokenStore } from '@tokenrelay/redis';
import { defaultClient, startOAuthServer, type OAuthServer } from '@tokenrelay/testing';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { startFleet, stopFleet, type RedisWorker, type RedisWorkerConfig } from './helpers/redis-fleet.js';
import { connectRedis } from './helpers/redis-connection.js';
import { startRedisServer, type RedisServer } from './helpers/redis-server.js';
import { presentedRefreshTokens } from './helpers/token-requests.js';

const PROCESSES = 4;
const ACCESS_TOKEN_TTL_SECONDS = 2;
/** Each process: this many request loops, each pausing this long between requests. */
const LOOPS = 3;
const PAUSE_MS = 20;
const LEASE_MS = 1_000;

let redis: RedisServer;
let oauth: OAuthServer | undefined;
let admin: Redis | undefined;
let parentStore: RedisTokenStore | undefined;
const workers: RedisWorker[] = [];

beforeAll(async () => {
  redis = await startRedisServer();
}, 20_000);
afterEach(async () => {
  await redis.startAgain().catch(() => undefined);
  await stopFleet(workers.splice(0));
  await oauth?.close();
  await parentStore?.close();
  await admin?.config('SET', 'maxmemory', '0');
  await admin?.config('SET', 'maxmemory-policy', 'noeviction');
  await admin?.flushall();
  await admin?.quit().catch(() => admin?.disconnect());
  oauth = undefined;
  admin = undefined;
  parentStore = undefined;
}, 30_000);
afterAll(async () => {
  await redis?.stop();
});

async function setUp() {
  oauth = await startOAuthServer({ rotateRefreshTokens: true, reuseDetection: true, accessTokenTtlSeconds: ACCESS_TOKEN_TTL_SECONDS });
  admin = connectRedis({ port: redis.port }) as Redis;
  admin.on('error', () => undefined);
  const key = `{tokenrelay-loss:${randomUUID()}}`;
  // The parent signs in with the admin connection, and does nothing else with the session.
  parentStore = redisStore({ client: admin, key, onError: () => undefined });
  await parentStore.set({ revision: 1, tokens: oauth.issue() });
  const config: RedisWorkerConfig = {
    redis: { port: redis.port },
    key,
    tokenEndpoint: oauth.tokenEndpoint,
    apiOrigin: oauth.url,
    clientId: defaultClient.clientId,
    clientSecret: defaultClient.clientSecret as string,
    lockLeaseMs: LEASE_MS,
    lockWaitMs: 20_000,
    lockPollMs: 200,
  };
  const fleet = await startFleet(PROCESSES, config);
  workers.push(...fleet);
  return { server: oauth, admin, key, fleet };
}

/** Waits (bounded) until the token endpoint has answered `count` more token requests than now; false if it has not. */
async function tokenAnswers(server: OAuthServer, count: number): Promise<boolean> {
  const target = server.stats().tokenSuccesses + count;
  return vi
    .waitFor(() => expect(server.stats().tokenSuccesses).toBeGreaterThanOrEqual(target), { timeout: 15_000, interval: 20 })
    .then(
      () => true,
      () => false,
    );
}

/**
 * Steady traffic in every process: a refresh or two before `loseData`, and a few after it; then
 * the outcome of every request, and what the token endpoint saw.
 */
async function steadyTrafficAround(server: OAuthServer, fleet: readonly RedisWorker[], loseData: () => Promise<void>) {
  for (const worker of fleet) worker.steady(LOOPS, PAUSE_MS);
  expect(await tokenAnswers(server, 2)).toBe(true);
  await loseData();
  // A session that died makes no more token requests: the requests' outcomes then say why.
  const refreshedAfterLoss = await tokenAnswers(server, 3);
  for (const worker of fleet) worker.stopSteady();
  const results = await Promise.all(fleet.map((worker) => worker.next('steady-done', 30_000)));
  return {
    refreshedAfterLoss,
    failures: results.flatMap((result) => result.failures),
    succeeded: results.reduce((sum, result) => sum + result.ok, 0),
  };
}

/** The session went on: nobody was told "signed out", no refresh token twice, one token call per access token. */
function expectSessionWentOn(
  server: OAuthServer,
  loss: string,
  outcome: { refreshedAfterLoss: boolean; failures: string[]; succeeded: number },
): void {
  const stats = server.stats();
  // The figures for docs/many-processes.md; the assertions below are what the test checks.
  process.stdout.write(
    `redisStore, ${PROCESSES} processes of steady traffic through ${loss}: requests ${outcome.succeeded} ok, ${outcome.failures.length} failed; ` +
      `token calls ${stats.tokenRequests} (${stats.tokenSuccesses} answered), refresh token reuses ${stats.refreshTokenReuses}, families revoked ${stats.familiesRevoked}\n`,
  );
  expect(outcome.failures).toEqual([]);
  expect(outcome.refreshedAfterLoss).toBe(true);
  expect(outcome.succeeded).toBeGreaterThan(0);
  expect(stats.tokenErrors).toEqual({});
  expect(stats).toMatchObject({ refreshTokenReuses: 0, familiesRevoked: 0, maxInFlightTokenRequests: 1 });
  const presented = presentedRefreshTokens(server);
  expect(new Set(presented).size).toBe(presented.length);
  // Each token call renewed an access token near its expiry, never one a moment ago renewed.
  const arrivals = stats.tokenRequestLog.map((entry) => entry.at);
  for (let index = 1; index < arrivals.length; index++) {
    expect(arrivals[index]! - arrivals[index - 1]!).toBeGreaterThan((ACCESS_TOKEN_TTL_SECONDS * 1_000) / 2);
  }
}

describe(`redisStore shared by ${PROCESSES} processes under steady traffic when Redis loses the session's data`, () => {
  it('goes on through a FLUSHALL', async () => {
    const { server, admin: redisAdmin, fleet } = await setUp();

    const outcome = await steadyTrafficAround(server, fleet, async () => {
      await redisAdmin.flushall();
    });

    expectSessionWentOn(server, 'a FLUSHALL', outcome);
  }, 90_000);

  it('goes on through a crash of redis-server (SIGKILL) and a restart without persistence', async () => {
    const { server, fleet } = await setUp();

    const outcome = await steadyTrafficAround(server, fleet, async () => {
      await redis.crash();
      await sleep(200);
      await redis.startAgain();
    });

    expectSessionWentOn(server, 'a SIGKILL and restart without persistence', outcome);
  }, 90_000);

  it('goes on when a cache Redis under memory pressure evicts the tokens (maxmemory-policy allkeys-lru)', async () => {
    const { server, admin: redisAdmin, key, fleet } = await setUp();

    const outcome = await steadyTrafficAround(server, fleet, async () => {
      // Right after a refresh the tokens sit idle until the next one: the least recently used key.
      expect(await tokenAnswers(server, 1)).toBe(true);
      await redisAdmin.config('SET', 'maxmemory-policy', 'allkeys-lru');
      const used = Number(/used_memory:(\d+)/.exec(await redisAdmin.info('memory'))?.[1]);
      await redisAdmin.config('SET', 'maxmemory', String(used + 2_000_000));
      const filler = 'x'.repeat(10_000);
      // Bounded: 1,000 × 10 kB is five times the room left.
      for (let index = 0; index < 1_000 && (await redisAdmin.exists(key)) === 1; index++) {
        await redisAdmin.set(`filler:${index}`, filler);
      }
      expect(await redisAdmin.exists(key)).toBe(0);
      await redisAdmin.config('SET', 'maxmemory', '0');
    });

    expectSessionWentOn(server, 'an eviction (allkeys-lru)', outcome);
  }, 90_000);
});
