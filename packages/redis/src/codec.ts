import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { ErrorCode, TokenRelayError, type TokenSet } from '@tokenrelay/core';

/**
 * Encrypts the tokens before they reach Redis, with AES-256-GCM (a fresh random 96-bit IV per
 * write; the 128-bit tag detects a wrong key and any tampering).
 *
 * @example
 * ```ts
 * encryption: { key: Buffer.from(process.env.TOKEN_KEY!, 'base64'), keyId: '2025-06' }
 * ```
 */
export interface RedisStoreEncryption {
  /** The 32-byte AES-256 key, e.g. `Buffer.from(process.env.TOKEN_KEY, 'base64')` of `openssl rand -base64 32`. */
  key: Uint8Array;
  /**
   * A name for `key`, stored beside each value so that values written under an older key can
   * still be read after you rotate keys (see `previousKeys`). Not secret.
   * @default 'default'
   */
  keyId?: string;
  /**
   * Older keys by their `keyId`, used only to read values written before a key rotation. The
   * next write uses `key` again.
   * @default {}
   * @example
   * ```ts
   * { key: newKey, keyId: '2025-06', previousKeys: { '2025-01': oldKey } }
   * ```
   */
  previousKeys?: Readonly<Record<string, Uint8Array>>;
}

/** Turns token sets into the string stored in Redis and back. */
export interface TokenCodec {
  encode(tokens: TokenSet): string;
  /** @throws TokenRelayError `STORE_ERROR` for a value that is corrupt, of the wrong kind, or cannot be decrypted. */
  decode(raw: string): TokenSet;
}

/** The stored form of an encrypted token set. `alg` marks it; JSON of a plain token set never has one. */
interface Envelope {
  v: 1;
  alg: 'A256GCM';
  kid: string;
  iv: string;
  ct: string;
  tag: string;
}

const ALGORITHM = 'aes-256-gcm';
const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;

const configError = (message: string) => new TokenRelayError(ErrorCode.CONFIGURATION_ERROR, message);
const storeError = (message: string) => new TokenRelayError(ErrorCode.STORE_ERROR, message);

