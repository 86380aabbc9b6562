import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { StoredTokens } from '@tokenrelay/core';
import { describe, expect, it, vi } from 'vitest';
import { useRedisServer } from '../../../test/helpers/redis-fixture.js';
import { redisStore, type RedisStoreOptions } from './index.js';

/*
 * A key can vanish without anyone signing out: evicted by a cache Redis (maxmemory-policy allkeys-*),
 * lost in a restart without persistence, flushed (FLUSHALL), or missing on a promoted replica. Here
 * FLUSHALL stands for all of them: it takes the tokens, the lock and the sign-out mark at once.
 */

const redis = useRedisServer();
const noSignal = () => new AbortController().signal;

const session = (revision: number, accessToken = `access-${revision}`): StoredTokens => ({
  revision,
  tokens: { accessToken, refreshToken: `refresh-${revision}`, expiresAt: 1_900_000_000_000 },
});

/** A store on its own connection, as another process would have. */
const storeFor = (key: string, options: Partial<RedisStoreOptions> = {}) =>
  redisStore({ client: redis.client(), key, onError: () => undefined, ...options });

/** Everything said on `channel` from now on, as parsed JSON. */
async function listen(channel: string): Promise<{ event?: string }[]> {
  const subscriber = redis.client();
  const heard: { event?: string }[] = [];
  subscriber.on('message', (_channel: string, message: string) => heard.push(JSON.parse(message) as { event?: string }));
  await subscriber.subscribe(channel);
  return heard;
}

