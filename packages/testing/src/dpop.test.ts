import { describe, expect, it } from 'vitest';
import { jwkThumbprint } from './dpop-proof.js';
import { accessTokenHash, createProofKey, postToken, signProof, useServers, type ProofKey, type RawResponse } from './test-helpers.js';
import type { OAuthServer, OAuthServerOptions } from './types.js';

const startServer = useServers();
const spa = { clientId: 'spa', authMethod: 'none' } as const;
const confidential = { clientId: 'backend', clientSecret: 'backend-secret', authMethod: 'client_secret_post' } as const;

/** A DPoP server with a public and a confidential client and rotation on. */
const startDpopServer = (dpop: OAuthServerOptions['dpop'] = true, options: OAuthServerOptions = {}) =>
  startServer({ clients: [spa, confidential], rotateRefreshTokens: true, dpop, ...options });

/** Refreshes as the public client with a fresh proof of `key` (with `nonce`, when given). */
async function refresh(server: OAuthServer, key: ProofKey | undefined, refreshToken: string, nonce?: string): Promise<RawResponse> {
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
  if (key) headers.dpop = await signProof(key, 'POST', server.tokenEndpoint, nonce === undefined ? {} : { nonce });
  const body = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: spa.clientId });
  const response = await fetch(server.tokenEndpoint, { method: 'POST', headers, body });
  return { status: response.status, headers: response.headers, text: '', json: (await response.json()) as Record<string, unknown> };
}

/** Calls the API with `Authorization: <scheme> <token>` and, with a key, a proof carrying ath (and `nonce`). */
async function callDpopApi(
  server: OAuthServer,
  accessToken: string,
  key: ProofKey | undefined,
  { nonce, scheme = 'DPoP', path = '/api/items', proof }: { nonce?: string; scheme?: string; path?: string; proof?: string } = {},
): Promise<Response> {
  const headers: Record<string, string> = { authorization: `${scheme} ${accessToken}` };
  if (proof !== undefined) headers.dpop = proof;
  else if (key) headers.dpop = await signProof(key, 'GET', server.url + path, { ath: accessTokenHash(accessToken), ...(nonce === undefined ? {} : { nonce }) });
  return fetch(server.url + path, { headers });
}

/** The server's current nonce, learnt as a client does: from the DPoP-Nonce header of a refused proof. */
async function learnNonce(server: OAuthServer, key: ProofKey): Promise<string> {
  const response = await fetch(server.tokenEndpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', dpop: await signProof(key, 'POST', server.tokenEndpoint) },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: 'none', client_id: spa.clientId }),
  });
  const nonce = response.headers.get('dpop-nonce');
  if (nonce === null) throw new Error(`no DPoP-Nonce in an answer ${response.status}`);
  return nonce;
}

