import { ErrorCode, isTokenRelayError, type StoredTokens } from '@tokenrelay/core';
import { describe, expect, it, vi } from 'vitest';
import { useRedisServer } from '../../../test/helpers/redis-fixture.js';
import { redisStore } from './index.js';

const redis = useRedisServer();

const tokens: StoredTokens = {
  revision: 3,
  tokens: {
    accessToken: 'access-token-secret-1',
    refreshToken: 'refresh-token-secret-1',
    expiresAt: 1_900_000_000_000,
    tokenType: 'Bearer',
    scope: 'read write',
    raw: { id_token: 'id-token-1', instance_url: 'https://example.my.salesforce.com' },
  },
};

/** Runs `action` and returns the TokenRelayError it rejects with. */
async function storeFailure(action: () => unknown): Promise<Error & { code: string }> {
  const error: unknown = await Promise.resolve().then(action).then(
    () => undefined,
    (reason: unknown) => reason,
  );
  if (!isTokenRelayError(error)) throw new Error(`expected a TokenRelayError, got ${String(error)}`);
  return error;
}

function expectNoSecrets(error: Error, ...secrets: string[]): void {
  for (const secret of secrets) {
    expect(String(error)).not.toContain(secret);
    expect(JSON.stringify(error)).not.toContain(secret);
  }
}

describe('redisStore get/set/clear', () => {
  it('stores the token set as JSON at the key, reads it back and clears it', async () => {
    const client = redis.client();
    const key = redis.uniqueKey();
    const store = redisStore({ client, key });

    expect(await store.get()).toBeUndefined();
    await store.set(tokens);
    expect(JSON.parse((await client.get(key)) ?? 'null')).toEqual(tokens);
    expect(await store.get()).toEqual(tokens);

    await store.clear();
    expect(await client.exists(key)).toBe(0);
    expect(await store.get()).toBeUndefined();
  });

  it('rejects a value that is not JSON with a STORE_ERROR that names the key and does not quote the value', async () => {
    const client = redis.client();
    const key = redis.uniqueKey();
    await client.set(key, '{"accessToken":"half-written-secret');

    const error = await storeFailure(() => redisStore({ client, key }).get());

    expect(error.code).toBe(ErrorCode.STORE_ERROR);
    expect(error.message).toContain(`"${key}" is corrupt (not JSON)`);
    expectNoSecrets(error, 'half-written-secret');
  });

  it.each([
    ['an object without an access token', '{"revision":1,"tokens":{"refreshToken":"orphan-refresh-secret"}}'],
    ['an array', '["orphan-refresh-secret"]'],
    ['a number as the access token', '{"revision":1,"tokens":{"accessToken":42,"refreshToken":"orphan-refresh-secret"}}'],
    ['an expiry that is not a number', '{"revision":1,"tokens":{"accessToken":"a","refreshToken":"orphan-refresh-secret","expiresAt":"soon"}}'],
    ['a token set without a revision', '{"accessToken":"a","refreshToken":"orphan-refresh-secret"}'],
  ])('rejects JSON that is not stored tokens (%s) with a STORE_ERROR, never as "no tokens"', async (_, value) => {
    const client = redis.client();
    const key = redis.uniqueKey();
    await client.set(key, value);

    const error = await storeFailure(() => redisStore({ client, key }).get());

    expect(error.code).toBe(ErrorCode.STORE_ERROR);
    expect(error.message).toContain('is corrupt (not stored tokens');
    expectNoSecrets(error, 'orphan-refresh-secret');
  });

  it('turns a Redis error into a STORE_ERROR without the value it tried to write', async () => {
    const client = redis.client();
    const key = redis.uniqueKey();
    const store = redisStore({ client, key });
    await client.hset(key, 'not', 'a string');

    const readError = await storeFailure(() => store.get());
    expect(readError.code).toBe(ErrorCode.STORE_ERROR);
    expect(readError.message).toContain('WRONGTYPE');

    client.disconnect();
    const writeError = await storeFailure(() => store.set(tokens));
    expect(writeError.code).toBe(ErrorCode.STORE_ERROR);
    expect(writeError.message).toContain(`Could not write Redis key "${key}"`);
    expectNoSecrets(writeError, tokens.tokens.accessToken, tokens.tokens.refreshToken as string);
  });

  it('rejects invalid options with a CONFIGURATION_ERROR', () => {
    const client = redis.client();
    const attempts = [
      () => redisStore({ client: {} as never, key: 'k' }),
      () => redisStore({ client, key: '' }),
      () => redisStore({ client, key: 'k', lockLeaseMs: 0 }),
      () => redisStore({ client, key: 'k', lockWaitMs: Number.NaN }),
      () => redisStore({ client, key: 'k', lockPollMs: -1 }),
      // Longer than a timer keeps: the lease would be renewed every millisecond.
      () => redisStore({ client, key: 'k', lockLeaseMs: 2 ** 33 }),
      () => redisStore({ client, key: 'k', lockPollMs: 2 ** 31 }),
      () => redisStore({ client, key: 'k', encryption: { key: new Uint8Array(16) } }),
      () => redisStore({ client, key: 'k', encryption: { key: new Uint8Array(32), keyId: '' } }),
    ];
    for (const attempt of attempts) {
      expect(attempt).toThrow(expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR }));
    }
  });
});

