/*
 * Server-side verification of DPoP proofs (RFC 9449 §4.3), shared by the token endpoint and the
 * protected API: a compact JWS of type dpop+jwt signed (ES256 or EdDSA) by the public key in its
 * header, for this method and URL, recent, never seen before, with the server's nonce when nonces
 * are on and, at the API, the hash of the access token it accompanies. WebCrypto only.
 */
import type { JtiRegistry } from './assertions.js';

/** The proof algorithms the server accepts, as advertised in `WWW-Authenticate: DPoP algs="…"`. */
export const DPOP_ALGORITHMS = ['ES256', 'EdDSA'] as const;

/** What a proof must match to be accepted. */
export interface DpopProofRules {
  /** The request's method. */
  readonly method: string;
  /** The request's URL; its query and fragment are ignored, as they are in `htu`. */
  readonly url: string;
  /** How far `iat` may be from `now`, in seconds, either way. */
  readonly maxAgeSeconds: number;
  readonly now: number;
  /** The nonce the proof must carry; `undefined` when nonces are off. */
  readonly nonce: string | undefined;
  /** At the API: the access token the proof accompanies, whose hash must be its `ath`. */
  readonly accessToken?: string;
}

/**
 * A refused proof: `invalid_dpop_proof`, or `use_dpop_nonce` when everything but the nonce was right
 * (so a client that retries with the nonce succeeds). `replay` marks a jti seen before.
 */
export type DpopProofRefusal = {
  ok: false;
  error: 'invalid_dpop_proof' | 'use_dpop_nonce';
  description: string;
  replay?: true;
};

/** An accepted proof: the JWK SHA-256 thumbprint (RFC 7638) of its key, what tokens are bound to (`cnf.jkt`). */
export type DpopProofCheck = { ok: true; jkt: string } | DpopProofRefusal;

const base64url = (bytes: ArrayBuffer | Uint8Array): string => Buffer.from(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes)).toString('base64url');

const sha256 = async (text: string): Promise<string> => base64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)));

function decodeJson(part: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** The WebCrypto parameters of a public JWK for `alg`, or `undefined` when the two do not fit together. */
function verifyParameters(
  alg: unknown,
  jwk: Record<string, unknown>,
): { importAs: EcKeyImportParams | Algorithm; verifyAs: EcdsaParams | Algorithm } | undefined {
  if (alg === 'ES256' && jwk.kty === 'EC' && jwk.crv === 'P-256') {
    return { importAs: { name: 'ECDSA', namedCurve: 'P-256' }, verifyAs: { name: 'ECDSA', hash: 'SHA-256' } };
  }
  if (alg === 'EdDSA' && jwk.kty === 'OKP' && jwk.crv === 'Ed25519') return { importAs: { name: 'Ed25519' }, verifyAs: { name: 'Ed25519' } };
  return undefined;
}

/**
 * The RFC 7638 thumbprint of an EC or OKP public JWK: SHA-256 over its required members in
 * lexicographic order, base64url.
 *
 * @throws TypeError for another key type.
 */
export async function jwkThumbprint(jwk: JsonWebKey): Promise<string> {
  const { kty, crv, x, y } = jwk;
  if (kty === 'EC') return sha256(JSON.stringify({ crv, kty, x, y }));
  if (kty === 'OKP') return sha256(JSON.stringify({ crv, kty, x }));
  throw new TypeError(`jwkThumbprint: unsupported key type ${String(kty)}`);
}

/** `htu` and the request URL compared without query and fragment (RFC 9449 §4.3 step 9), after URL normalisation. */
function sameTarget(htu: unknown, url: string): boolean {
  if (typeof htu !== 'string' || !URL.canParse(htu)) return false;
  const strip = (value: string) => {
    const parsed = new URL(value);
    return `${parsed.origin}${parsed.pathname}`;
  };
  return strip(htu) === strip(url);
}

/**
 * Verifies a `DPoP` header value against `rules`; a proof whose signature and claims are valid has its
 * `jti` recorded in `jtis`, so presenting it again is refused as a replay.
 */
export async function verifyDpopProof(proof: string | undefined, rules: DpopProofRules, jtis: JtiRegistry): Promise<DpopProofCheck> {
  const refuse = (description: string): DpopProofRefusal => ({ ok: false, error: 'invalid_dpop_proof', description });
  if (proof === undefined || proof === '') return refuse('A DPoP proof is required');
  const parts = proof.split('.');
  if (parts.length !== 3 || parts.some((part) => !/^[A-Za-z0-9_-]+$/.test(part))) return refuse('The DPoP proof is not a compact JWS');
  const [encodedHeader, encodedClaims, encodedSignature] = parts as [string, string, string];
  const header = decodeJson(encodedHeader);
  const claims = decodeJson(encodedClaims);
  if (!header || !claims) return refuse('The DPoP proof header or claims are not a JSON object');
  if (header.typ !== 'dpop+jwt') return refuse('The DPoP proof typ is not dpop+jwt');
  const jwk = header.jwk;
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) return refuse('The DPoP proof has no jwk header');
  const publicJwk = jwk as Record<string, unknown>;
  // §4.3 step 7: the header must carry a public key, never a private one.
  if ('d' in publicJwk) return refuse('The DPoP proof jwk contains a private key');
  const parameters = verifyParameters(header.alg, publicJwk);
  if (!parameters) return refuse(`The DPoP proof alg must be one of ${DPOP_ALGORITHMS.join(', ')}, with a matching jwk`);

  let signatureValid: boolean;
  try {
    const key = await crypto.subtle.importKey('jwk', publicJwk as JsonWebKey, parameters.importAs, false, ['verify']);
    const signature = Buffer.from(encodedSignature, 'base64url');
    signatureValid = await crypto.subtle.verify(parameters.verifyAs, key, signature, new TextEncoder().encode(`${encodedHeader}.${encodedClaims}`));
  } catch {
    return refuse('The DPoP proof jwk is not a valid public key');
  }
  if (!signatureValid) return refuse('The DPoP proof signature is invalid');

  const { htm, htu, iat, jti, ath, nonce } = claims;
  if (htm !== rules.method) return refuse('The DPoP proof htm is not the request method');
  if (!sameTarget(htu, rules.url)) return refuse('The DPoP proof htu is not the request URL');
  if (typeof iat !== 'number' || !Number.isFinite(iat)) return refuse('The DPoP proof has no iat');
  const nowSeconds = rules.now / 1000;
  if (Math.abs(nowSeconds - iat) > rules.maxAgeSeconds) return refuse('The DPoP proof iat is outside the accepted window');
  if (typeof jti !== 'string' || jti === '' || jti.length > 256) return refuse('The DPoP proof has no jti');
  if (rules.accessToken !== undefined && ath !== (await sha256(rules.accessToken))) {
    return refuse('The DPoP proof ath is not the hash of the access token');
  }
  // Kept until the proof could no longer be accepted anyway; a nonce-refused proof is spent too.
  if (!jtis.record(jti, (iat + rules.maxAgeSeconds) * 1000, rules.now)) {
    return { ok: false, error: 'invalid_dpop_proof', description: 'The DPoP proof jti was already used', replay: true };
  }
  if (rules.nonce !== undefined && nonce !== rules.nonce) {
    return { ok: false, error: 'use_dpop_nonce', description: 'The DPoP proof nonce is missing or stale' };
  }
  return { ok: true, jkt: await jwkThumbprint(publicJwk as JsonWebKey) };
}
