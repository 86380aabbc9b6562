import { randomBytes } from 'node:crypto';
import { ErrorCode, type TokenRelayError, type StoredTokens } from '@tokenrelay/core';
import { describe, expect, it, vi } from 'vitest';
import { useRedisServer } from '../../../test/helpers/redis-fixture.js';
import { redisStore, type RedisStoreEncryption } from './index.js';

const redis = useRedisServer();

const tokens: StoredTokens = {
  revision: 3,
  tokens: {
    accessToken: 'access-token-secret-2',
    refreshToken: 'refresh-token-secret-2',
    expiresAt: 1_900_000_000_000,
    raw: { instance_url: 'https://example.my.salesforce.com' },
  },
};

const newKey = () => randomBytes(32);

async function readFailure(client: ReturnType<typeof redis.client>, key: string, encryption?: RedisStoreEncryption) {
  const error = (await redisStore({ client, key, ...(encryption ? { encryption } : {}) })
    .get()
    .then(
      () => undefined,
      (reason: unknown) => reason,
    )) as TokenRelayError | undefined;
  expect(error?.code).toBe(ErrorCode.STORE_ERROR);
  for (const secret of [tokens.tokens.accessToken, tokens.tokens.refreshToken as string]) {
    expect(String(error)).not.toContain(secret);
    expect(JSON.stringify(error)).not.toContain(secret);
  }
  return error as TokenRelayError;
}

/** Replaces one base64url character of `text` at `index` by another one. */
function flipCharacter(text: string, index: number): string {
  const character = text[index] === 'A' ? 'B' : 'A';
  return text.slice(0, index) + character + text.slice(index + 1);
}

