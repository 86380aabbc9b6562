/*
 * The DPoP key of a session shared by several processes: it travels with the tokens in the token
 * store (`tokens.sessionData.dpopKey`, a private JWK), so every holder of the refresh token signs
 * with the key the refresh token is bound to, and the key is written, encrypted, replaced and
 * removed exactly as the tokens are.
 */
import type { TokenManager, TokenSet } from '@tokenrelay/core';
import { isRecord, storeError } from '@tokenrelay/core/kit';
import { algorithmOf, generateDpopKey, importParams, type DpopAlgorithm } from './proof.js';

/** The field of `TokenSet.sessionData` that holds the session's DPoP key (a private JWK). */
export const SESSION_DPOP_KEY = 'dpopKey';

/** What {@link sessionDpopKey} returns: a key source for `createDpop({ key })`, plus the sign-in step. */
export interface SessionDpopKey {
  /** The key of the session the manager holds; before a sign-in (or after a sign-out), a new key kept for the next sign-in. */
  (): Promise<CryptoKeyPair>;
  /**
   * The tokens of a sign-in made with this key, with the key added to their `sessionData`: pass
   * them to `manager.setTokens()`, which writes tokens and key to the store in one write.
   */
  attachTo(tokens: TokenSet): Promise<TokenSet>;
}

interface LoadedKey {
  /** The public coordinates: which key this is, however often the store was read back. */
  readonly id: string;
  readonly keys: Promise<CryptoKeyPair>;
}

const idOf = (jwk: JsonWebKey) => `${jwk.crv ?? ''}.${jwk.x ?? ''}.${jwk.y ?? ''}`;

async function importPair(jwk: JsonWebKey): Promise<CryptoKeyPair> {
  const algorithm = jwk.kty === 'OKP' ? 'EdDSA' : 'ES256';
  const { d: _private, key_ops: _ops, ...publicJwk } = jwk;
  const [privateKey, publicKey] = await Promise.all([
    crypto.subtle.importKey('jwk', jwk, importParams(algorithm), false, ['sign']),
    crypto.subtle.importKey('jwk', publicJwk, importParams(algorithm), true, ['verify']),
  ]);
  return { privateKey, publicKey };
}

/**
 * The DPoP key of the session `manager` holds, for servers whose processes share one session
 * through a token store (fileStore, redisStore): the process that signs in makes the key and
 * stores it with the tokens ({@link SessionDpopKey.attachTo}); every other process reads it from
 * the store. The key is extractable (it is stored), so use a store you would trust with the refresh
 * token; redisStore's `encryption` encrypts it with the tokens.
 *
 * @example
 * ```ts
 * const key = sessionDpopKey(manager)
 * const dpop = createDpop({ key })
 * // signing in: exchange the code through dpop.fetch, then
 * await manager.setTokens(await key.attachTo(tokens))
 * ```
 */
export function sessionDpopKey(manager: Pick<TokenManager, 'getTokens'>, options: { algorithm?: DpopAlgorithm } = {}): SessionDpopKey {
  let loaded: LoadedKey | undefined;
  /** The key for the next sign-in, made when there is no session; dropped once a session holds it. */
  let pending: { keys: Promise<CryptoKeyPair>; jwk: Promise<JsonWebKey> } | undefined;

  const makePending = () => {
    const keys = generateDpopKey({ algorithm: options.algorithm ?? 'ES256', extractable: true });
    const made = { keys, jwk: keys.then((pair) => crypto.subtle.exportKey('jwk', pair.privateKey)) };
    // A runtime without the algorithm fails every call, rather than keeping the failure.
    keys.catch(() => {
      if (pending === made) pending = undefined;
    });
    return made;
  };

  async function storedJwk(): Promise<JsonWebKey | undefined> {
    const data = (await manager.getTokens())?.sessionData;
    if (data === undefined || !(SESSION_DPOP_KEY in data)) return undefined;
    const jwk = data[SESSION_DPOP_KEY];
    if (!isRecord(jwk) || typeof jwk.kty !== 'string' || typeof jwk.d !== 'string') {
      throw storeError(`the session's sessionData.${SESSION_DPOP_KEY} is not a private JWK`);
    }
    return jwk as JsonWebKey;
  }

  const source = async (): Promise<CryptoKeyPair> => {
    const jwk = await storedJwk();
    if (jwk === undefined) {
      pending ??= makePending();
      return pending.keys;
    }
    const id = idOf(jwk);
    if (pending && idOf(await pending.jwk) === id) pending = undefined;
    if (loaded?.id !== id) loaded = { id, keys: importPair(jwk) };
    const keys = await loaded.keys;
    algorithmOf(keys.privateKey);
    return keys;
  };

  return Object.assign(source, {
    async attachTo(tokens: TokenSet): Promise<TokenSet> {
      const jwk = (await storedJwk()) ?? (await (pending ??= makePending()).jwk);
      return { ...tokens, sessionData: { ...tokens.sessionData, [SESSION_DPOP_KEY]: jwk } };
    },
  });
}
