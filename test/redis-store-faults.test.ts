/*
 * redisStore under a fault an outside tester stages mid-lock: the holder's connection killed by
 * Redis (CLIENT KILL, as a proxy or a network blip does) while it holds the refresh lock.
 */
import { redisStore } from '@tokenrelay/redis';
import { describe, expect, it } from 'vitest';
import { useRedisServer } from './helpers/redis-fixture.js';

const redis = useRedisServer();
const noSignal = () => new AbortController().signal;

describe('redisStore when the lock holder\'s connection is killed mid-lock', () => {
  it('keeps the lock, stores the refresh\'s tokens over the new connection, and the waiter gets the lock only after the release', async () => {
    const key = redis.uniqueKey();
    const holderClient = redis.client();
    const holder = redisStore({ client: holderClient, key, onError: () => undefined });
    const waiter = redisStore({ client: redis.client(), key, lockPollMs: 50 });
    await holder.set({ revision: 1, tokens: { accessToken: 'access-1', refreshToken: 'refresh-1' } });
    const lock = await holder.lock({ signal: noSignal() });
    let waiterHasLock = false;
    const waiting = waiter.lock({ signal: noSignal() }).then((taken) => {
      waiterHasLock = true;
      return taken;
    });

    const admin = redis.client();
    await admin.client('KILL', 'ID', String(await holderClient.client('ID')));
    const written = await holder.set({ revision: 2, tokens: { accessToken: 'access-2', refreshToken: 'refresh-2' } }, { expectedRevision: 1 });

    expect(written).toBe(true);
    expect(lock.signal.aborted).toBe(false);
    expect(waiterHasLock).toBe(false);
    await lock.release();
    const waiterLock = await waiting;
    expect(await waiter.get()).toEqual({ revision: 2, tokens: { accessToken: 'access-2', refreshToken: 'refresh-2' } });
    await waiterLock.release();
    await Promise.all([holder.close(), waiter.close()]);
  });
});
