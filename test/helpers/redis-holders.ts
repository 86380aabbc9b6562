/*
 * Holders of one session in one test process, each as a separate process would hold it: its own
 * ioredis connection, redisStore, token manager and fetch. For the tests that restart, kill or flush
 * redis-server under them (test/redis-restart.test.ts, test/redis-data-loss.test.ts).
 */
import { createTokenManager, isTokenRelayError, type TokenManager, type TokenSet } from '@tokenrelay/core';
import { withTokenRelay } from '@tokenrelay/fetch';
import { redisStore, type RedisTokenStore } from '@tokenrelay/redis';
import { loopbackOnlyFetch, type OAuthServer } from '@tokenrelay/testing';
import { Redis } from 'ioredis';
import { expect } from 'vitest';
import { defaultClientGrant } from './default-client-grant.js';
import { presentedRefreshTokens } from './token-requests.js';

/** How many concurrent API calls a holder's burst fires. */
export const REQUESTS = 5;

/** One holder of the session. */
export interface Holder {
  store: RedisTokenStore;
  manager: TokenManager;
  /** Loads the session from Redis, as a process does at start. */
  load(): Promise<void>;
  /** How many times its client failed to connect so far. */
  connectionErrors(): number;
  /** Fires `REQUESTS` concurrent API calls; resolves with each outcome: `ok`, `status N` or an error code. */
  burst(): Promise<string[]>;
}

/** Where a holder's Redis is, the lease of its lock, and its initial tokens. */
export interface HolderOptions {
  port: number;
  /** @default 10_000 */
  lockLeaseMs?: number;
  /** The manager's `tokens`, stored if Redis holds none. @default none */
  tokens?: TokenSet;
}

/** Makes holders and their connections; `close()` them after each test. */
export function redisHolders() {
  const clients: Redis[] = [];
  const stores: RedisTokenStore[] = [];

  /**
   * A client of the Redis on `port`. ioredis' default reconnection (50 ms, 100 ms, … up to 2 s
   * apart); one retry per command, so a command sent while Redis is gone fails after the next failed
   * reconnection instead of queueing.
   */
  function connect(port: number): Redis {
    const client = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1 });
    // The outages are on purpose: their connection errors are what the requests report.
    client.on('error', () => undefined);
    clients.push(client);
    return client;
  }

  function holder(server: OAuthServer, key: string, { port, lockLeaseMs = 10_000, tokens }: HolderOptions): Holder {
    const client = connect(port);
    let connectionErrors = 0;
    client.on('error', () => connectionErrors++);
    // Failed renewals and a broken subscriber connection are expected here: what the requests see is what counts.
    const store = redisStore({ client, key, lockLeaseMs, onError: () => undefined });
    stores.push(store);
    const manager = createTokenManager({
      store,
      tokens,
      refresh: defaultClientGrant(server, { fetch: loopbackOnlyFetch() }),
    });
    const api = withTokenRelay(loopbackOnlyFetch(), manager, { origins: [server.url] });
    return {
      store,
      manager,
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

  return {
    connect,
    holder,
    /** Closes the stores, then their clients: before their servers stop, so nothing is left reconnecting. */
    async close(): Promise<void> {
      await Promise.all(stores.splice(0).map((store) => store.close()));
      await Promise.all(clients.splice(0).map((client) => client.quit().catch(() => client.disconnect())));
    },
  };
}

export const storedTokens = async (store: RedisTokenStore) => (await store.get())?.tokens as TokenSet;

/** One more expiry for both holders: one token request, with the refresh token Redis holds, and the family intact. */
export async function expectSessionLives(server: OAuthServer, first: Holder, second: Holder): Promise<void> {
  const stored = await storedTokens(first.store);
  const before = server.stats().tokenRequests;
  server.revokeAccessTokens();
  const outcomes = await Promise.all([first.burst(), second.burst()]);
  expect(outcomes.flat()).toEqual(Array(2 * REQUESTS).fill('ok'));
  expect(server.stats().tokenRequests - before).toBe(1);
  expect(presentedRefreshTokens(server).at(-1)).toBe(stored.refreshToken);
  expect(server.stats()).toMatchObject({ refreshTokenReuses: 0, familiesRevoked: 0 });
}
