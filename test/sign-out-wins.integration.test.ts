/*
 * Sign-out and a new sign-in always win over a refresh in flight (issue 8 §2), with the real stores:
 * a fileStore on disk and a redisStore on a real redis-server. "Another process" is a second manager
 * on its own store instance (its own file handle watcher, its own Redis connections) sharing the
 * same file or key, as a second process would.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTokenManager, type RefreshHandler, type TokenSet, type TokenStore } from '@tokenrelay/core';
import { fileStore } from '@tokenrelay/core/node';
import { redisStore } from '@tokenrelay/redis';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { useRedisServer } from './helpers/redis-fixture.js';

const session = (name: string): TokenSet => ({ accessToken: `at-${name}`, refreshToken: `rt-${name}` });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A token endpoint that answers after `delayMs`, counting its calls. */
function slowEndpoint(delayMs: number) {
  const presented: (string | undefined)[] = [];
  const handler: RefreshHandler = async ({ tokens }) => {
    presented.push(tokens?.refreshToken);
    await sleep(delayMs);
    return session(`refreshed-${presented.length}`);
  };
  return { handler, presented };
}

let directory: string;
const stores: TokenStore[] = [];

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), 'tokenrelay-sign-out-'));
});

afterEach(async () => {
  await Promise.all(stores.splice(0).map((store) => store.close?.()));
  await rm(directory, { recursive: true, force: true });
});

const track = <S extends TokenStore>(store: S): S => {
  stores.push(store);
  return store;
};

describe('fileStore', () => {
  it('clear() during a refresh that is writing the file: once clear() resolves the file is gone, at every timing', async () => {
    for (let timing = 0; timing < 10; timing++) {
      const path = join(directory, `tokens-${timing}.json`);
      const manager = createTokenManager({
        tokens: session('a'),
        store: track(fileStore(path, { watch: false })),
        refresh: async () => session('b'),
      });
      await manager.getTokens();
      const refreshing = manager.refresh({ staleAccessToken: 'at-a' }).catch(() => undefined);
      // Sign out a little later each time: before, during and after the refresh's atomic write.
      await sleep(timing);
      await manager.clear();

      await expect(readFile(path, 'utf8')).rejects.toMatchObject({ code: 'ENOENT' });
      await refreshing;
      await sleep(20);
      await expect(readFile(path, 'utf8')).rejects.toMatchObject({ code: 'ENOENT' });
      await expect(manager.getAccessToken()).rejects.toMatchObject({ code: 'NO_TOKENS' });
    }
  });

  it('another process signs out while this one’s token call is in flight: the file stays empty and neither adopts the old session', async () => {
    const path = join(directory, 'tokens.json');
    const endpoint = slowEndpoint(150);
    const a = createTokenManager({ tokens: session('a'), store: track(fileStore(path)), refresh: endpoint.handler });
    const b = createTokenManager({ store: track(fileStore(path)), refresh: endpoint.handler });
    await a.getTokens();
    expect(await b.getAccessToken()).toBe('at-a');

    const refreshing = a.refresh({ staleAccessToken: 'at-a' }).catch((error: unknown) => error);
    await sleep(50);
    await b.clear();
    await refreshing;
    await sleep(100);

    await expect(readFile(path, 'utf8')).rejects.toMatchObject({ code: 'ENOENT' });
    // A learns of the sign-out from the file's change notification.
    await vi.waitFor(() => expect(a.getAccessToken()).rejects.toMatchObject({ code: 'NO_TOKENS' }), { timeout: 3_000 });
    await expect(b.getAccessToken()).rejects.toMatchObject({ code: 'NO_TOKENS' });
    expect(endpoint.presented).toEqual(['rt-a']);
  });
});

describe('redisStore', () => {
  const redis = useRedisServer();

  it.each(['signs out', 'signs in another user'] as const)(
    'another process %s while this one’s token call is in flight: Redis keeps that, and neither process adopts the refreshed old session',
    async (action) => {
      const key = redis.uniqueKey();
      const endpoint = slowEndpoint(150);
      const storeA = track(redisStore({ client: redis.client(), key }));
      const storeB = track(redisStore({ client: redis.client(), key }));
      const a = createTokenManager({ tokens: session('a'), store: storeA, refresh: endpoint.handler });
      const b = createTokenManager({ store: storeB, refresh: endpoint.handler });
      await a.getTokens();
      expect(await b.getAccessToken()).toBe('at-a');

      const refreshing = a.refresh({ staleAccessToken: 'at-a' }).catch((error: unknown) => error);
      await sleep(50);
      if (action === 'signs out') await b.clear();
      else await b.setTokens(session('other-user'));
      await refreshing;
      await sleep(100);

      const stored = await storeB.get();
      if (action === 'signs out') {
        expect(stored).toBeUndefined();
        await expect(a.getAccessToken()).rejects.toMatchObject({ code: 'NO_TOKENS' });
        await expect(b.getAccessToken()).rejects.toMatchObject({ code: 'NO_TOKENS' });
      } else {
        expect(stored?.tokens).toMatchObject(session('other-user'));
        expect(await a.getAccessToken()).toBe('at-other-user');
        expect(await b.getAccessToken()).toBe('at-other-user');
      }
      expect(endpoint.presented).toEqual(['rt-a']);
    },
  );
});
