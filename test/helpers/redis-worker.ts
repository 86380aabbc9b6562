/*
 * One "server" of the Redis multi-process test, run as its own Node process
 * (`node --import tsx test/helpers/redis-worker.ts`, spawned by redis-fleet.ts). It holds the
 * shared session through a redisStore and answers the parent over IPC:
 *   parent → { type: 'burst', requests, crash? }   fire `requests` concurrent API calls
 *   parent → { type: 'exit' }                      quit the Redis client and leave
 *   worker → { type: 'ready' } | { type: 'refreshing' } | { type: 'stored' } | { type: 'burst-done', ... }
 * `crash` stages a crash of this worker while it holds the lock (the parent then SIGKILLs it):
 * 'before-token-request' stalls before the token request leaves, 'after-store' stalls after the
 * new tokens are stored but before the lock is released.
 */
import {
  createTokenManager,
  isTokenRelayError,
  refreshTokenGrant,
  type RefreshHandler,
  type TokenStore,
} from '@tokenrelay/core';
import { withTokenRelay } from '@tokenrelay/fetch';
import { redisStore } from '@tokenrelay/redis';
import { connectRedis } from './redis-connection.js';
import type { BurstResult, RedisWorkerConfig, WorkerCrash, WorkerMessage } from './redis-fleet.js';

const config = JSON.parse(process.env.TOKENRELAY_REDIS_WORKER ?? '{}') as RedisWorkerConfig;
const send = (message: WorkerMessage) => process.send?.(message);
/** Never settles: the staged crash point, where the parent kills this process. */
const stall = () => new Promise<never>(() => {});

let crash: WorkerCrash | undefined;

const client = connectRedis(config.redis);
const store = redisStore({
  client,
  key: config.key,
  lockLeaseMs: config.lockLeaseMs,
  lockWaitMs: config.lockWaitMs,
  lockPollMs: config.lockPollMs,
});
// Only the staged crash is added; every call goes to the real store.
const crashableStore: TokenStore = {
  get: () => store.get(),
  set: (value, options) => store.set(value, options),
  clear: () => store.clear(),
  subscribe: (listener) => store.subscribe(listener),
  async lock(options) {
    const lock = await store.lock(options);
    return {
      signal: lock.signal,
      release() {
        if (crash !== 'after-store') return lock.release();
        send({ type: 'stored' });
        return stall();
      },
    };
  },
};

const grant = refreshTokenGrant({ tokenEndpoint: config.tokenEndpoint, clientId: config.clientId, clientSecret: config.clientSecret });
const refresh: RefreshHandler = Object.assign(
  async (context: Parameters<RefreshHandler>[0]) => {
    send({ type: 'refreshing' });
    if (crash === 'before-token-request') await stall();
    return grant(context);
  },
  { tokenEndpoint: grant.tokenEndpoint },
);

const manager = createTokenManager({ store: crashableStore, refresh });
const api = withTokenRelay(fetch, manager, { origins: [config.apiOrigin] });

async function burst(requests: number): Promise<BurstResult> {
  const outcomes = await Promise.all(
    Array.from({ length: requests }, async (_, index) => {
      try {
        const response = await api(`${config.apiOrigin}/api/items/${process.pid}-${index}`);
        await response.body?.cancel();
        return response.status === 200 ? 'ok' : `status ${response.status}`;
      } catch (error) {
        return isTokenRelayError(error) ? error.code : String(error);
      }
    }),
  );
  const failures = outcomes.filter((outcome) => outcome !== 'ok');
  return { ok: outcomes.length - failures.length, failures };
}

process.on('message', (message: { type: string; requests?: number; crash?: WorkerCrash }) => {
  if (message.type === 'burst') {
    crash = message.crash;
    void burst(message.requests ?? 1).then((result) => send({ type: 'burst-done', ...result }));
  } else if (message.type === 'exit') {
    // Quitting our client must be enough for the store to let the process end: nothing else is closed.
    void client.quit().then(() => process.disconnect());
  }
});

await manager.getTokens();
send({ type: 'ready' });
