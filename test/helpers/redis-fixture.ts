/*
 * Vitest fixture for tests against a real Redis: one redis-server per test file, ioredis clients
 * that are closed after each test, and a unique key per call.
 */
import { randomUUID } from 'node:crypto';
import { Redis, type RedisOptions } from 'ioredis';
import { afterAll, afterEach, beforeAll, vi } from 'vitest';
import { startRedisServer, type RedisServer } from './redis-server.js';

/** What {@link useRedisServer} gives a test file. */
export interface RedisFixture {
  /** A new ioredis client of the file's server; quit after the test. */
  client(options?: RedisOptions): Redis;
  /** A key no other test uses. */
  uniqueKey(): string;
  /** Waits (bounded) until `count` connections are subscribed to `channel`. */
  waitForSubscribers(channel: string, count: number): Promise<void>;
}

/** Starts redis-server before the file's tests and stops it after; see {@link RedisFixture}. */
export function useRedisServer(): RedisFixture {
  let server: RedisServer | undefined;
  const clients: Redis[] = [];

  beforeAll(async () => {
    server = await startRedisServer();
  }, 20_000);
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((client) => client.quit().catch(() => client.disconnect())));
  });
  afterAll(async () => {
    await server?.stop();
  });

  const fixture: RedisFixture = {
    client(options) {
      if (!server) throw new Error('useRedisServer: the Redis server is not running (call client() inside a test)');
      // One retry per command, so a test about failures fails fast instead of queueing for seconds.
      const client = new Redis({ host: '127.0.0.1', port: server.port, maxRetriesPerRequest: 1, ...options });
      clients.push(client);
      return client;
    },
    uniqueKey: () => `tokenrelay-test:${randomUUID()}`,
    async waitForSubscribers(channel, count) {
      const probe = fixture.client();
      await vi.waitFor(
        async () => {
          const [, subscribers] = (await probe.pubsub('NUMSUB', channel)) as [string, number];
          if (subscribers !== count) throw new Error(`${subscribers} subscribers on ${channel}, waiting for ${count}`);
        },
        { timeout: 5_000, interval: 20 },
      );
    },
  };
  return fixture;
}