describe('redisStore encryption', () => {
  it('stores an AES-256-GCM envelope with the key id instead of the tokens, and reads the tokens back', async () => {
    const client = redis.client();
    const key = redis.uniqueKey();
    const store = redisStore({ client, key, encryption: { key: newKey(), keyId: '2025-06' } });

    await store.set(tokens);
    const first = (await client.get(key)) ?? '';
    await store.set(tokens);
    const second = (await client.get(key)) ?? '';

    expect(await store.get()).toEqual(tokens);
    expect(JSON.parse(first)).toEqual({
      v: 1,
      alg: 'A256GCM',
      kid: '2025-06',
      revision: 3,
      iv: expect.stringMatching(/^[A-Za-z0-9_-]{16}$/),
      ct: expect.any(String),
      tag: expect.stringMatching(/^[A-Za-z0-9_-]{22}$/),
    });
    for (const secret of [tokens.tokens.accessToken, tokens.tokens.refreshToken as string, 'salesforce']) {
      expect(first).not.toContain(secret);
    }
    // A fresh IV per write: the same tokens never give the same ciphertext.
    expect(JSON.parse(second).iv).not.toBe(JSON.parse(first).iv);
    expect(JSON.parse(second).ct).not.toBe(JSON.parse(first).ct);
  });

  it('fails with a STORE_ERROR saying the key is wrong when read with another key under the same key id', async () => {
    const client = redis.client();
    const key = redis.uniqueKey();
    await redisStore({ client, key, encryption: { key: newKey() } }).set(tokens);

    const error = await readFailure(client, key, { key: newKey() });

    expect(error.message).toContain('could not be decrypted with key id "default": the key is wrong or the value was tampered with');
  });

  it('fails with a STORE_ERROR naming the key id when the value was written under a key id it does not know', async () => {
    const client = redis.client();
    const key = redis.uniqueKey();
    await redisStore({ client, key, encryption: { key: newKey(), keyId: 'old' } }).set(tokens);

    const error = await readFailure(client, key, { key: newKey(), keyId: 'new' });

    expect(error.message).toContain('was encrypted with key id "old", which is not configured');
  });

  it.each([
    ['the ciphertext', 'ct'],
    ['the authentication tag', 'tag'],
    ['the IV', 'iv'],
  ] as const)('detects tampering with %s', async (_, field) => {
    const client = redis.client();
    const key = redis.uniqueKey();
    const encryption = { key: newKey() };
    await redisStore({ client, key, encryption }).set(tokens);
    const envelope = JSON.parse((await client.get(key)) ?? '') as Record<string, string>;
    await client.set(key, JSON.stringify({ ...envelope, [field]: flipCharacter(envelope[field] ?? '', 3) }));

    const error = await readFailure(client, key, encryption);

    expect(error.message).toContain('the key is wrong or the value was tampered with');
  });

  it('refuses a value copied from another key, because the key name is authenticated', async () => {
    const client = redis.client();
    const victimKey = redis.uniqueKey();
    const attackerKey = redis.uniqueKey();
    const encryption = { key: newKey() };
    await redisStore({ client, key: attackerKey, encryption }).set(tokens);
    await client.set(victimKey, (await client.get(attackerKey)) ?? '');

    const error = await readFailure(client, victimKey, encryption);

    expect(error.message).toContain('the key is wrong or the value was tampered with');
  });

  it('reads values written under a previous key after a key rotation, and writes with the new key', async () => {
    const client = redis.client();
    const key = redis.uniqueKey();
    const oldKey = newKey();
    await redisStore({ client, key, encryption: { key: oldKey, keyId: 'k1' } }).set(tokens);
    const rotated = redisStore({ client, key, encryption: { key: newKey(), keyId: 'k2', previousKeys: { k1: oldKey } } });

    expect(await rotated.get()).toEqual(tokens);
    await rotated.set(tokens);

    expect(JSON.parse((await client.get(key)) ?? '').kid).toBe('k2');
    expect((await readFailure(client, key, { key: oldKey, keyId: 'k1' })).message).toContain('key id "k2"');
  });

  it('refuses plaintext tokens when encryption is on, and an encrypted value when it is off', async () => {
    const client = redis.client();
    const plainKey = redis.uniqueKey();
    const sealedKey = redis.uniqueKey();
    const encryption = { key: newKey() };
    await redisStore({ client, key: plainKey }).set(tokens);
    await redisStore({ client, key: sealedKey, encryption }).set(tokens);

    expect((await readFailure(client, plainKey, encryption)).message).toContain('is not encrypted, but redisStore expects encrypted tokens');
    expect((await readFailure(client, sealedKey)).message).toContain('is encrypted, but redisStore was given no encryption key');
  });

  it('fails with a STORE_ERROR for a corrupt envelope', async () => {
    const client = redis.client();
    const key = redis.uniqueKey();
    await client.set(key, JSON.stringify({ v: 1, alg: 'A256GCM', kid: 'default', iv: 'AAAA' }));

    const error = await readFailure(client, key, { key: newKey() });

    expect(error.message).toContain('is corrupt (not an encrypted token set)');
  });

  it('gives other instances the decrypted tokens when they are notified of a write', async () => {
    const key = redis.uniqueKey();
    const encryption = { key: newKey() };
    const writer = redisStore({ client: redis.client(), key, encryption });
    const reader = redisStore({ client: redis.client(), key, encryption });
    const heard = vi.fn();
    reader.subscribe(heard);
    await redis.waitForSubscribers(`${key}:events`, 1);

    await writer.set(tokens);

    await vi.waitFor(() => expect(heard).toHaveBeenCalledWith(tokens));
  });

  it('reports a notified write it cannot decrypt to onError instead of handing the listener anything', async () => {
    const key = redis.uniqueKey();
    const writer = redisStore({ client: redis.client(), key, encryption: { key: newKey() } });
    const onError = vi.fn();
    const reader = redisStore({ client: redis.client(), key, encryption: { key: newKey() }, onError });
    const heard = vi.fn();
    reader.subscribe(heard);
    await redis.waitForSubscribers(`${key}:events`, 1);

    await writer.set(tokens);

    await vi.waitFor(() => expect(onError).toHaveBeenCalledWith(expect.objectContaining({ code: ErrorCode.STORE_ERROR })));
    expect(heard).not.toHaveBeenCalled();
  });
});
