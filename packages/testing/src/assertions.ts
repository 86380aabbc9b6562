/*
 * Server-side checks of RFC 7523 JWT assertions (JWT bearer grants and private_key_jwt client
 * authentication), as strictly as a real authorization server: the signature against the client's
 * registered public key, iss/sub/aud/exp, a bounded lifetime, and no jti presented twice.
 */
import { constants, createPublicKey, verify, type JsonWebKeyInput, type KeyObject } from 'node:crypto';

/** The public key a client registered: PEM (SPKI or certificate) or a JWK. */
export type RegisteredPublicKey = string | JsonWebKey;

/** What an assertion must say to be accepted. */
export interface AssertionRules {
  readonly issuer: string;
  /** The expected `sub`; `undefined` accepts any non-empty one. */
  readonly subject: string | undefined;
  /** Accepted `aud` values: the assertion's `aud` (a string or an array) must hold one of them. */
  readonly audiences: readonly string[];
  /** The longest `exp - now` accepted, in seconds. */
  readonly maxLifetimeSeconds: number;
  readonly now: number;
}

export type AssertionCheck = { ok: true; claims: Record<string, unknown> } | { ok: false; description: string };

/** Decodes a JWT's claims without checking anything, to learn whom it claims to come from. */
export function peekClaims(jwt: string): Record<string, unknown> | undefined {
  const payload = jwt.split('.')[1];
  if (payload === undefined) return undefined;
  try {
    const claims: unknown = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
    return typeof claims === 'object' && claims !== null && !Array.isArray(claims) ? (claims as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function importPublicKey(key: RegisteredPublicKey): KeyObject {
  return typeof key === 'string' ? createPublicKey(key) : createPublicKey({ key: key as JsonWebKeyInput['key'], format: 'jwk' });
}

function signatureValid(alg: unknown, key: KeyObject, signingInput: string, signature: Buffer): boolean {
  const data = Buffer.from(signingInput);
  switch (alg) {
    case 'RS256':
      return key.asymmetricKeyType === 'rsa' && verify('sha256', data, key, signature);
    case 'PS256':
      return (
        (key.asymmetricKeyType === 'rsa' || key.asymmetricKeyType === 'rsa-pss') &&
        verify('sha256', data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, signature)
      );
    case 'ES256':
      // JOSE signatures are r‖s (64 bytes), not DER.
      return key.asymmetricKeyType === 'ec' && signature.length === 64 && verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, signature);
    default:
      return false;
  }
}

/** The jti values seen, each kept until its assertion expires, so a replay is refused while it could still be accepted. */
export class JtiRegistry {
  readonly #seen = new Map<string, number>();

  /** Records `jti`; false when it was already seen (a replay). */
  record(jti: string, expiresAt: number, now: number): boolean {
    for (const [seen, until] of this.#seen) if (until < now) this.#seen.delete(seen);
    if (this.#seen.has(jti)) return false;
    this.#seen.set(jti, expiresAt);
    return true;
  }
}

/** Checks an assertion; a replayed jti is refused and a fresh one recorded. */
export function checkAssertion(jwt: string, publicKey: RegisteredPublicKey, rules: AssertionRules, jtis: JtiRegistry): AssertionCheck {
  const parts = jwt.split('.');
  if (parts.length !== 3 || parts.some((part) => !/^[A-Za-z0-9_-]+$/.test(part))) return { ok: false, description: 'The assertion is not a JWS' };
  const [encodedHeader, , encodedSignature] = parts as [string, string, string];
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(encodedHeader, 'base64url').toString('utf8')) as Record<string, unknown>;
  } catch {
    return { ok: false, description: 'The assertion header is not JSON' };
  }
  const claims = peekClaims(jwt);
  if (!claims) return { ok: false, description: 'The assertion claims are not a JSON object' };
  const signingInput = jwt.slice(0, jwt.lastIndexOf('.'));
  if (!signatureValid(header.alg, importPublicKey(publicKey), signingInput, Buffer.from(encodedSignature, 'base64url'))) {
    return { ok: false, description: 'The assertion signature is invalid' };
  }
  const nowSeconds = rules.now / 1000;
  const { iss, sub, aud, exp, jti } = claims;
  if (iss !== rules.issuer) return { ok: false, description: 'The assertion iss is not the client' };
  if (typeof sub !== 'string' || sub === '' || (rules.subject !== undefined && sub !== rules.subject)) {
    return { ok: false, description: 'The assertion sub is not accepted' };
  }
  const audiences = Array.isArray(aud) ? aud : [aud];
  if (!audiences.some((value) => typeof value === 'string' && rules.audiences.includes(value))) {
    return { ok: false, description: 'The assertion aud is not this server' };
  }
  if (typeof exp !== 'number' || !Number.isFinite(exp)) return { ok: false, description: 'The assertion has no exp' };
  if (exp <= nowSeconds) return { ok: false, description: 'The assertion expired' };
  if (exp > nowSeconds + rules.maxLifetimeSeconds) {
    return { ok: false, description: `The assertion exp is more than ${rules.maxLifetimeSeconds} seconds ahead` };
  }
  if (typeof jti !== 'string' || jti === '') return { ok: false, description: 'The assertion has no jti' };
  if (!jtis.record(jti, exp * 1000, rules.now)) return { ok: false, description: 'The assertion jti was already used' };
  return { ok: true, claims };
}
