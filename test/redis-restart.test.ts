/*
 * redisStore through a real restart of redis-server in the middle of a refresh, and through a
 * failover to a promoted replica. The restarted server keeps its data in an append-only file
 * (synced on every write), is shut down with SIGTERM and started again on the same port. Two
 * managers, each with its own Redis connections as two processes would hold, share one session on
 * an OAuth server with rotating refresh tokens and reuse detection: a second refresh with one
 * refresh token would revoke the whole grant.
 */
import { randomUUID } from 'node:crypto';
import { createTokenManager, isTokenRelayError, type TokenSet } from '@tokenrelay/core';
import { withTokenRelay } from '@tokenrelay/fetch';
import { redisStore, type RedisTokenStore } from '@tokenrelay/redis';
import { loopbackOnlyFetch, startOAuthServer, type OAuthServer } from '@tokenrelay/testing';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { startRedisServer, type RedisServer } from './helpers/redis-server.js';
import { presentedRefreshTokens, tokenRequestInFlight } from './helpers/token-requests.js';
import { defaultClientGrant } from './helpers/default-client-grant.js';

const REQUESTS = 5;

let redis: RedisServer;
let oauth: OAuthServer | undefined;
const clients: Redis[] = [];
const stores: RedisTokenStore[] = [];

beforeAll(async () => {
  redis = await startRedisServer({ persistent: true });
}, 20_000);
afterEach(async () => {
  // A test that failed while Redis was down must not leave it down for the next one.
  await redis.startAgain().catch(() => undefined);
  await closeConnections();
  await oauth?.close();
  oauth = undefined;
}, 30_000);
afterAll(async () => {
  await redis?.stop();
});

/** Closes the stores, then their clients: before their servers stop, so nothing is left reconnecting. */
async function closeConnections(): Promise<void> {
  await Promise.all(stores.splice(0).map((store) => store.close()));
  await Promise.all(clients.splice(0).map((client) => client.quit().catch(() => client.disconnect())));
}

/**
 * A client of the Redis on `port`, quit after the test. ioredis' default reconnection (50 ms,
 * 100 ms, … up to 2 s apart); one retry per command, so a command sent while Redis is gone fails
 * after the next failed reconnection instead of queueing.
 */
function connect(port: number): Redis {
  const client = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1 });
  // The outages are on purpose: their connection errors are what the requests report.
  client.on('error', () => undefined);
  clients.push(client);
  return client;
}

/** One holder of the session: its own Redis connection, store, manager and fetch, as one process has. */
interface Holder {
  store: RedisTokenStore;
  /** Loads the session from Redis, as a process does at start. */
  load(): Promise<void>;
  /** How many times its client failed to connect so far. */
  connectionErrors(): number;
  /** Fires `REQUESTS` concurrent API calls; resolves with each outcome: `ok`, `status N` or an error code. */
  burst(): Promise<string[]>;
}

/** Where a holder's Redis is, and the lease of its lock. */
interface HolderOptions {
  /** @default the persistent redis-server of this file */
  port?: number;
  /** @default 10_000 */
  lockLeaseMs?: number;
}

function holder(server: OAuthServer, key: string, { port = redis.port, lockLeaseMs = 10_000 }: HolderOptions = {}): Holder {
  const client = connect(port);
  let connectionErrors = 0;
  client.on('error', () => connectionErrors++);
  // Failed renewals and a broken subscriber connection are expected here: what the requests see is what counts.
  const store = redisStore({ client, key, lockLeaseMs, onError: () => undefined });
  stores.push(store);
  const manager = createTokenManager({
    store,
    refresh: defaultClientGrant(server, { fetch: loopbackOnlyFetch() }),
  });
  const api = withTokenRelay(loopbackOnlyFetch(), manager, { origins: [server.url] });
  return {
    store,
    async load() {
      await manager.getTokens();
    },
    connectionErrors: () => connectionErrors,
    burst: () =>
      Promise.all(
        Array.from({ length: REQUESTS }, async (_, index) => {
          try {
            const response = await api(`${server.url}/api/items/${index}`);
            await response.body?.cancel();
            return response.status === 200 ? 'ok' : `status ${response.status}`;
          } catch (error) {
            return isTokenRelayError(error) ? error.code : String(error);
          }
        }),
      ),
  };
}

/** A fresh OAuth server and a signed-in session in Redis, held by two holders. */
async function setUp(options: HolderOptions = {}) {
  oauth = await startOAuthServer({ rotateRefreshTokens: true, reuseDetection: true });
  const key = `tokenrelay-restart:${randomUUID()}`;
  const [first, second] = [holder(oauth, key, options), holder(oauth, key, options)];
  const signedIn = oauth.issue();
  await first.store.set({ revision: 1, tokens: signedIn });
  await Promise.all([first.load(), second.load()]);
  return { server: oauth, key, signedIn, first, second };
}

const storedTokens = async (store: RedisTokenStore) => (await store.get())?.tokens as TokenSet;

