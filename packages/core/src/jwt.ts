/*
 * Signed JWTs for RFC 7523 (JWT bearer assertions, private_key_jwt client authentication), with
 * WebCrypto only: it runs in Node, browsers and edge runtimes, signs with non-extractable keys, and
 * needs no JWT dependency for the three algorithms servers actually ask for.
 */
import { configurationError } from './errors.js';
import { isRecord } from './token-set.js';
import type { Clock } from './types.js';

/** The JWS algorithms tokenrelay signs assertions with (RFC 7518 §3). */
export type SigningAlgorithm = 'RS256' | 'ES256' | 'PS256';

/**
 * A private key to sign assertions with: a PEM PKCS#8 string (`-----BEGIN PRIVATE KEY-----`), a
 * private JWK (with or without `alg`), or a WebCrypto `CryptoKey` with the `sign` usage (a
 * non-extractable one too).
 */
export type PrivateKeyInput = CryptoKey | JsonWebKey | string;

/** What every signed assertion needs: whose key, which algorithm, which `kid`. */
export interface AssertionSigningOptions {
  /** The private key; see {@link PrivateKeyInput}. */
  privateKey: PrivateKeyInput;
  /**
   * The JWS algorithm: RS256 (RSASSA-PKCS1-v1_5), ES256 (ECDSA P-256, signature as JOSE `r‖s`) or
   * PS256 (RSA-PSS, salt of 32 bytes).
   * @default the JWK's `alg` or the CryptoKey's own algorithm when they tell, otherwise 'RS256'
   */
  algorithm?: SigningAlgorithm;
  /** The key id, sent as `kid` in the JWT header, for servers that hold several of the client's keys. */
  keyId?: string;
}