describe('redisStore when its key vanishes without a sign-out', () => {
  it('puts back the session it last read, as it was stored, and announces it', async () => {
    const key = redis.uniqueKey();
    const admin = redis.client();
    const writer = storeFor(key);
    const reader = storeFor(key);
    const heard: (StoredTokens | undefined)[] = [];
    reader.subscribe((value) => heard.push(value));
    await redis.waitForSubscribers(`${key}:events`, 1);
    await writer.set(session(4));
    await vi.waitFor(() => expect(heard).toEqual([session(4)]));
    const stored = await admin.get(key);

    await admin.flushall();

    expect(await writer.get()).toEqual(session(4));
    expect(await admin.get(key)).toBe(stored);
    // The other instance hears of it and reads the same session, never "signed out".
    await vi.waitFor(() => expect(heard).toEqual([session(4), session(4)]));
  });

  it('reads a vanished key as empty in an instance that never saw a session', async () => {
    const key = redis.uniqueKey();
    const admin = redis.client();
    await storeFor(key).set(session(4));

    await admin.flushall();

    expect(await storeFor(key).get()).toBeUndefined();
    expect(await admin.exists(key)).toBe(0);
  });

  it('lets exactly one of several instances that notice the loss at once put the session back', async () => {
    const key = redis.uniqueKey();
    const stores = Array.from({ length: 6 }, () => storeFor(key));
    await stores[0]?.set(session(7));
    await Promise.all(stores.map((store) => store.get()));
    await redis.client().flushall();
    const heard = await listen(`${key}:events`);

    const reads = await Promise.all(stores.map((store) => store.get()));

    expect(reads).toEqual(Array(6).fill(session(7)));
    await sleep(100);
    expect(heard.filter(({ event }) => event === 'set')).toHaveLength(1);
  });

  it('puts the newest copy back when an instance holding an older one noticed the loss first', async () => {
    const key = redis.uniqueKey();
    const admin = redis.client();
    const newest = storeFor(key);
    const behind = storeFor(key);
    // A process that missed the last write (its pub/sub connection was down): it holds revision 1 only.
    await newest.set(session(1));
    await behind.get();
    newest.subscribe(() => undefined);
    await redis.waitForSubscribers(`${key}:events`, 1);
    await newest.set(session(2));
    const stored = await admin.get(key);

    await admin.flushall();

    // The first to notice puts back what it has; hearing that, the holder of the newer copy puts it over.
    await behind.get();
    await vi.waitFor(async () => expect(await admin.get(key)).toBe(stored));
    expect(await behind.get()).toEqual(session(2));
  });

  it('keeps a sign-out whose mark vanished too: the session it ended is never put back', async () => {
    const key = redis.uniqueKey();
    const admin = redis.client();
    const signOut = storeFor(key);
    const other = storeFor(key);
    await signOut.set(session(3));
    expect(await other.get()).toEqual(session(3));
    await signOut.clear();
    expect(await other.get()).toBeUndefined();

    await admin.flushall();

    expect(await other.get()).toBeUndefined();
    expect(await signOut.get()).toBeUndefined();
    expect(await admin.exists(key)).toBe(0);
    expect(await other.set(session(4), { expectedRevision: 3 })).toBe(false);
  });

  it('stores a refresh whose lock and key vanished during its token request, and lets nobody else take the lock before it has', async () => {
    const key = redis.uniqueKey();
    const admin = redis.client();
    const holder = storeFor(key);
    const waiter = storeFor(key, { lockPollMs: 50 });
    await holder.set(session(1));
    await waiter.get();
    const lock = await holder.lock({ signal: noSignal() });
    expect(await holder.get()).toEqual(session(1));
    // The token request is out when the data vanishes.
    await admin.flushall();
    let waiterHasLock = false;
    const waiting = waiter.lock({ signal: noSignal() }).then((taken) => {
      waiterHasLock = true;
      return taken;
    });
    await sleep(200);
    expect(waiterHasLock).toBe(false);

    expect(await holder.set(session(2), { expectedRevision: 1 })).toBe(true);

    expect(lock.signal.aborted).toBe(false);
    expect(waiterHasLock).toBe(false);
    await lock.release();
    const waiterLock = await waiting;
    expect(await waiter.get()).toEqual(session(2));
    await waiterLock.release();
  });

  it('takes its vanished lock back at the next renewal, while its lease still runs', async () => {
    const key = redis.uniqueKey();
    const admin = redis.client();
    const holder = storeFor(key, { lockLeaseMs: 600 });
    await holder.set(session(1));
    const lock = await holder.lock({ signal: noSignal() });
    await holder.get();
    const owner = await admin.get(`${key}:lock`);

    await admin.flushall();

    await vi.waitFor(async () => expect(await admin.get(`${key}:lock`)).toBe(owner), { timeout: 2_000 });
    await lock.assertHeld();
    expect(lock.signal.aborted).toBe(false);
    expect(await admin.get(key)).not.toBeNull();
    await lock.release();
  });

  it('still loses a vanished lock that another instance took, and never takes it back after that one stored a refresh', async () => {
    const key = redis.uniqueKey();
    const admin = redis.client();
    const frozen = storeFor(key, { lockLeaseMs: 3_000 });
    const successor = storeFor(key);
    await frozen.set(session(1));
    const lock = await frozen.lock({ signal: noSignal() });
    await frozen.get();

    // Only the lock vanished (evicted); the tokens are still there, so the successor cannot tell.
    await admin.del(`${key}:lock`);
    const taken = await successor.lock({ signal: noSignal() });
    expect(await successor.get()).toEqual(session(1));
    expect(await successor.set(session(2), { expectedRevision: 1 })).toBe(true);
    await taken.release();

    await expect(lock.assertHeld()).rejects.toMatchObject({ code: 'STORE_ERROR' });
    expect(lock.signal.aborted).toBe(true);
    const write = await frozen.set(session(2, 'stale'), { expectedRevision: 1 }).then(
      (written) => (written ? 'written' : 'refused'),
      () => 'rejected',
    );
    expect(write).not.toBe('written');
    expect(await successor.get()).toEqual(session(2));
    await lock.release();
  });

  it('puts back an encrypted session byte for byte, and its sign-out mark holds nothing secret', async () => {
    const key = redis.uniqueKey();
    const admin = redis.client();
    const encryption = { key: randomBytes(32), keyId: 'k1' };
    const store = storeFor(key, { encryption });
    await store.set(session(5));
    const sealed = await admin.get(key);

    await admin.flushall();

    expect(await store.get()).toEqual(session(5));
    expect(await admin.get(key)).toBe(sealed);
    await store.clear();
    const mark = (await admin.get(`${key}:signed-out`)) ?? '';
    expect(JSON.parse(mark)).toEqual({ revision: 6, signedOut: true });
    expect(await storeFor(key, { encryption }).get()).toBeUndefined();
  });
});

describe('redisStore sign-out mark', () => {
  it('signs out with a mark one revision above the session, which every instance reads as signed out', async () => {
    const key = redis.uniqueKey();
    const admin = redis.client();
    const store = storeFor(key);
    await store.set(session(8));

    await store.clear();

    expect(await admin.exists(key)).toBe(0);
    expect(JSON.parse((await admin.get(`${key}:signed-out`)) ?? 'null')).toEqual({ revision: 9, signedOut: true });
    expect(await storeFor(key).get()).toBeUndefined();
  });

  it('refuses a refresh of the session before the sign-out, and lets a sign-in or a first seed write over the mark', async () => {
    const key = redis.uniqueKey();
    const admin = redis.client();
    const store = storeFor(key);
    await store.set(session(8));
    await store.clear();

    expect(await store.set(session(9), { expectedRevision: 8 })).toBe(false);
    // What a process that starts after the sign-out with initial tokens does (the manager's seed).
    expect(await store.set(session(1), { expectedRevision: 0 })).toBe(true);
    expect(await admin.exists(`${key}:signed-out`)).toBe(0);
    await store.clear();
    await store.set(session(20));
    expect(await storeFor(key).get()).toEqual(session(20));
    expect(await admin.exists(`${key}:signed-out`)).toBe(0);
  });
});
