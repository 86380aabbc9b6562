/*
 * redisStore on a real Redis Cluster of three nodes (test/helpers/redis-cluster.ts): what the
 * cluster adds to the contract. The contract itself runs in test/store-conformance.test.ts, and
 * eight processes share a session on the cluster in test/redis-store.multiprocess.test.ts.
 */
import { randomUUID } from 'node:crypto';
import { ErrorCode } from '@tokenrelay/core';
import { redisStore } from '@tokenrelay/redis';
import { Redis, type Cluster } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { startRedisCluster, type RedisCluster } from './helpers/redis-cluster.js';
import { connectRedis } from './helpers/redis-connection.js';

let cluster: RedisCluster;
const connections: (Redis | Cluster)[] = [];

beforeAll(async () => {
  cluster = await startRedisCluster();
}, 60_000);
afterEach(async () => {
  await Promise.all(connections.splice(0).map((connection) => connection.quit().catch(() => connection.disconnect())));
});
afterAll(async () => {
  await cluster?.stop();
});

const clusterClient = () => {
  const client = connectRedis({ clusterPorts: cluster.nodes.map((node) => node.port) });
  connections.push(client);
  return client;
};
/** A plain connection to one node, not following the cluster's redirections. */
const nodeClient = (port: number) => {
  const client = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1 });
  connections.push(client);
  return client;
};

describe('redisStore on a Redis Cluster', () => {
  it('announces each write and clear to subscribers connected to every node, not only the node that owns the key', async () => {
    const key = `{tokenrelay-cluster:${randomUUID()}}`;
    const heard = new Map<number, string[]>();
    await Promise.all(
      cluster.nodes.map(async ({ port }) => {
        const subscriber = nodeClient(port);
        subscriber.on('message', (_channel: string, message: string) => heard.get(port)?.push(message));
        heard.set(port, []);
        await subscriber.subscribe(`${key}:events`);
      }),
    );
    const store = redisStore({ client: clusterClient(), key });

    await store.set({ revision: 1, tokens: { accessToken: 'at-1', refreshToken: 'rt-1' } });
    await store.clear();

    const events = (port: number) => (heard.get(port) ?? []).map((message) => (JSON.parse(message) as { event: string }).event);
    await vi.waitFor(
      () => {
        for (const { port } of cluster.nodes) expect(events(port), `subscribers on node ${port}`).toEqual(['set', 'clear']);
      },
      { timeout: 5_000, interval: 20 },
    );
  });

  it('takes keys whose hash tag puts the tokens and their lock in one slot, and refuses the others at once', async () => {
    const client = clusterClient();
    const node = nodeClient(cluster.nodes[0]?.port ?? 0);
    const slot = async (key: string) => Number(await node.call('CLUSTER', 'KEYSLOT', key));

    for (const key of ['{crm}', 'tokenrelay:{crm}', '{crm}:eu', 'a}{crm}', '{crm}{other}']) {
      expect(() => redisStore({ client, key }), key).not.toThrow();
      expect(await slot(`${key}:lock`), key).toBe(await slot(key));
    }
    for (const key of ['tokenrelay:crm', '{}crm', '{}{crm}', 'crm}{', '{crm']) {
      expect(() => redisStore({ client, key }), key).toThrow(expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR }));
    }
  });
});