describe('the DPoP mode of the token endpoint', () => {
  it('issues a DPoP token bound to the proof key and announces the nonce on the answer', async () => {
    const server = await startDpopServer();
    const key = await createProofKey();
    const nonce = await learnNonce(server, key);
    const response = await refresh(server, key, server.issue({ clientId: 'spa' }).refreshToken ?? '', nonce);
    expect(response.status).toBe(200);
    expect(response.json).toMatchObject({ token_type: 'DPoP', refresh_token: expect.any(String) });
    expect(response.headers.get('dpop-nonce')).toBe(nonce);
    const stats = server.stats();
    expect(stats.tokenRequestLog.at(-1)).toMatchObject({ status: 200, dpopJkt: await jwkThumbprint(key.jwk) });
    expect(stats).toMatchObject({ dpopProofs: 2, dpopNonceChallenges: 1, dpopProofsRefused: 0 });
  });

  it('answers a proof without the nonce with 400 use_dpop_nonce and a DPoP-Nonce, leaving the refresh token unspent', async () => {
    const server = await startDpopServer();
    const key = await createProofKey();
    const { refreshToken } = server.issue({ clientId: 'spa' });
    const refused = await refresh(server, key, refreshToken ?? '');
    expect(refused.status).toBe(400);
    expect(refused.json).toMatchObject({ error: 'use_dpop_nonce' });
    const nonce = refused.headers.get('dpop-nonce') ?? '';
    expect(nonce).toMatch(/^[A-Za-z0-9_-]{43}$/);

    // The retry with the nonce presents the same refresh token, and it is still good.
    expect((await refresh(server, key, refreshToken ?? '', nonce)).status).toBe(200);
    expect(server.stats()).toMatchObject({ refreshTokenReuses: 0, tokenSuccesses: 1, tokenErrors: { use_dpop_nonce: 1 } });
  });

  it('with spendRefreshTokenBeforeNonceCheck, marks the refresh token used before the nonce answer, so the retry is a reuse', async () => {
    const server = await startDpopServer({ spendRefreshTokenBeforeNonceCheck: true });
    const key = await createProofKey();
    const { refreshToken } = server.issue({ clientId: 'spa' });
    const refused = await refresh(server, key, refreshToken ?? '');
    expect(refused.json).toMatchObject({ error: 'use_dpop_nonce' });

    const retry = await refresh(server, key, refreshToken ?? '', refused.headers.get('dpop-nonce') ?? '');
    expect(retry.status).toBe(400);
    expect(retry.json).toMatchObject({ error: 'invalid_grant', error_description: 'The refresh token was already used' });
    expect(server.stats()).toMatchObject({ refreshTokenReuses: 1, familiesRevoked: 1 });
  });

  it('never spends a refresh token presented with the current nonce, even on the buggy server', async () => {
    const server = await startDpopServer({ spendRefreshTokenBeforeNonceCheck: true });
    const key = await createProofKey();
    const nonce = await learnNonce(server, key);
    const first = await refresh(server, key, server.issue({ clientId: 'spa' }).refreshToken ?? '', nonce);
    expect(first.status).toBe(200);
    expect((await refresh(server, key, String(first.json?.refresh_token), nonce)).status).toBe(200);
  });

  it('refuses a token request without a proof when DPoP is required', async () => {
    const server = await startDpopServer();
    const refused = await refresh(server, undefined, server.issue({ clientId: 'spa' }).refreshToken ?? '');
    expect(refused.status).toBe(400);
    expect(refused.json).toMatchObject({ error: 'invalid_dpop_proof', error_description: 'A DPoP proof is required' });
    expect(server.stats()).toMatchObject({ dpopProofs: 0, dpopProofsRefused: 1 });
  });

  it('issues a Bearer token to a request without a proof when DPoP is not required', async () => {
    const server = await startDpopServer({ required: false, nonce: false });
    const response = await refresh(server, undefined, server.issue({ clientId: 'spa' }).refreshToken ?? '');
    expect(response.json).toMatchObject({ token_type: 'Bearer' });
    const api = await fetch(`${server.url}/api/items`, { headers: { authorization: `Bearer ${String(response.json?.access_token)}` } });
    expect(api.status).toBe(200);
  });

  it('refuses a replayed proof', async () => {
    const server = await startDpopServer({ nonce: false });
    const key = await createProofKey();
    const proof = await signProof(key, 'POST', server.tokenEndpoint);
    const post = (refreshToken: string) =>
      postToken(server, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: 'spa' }, null, { dpop: proof });
    const first = await post(server.issue({ clientId: 'spa' }).refreshToken ?? '');
    expect(first.status).toBe(200);
    const replayed = await post(String(first.json?.refresh_token));
    expect(replayed.json).toEqual({ error: 'invalid_dpop_proof', error_description: 'The DPoP proof jti was already used' });
    expect(server.stats()).toMatchObject({ dpopReplaysRefused: 1, dpopProofsRefused: 1, tokenSuccesses: 1 });
  });

  it("binds a public client's refresh tokens to the key: a proof from another key is invalid_grant, and spends nothing", async () => {
    const server = await startDpopServer({ nonce: false });
    const key = await createProofKey();
    const { refreshToken } = server.issue({ clientId: 'spa', dpopJkt: await jwkThumbprint(key.jwk) });
    const stolen = await refresh(server, await createProofKey('EdDSA'), refreshToken ?? '');
    expect(stolen.json).toMatchObject({ error: 'invalid_grant', error_description: 'The refresh token is bound to another DPoP key' });

    const rotated = await refresh(server, key, refreshToken ?? '');
    expect(rotated.status).toBe(200);
    // The rotated refresh token stays bound to the same key.
    expect((await refresh(server, await createProofKey(), String(rotated.json?.refresh_token))).json).toMatchObject({ error: 'invalid_grant' });
  });

  it('binds an unbound public sign-in to the key of its first refresh', async () => {
    const server = await startDpopServer({ nonce: false });
    const key = await createProofKey('EdDSA');
    const first = await refresh(server, key, server.issue({ clientId: 'spa' }).refreshToken ?? '');
    expect(first.status).toBe(200);
    expect((await refresh(server, await createProofKey(), String(first.json?.refresh_token))).json).toMatchObject({ error: 'invalid_grant' });
  });

  it("leaves a confidential client's refresh token unbound, and binds each access token to the proof it came with", async () => {
    const server = await startDpopServer({ nonce: false });
    const { refreshToken } = server.issue({ clientId: 'backend' });
    const newKey = await createProofKey();
    const body = { grant_type: 'refresh_token', refresh_token: refreshToken ?? '', client_id: 'backend', client_secret: 'backend-secret' };
    const response = await postToken(server, body, null, { dpop: await signProof(newKey, 'POST', server.tokenEndpoint) });
    expect(response.json).toMatchObject({ token_type: 'DPoP' });
    expect((await callDpopApi(server, String(response.json?.access_token), newKey)).status).toBe(200);
  });

  it('keeps rotation and reuse detection: presenting a rotated refresh token with a valid proof revokes the family', async () => {
    const server = await startDpopServer({ nonce: false });
    const key = await createProofKey();
    const { refreshToken } = server.issue({ clientId: 'spa', dpopJkt: await jwkThumbprint(key.jwk) });
    const rotated = await refresh(server, key, refreshToken ?? '');
    expect((await refresh(server, key, refreshToken ?? '')).json).toMatchObject({ error: 'invalid_grant' });
    expect((await refresh(server, key, String(rotated.json?.refresh_token))).json).toMatchObject({ error: 'invalid_grant' });
    expect(server.stats()).toMatchObject({ refreshTokenReuses: 1, familiesRevoked: 1 });
  });

  it('rotateDpopNonce() makes the nonce a client holds stale', async () => {
    const server = await startDpopServer();
    const key = await createProofKey();
    const nonce = await learnNonce(server, key);
    server.rotateDpopNonce();
    const { refreshToken } = server.issue({ clientId: 'spa' });
    const refused = await refresh(server, key, refreshToken ?? '', nonce);
    expect(refused.json).toMatchObject({ error: 'use_dpop_nonce' });
    expect(refused.headers.get('dpop-nonce')).not.toBe(nonce);
    expect((await refresh(server, key, refreshToken ?? '', refused.headers.get('dpop-nonce') ?? '')).status).toBe(200);
  });

  it('rotates the nonce by itself once it is rotateEveryMs old', async () => {
    const server = await startDpopServer({ nonce: { rotateEveryMs: 1 } });
    const key = await createProofKey();
    const nonce = await learnNonce(server, key);
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(await learnNonce(server, key)).not.toBe(nonce);
  });
});

