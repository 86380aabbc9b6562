/*
 * Every store tokenrelay ships runs the one conformance suite of @tokenrelay/testing: memory, file,
 * Redis (one server, and a Redis Cluster of three nodes), and the browser store (here in Node,
 * with its lease lock over a shared storage; test/browser-store-conformance.test.ts runs it in Chromium).
 */
import { randomUUID } from 'node:crypto';
import { readdir, mkdtemp, rm, writeFile, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memoryStore, type TokenStore } from '@tokenrelay/core';
import { fileStore, type TokenFileFormat } from '@tokenrelay/core/node';
import { browserStore } from '@tokenrelay/browser';
import { redisStore } from '@tokenrelay/redis';
import { describeTokenStoreConformance } from '@tokenrelay/testing';
import type { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { startRedisCluster, type RedisCluster } from './helpers/redis-cluster.js';
import { connectRedis, type RedisEndpoint } from './helpers/redis-connection.js';
import { startRedisServer, type RedisServer } from './helpers/redis-server.js';

const runner = { describe, it };

describeTokenStoreConformance('memoryStore', runner, () => {
  const store = memoryStore();
  // One process, one store: every handle is the same store.
  return { open: () => store };
});

/** A fileStore session; `newFileFormat: 'token-response'` keeps every file it creates an OAuth token response. */
const fileStoreSession = (newFileFormat: TokenFileFormat) => async () => {
  const directory = await mkdtemp(join(tmpdir(), 'tokenrelay-conformance-'));
  const path = join(directory, 'tokens.json');
  const stores: TokenStore[] = [];
  return {
    open() {
      const store = fileStore(path, { lockLeaseMs: 600, watchPollMs: 50, newFileFormat });
      stores.push(store);
      return store;
    },
    async loseLock() {
      // Another process took the lock over and released it again: a higher generation exists.
      const names = (await readdir(`${path}.lock`)).filter((name) => name.endsWith('.lock'));
      const top = Math.max(...names.map((name) => Number(name.split('.')[0])));
      const taken = join(`${path}.lock`, `${top + 1}.600.lock`);
      await writeFile(taken, '{}');
      await utimes(taken, 0, 0);
    },
    async cleanup() {
      await Promise.all(stores.map((store) => store.close?.()));
      await rm(directory, { recursive: true, force: true });
    },
  };
};

describeTokenStoreConformance('fileStore', runner, fileStoreSession('tokenrelay'));
// The revision, sessionExpired and every token field survive a file that stays an OAuth token response.
describeTokenStoreConformance('fileStore (token-response file)', runner, fileStoreSession('token-response'));

let redis: RedisServer | undefined;
let cluster: RedisCluster | undefined;
beforeAll(async () => {
  redis = await startRedisServer();
  cluster = await startRedisCluster();
}, 60_000);
afterAll(async () => {
  await redis?.stop();
  await cluster?.stop();
});

/** A session at one key; every handle has its own connection, as another process would. */
function redisSession(endpoint: () => RedisEndpoint) {
  // A hash tag, which a cluster requires: the tokens and their lock share one slot.
  const key = `{conformance:${randomUUID()}}`;
  const clients: (Redis | Cluster)[] = [];
  const client = () => {
    const connection = connectRedis(endpoint());
    clients.push(connection);
    return connection;
  };
  return {
    open: () => redisStore({ client: client(), key, lockLeaseMs: 600 }),
    async loseLock() {
      await client().del(`${key}:lock`);
    },
    async cleanup() {
      await Promise.all(clients.map((connection) => connection.quit().catch(() => connection.disconnect())));
    },
  };
}

describeTokenStoreConformance('redisStore', runner, () => redisSession(() => ({ port: redis?.port ?? 0 })));

describeTokenStoreConformance('redisStore on a Redis Cluster', runner, () =>
  redisSession(() => ({ clusterPorts: cluster?.nodes.map((node) => node.port) ?? [] })),
);

describeTokenStoreConformance('browserStore (lease lock, in Node)', runner, () => {
  const key = `conformance-${randomUUID()}`;
  const entries = new Map<string, string>();
  const storage = {
    getItem: (name: string) => entries.get(name) ?? null,
    setItem: (name: string, value: string) => void entries.set(name, value),
    removeItem: (name: string) => void entries.delete(name),
  };
  const stores: ReturnType<typeof browserStore>[] = [];
  return {
    open() {
      const store = browserStore({ key, storage, lock: 'lease', lockLeaseMs: 600, lockPollMs: 10 });
      stores.push(store);
      return store;
    },
    async loseLock() {
      // The lease ran out and another tab's expired lease replaced it.
      storage.setItem(`${key}:lock`, JSON.stringify({ owner: 'another-tab', expiresAt: 0 }));
    },
    async cleanup() {
      for (const store of stores) store.close();
    },
  };
});
