/*
 * The session outlives the loss of its Redis data: redis-server killed (SIGKILL) and started again
 * without persistence, and FLUSHALL. Two managers, each with its own Redis connections as two
 * processes would hold, share one session on an OAuth server with rotating refresh tokens and reuse
 * detection: a refresh token presented twice revokes the whole grant. A sign-out still signs out
 * everywhere, also when its mark is lost afterwards.
 */
import { randomUUID } from 'node:crypto';
import type { StoredTokens } from '@tokenrelay/core';
import { redisStore } from '@tokenrelay/redis';
import { startOAuthServer, type OAuthServer } from '@tokenrelay/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { expectSessionLives, REQUESTS, redisHolders, storedTokens } from './helpers/redis-holders.js';
import { startRedisServer, type RedisServer } from './helpers/redis-server.js';
import { presentedRefreshTokens, tokenRequestInFlight } from './helpers/token-requests.js';

let redis: RedisServer;
let oauth: OAuthServer | undefined;
const holders = redisHolders();

beforeAll(async () => {
  redis = await startRedisServer();
}, 20_000);
afterEach(async () => {
  await redis.startAgain().catch(() => undefined);
  await holders.close();
  await oauth?.close();
  oauth = undefined;
}, 30_000);
afterAll(async () => {
  await redis?.stop();
});

/**
 * A fresh OAuth server and a signed-in session in Redis, held by two holders. After data is found
 * lost, the lock is fenced for a lease before anyone refreshes from the copy put back: a short lease
 * keeps a request that needs a refresh right then waiting less than its `refreshTimeoutMs` (10 s).
 */
async function setUp() {
  oauth = await startOAuthServer({ rotateRefreshTokens: true, reuseDetection: true });
  const key = `tokenrelay-loss:${randomUUID()}`;
  const options = { port: redis.port, lockLeaseMs: 2_000 };
  const [first, second] = [holders.holder(oauth, key, options), holders.holder(oauth, key, options)];
  const signedIn = oauth.issue();
  await first.store.set({ revision: 1, tokens: signedIn });
  await Promise.all([first.load(), second.load()]);
  return { server: oauth, key, signedIn, first, second };
}

