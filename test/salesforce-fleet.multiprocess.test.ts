/*
 * Salesforce keeps at most 5 token pairs per user and app: a 6th revokes the oldest. Eight Node
 * processes (child_process, IPC) acting as one integration user with the JWT bearer grant, against
 * @tokenrelay/testing's Salesforce mode, which counts those evictions: with one shared store key
 * (fileStore, redisStore) they get one session per expiry between them and never hit the limit;
 * with a store each they sign in on their own and log each other out.
 */
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { salesforceFixtures, startOAuthServer, type OAuthClient, type OAuthServer } from '@tokenrelay/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startRedisServer, type RedisServer } from './helpers/redis-server.js';
import { burst, disposeWorkers, startWorkers, stopWorkers, type TokenWorker, type WorkerConfig } from './helpers/worker-pool.js';

const PROCESSES = 8;
const REQUESTS_PER_PROCESS = 25;
const EXPIRIES = 20;

const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
/** The External Client App with the integration user's certificate uploaded (JWT Bearer Flow on). */
const app: OAuthClient = {
  clientId: 'etl-integration-app',
  clientSecret: 'etl-integration-secret',
  authMethod: 'client_secret_post',
  publicKey: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
};
const privateKey = keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

let redis: RedisServer | undefined;
let directory: string | undefined;
const servers: OAuthServer[] = [];

beforeAll(async () => {
  redis = await startRedisServer();
}, 20_000);
afterEach(async () => {
  await stopWorkers();
  await Promise.all(servers.splice(0).map((server) => server.close()));
  if (directory) await rm(directory, { recursive: true, force: true });
  directory = undefined;
});
afterAll(async () => {
  await disposeWorkers();
  await redis?.stop();
});

/** Counts outcomes: `{ '200': 4000 }`, `{ '200': 180, '401': 20 }`, … */
const tally = (outcomes: readonly string[]) =>
  outcomes.reduce<Record<string, number>>((counts, outcome) => ({ ...counts, [outcome]: (counts[outcome] ?? 0) + 1 }), {});

/** An org, and 8 processes with no tokens yet, on one store key per org and user or a memory store each. */
async function startFleet(kind: 'file' | 'redis' | 'memory') {
  const server = await startOAuthServer({ mode: 'salesforce', clients: [app], requestLogLimit: 20_000 });
  servers.push(server);
  directory = await mkdtemp(join(tmpdir(), 'tokenrelay-sf-fleet-'));
  const key = `salesforce:${salesforceFixtures.organizationId}:${salesforceFixtures.username}`;
  const store: WorkerConfig['store'] =
    kind === 'file'
      ? { kind, path: join(directory, `${key.replaceAll(':', '-')}.json`) }
      : kind === 'redis'
        ? { kind, port: redis?.port ?? 0, key: `tokenrelay-fleet:${randomUUID()}:${key}` }
        : { kind };
  const workers = await startWorkers(PROCESSES, {
    apiUrl: server.url,
    tokenEndpoint: server.tokenEndpoint,
    clientId: app.clientId,
    clientSecret: '',
    salesforceJwt: { username: salesforceFixtures.username, privateKey },
    store,
  });
  return { server, workers };
}

/**
 * The first burst acquires the first session; each later one follows an expiry of the session for
 * every process at once. Returns the token calls per burst and every request's outcome.
 */
async function runExpiries(server: OAuthServer, workers: readonly TokenWorker[], bursts: number) {
  const tokenCalls: number[] = [];
  const outcomes: string[] = [];
  for (let round = 1; round <= bursts; round++) {
    const before = server.stats().tokenRequests;
    if (round > 1) server.revokeAccessTokens();
    outcomes.push(...(await burst(workers, round, REQUESTS_PER_PROCESS)).flat());
    tokenCalls.push(server.stats().tokenRequests - before);
  }
  return { tokenCalls, outcomes };
}

describe.each(['file', 'redis'] as const)('8 processes as one Salesforce user sharing one %s store key', (kind) => {
  it(
    `get one session per expiry between them, ${EXPIRIES} in a row, and never hit the limit of 5 token pairs per user and app`,
    async () => {
      const { server, workers } = await startFleet(kind);

      const { tokenCalls, outcomes } = await runExpiries(server, workers, EXPIRIES);

      expect(tally(outcomes)).toEqual({ '200': PROCESSES * REQUESTS_PER_PROCESS * EXPIRIES });
      expect(tokenCalls).toEqual(Array(EXPIRIES).fill(1));
      expect(server.stats()).toMatchObject({ tokenPairsEvicted: 0, tokenErrors: {}, maxInFlightTokenRequests: 1 });
    },
    180_000,
  );
});

describe('8 processes as one Salesforce user, each with a memory store of its own', () => {
  it(
    'sign in on their own and log each other out: from the first burst on, a 6th live token pair evicts the oldest',
    async () => {
      const { server, workers } = await startFleet('memory');

      const { tokenCalls } = await runExpiries(server, workers, 5);

      expect(tokenCalls[0]).toBeGreaterThanOrEqual(PROCESSES);
      expect(server.stats().tokenPairsEvicted).toBeGreaterThan(0);
    },
    180_000,
  );
});