const webCryptoAlgorithms = {
  RS256: { import: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, sign: { name: 'RSASSA-PKCS1-v1_5' } },
  PS256: { import: { name: 'RSA-PSS', hash: 'SHA-256' }, sign: { name: 'RSA-PSS', saltLength: 32 } },
  ES256: { import: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
} as const;

const isSigningAlgorithm = (value: unknown): value is SigningAlgorithm =>
  typeof value === 'string' && Object.hasOwn(webCryptoAlgorithms, value);

const isCryptoKey = (value: unknown): value is CryptoKey =>
  typeof CryptoKey !== 'undefined' ? value instanceof CryptoKey : isRecord(value) && 'algorithm' in value && 'usages' in value;

/** The JWS algorithm a CryptoKey is made for, if it is one of ours. */
function algorithmOfCryptoKey(key: CryptoKey): SigningAlgorithm | undefined {
  const algorithm = key.algorithm as { name: string; hash?: { name: string }; namedCurve?: string };
  if (algorithm.name === 'ECDSA') return algorithm.namedCurve === 'P-256' ? 'ES256' : undefined;
  if (algorithm.hash?.name !== 'SHA-256') return undefined;
  if (algorithm.name === 'RSASSA-PKCS1-v1_5') return 'RS256';
  if (algorithm.name === 'RSA-PSS') return 'PS256';
  return undefined;
}

const pemPkcs8 = /^-----BEGIN PRIVATE KEY-----([A-Za-z0-9+/=\s]+)-----END PRIVATE KEY-----$/;

function pemToDer(pem: string, who: string): ArrayBuffer {
  const match = pemPkcs8.exec(pem.trim());
  const notPkcs8 = () => {
    const label = /-----BEGIN ([A-Z ]+)-----/.exec(pem)?.[1];
    return configurationError(
      label && label !== 'PRIVATE KEY'
        ? `${who}: privateKey is a PEM "${label}"; a PKCS#8 "PRIVATE KEY" is needed ` +
            '(convert it with `openssl pkcs8 -topk8 -nocrypt -in key.pem -out key.pkcs8.pem`)'
        : `${who}: privateKey is a string but not a PEM PKCS#8 private key (-----BEGIN PRIVATE KEY-----)`,
    );
  };
  if (!match?.[1]) throw notPkcs8();
  let binary: string;
  try {
    binary = atob(match[1].replace(/\s+/g, ''));
  } catch {
    // atob's own DOMException is no TokenRelayError: a cut or mangled body (padding inside, a lost character).
    throw notPkcs8();
  }
  const der = new Uint8Array(binary.length);
  for (let index = 0; index < binary.length; index++) der[index] = binary.charCodeAt(index);
  return der.buffer;
}

/** Who an assertion is from, about and for (RFC 7523 §3): `iss`, `sub` and `aud`. */
interface AssertionParties {
  readonly iss: string;
  readonly sub: string;
  readonly aud: string;
}

/** A signed assertion, and every part of it a server could echo: redact these from any error. */
interface SignedAssertion {
  readonly assertion: string;
  readonly secrets: readonly string[];
}

/** Signs a fresh assertion (its own `iat`, `exp` and `jti`) for the given parties, at the clock's time. */
type AssertionSigner = (parties: AssertionParties, clock: Clock) => Promise<SignedAssertion>;

/**
 * Checks the key options synchronously (so a wrong configuration fails when the grant is made) and
 * returns the one signer of both RFC 7523 assertions: the JWT bearer grant's and `private_key_jwt`'s.
 * It imports the key once, on first use. Error messages never hold key material.
 */
export function assertionSigner(options: AssertionSigningOptions, who: string): AssertionSigner {
  const { privateKey, keyId } = options;
  const configError = (message: string, cause?: unknown) => configurationError(`${who}: ${message}`, cause);
  if (options.algorithm !== undefined && !isSigningAlgorithm(options.algorithm)) {
    throw configError(`algorithm must be RS256, ES256 or PS256, not "${String(options.algorithm)}"`);
  }
  if (keyId !== undefined && (typeof keyId !== 'string' || keyId === '')) throw configError('keyId must be a non-empty string');
  if (!globalThis.crypto?.subtle) throw configError('signing assertions needs WebCrypto (globalThis.crypto.subtle), which this runtime lacks');

  let algorithm: SigningAlgorithm;
  let importKey: () => Promise<CryptoKey>;
  if (typeof privateKey === 'string') {
    const der = pemToDer(privateKey, who);
    algorithm = options.algorithm ?? 'RS256';
    const chosen = algorithm;
    importKey = () => crypto.subtle.importKey('pkcs8', der, webCryptoAlgorithms[chosen].import, false, ['sign']);
  } else if (isCryptoKey(privateKey)) {
    const own = algorithmOfCryptoKey(privateKey);
    algorithm = options.algorithm ?? own ?? 'RS256';
    if (own !== algorithm) throw configError(`privateKey is a CryptoKey for ${own ?? privateKey.algorithm.name}, not for ${algorithm}`);
    if (privateKey.type !== 'private' || !privateKey.usages.includes('sign')) {
      throw configError('privateKey must be a private CryptoKey with the "sign" usage');
    }
    importKey = async () => privateKey;
  } else if (isRecord(privateKey)) {
    const jwk = privateKey as JsonWebKey;
    if (typeof jwk.d !== 'string') throw configError('privateKey is a JWK without "d": a private key is needed, not a public one');
    if (jwk.alg !== undefined && options.algorithm !== undefined && jwk.alg !== options.algorithm) {
      throw configError(`privateKey is a JWK for ${jwk.alg}, not for ${options.algorithm}`);
    }
    if (jwk.alg !== undefined && !isSigningAlgorithm(jwk.alg)) throw configError(`privateKey is a JWK for ${jwk.alg}; RS256, ES256 or PS256 is needed`);
    algorithm = options.algorithm ?? (jwk.alg as SigningAlgorithm | undefined) ?? 'RS256';
    const chosen = algorithm;
    // `use`/`key_ops` written for another purpose would make the import fail for no good reason.
    const { key_ops: _keyOps, use: _use, ...material } = jwk;
    importKey = () => crypto.subtle.importKey('jwk', material, webCryptoAlgorithms[chosen].import, false, ['sign']);
  } else {
    throw configError('privateKey must be a PEM PKCS#8 string, a private JWK or a CryptoKey');
  }

  let key: Promise<CryptoKey> | undefined;
  const header = base64urlJson({ alg: algorithm, typ: 'JWT', ...(keyId === undefined ? {} : { kid: keyId }) });
  return async (parties, clock) => {
    key ??= importKey().catch((error: unknown) => {
      key = undefined;
      // WebCrypto's messages name the problem (wrong curve, bad encoding), never the key's bytes.
      throw configError(`privateKey could not be imported as a ${algorithm} signing key`, error);
    });
    const signingKey = await key;
    const signingInput = `${header}.${base64urlJson(registeredClaims(parties, clock))}`;
    const signature = await crypto.subtle.sign(webCryptoAlgorithms[algorithm].sign, signingKey, new TextEncoder().encode(signingInput));
    // WebCrypto's ECDSA signature is already JOSE's r‖s (IEEE P1363), not DER.
    const assertion = `${signingInput}.${base64url(new Uint8Array(signature))}`;
    // A server may echo one segment alone (the signature it refused): each is redacted on its own too.
    return { assertion, secrets: [assertion, ...assertion.split('.')] };
  };
}

function base64url(bytes: Uint8Array): string {
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}

const base64urlJson = (value: unknown) => base64url(new TextEncoder().encode(JSON.stringify(value)));

/** Assertions live this long: well inside RFC 7523 servers' limits (Salesforce: 3 minutes, others: 5). */
const ASSERTION_LIFETIME_SECONDS = 120;

/** The claims of a fresh assertion (RFC 7523 §3): its parties, times in seconds, a unique `jti`. */
function registeredClaims(parties: AssertionParties, clock: Clock): Record<string, unknown> {
  const iat = Math.floor(clock.now() / 1000);
  return { ...parties, iat, exp: iat + ASSERTION_LIFETIME_SECONDS, jti: crypto.randomUUID() };
}
