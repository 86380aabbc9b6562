import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { StoredTokens, TokenRelayError } from '@tokenrelay/core';
import { configurationError, isRecord, parseStoredTokens, storeError } from '@tokenrelay/core/kit';

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

/**
 * Turns stored tokens into the string kept in Redis and back. Either form is a JSON object with
 * the revision at its top level, in clear, so the compare-and-set script can read it.
 */
export interface TokenCodec {
  encode(value: StoredTokens): string;
  /** @throws TokenRelayError `STORE_ERROR` for a value that is corrupt, of the wrong kind, or cannot be decrypted. */
  decode(raw: string): StoredTokens;
}

/**
 * The stored form of encrypted tokens. `alg` marks it; the plain form never has one. `revision`
 * is in clear for the compare-and-set script and authenticated (part of the additional data).
 */
interface Envelope {
  v: 1;
  alg: 'A256GCM';
  kid: string;
  revision: number;
  iv: string;
  ct: string;
  tag: string;
}

const ALGORITHM = 'aes-256-gcm';
const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;


function checkKey(key: unknown, name: string): Uint8Array {
  if (!(key instanceof Uint8Array) || key.byteLength !== KEY_BYTES) {
    throw configurationError(`redisStore: ${name} must be a Uint8Array (or Buffer) of ${KEY_BYTES} bytes for AES-256-GCM`);
  }
  return key;
}

function isEnvelope(value: Record<string, unknown>): value is Record<string, unknown> & Envelope {
  const base64url = (field: unknown) => typeof field === 'string' && /^[A-Za-z0-9_-]*$/.test(field);
  return (
    value.v === 1 &&
    value.alg === 'A256GCM' &&
    typeof value.kid === 'string' &&
    typeof value.revision === 'number' &&
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

  const parse = (value: unknown) => parseStoredTokens(value, (problem) => corrupt(`not stored tokens: ${problem}`));

  if (encryption === undefined) {
    return {
      encode: (value) => serialise(value),
      decode(raw) {
        const parsed = parseJson(raw, corrupt);
        if (isRecord(parsed) && parsed.alg !== undefined) {
          throw storeError(`The value at Redis key "${redisKey}" is encrypted, but redisStore was given no encryption key`);
        }
        return parse(parsed);
      },
    };
  }

  if (!isRecord(encryption)) throw configurationError('redisStore: encryption must be an object { key, keyId?, previousKeys? }');
  const keyId = encryption.keyId ?? 'default';
  if (typeof keyId !== 'string' || keyId === '') throw configurationError('redisStore: encryption.keyId must be a non-empty string');
  const keys = new Map<string, Uint8Array>();
  for (const [id, key] of Object.entries(encryption.previousKeys ?? {})) {
    keys.set(id, checkKey(key, `encryption.previousKeys["${id}"]`));
  }
  keys.set(keyId, checkKey(encryption.key, 'encryption.key'));
  const additionalData = (kid: string, revision: number) =>
    Buffer.from(`tokenrelay-redis/v1\n${kid}\n${redisKey}\n${revision}`, 'utf8');

  return {
    encode(value) {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv(ALGORITHM, keys.get(keyId) as Uint8Array, iv, { authTagLength: TAG_BYTES });
      cipher.setAAD(additionalData(keyId, value.revision));
      const ct = Buffer.concat([cipher.update(serialise(value), 'utf8'), cipher.final()]);
      const envelope: Envelope = {
        v: 1,
        alg: 'A256GCM',
        kid: keyId,
        revision: value.revision,
        iv: iv.toString('base64url'),
        ct: ct.toString('base64url'),
        tag: cipher.getAuthTag().toString('base64url'),
      };
      return JSON.stringify(envelope);
    },
    decode(raw) {
      const parsed = parseJson(raw, corrupt);
      if (!isRecord(parsed)) throw corrupt('not an encrypted token set');
      if (parsed.alg === undefined && isRecord(parsed.tokens)) {
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
        decipher.setAAD(additionalData(parsed.kid, parsed.revision));
        decipher.setAuthTag(tag);
        plaintext = Buffer.concat([decipher.update(Buffer.from(parsed.ct, 'base64url')), decipher.final()]).toString('utf8');
      } catch {
        throw storeError(
          `The value at Redis key "${redisKey}" could not be decrypted with key id "${parsed.kid}": ` +
            'the key is wrong or the value was tampered with',
        );
      }
      const value = parse(parseJson(plaintext, corrupt));
      if (value.revision !== parsed.revision) throw corrupt('its revision does not match the encrypted one');
      return value;
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

/** The plain form: `{ revision, sessionExpired?, tokens }`. */
function serialise(value: StoredTokens): string {
  return JSON.stringify(
    value.sessionExpired
      ? { revision: value.revision, sessionExpired: true, tokens: value.tokens }
      : { revision: value.revision, tokens: value.tokens },
  );
}