/** One more expiry for both holders: one token request, with the refresh token Redis holds, and the family intact. */
async function expectSessionLives(server: OAuthServer, first: Holder, second: Holder): Promise<void> {
  const stored = await storedTokens(first.store);
  const before = server.stats().tokenRequests;
  server.revokeAccessTokens();
  const outcomes = await Promise.all([first.burst(), second.burst()]);
  expect(outcomes.flat()).toEqual(Array(2 * REQUESTS).fill('ok'));
  expect(server.stats().tokenRequests - before).toBe(1);
  expect(presentedRefreshTokens(server).at(-1)).toBe(stored.refreshToken);
  expect(server.stats()).toMatchObject({ refreshTokenReuses: 0, familiesRevoked: 0 });
}

describe('redisStore through a restart of redis-server', () => {
  it('keeps the one refresh whose token request was in flight while redis-server restarted, and the other holder uses its tokens', async () => {
    const { server, signedIn, first, second } = await setUp();
    // Slow enough that Redis is back, and the client reconnected, before the answer comes.
    server.failNextTokenRequests(1, { kind: 'slow', delayMs: 3_000 });
    server.revokeAccessTokens();
    const firstOutcomes = first.burst();
    await tokenRequestInFlight(server);

    await redis.shutDown();
    await redis.startAgain();

    // The lock survived the restart (its expiry is in the file), so the holder's write is accepted.
    expect(await firstOutcomes).toEqual(Array(REQUESTS).fill('ok'));
    const rotated = await storedTokens(first.store);
    expect(rotated.refreshToken).not.toBe(signedIn.refreshToken);
    expect(await second.burst()).toEqual(Array(REQUESTS).fill('ok'));
    expect(presentedRefreshTokens(server)).toEqual([signedIn.refreshToken]);
    expect(server.stats()).toMatchObject({ refreshTokenReuses: 0, familiesRevoked: 0 });

    await expectSessionLives(server, first, second);
  }, 60_000);

  it('fails requests with STORE_ERROR, without a token request, while redis-server is gone, and recovers once it is back', async () => {
    const { server, signedIn, first, second } = await setUp();
    await redis.shutDown();
    server.revokeAccessTokens();

    // No lock, no refresh: presenting the refresh token without the lock could race another holder.
    expect(await first.burst()).toEqual(Array(REQUESTS).fill('STORE_ERROR'));
    expect(server.stats().tokenRequests).toBe(0);
    await expect(first.store.lock({ signal: new AbortController().signal })).rejects.toMatchObject({
      code: 'STORE_ERROR',
      message: expect.stringMatching(/^Could not take the refresh lock ".+:lock": /),
    });

    await redis.startAgain();
    expect(await first.burst()).toEqual(Array(REQUESTS).fill('ok'));
    expect(await second.burst()).toEqual(Array(REQUESTS).fill('ok'));
    expect(presentedRefreshTokens(server)).toEqual([signedIn.refreshToken]);
    expect(server.stats()).toMatchObject({ refreshTokenReuses: 0, familiesRevoked: 0 });

    await expectSessionLives(server, first, second);
  }, 60_000);

  it('stores the rotated refresh token whose answer came while redis-server was gone once it is back within the lease', async () => {
    const { server, signedIn, first, second } = await setUp();
    server.failNextTokenRequests(1, { kind: 'slow', delayMs: 500 });
    server.revokeAccessTokens();
    const outcomes = first.burst();
    await tokenRequestInFlight(server);
    await redis.shutDown();
    // The server rotated the refresh token and answered: the new one now lives only in the holder's memory.
    await vi.waitFor(() => expect(server.stats().tokenRequestLog[0]?.status).toBe(200), { timeout: 10_000, interval: 10 });
    // Gone long enough for the client to fail the write once: with one retry per command, ioredis
    // rejects its queued commands at every other failed reconnection.
    const errorsAtAnswer = first.connectionErrors();
    await vi.waitFor(() => expect(first.connectionErrors()).toBeGreaterThanOrEqual(errorsAtAnswer + 3), { timeout: 10_000, interval: 10 });

    // The holder's write is tried again while its lease lasts (10 s), and lands once Redis is back.
    await redis.startAgain();
    expect(await outcomes).toEqual(Array(REQUESTS).fill('ok'));
    const rotated = await storedTokens(first.store);
    expect(rotated.refreshToken).not.toBe(signedIn.refreshToken);
    expect(await second.burst()).toEqual(Array(REQUESTS).fill('ok'));
    expect(presentedRefreshTokens(server)).toEqual([signedIn.refreshToken]);

    await expectSessionLives(server, first, second);
  }, 60_000);

  it('keeps the rotated refresh token in memory when redis-server stays gone past the lease, and stores it before the next refresh', async () => {
    const { server, signedIn, first } = await setUp({ lockLeaseMs: 1_500 });
    server.failNextTokenRequests(1, { kind: 'slow', delayMs: 500 });
    server.revokeAccessTokens();
    const outcomes = first.burst();
    await tokenRequestInFlight(server);
    await redis.shutDown();

    // The new tokens could not be stored before the lease could end: the requests say so, and the
    // holder keeps the tokens in memory.
    expect(await outcomes).toEqual(Array(REQUESTS).fill('STORE_ERROR'));
    await redis.startAgain();
    expect(await first.burst()).toEqual(Array(REQUESTS).fill('ok'));
    expect(server.stats().tokenRequests).toBe(1);

    // The next refresh, under the lock, first puts the kept tokens in Redis, then presents the
    // refresh token they carry, not the spent one.
    const before = server.stats().tokenRequests;
    server.revokeAccessTokens();
    expect(await first.burst()).toEqual(Array(REQUESTS).fill('ok'));
    expect(server.stats().tokenRequests - before).toBe(1);
    const presented = presentedRefreshTokens(server);
    expect(presented[0]).toBe(signedIn.refreshToken);
    expect(presented.at(-1)).not.toBe(signedIn.refreshToken);
    expect(server.stats()).toMatchObject({ refreshTokenReuses: 0, familiesRevoked: 0 });
    expect((await storedTokens(first.store)).refreshToken).not.toBe(presented.at(-1));
  }, 60_000);
});