describe('redisStore notifications', () => {
  it('tells other store instances about writes and clears, and does not echo a write to its writer', async () => {
    const key = redis.uniqueKey();
    const writer = redisStore({ client: redis.client(), key });
    const reader = redisStore({ client: redis.client(), key });
    const heardByReader = vi.fn();
    const heardByWriter = vi.fn();
    reader.subscribe(heardByReader);
    writer.subscribe(heardByWriter);
    await redis.waitForSubscribers(`${key}:events`, 2);

    await writer.set(tokens);
    await vi.waitFor(() => expect(heardByReader).toHaveBeenCalledWith(tokens));
    await writer.clear();
    await vi.waitFor(() => expect(heardByReader).toHaveBeenLastCalledWith(undefined));

    expect(heardByReader).toHaveBeenCalledTimes(2);
    expect(heardByWriter).not.toHaveBeenCalled();
  });

  it('ignores foreign messages on its channel', async () => {
    const key = redis.uniqueKey();
    const publisher = redis.client();
    const writer = redisStore({ client: redis.client(), key });
    const reader = redisStore({ client: redis.client(), key });
    const heard = vi.fn();
    reader.subscribe(heard);
    await redis.waitForSubscribers(`${key}:events`, 1);

    for (const message of ['not json', 'null', '42', '{"event":"unknown"}']) await publisher.publish(`${key}:events`, message);
    await writer.set(tokens);

    await vi.waitFor(() => expect(heard).toHaveBeenCalledWith(tokens));
    expect(heard).toHaveBeenCalledTimes(1);
  });

  it('stops notifying a listener after it unsubscribes', async () => {
    const key = redis.uniqueKey();
    const writer = redisStore({ client: redis.client(), key });
    const reader = redisStore({ client: redis.client(), key });
    const unsubscribed = vi.fn();
    const subscribed = vi.fn();
    reader.subscribe(unsubscribed)();
    reader.subscribe(subscribed);
    await redis.waitForSubscribers(`${key}:events`, 1);

    await writer.set(tokens);

    await vi.waitFor(() => expect(subscribed).toHaveBeenCalledTimes(1));
    expect(unsubscribed).not.toHaveBeenCalled();
  });

  it('closes its pub/sub connection on close() and when the user quits their own client', async () => {
    const key = redis.uniqueKey();
    const channel = `${key}:events`;
    const closedByCall = redisStore({ client: redis.client(), key });
    const ownClient = redis.client();
    const closedByClient = redisStore({ client: ownClient, key });
    closedByCall.subscribe(() => {});
    closedByClient.subscribe(() => {});
    await redis.waitForSubscribers(channel, 2);

    await closedByCall.close();
    await redis.waitForSubscribers(channel, 1);
    await ownClient.quit();
    await redis.waitForSubscribers(channel, 0);
  });
});
