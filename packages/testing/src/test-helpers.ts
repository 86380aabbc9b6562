/*
 * Helpers for this package's own tests (not exported): raw HTTP calls to a running server.
 */
import { createHash, randomUUID } from 'node:crypto';
import { afterEach } from 'vitest';
import { startOAuthServer } from './server.js';
import type { OAuthServer, OAuthServerOptions } from './types.js';

/** RFC 6749 Appendix B form-urlencoding of one value. */
export const formEncode = (value: string): string => new URLSearchParams([['', value]]).toString().slice(1);

/** An `Authorization: Basic` value built as RFC 6749 §2.3.1 says (each part form-urlencoded first). */
export const basicAuthorization = (clientId: string, secret: string): string =>
  `Basic ${Buffer.from(`${formEncode(clientId)}:${formEncode(secret)}`).toString('base64')}`;

/** The default client's credentials as a Basic header. */
export const demoBasic = basicAuthorization('tokenrelay-demo', 'tokenrelay-demo-secret');

export interface RawResponse {
  status: number;
  headers: Headers;
  text: string;
  /** The parsed JSON body, or `undefined` when it is not JSON. */
  json: Record<string, unknown> | undefined;
}

async function toRaw(response: Response): Promise<RawResponse> {
  const text = await response.text();
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, text, json };
}

/** POSTs a form to the token endpoint; `authorization` defaults to the demo client's Basic header; `extraHeaders` adds e.g. a DPoP proof. */
export async function postToken(
  server: OAuthServer,
  params: Record<string, string>,
  authorization: string | null = demoBasic,
  extraHeaders: Record<string, string> = {},
): Promise<RawResponse> {
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded;charset=UTF-8', ...extraHeaders };
  if (authorization !== null) headers.authorization = authorization;
  return toRaw(await fetch(server.tokenEndpoint, { method: 'POST', headers, body: new URLSearchParams(params) }));
}

/** Refreshes with the demo client's Basic credentials. */
export const refreshWith = (server: OAuthServer, refreshToken: string): Promise<RawResponse> =>
  postToken(server, { grant_type: 'refresh_token', refresh_token: refreshToken });

/** Calls the protected API with an optional bearer token. */
export async function callApi(server: OAuthServer, path: string, accessToken?: string, init: RequestInit = {}): Promise<RawResponse> {
  const headers = new Headers(init.headers);
  if (accessToken !== undefined) headers.set('authorization', `Bearer ${accessToken}`);
  return toRaw(await fetch(server.url + path, { ...init, headers }));
}

/** Polls `predicate` every 5 ms until it holds; fails after `timeoutMs`. */
export async function waitUntil(predicate: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`Condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Starts servers for one test file and closes every one of them after each test. */
export function useServers(): (options?: OAuthServerOptions) => Promise<OAuthServer> {
  const started: OAuthServer[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((server) => server.close()));
  });
  return async (options) => {
    const server = await startOAuthServer(options);
    started.push(server);
    return server;
  };
}

/** A DPoP proof key of this package's tests: the key pair and its public JWK. */
export interface ProofKey {
  readonly alg: 'ES256' | 'EdDSA';
  readonly privateKey: CryptoKey;
  readonly jwk: JsonWebKey;
}

export async function createProofKey(alg: 'ES256' | 'EdDSA' = 'ES256'): Promise<ProofKey> {
  const algorithm = alg === 'ES256' ? { name: 'ECDSA', namedCurve: 'P-256' } : { name: 'Ed25519' };
  const pair = (await crypto.subtle.generateKey(algorithm, true, ['sign', 'verify'])) as CryptoKeyPair;
  const { kty, crv, x, y } = await crypto.subtle.exportKey('jwk', pair.publicKey);
  return { alg, privateKey: pair.privateKey, jwk: y === undefined ? { kty, crv, x } : { kty, crv, x, y } };
}

const encodeJson = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** The access token hash of a proof's `ath` claim. */
export const accessTokenHash = (accessToken: string): string => createHash('sha256').update(accessToken).digest('base64url');

/**
 * Signs a DPoP proof for `htm` and `htu`; `claims` and `header` override or add to the defaults
 * (a fresh jti, iat now), so tests can break one thing at a time.
 */
export async function signProof(
  key: ProofKey,
  htm: string,
  htu: string,
  claims: Record<string, unknown> = {},
  header: Record<string, unknown> = {},
): Promise<string> {
  const encodedHeader = encodeJson({ typ: 'dpop+jwt', alg: key.alg, jwk: key.jwk, ...header });
  const encodedClaims = encodeJson({ htm, htu, iat: Math.floor(Date.now() / 1000), jti: randomUUID(), ...claims });
  const algorithm = key.alg === 'ES256' ? { name: 'ECDSA', hash: 'SHA-256' } : { name: 'Ed25519' };
  const signature = await crypto.subtle.sign(algorithm, key.privateKey, new TextEncoder().encode(`${encodedHeader}.${encodedClaims}`));
  return `${encodedHeader}.${encodedClaims}.${Buffer.from(signature).toString('base64url')}`;
}
