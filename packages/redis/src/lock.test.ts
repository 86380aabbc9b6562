import { ErrorCode, type TokenRelayError } from '@tokenrelay/core';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it, vi } from 'vitest';
import { useRedisServer } from '../../../test/helpers/redis-fixture.js';
import { redisStore, type RedisStoreOptions } from './index.js';

const redis = useRedisServer();

const noSignal = () => new AbortController().signal;

/** A store on its own connection, as another process would have. */
function storeFor(key: string, options: Partial<RedisStoreOptions> = {}) {
  return redisStore({ client: redis.client(), key, ...options });
}

describe('redisStore lock', () => {
  it('lets exactly one of several stores hold the lock at a time, and every one gets it in turn', async () => {
    const key = redis.uniqueKey();
    const stores = Array.from({ length: 5 }, () => storeFor(key, { lockPollMs: 50 }));
    let holders = 0;
    let maxHolders = 0;
    let turns = 0;

    await Promise.all(
      stores.map(async (store) => {
        const lock = await store.lock({ signal: noSignal() });
        holders++;
        maxHolders = Math.max(maxHolders, holders);
        await sleep(30);
        holders--;
        turns++;
        await lock.release();
      }),
    );

    expect(maxHolders).toBe(1);
    expect(turns).toBe(5);
  });

  it('stores the lock as SET <key>:lock <random owner> with the lease as expiry, and deletes it on release', async () => {
    const key = redis.uniqueKey();
    const client = redis.client();
    const store = redisStore({ client, key, lockLeaseMs: 5_000 });

    const lock = await store.lock({ signal: noSignal() });
    const owner = await client.get(`${key}:lock`);
    expect(owner).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(await client.pttl(`${key}:lock`)).toBeGreaterThan(3_000);

    await lock.release();
    expect(await client.exists(`${key}:lock`)).toBe(0);
  });

  it('gives up after lockWaitMs with a STORE_ERROR naming the lock', async () => {
    const key = redis.uniqueKey();
    const holder = await storeFor(key).lock({ signal: noSignal() });
    const started = Date.now();

    const error = (await storeFor(key, { lockWaitMs: 300, lockPollMs: 50 })
      .lock({ signal: noSignal() })
      .catch((reason: unknown) => reason)) as TokenRelayError;

    expect(error.code).toBe(ErrorCode.STORE_ERROR);
    expect(error.message).toContain(`Gave up waiting for the refresh lock "${key}:lock" after 300 ms`);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(Date.now() - started).toBeLessThan(3_000);
    await holder.release();
  });

  it('stops waiting with the signal reason when the signal aborts', async () => {
    const key = redis.uniqueKey();
    const holder = await storeFor(key).lock({ signal: noSignal() });
    const controller = new AbortController();
    const reason = new Error('session replaced');

    const waiting = storeFor(key).lock({ signal: controller.signal });
    setTimeout(() => controller.abort(reason), 100);

    await expect(waiting).rejects.toBe(reason);
    await holder.release();
  });

  it('aborts the lock\'s signal when it finds another owner, and never releases or extends that owner\'s lock', async () => {
    const key = redis.uniqueKey();
    const lockKey = `${key}:lock`;
    const client = redis.client();
    const onError = vi.fn();
    const lock = await storeFor(key, { lockLeaseMs: 300, onError }).lock({ signal: noSignal() });

    // The lease ran out unnoticed (a long stall) and another process took the lock.
    await client.set(lockKey, 'other-owner', 'PX', 60_000);
    await vi.waitFor(() => expect(lock.signal?.aborted).toBe(true), { timeout: 3_000 });
    await lock.release();

    expect(await client.get(lockKey)).toBe('other-owner');
    expect(await client.pttl(lockKey)).toBeGreaterThan(50_000);
    expect(lock.signal?.reason).toMatchObject({
      code: ErrorCode.STORE_ERROR,
      message: expect.stringContaining(`Lost the refresh lock "${lockKey}"`),
    });
    expect(onError).not.toHaveBeenCalled();
  });

  it('lets another store take over once a dead holder\'s lease runs out, without waiting for the next poll', async () => {
    const key = redis.uniqueKey();
    const client = redis.client();
    // A holder that crashed: its lock stays until the lease ends, and nobody releases it.
    await client.set(`${key}:lock`, 'crashed-owner', 'PX', 500, 'NX');
    const started = Date.now();

    const lock = await storeFor(key, { lockPollMs: 10_000 }).lock({ signal: noSignal() });

    const waited = Date.now() - started;
    expect(waited).toBeGreaterThanOrEqual(400);
    expect(waited).toBeLessThan(5_000);
    expect(await client.get(`${key}:lock`)).not.toBe('crashed-owner');
    await lock.release();
  });

  it('renews the lease while the holder outlives it, so nobody else gets the lock meanwhile', async () => {
    const key = redis.uniqueKey();
    const client = redis.client();
    const onError = vi.fn();
    const lock = await storeFor(key, { lockLeaseMs: 600, onError }).lock({ signal: noSignal() });
    const owner = await client.get(`${key}:lock`);

    await sleep(2_000);

    expect(await client.get(`${key}:lock`)).toBe(owner);
    await expect(storeFor(key, { lockWaitMs: 100, lockPollMs: 20 }).lock({ signal: noSignal() })).rejects.toMatchObject({
      code: ErrorCode.STORE_ERROR,
    });
    await lock.release();
    const next = await storeFor(key, { lockWaitMs: 1_000 }).lock({ signal: noSignal() });
    await next.release();
    expect(onError).not.toHaveBeenCalled();
  });

  it('wakes a waiter by pub/sub as soon as the holder releases, long before its poll interval', async () => {
    const key = redis.uniqueKey();
    const holderStore = storeFor(key, { lockLeaseMs: 30_000 });
    const holder = await holderStore.lock({ signal: noSignal() });
    let acquiredAt = 0;
    const waiting = storeFor(key, { lockLeaseMs: 30_000, lockPollMs: 10_000, lockWaitMs: 20_000 })
      .lock({ signal: noSignal() })
      .then((lock) => {
        acquiredAt = Date.now();
        return lock;
      });
    // Both stores subscribe when they first lock; wait until the waiter's subscription is live.
    await redis.waitForSubscribers(`${key}:events`, 2);
    await sleep(50);

    const releasedAt = Date.now();
    await holder.release();
    const lock = await waiting;

    expect(acquiredAt - releasedAt).toBeLessThan(1_000);
    await lock.release();
  });
});