function checkKey(key: unknown, name: string): Uint8Array {
  if (!(key instanceof Uint8Array) || key.byteLength !== KEY_BYTES) {
    throw configError(`redisStore: ${name} must be a Uint8Array (or Buffer) of ${KEY_BYTES} bytes for AES-256-GCM`);
  }
  return key;
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** The token set in `value`, with only the fields a TokenSet has, or undefined when it is not one. */
function toTokenSet(value: unknown): TokenSet | undefined {
  if (!isRecord(value)) return undefined;
  const { accessToken, refreshToken, expiresAt, tokenType, scope, raw } = value;
  if (typeof accessToken !== 'string' || accessToken === '') return undefined;
  const optionalString = (field: unknown) => field === undefined || typeof field === 'string';
  if (!optionalString(refreshToken) || !optionalString(tokenType) || !optionalString(scope)) return undefined;
  if (expiresAt !== undefined && !(typeof expiresAt === 'number' && Number.isFinite(expiresAt))) return undefined;
  if (raw !== undefined && !isRecord(raw)) return undefined;
  return {
    accessToken,
    ...(refreshToken === undefined ? {} : { refreshToken: refreshToken as string }),
    ...(expiresAt === undefined ? {} : { expiresAt }),
    ...(tokenType === undefined ? {} : { tokenType: tokenType as string }),
    ...(scope === undefined ? {} : { scope: scope as string }),
    ...(raw === undefined ? {} : { raw }),
  };
}

function isEnvelope(value: Record<string, unknown>): value is Record<string, unknown> & Envelope {
  const base64url = (field: unknown) => typeof field === 'string' && /^[A-Za-z0-9_-]*$/.test(field);
  return (
    value.v === 1 &&
    value.alg === 'A256GCM' &&
    typeof value.kid === 'string' &&
    base64url(value.iv) &&
    base64url(value.ct) &&
    base64url(value.tag)
  );
}

/**
 * The codec for one Redis key. With `encryption`, values are sealed in an {@link Envelope} whose
 * additional authenticated data binds the key id and the Redis key name, so a value copied to
 * another key (another user's session) does not decrypt. Error messages name the key and what is
 * wrong, never any part of the value.
 */
export function createTokenCodec(redisKey: string, encryption: RedisStoreEncryption | undefined): TokenCodec {
  const corrupt = (why: string) =>
    storeError(`The value at Redis key "${redisKey}" is corrupt (${why}); fix or delete it, then sign in again`);

  if (encryption === undefined) {
    return {
      encode: (tokens) => JSON.stringify(tokens),
      decode(raw) {
        const parsed = parseJson(raw, corrupt);
        if (isRecord(parsed) && parsed.alg !== undefined) {
          throw storeError(`The value at Redis key "${redisKey}" is encrypted, but redisStore was given no encryption key`);
        }
        return toTokenSet(parsed) ?? throwError(corrupt('not a token set'));
      },
    };
  }

  if (!isRecord(encryption)) throw configError('redisStore: encryption must be an object { key, keyId?, previousKeys? }');
  const keyId = encryption.keyId ?? 'default';
  if (typeof keyId !== 'string' || keyId === '') throw configError('redisStore: encryption.keyId must be a non-empty string');
  const keys = new Map<string, Uint8Array>();
  for (const [id, key] of Object.entries(encryption.previousKeys ?? {})) {
    keys.set(id, checkKey(key, `encryption.previousKeys["${id}"]`));
  }
  keys.set(keyId, checkKey(encryption.key, 'encryption.key'));
  const additionalData = (kid: string) => Buffer.from(`tokenrelay-redis/v1\n${kid}\n${redisKey}`, 'utf8');

  return {
    encode(tokens) {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv(ALGORITHM, keys.get(keyId) as Uint8Array, iv, { authTagLength: TAG_BYTES });
      cipher.setAAD(additionalData(keyId));
      const ct = Buffer.concat([cipher.update(JSON.stringify(tokens), 'utf8'), cipher.final()]);
      const envelope: Envelope = {
        v: 1,
        alg: 'A256GCM',
        kid: keyId,
        iv: iv.toString('base64url'),
        ct: ct.toString('base64url'),
        tag: cipher.getAuthTag().toString('base64url'),
      };
      return JSON.stringify(envelope);
    },
    decode(raw) {
      const parsed = parseJson(raw, corrupt);
      if (!isRecord(parsed)) throw corrupt('not an encrypted token set');
      if (parsed.alg === undefined && toTokenSet(parsed)) {
        throw storeError(
          `The value at Redis key "${redisKey}" is not encrypted, but redisStore expects encrypted tokens; ` +
            'delete it (or write it again through an encrypting store)',
        );
      }
      if (!isEnvelope(parsed)) throw corrupt('not an encrypted token set');
      const key = keys.get(parsed.kid);
      if (!key) {
        throw storeError(
          `The value at Redis key "${redisKey}" was encrypted with key id "${parsed.kid}", which is not configured ` +
            '(add it to encryption.previousKeys)',
        );
      }
      const iv = Buffer.from(parsed.iv, 'base64url');
      const tag = Buffer.from(parsed.tag, 'base64url');
      if (iv.byteLength !== IV_BYTES || tag.byteLength !== TAG_BYTES) throw corrupt('bad IV or tag length');
      let plaintext: string;
      try {
        const decipher = createDecipheriv(ALGORITHM, key, iv, { authTagLength: TAG_BYTES });
        decipher.setAAD(additionalData(parsed.kid));
        decipher.setAuthTag(tag);
        plaintext = Buffer.concat([decipher.update(Buffer.from(parsed.ct, 'base64url')), decipher.final()]).toString('utf8');
      } catch {
        throw storeError(
          `The value at Redis key "${redisKey}" could not be decrypted with key id "${parsed.kid}": ` +
            'the key is wrong or the value was tampered with',
        );
      }
      return toTokenSet(parseJson(plaintext, corrupt)) ?? throwError(corrupt('the decrypted value is not a token set'));
    },
  };
}

function parseJson(text: string, corrupt: (why: string) => TokenRelayError): unknown {
  try {
    return JSON.parse(text);
  } catch {
    // The SyntaxError quotes the text, which may hold a token: it is not kept as the cause.
    throw corrupt('not JSON');
  }
}

function throwError(error: Error): never {
  throw error;
}