describe('redisStore closed while its pub/sub connection comes back', () => {
  it('leaves no unhandled rejection when closed at the moment its subscriber reconnects after a restart', async () => {
    const client = connect(redis.port);
    const subscribers: Redis[] = [];
    const duplicate = client.duplicate.bind(client);
    client.duplicate = (override) => {
      const connection = duplicate(override);
      subscribers.push(connection);
      return connection;
    };
    const store = redisStore({ client, key: `tokenrelay-restart:${randomUUID()}`, onError: () => undefined });
    const heard: unknown[] = [];
    store.subscribe((value) => heard.push(value));
    await vi.waitFor(() => expect(subscribers[0]?.status).toBe('ready'), { timeout: 10_000, interval: 10 });
    const [subscriber] = subscribers as [Redis];
    // A busy Redis answers late: the SUBSCRIBE sent on reconnection reaches it only after 50 ms.
    const sendCommand = subscriber.sendCommand.bind(subscriber);
    subscriber.sendCommand = (command, stream) => {
      if (command.name !== 'subscribe') return sendCommand(command, stream);
      setTimeout(() => void sendCommand(command, stream), 50);
      return command.promise;
    };
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      await redis.shutDown();
      // The store closes as soon as its subscriber is ready again, before Redis answers the re-subscription.
      subscriber.once('ready', () => void store.close());
      await redis.startAgain();
      await vi.waitFor(() => expect(subscriber.status).toBe('end'), { timeout: 10_000, interval: 10 });
      // Rejections are reported after the microtask queue drains; give them a few turns.
      await new Promise((resolve) => setTimeout(resolve, 200));
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    expect(unhandled).toEqual([]);
    expect(heard).toEqual([]);
  }, 30_000);
});

describe('redisStore through a failover to a promoted replica', () => {
  let primary: RedisServer | undefined;
  let replica: RedisServer | undefined;
  afterEach(async () => {
    await closeConnections();
    await primary?.stop();
    await replica?.stop();
  });

  it('goes on with the rotated refresh token on the promoted replica: one token call, the family intact', async () => {
    primary = await startRedisServer();
    replica = await startRedisServer({ extraArgs: ['--replicaof', '127.0.0.1', String(primary.port)] });
    const admin = connect(replica.port);
    await vi.waitFor(async () => expect(await admin.info('replication')).toContain('master_link_status:up'), {
      timeout: 10_000,
      interval: 50,
    });
    const { server, key, signedIn, first, second } = await setUp({ port: primary.port });
    server.revokeAccessTokens();
    expect((await Promise.all([first.burst(), second.burst()])).flat()).toEqual(Array(2 * REQUESTS).fill('ok'));
    const rotated = await storedTokens(first.store);
    expect(rotated.refreshToken).not.toBe(signedIn.refreshToken);
    // Replication is asynchronous: make sure the replica has the session's write, as a failover that
    // keeps it would. WAIT counts replicas that have this connection's last write; the replication
    // stream is in order, so a write made after the session's reaching the replica brings that one too.
    const primaryClient = connect(primary.port);
    await primaryClient.set(`${key}:replication-barrier`, '1');
    expect(await primaryClient.wait(1, 5_000)).toBe(1);

    // The primary dies; the replica is promoted (what Sentinel does), and the holders reconnect to it.
    await primary.stop();
    await admin.replicaof('NO', 'ONE');
    const promoted = { port: replica.port };
    const [promotedFirst, promotedSecond] = [holder(server, key, promoted), holder(server, key, promoted)];
    await Promise.all([promotedFirst.load(), promotedSecond.load()]);
    expect((await storedTokens(promotedFirst.store)).refreshToken).toBe(rotated.refreshToken);

    await expectSessionLives(server, promotedFirst, promotedSecond);
    expect(presentedRefreshTokens(server)).toEqual([signedIn.refreshToken, rotated.refreshToken]);
  }, 60_000);
});
