/*
 * A DPoP-protected resource on 127.0.0.1 for the oidc-provider interop (RFC 9449 §7): it accepts
 * `Authorization: DPoP <token>` only when the provider's introspection says the token is active and
 * bound to a key (`cnf.jkt`), and the request's proof is signed by that key, for this method and URL,
 * recent, never seen before, with `ath` = the hash of the token and the resource's own current nonce.
 * The proof is verified with jose, independently of tokenrelay's code and of the testing server's.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { EmbeddedJWK, calculateJwkThumbprint, jwtVerify } from 'jose';

/** One request the resource answered. */
export interface DpopResourceRequest {
  readonly path: string;
  readonly accessToken: string | undefined;
  readonly status: number;
  /** The DPoP error answered, if any: `invalid_token`, `use_dpop_nonce`, `invalid_dpop_proof`. */
  readonly error: string | undefined;
  /** Why, for a refused proof. */
  readonly description: string | undefined;
}

export interface DpopResource {
  readonly url: string;
  readonly requests: readonly DpopResourceRequest[];
  /** Replaces the resource's nonce: every nonce a client holds for it is stale. */
  rotateNonce(): void;
  close(): Promise<void>;
}

/** How far a proof's iat may be from the resource's clock, in seconds. */
const proofWindowSeconds = 60;

type Introspect = (accessToken: string) => Promise<{ active: boolean; jkt: string | undefined }>;

class Refusal extends Error {
  constructor(
    readonly error: 'invalid_token' | 'use_dpop_nonce' | 'invalid_dpop_proof',
    description: string,
  ) {
    super(description);
  }
}

/** Starts the resource; `introspect` asks the provider about a token (RFC 7662). */
export async function startDpopResource(introspect: Introspect): Promise<DpopResource> {
  const requests: DpopResourceRequest[] = [];
  const seenJtis = new Set<string>();
  let nonce = randomBytes(16).toString('base64url');
  let origin = '';

  async function verify(request: IncomingMessage, path: string, accessToken: string): Promise<void> {
    const proof = request.headers.dpop;
    if (typeof proof !== 'string') throw new Refusal('invalid_dpop_proof', 'no DPoP proof');
    let header: { jwk?: unknown };
    let claims: Record<string, unknown>;
    try {
      const verified = await jwtVerify(proof, EmbeddedJWK, { typ: 'dpop+jwt', algorithms: ['ES256', 'EdDSA', 'Ed25519'] });
      header = verified.protectedHeader;
      claims = verified.payload;
    } catch (cause) {
      throw new Refusal('invalid_dpop_proof', `the proof does not verify: ${(cause as Error).message}`);
    }
    if (claims.htm !== request.method) throw new Refusal('invalid_dpop_proof', 'htm mismatch');
    const htu = typeof claims.htu === 'string' && URL.canParse(claims.htu) ? new URL(claims.htu) : undefined;
    if (!htu || `${htu.origin}${htu.pathname}` !== `${origin}${path}`) throw new Refusal('invalid_dpop_proof', 'htu mismatch');
    if (typeof claims.iat !== 'number' || Math.abs(Date.now() / 1000 - claims.iat) > proofWindowSeconds) {
      throw new Refusal('invalid_dpop_proof', 'iat outside the window');
    }
    if (claims.ath !== createHash('sha256').update(accessToken).digest('base64url')) throw new Refusal('invalid_dpop_proof', 'ath mismatch');
    if (typeof claims.jti !== 'string' || seenJtis.has(claims.jti)) throw new Refusal('invalid_dpop_proof', 'jti replayed');
    seenJtis.add(claims.jti);
    if (claims.nonce !== nonce) throw new Refusal('use_dpop_nonce', 'the resource requires its nonce');
    const { active, jkt } = await introspect(accessToken);
    if (!active) throw new Refusal('invalid_token', 'the access token is not active');
    if (jkt === undefined || jkt !== (await calculateJwkThumbprint(header.jwk as Parameters<typeof calculateJwkThumbprint>[0]))) {
      throw new Refusal('invalid_token', 'the access token is not bound to the proof key');
    }
  }

  const answer = async (request: IncomingMessage, response: ServerResponse) => {
    const path = new URL(request.url ?? '/', origin).pathname;
    const accessToken = /^DPoP (\S+)$/.exec(request.headers.authorization ?? '')?.[1];
    let refusal: Refusal | undefined;
    try {
      if (accessToken === undefined) throw new Refusal('invalid_token', 'no DPoP access token');
      await verify(request, path, accessToken);
    } catch (error) {
      if (!(error instanceof Refusal)) throw error;
      refusal = error;
    }
    const status = refusal ? 401 : 200;
    requests.push({ path, accessToken, status, error: refusal?.error, description: refusal?.message });
    response.setHeader('dpop-nonce', nonce);
    if (refusal) response.setHeader('www-authenticate', `DPoP algs="ES256 EdDSA", error="${refusal.error}"`);
    response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: !refusal }));
  };

  const httpServer = createServer((request, response) => {
    answer(request, response).catch(() => response.writeHead(502).end());
  });
  await new Promise<void>((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(0, '127.0.0.1', () => resolve());
  });
  origin = `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}`;
  return {
    url: origin,
    requests,
    rotateNonce() {
      nonce = randomBytes(16).toString('base64url');
    },
    close() {
      httpServer.closeAllConnections();
      return new Promise((resolve) => httpServer.close(() => resolve()));
    },
  };
}
