/*
 * Starts a throwaway Redis Cluster on 127.0.0.1 for the cluster tests: three redis-server nodes in
 * cluster mode (each on a free port, with its own temp dir and nodes.conf), joined by
 * `redis-cli --cluster create … --cluster-replicas 0`, ready once every node reports
 * `cluster_state:ok` and knows the others. stop() ends every node.
 */
import { execFile } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { startRedisServer, type RedisServer } from './redis-server.js';
import { redisCli, requireTestService } from './test-services.js';

/** A running Redis Cluster on loopback. */
export interface RedisCluster {
  /** The nodes, for `new Cluster(nodes)`. */
  readonly nodes: readonly { readonly host: string; readonly port: number }[];
  /** Stops every node and removes their temp dirs. Safe to call twice. */
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 30_000;
const CREATE_TIMEOUT_MS = 30_000;

/** True when the node answers that the cluster is up, every slot served, and it knows all `size` nodes. */
async function clusterReady(port: number, size: number): Promise<boolean> {
  const probe = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  try {
    await probe.connect();
    const info = String(await probe.call('CLUSTER', 'INFO'));
    return (
      info.includes('cluster_state:ok') &&
      info.includes('cluster_slots_assigned:16384') &&
      info.includes(`cluster_known_nodes:${size}`)
    );
  } catch {
    return false;
  } finally {
    probe.disconnect();
  }
}

/**
 * Starts a cluster of `size` primaries (no replicas) and resolves once every node reports it ready.
 * @throws Error with the install commands when redis-server or redis-cli is missing.
 */
export async function startRedisCluster(size = 3): Promise<RedisCluster> {
  const cli = requireTestService(redisCli);
  const servers: RedisServer[] = [];
  const stop = () => Promise.all(servers.map((server) => server.stop())).then(() => undefined);
  try {
    for (let index = 0; index < size; index++) {
      servers.push(
        await startRedisServer({
          extraArgs: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '5000'],
        }),
      );
    }
    await promisify(execFile)(
      cli,
      ['--cluster', 'create', ...servers.map((server) => `127.0.0.1:${server.port}`), '--cluster-replicas', '0', '--cluster-yes'],
      { timeout: CREATE_TIMEOUT_MS },
    );
    const deadline = Date.now() + READY_TIMEOUT_MS;
    // Bounded by the deadline; the nodes gossip their way to agreement within a few seconds.
    for (;;) {
      const ready = await Promise.all(servers.map((server) => clusterReady(server.port, size)));
      if (ready.every(Boolean)) break;
      if (Date.now() > deadline) throw new Error(`The Redis Cluster did not reach cluster_state:ok within ${READY_TIMEOUT_MS} ms`);
      await sleep(100);
    }
  } catch (error) {
    await stop();
    throw error;
  }
  let stopped: Promise<void> | undefined;
  return {
    nodes: servers.map((server) => ({ host: '127.0.0.1', port: server.port })),
    stop: () => (stopped ??= stop()),
  };
}
