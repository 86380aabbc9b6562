/*
 * DPoP keys and proofs (RFC 9449 §4): the key pair from WebCrypto, the proof JWT signed with it,
 * and the key's RFC 7638 thumbprint. Nothing here knows HTTP.
 */
import { configurationError } from '@tokenrelay/core/kit';

/** The signature algorithm of a DPoP key: ECDSA P-256 with SHA-256, or Ed25519. */
export type DpopAlgorithm = 'ES256' | 'EdDSA';

/**
 * Where the DPoP key comes from: a key pair, or a function asked for the key before every proof
 * (so it can follow the session, as {@link sessionDpopKey} does; it should cache what it returns).
 */
export type DpopKeySource = CryptoKeyPair | (() => CryptoKeyPair | Promise<CryptoKeyPair>);

const generateParams = {
  ES256: { name: 'ECDSA', namedCurve: 'P-256' },
  EdDSA: { name: 'Ed25519' },
} as const;

const signParams = {
  ES256: { name: 'ECDSA', hash: 'SHA-256' },
  EdDSA: { name: 'Ed25519' },
} as const;

function subtle(): SubtleCrypto {
  const found = globalThis.crypto?.subtle;
  if (!found) throw configurationError('DPoP needs WebCrypto (globalThis.crypto.subtle), which this runtime lacks');
  return found;
}

/** The WebCrypto parameters of `algorithm` for importing a JWK of it. */
export const importParams = (algorithm: DpopAlgorithm) => generateParams[algorithm];

/** The DPoP algorithm of a WebCrypto key, or a `CONFIGURATION_ERROR` for a key DPoP cannot use. */
export function algorithmOf(key: CryptoKey): DpopAlgorithm {
  const { name, namedCurve } = key.algorithm as EcKeyAlgorithm;
  if (name === 'ECDSA' && namedCurve === 'P-256') return 'ES256';
  if (name === 'Ed25519') return 'EdDSA';
  throw configurationError(`a DPoP key must be ECDSA P-256 (ES256) or Ed25519 (EdDSA), not ${name}${namedCurve ? ` ${namedCurve}` : ''}`);
}

/**
 * A function that calls `make` once and keeps the promise it returns, unless it fails: a failure is
 * not kept, so the next call makes a new attempt (and reports its own error).
 */
export function keptUnlessFailed<T>(make: () => Promise<T>): () => Promise<T> {
  let kept: Promise<T> | undefined;
  return () =>
    (kept ??= make().catch((error: unknown) => {
      kept = undefined;
      throw error;
    }));
}

/**
 * The algorithm asked for, `'ES256'` when none is.
 * @throws TokenRelayError `CONFIGURATION_ERROR` when it is neither `'ES256'` nor `'EdDSA'`.
 */
export function checkedAlgorithm(algorithm: DpopAlgorithm = 'ES256'): DpopAlgorithm {
  if (!Object.hasOwn(generateParams, algorithm)) throw configurationError(`DPoP algorithm must be 'ES256' or 'EdDSA', not ${String(algorithm)}`);
  return algorithm;
}

/**
 * A new key pair for DPoP. The private key is non-extractable unless `extractable` (needed only
 * to store it, as {@link sessionDpopKey} does).
 *
 * @throws TokenRelayError `CONFIGURATION_ERROR` when the runtime's WebCrypto lacks the algorithm
 *   (Ed25519 is missing from some browsers and older runtimes: use ES256 there).
 */
export async function generateDpopKey(options: { algorithm?: DpopAlgorithm; extractable?: boolean } = {}): Promise<CryptoKeyPair> {
  const algorithm = checkedAlgorithm(options.algorithm);
  const crypto = subtle();
  try {
    return (await crypto.generateKey(generateParams[algorithm], options.extractable ?? false, ['sign', 'verify'])) as CryptoKeyPair;
  } catch (cause) {
    throw configurationError(`this runtime's WebCrypto cannot make ${algorithm} keys${algorithm === 'EdDSA' ? ' (Ed25519); use ES256' : ''}`, cause);
  }
}

const textBytes = (text: string) => new TextEncoder().encode(text);

/** base64url without padding (RFC 7515 §2). */
export function base64url(bytes: Uint8Array): string {
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

const base64urlJson = (value: unknown) => base64url(textBytes(JSON.stringify(value)));

/** base64url(SHA-256(text)): the `ath` of an access token (RFC 9449 §4.2), and the thumbprint's hash. */
export async function sha256(text: string): Promise<string> {
  return base64url(new Uint8Array(await subtle().digest('SHA-256', textBytes(text))));
}

/** A public key as a JWK with its required members only (RFC 7638 §3.2), in lexicographic order. */
export type PublicJwk = { crv: string; kty: string; x: string; y?: string };

const publicJwks = new WeakMap<CryptoKey, Promise<PublicJwk>>();

/** The public key's JWK (its required members only: what goes in a proof's header and the thumbprint). */
export function publicJwkOf(publicKey: CryptoKey): Promise<PublicJwk> {
  let jwk = publicJwks.get(publicKey);
  if (!jwk) {
    jwk = subtle()
      .exportKey('jwk', publicKey)
      // An Ed25519 key has no `y`: JSON.stringify leaves it out of the proof header and the thumbprint.
      .then(({ crv, kty, x, y }) => ({ crv: crv!, kty: kty!, x: x!, y }));
    publicJwks.set(publicKey, jwk);
  }
  return jwk;
}

/** The RFC 7638 JWK SHA-256 thumbprint of a public key: the `dpop_jkt` of an authorization request. */
export async function thumbprintOf(publicKey: CryptoKey): Promise<string> {
  return sha256(JSON.stringify(await publicJwkOf(publicKey)));
}

/** The claims of one proof that vary by request. */
export interface ProofClaims {
  /** The request's method, upper case. */
  htm: string;
  /** The request's URL without query and fragment. */
  htu: string;
  /** The server's nonce for this origin, when one is known. */
  nonce?: string | undefined;
  /** The access token the request carries, hashed into `ath`. */
  accessToken?: string | undefined;
}

/** The `htu` of a URL: without query and fragment (RFC 9449 §4.2). */
export function htuOf(url: URL): string {
  // A serialised URL's first '?' or '#' starts its query or fragment: elsewhere they are percent-encoded.
  return url.href.split(/[?#]/)[0]!;
}

/**
 * Signs one proof: header `{ typ: 'dpop+jwt', alg, jwk }`, claims `jti` (random, unique), `htm`,
 * `htu`, `iat` (seconds), and `ath` and `nonce` when given.
 */
export async function signProof(keys: CryptoKeyPair, claims: ProofClaims): Promise<string> {
  const alg = algorithmOf(keys.privateKey);
  const header = base64urlJson({ typ: 'dpop+jwt', alg, jwk: await publicJwkOf(keys.publicKey) });
  const { htm, htu, accessToken, nonce } = claims;
  // JSON.stringify leaves out the claims that are undefined: `ath` without an access token, `nonce` without one known.
  const payload = {
    jti: crypto.randomUUID(),
    htm,
    htu,
    iat: Math.floor(Date.now() / 1000),
    ath: accessToken === undefined ? undefined : await sha256(accessToken),
    nonce,
  };
  const signingInput = `${header}.${base64urlJson(payload)}`;
  // WebCrypto's ECDSA signature is already JWS's raw r‖s (64 bytes), not DER.
  const signature = await subtle().sign(signParams[alg], keys.privateKey, textBytes(signingInput));
  return `${signingInput}.${base64url(new Uint8Array(signature))}`;
}