describe('redisStore when redis-server loses its data', () => {
  it('keeps the refresh whose token request was in flight when redis-server was killed and came back empty, and the other holder uses its tokens', async () => {
    const { server, signedIn, first, second } = await setUp();
    // Slow enough that Redis is back, and the clients reconnected, before the answer comes.
    server.failNextTokenRequests(1, { kind: 'slow', delayMs: 2_000 });
    server.revokeAccessTokens();
    const firstOutcomes = first.burst();
    await tokenRequestInFlight(server);

    await redis.crash();
    await redis.startAgain();
    // The other holder needs a refresh too while the answer is still on its way: it must wait for it.
    const secondOutcomes = second.burst();

    expect(await firstOutcomes).toEqual(Array(REQUESTS).fill('ok'));
    expect(await secondOutcomes).toEqual(Array(REQUESTS).fill('ok'));
    const rotated = await storedTokens(first.store);
    expect(rotated.refreshToken).not.toBe(signedIn.refreshToken);
    expect(presentedRefreshTokens(server)).toEqual([signedIn.refreshToken]);
    expect(server.stats()).toMatchObject({ refreshTokenReuses: 0, familiesRevoked: 0 });

    await expectSessionLives(server, first, second);
  }, 60_000);

  it('keeps the session through a FLUSHALL between two expiries: the next refresh presents the rotated refresh token', async () => {
    const { server, first, second } = await setUp();
    server.revokeAccessTokens();
    expect((await Promise.all([first.burst(), second.burst()])).flat()).toEqual(Array(2 * REQUESTS).fill('ok'));
    const rotated = await storedTokens(first.store);

    await holders.connect(redis.port).flushall();

    const before = server.stats().tokenRequests;
    server.revokeAccessTokens();
    expect((await Promise.all([first.burst(), second.burst()])).flat()).toEqual(Array(2 * REQUESTS).fill('ok'));
    expect(server.stats().tokenRequests - before).toBe(1);
    expect(presentedRefreshTokens(server).at(-1)).toBe(rotated.refreshToken);
    expect(server.stats()).toMatchObject({ refreshTokenReuses: 0, familiesRevoked: 0 });
  }, 60_000);

  it('keeps the rotated refresh token a holder could not store before redis-server came back empty, and stores it before its next refresh', async () => {
    const { server, signedIn, first, second } = await setUp();
    server.failNextTokenRequests(1, { kind: 'slow', delayMs: 500 });
    server.revokeAccessTokens();
    const outcomes = first.burst();
    await tokenRequestInFlight(server);
    await redis.crash();

    // The answer came while Redis was gone, longer than the lease: the holder keeps the tokens in memory.
    expect(await outcomes).toEqual(Array(REQUESTS).fill('STORE_ERROR'));
    await redis.startAgain();
    // The session that comes back is the one the holders last saw in Redis: the sign-in's.
    await vi.waitFor(async () => expect((await storedTokens(second.store)).refreshToken).toBe(signedIn.refreshToken), { timeout: 10_000 });
    expect(await first.burst()).toEqual(Array(REQUESTS).fill('ok'));

    // The holder's next refresh finds the store behind its memory: it stores its tokens first, then
    // presents the refresh token they carry, never the spent one.
    server.revokeAccessTokens();
    expect(await first.burst()).toEqual(Array(REQUESTS).fill('ok'));
    const presented = presentedRefreshTokens(server);
    expect(presented).toHaveLength(2);
    expect(presented[0]).toBe(signedIn.refreshToken);
    expect(presented[1]).not.toBe(signedIn.refreshToken);
    expect(server.stats()).toMatchObject({ refreshTokenReuses: 0, familiesRevoked: 0 });
    expect(await second.burst()).toEqual(Array(REQUESTS).fill('ok'));
  }, 60_000);

  it('puts the session back as soon as its pub/sub connection returns after a restart without persistence, and tells no holder it was signed out', async () => {
    const key = `tokenrelay-loss:${randomUUID()}`;
    const admin = holders.connect(redis.port);
    const [writer, reader] = [0, 1].map(() => redisStore({ client: holders.connect(redis.port), key, onError: () => undefined }));
    const heard: (StoredTokens | undefined)[] = [];
    writer?.subscribe((value) => heard.push(value));
    reader?.subscribe((value) => heard.push(value));
    await vi.waitFor(async () => expect(await admin.pubsub('NUMSUB', `${key}:events`)).toEqual([`${key}:events`, 2]));
    const value: StoredTokens = { revision: 2, tokens: { accessToken: 'access-2', refreshToken: 'refresh-2' } };
    await writer?.set(value);
    await vi.waitFor(() => expect(heard).toEqual([value]));
    const stored = await admin.get(key);

    await redis.crash();
    await redis.startAgain();

    // Nobody calls get(): the stores look again when their subscriptions come back.
    await vi.waitFor(async () => expect(await admin.get(key)).toBe(stored), { timeout: 10_000, interval: 20 });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(heard).not.toContain(undefined);
  }, 30_000);
});

describe('redisStore sign-out when redis-server loses its data afterwards', () => {
  it('signs every holder out, keeps them signed out through a FLUSHALL, and a refresh in flight during the sign-out does not bring the session back', async () => {
    const { server, signedIn, first, second } = await setUp();
    server.failNextTokenRequests(1, { kind: 'slow', delayMs: 1_000 });
    server.revokeAccessTokens();
    const firstOutcomes = first.burst();
    await tokenRequestInFlight(server);

    await second.manager.clear();

    // The refresh's answer is not stored: the session it belongs to was signed out meanwhile.
    expect(await firstOutcomes).not.toContain('ok');
    await vi.waitFor(async () => expect(await first.manager.getTokens()).toBeUndefined());
    expect(await first.store.get()).toBeUndefined();

    await holders.connect(redis.port).flushall();

    expect(await first.store.get()).toBeUndefined();
    expect(await second.store.get()).toBeUndefined();
    expect(await first.burst()).not.toContain('ok');
    expect(await first.manager.getTokens()).toBeUndefined();
    expect(await second.manager.getTokens()).toBeUndefined();
    expect(presentedRefreshTokens(server)).toEqual([signedIn.refreshToken]);
  }, 60_000);

  it('lets a process that starts after the sign-out with initial tokens store them, as before the sign-out mark', async () => {
    const { server, key, first } = await setUp();
    await first.manager.clear();
    const initial = server.issue();

    const late = holders.holder(server, key, { port: redis.port, tokens: initial });

    expect(await late.manager.getTokens()).toEqual(initial);
    expect(await storedTokens(first.store)).toEqual(initial);
    expect(await late.burst()).toEqual(Array(REQUESTS).fill('ok'));
  }, 30_000);
});