describe('the DPoP mode of the API', () => {
  /** A server, a key, a token bound to it and the current nonce. */
  async function signedIn(dpop: OAuthServerOptions['dpop'] = true, options: OAuthServerOptions = {}) {
    const server = await startDpopServer(dpop, options);
    const key = await createProofKey();
    const tokens = server.issue({ clientId: 'spa', dpopJkt: await jwkThumbprint(key.jwk) });
    const nonce = dpop === true || (typeof dpop === 'object' && dpop.nonce !== false) ? await learnNonce(server, key) : undefined;
    return { server, key, tokens, nonce };
  }

  it('accepts Authorization: DPoP with a proof carrying ath and the nonce, and logs the key', async () => {
    const { server, key, tokens, nonce } = await signedIn();
    expect(tokens.tokenType).toBe('DPoP');
    const response = await callDpopApi(server, tokens.accessToken, key, { nonce });
    expect(response.status).toBe(200);
    expect(response.headers.get('dpop-nonce')).toBe(nonce);
    expect(server.stats().apiRequestLog).toEqual([expect.objectContaining({ accessToken: tokens.accessToken, dpopJkt: await jwkThumbprint(key.jwk), status: 200 })]);
  });

  it('answers a proof without the nonce with 401 DPoP error="use_dpop_nonce" and a DPoP-Nonce, not invalid_token', async () => {
    const { server, key, tokens, nonce } = await signedIn();
    const response = await callDpopApi(server, tokens.accessToken, key);
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toMatch(/^DPoP algs="ES256 EdDSA", error="use_dpop_nonce"/);
    expect(response.headers.get('dpop-nonce')).toBe(nonce);
    expect(server.stats()).toMatchObject({ dpopNonceChallenges: 2 });
  });

  it('answers an expired DPoP token with 401 DPoP error="invalid_token"', async () => {
    const { server, key, tokens, nonce } = await signedIn(true, { accessTokenTtlSeconds: 0.05 });
    await new Promise((resolve) => setTimeout(resolve, 80));
    const response = await callDpopApi(server, tokens.accessToken, key, { nonce });
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toBe(
      'DPoP algs="ES256 EdDSA", error="invalid_token", error_description="The access token expired"',
    );
  });

  it.each<[string, (context: Awaited<ReturnType<typeof signedIn>>) => Promise<Response>, string]>([
    ['a DPoP token sent as a Bearer', ({ server, tokens }) => callDpopApi(server, tokens.accessToken, undefined, { scheme: 'Bearer' }), 'error="invalid_token"'],
    ['no proof', ({ server, tokens }) => callDpopApi(server, tokens.accessToken, undefined), 'error="invalid_dpop_proof"'],
    ['a proof of another key', async ({ server, tokens, nonce }) => callDpopApi(server, tokens.accessToken, await createProofKey(), { nonce }), 'error="invalid_token", error_description="The access token is bound to another DPoP key"'],
    ['a proof without ath', async ({ server, tokens, key }) => callDpopApi(server, tokens.accessToken, key, { proof: await signProof(key, 'GET', `${server.url}/api/items`) }), 'error="invalid_dpop_proof"'],
    ['a proof for another path', async ({ server, tokens, key }) => callDpopApi(server, tokens.accessToken, key, { proof: await signProof(key, 'GET', `${server.url}/api/other`, { ath: accessTokenHash(tokens.accessToken) }) }), 'error="invalid_dpop_proof"'],
    ['no Authorization', ({ server }) => fetch(`${server.url}/api/items`), ''],
  ])('refuses %s with 401 and a DPoP challenge', async (_case, call, error) => {
    const context = await signedIn();
    const response = await call(context);
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toContain(`DPoP algs="ES256 EdDSA"${error === '' ? '' : `, ${error}`}`);
  });

  it('refuses a replayed proof and counts it', async () => {
    const { server, key, tokens } = await signedIn({ nonce: false });
    const proof = await signProof(key, 'GET', `${server.url}/api/items`, { ath: accessTokenHash(tokens.accessToken) });
    expect((await callDpopApi(server, tokens.accessToken, key, { proof })).status).toBe(200);
    const replayed = await callDpopApi(server, tokens.accessToken, key, { proof });
    expect(replayed.status).toBe(401);
    expect(replayed.headers.get('www-authenticate')).toContain('error="invalid_dpop_proof", error_description="The DPoP proof jti was already used"');
    expect(server.stats()).toMatchObject({ dpopProofs: 2, dpopReplaysRefused: 1, apiOk: 1, api401: 1 });
  });

  it('accepts an unbound Bearer token when DPoP is not required', async () => {
    const { server } = await signedIn({ required: false, nonce: false });
    const bearer = server.issue({ clientId: 'spa' });
    expect(bearer.tokenType).toBe('Bearer');
    expect((await callDpopApi(server, bearer.accessToken, undefined, { scheme: 'Bearer' })).status).toBe(200);
  });
});

describe('the DPoP options', () => {
  it('refuses DPoP in Salesforce mode and invalid nonce settings', async () => {
    await expect(startServer({ mode: 'salesforce', dpop: true })).rejects.toThrow(TypeError);
    await expect(startServer({ dpop: { nonce: { rotateEveryMs: 0 } } })).rejects.toThrow(RangeError);
    await expect(startServer({ dpop: { maxProofAgeSeconds: -1 } })).rejects.toThrow(RangeError);
  });

  it('rotateDpopNonce() throws without DPoP nonces', async () => {
    await expect(startServer().then((server) => server.rotateDpopNonce())).rejects.toThrow('without DPoP nonces');
    await expect(startServer({ dpop: { nonce: false } }).then((server) => server.rotateDpopNonce())).rejects.toThrow('without DPoP nonces');
  });
});
