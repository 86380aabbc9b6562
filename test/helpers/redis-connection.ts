/*
 * How a test (or a worker process of one) reaches Redis: one redis-server, or the nodes of a
 * Redis Cluster. Plain data, so it can cross to a child process in its environment.
 */
import { Cluster, Redis } from 'ioredis';

/** One server's port, or the ports of a cluster's nodes. */
export type RedisEndpoint = { readonly port: number } | { readonly clusterPorts: readonly number[] };

/**
 * A new ioredis client for `endpoint`: a `Redis`, or a `Cluster` on the nodes. One retry per
 * command, so a test about failures fails fast instead of queueing for seconds.
 */
export function connectRedis(endpoint: RedisEndpoint): Redis | Cluster {
  if ('clusterPorts' in endpoint) {
    return new Cluster(
      endpoint.clusterPorts.map((port) => ({ host: '127.0.0.1', port })),
      { redisOptions: { maxRetriesPerRequest: 1 } },
    );
  }
  return new Redis({ host: '127.0.0.1', port: endpoint.port, maxRetriesPerRequest: 1 });
}
