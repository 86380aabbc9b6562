import { describe, expect, it } from 'vitest';
import { JtiRegistry } from './assertions.js';
import { jwkThumbprint, verifyDpopProof, type DpopProofRules } from './dpop-proof.js';
import { accessTokenHash, createProofKey, signProof } from './test-helpers.js';

const url = 'http://127.0.0.1:4000/oauth/token';
const rules = (overrides: Partial<DpopProofRules> = {}): DpopProofRules => ({
  method: 'POST',
  url,
  maxAgeSeconds: 60,
  now: Date.now(),
  nonce: undefined,
  ...overrides,
});

describe('verifyDpopProof', () => {
  it.each(['ES256', 'EdDSA'] as const)('accepts a %s proof and returns the RFC 7638 thumbprint of its key', async (alg) => {
    const key = await createProofKey(alg);
    const check = await verifyDpopProof(await signProof(key, 'POST', url), rules(), new JtiRegistry());
    expect(check).toEqual({ ok: true, jkt: await jwkThumbprint(key.jwk) });
  });

  it('computes the RFC 7638 thumbprint of the RFC example key', async () => {
    // RFC 7638 §3.1 uses an RSA key; this is RFC 8037 §A.3's Ed25519 example, whose thumbprint it gives.
    const jwk = { kty: 'OKP', crv: 'Ed25519', x: '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo' };
    expect(await jwkThumbprint(jwk)).toBe('kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k');
  });

  it('ignores the query and fragment of htu and of the request URL', async () => {
    const key = await createProofKey();
    const check = await verifyDpopProof(await signProof(key, 'GET', `${url}?a=1#x`), rules({ method: 'GET', url: `${url}?b=2` }), new JtiRegistry());
    expect(check.ok).toBe(true);
  });

  it.each<[string, (key: Awaited<ReturnType<typeof createProofKey>>) => Promise<string>, string]>([
    ['no proof', async () => '', 'A DPoP proof is required'],
    ['not a JWS', async () => 'not.a-jws', 'The DPoP proof is not a compact JWS'],
    ['another typ', (key) => signProof(key, 'POST', url, {}, { typ: 'JWT' }), 'The DPoP proof typ is not dpop+jwt'],
    ['no jwk', (key) => signProof(key, 'POST', url, {}, { jwk: undefined }), 'The DPoP proof has no jwk header'],
    ['a private jwk', (key) => signProof(key, 'POST', url, {}, { jwk: { ...key.jwk, d: 'AAAA' } }), 'The DPoP proof jwk contains a private key'],
    ['alg none', (key) => signProof(key, 'POST', url, {}, { alg: 'none' }), 'The DPoP proof alg must be one of ES256, EdDSA, with a matching jwk'],
    ['a key that did not sign it', async (key) => {
      const other = await createProofKey();
      return signProof(other, 'POST', url, {}, { jwk: key.jwk });
    }, 'The DPoP proof signature is invalid'],
    ['another method', (key) => signProof(key, 'GET', url), 'The DPoP proof htm is not the request method'],
    ['another URL', (key) => signProof(key, 'POST', 'http://127.0.0.1:4000/other'), 'The DPoP proof htu is not the request URL'],
    ['an iat two minutes old', (key) => signProof(key, 'POST', url, { iat: Math.floor(Date.now() / 1000) - 120 }), 'The DPoP proof iat is outside the accepted window'],
    ['an iat two minutes ahead', (key) => signProof(key, 'POST', url, { iat: Math.floor(Date.now() / 1000) + 120 }), 'The DPoP proof iat is outside the accepted window'],
    ['no jti', (key) => signProof(key, 'POST', url, { jti: undefined }), 'The DPoP proof has no jti'],
  ])('refuses %s as invalid_dpop_proof', async (_case, makeProof, description) => {
    const key = await createProofKey();
    expect(await verifyDpopProof(await makeProof(key), rules(), new JtiRegistry())).toEqual({ ok: false, error: 'invalid_dpop_proof', description });
  });

  it('refuses a proof whose jti was seen before, as a replay', async () => {
    const key = await createProofKey();
    const jtis = new JtiRegistry();
    const proof = await signProof(key, 'POST', url);
    expect((await verifyDpopProof(proof, rules(), jtis)).ok).toBe(true);
    expect(await verifyDpopProof(proof, rules(), jtis)).toEqual({
      ok: false,
      error: 'invalid_dpop_proof',
      description: 'The DPoP proof jti was already used',
      replay: true,
    });
  });

  it('answers use_dpop_nonce to an otherwise valid proof without the nonce or with a stale one, and accepts the current one', async () => {
    const key = await createProofKey();
    const jtis = new JtiRegistry();
    const nonceRefusal = { ok: false, error: 'use_dpop_nonce', description: 'The DPoP proof nonce is missing or stale' };
    expect(await verifyDpopProof(await signProof(key, 'POST', url), rules({ nonce: 'n-2' }), jtis)).toEqual(nonceRefusal);
    expect(await verifyDpopProof(await signProof(key, 'POST', url, { nonce: 'n-1' }), rules({ nonce: 'n-2' }), jtis)).toEqual(nonceRefusal);
    expect((await verifyDpopProof(await signProof(key, 'POST', url, { nonce: 'n-2' }), rules({ nonce: 'n-2' }), jtis)).ok).toBe(true);
  });

  it('requires ath to be the hash of the access token the proof accompanies', async () => {
    const key = await createProofKey();
    const jtis = new JtiRegistry();
    const api = rules({ method: 'GET', url: 'http://127.0.0.1:4000/api/items', accessToken: 'token-1' });
    const withAth = (accessToken: string) => signProof(key, 'GET', 'http://127.0.0.1:4000/api/items', { ath: accessTokenHash(accessToken) });
    expect((await verifyDpopProof(await withAth('token-1'), api, jtis)).ok).toBe(true);
    expect(await verifyDpopProof(await withAth('token-2'), api, jtis)).toMatchObject({ ok: false, description: 'The DPoP proof ath is not the hash of the access token' });
    expect(await verifyDpopProof(await signProof(key, 'GET', 'http://127.0.0.1:4000/api/items'), api, jtis)).toMatchObject({ ok: false, error: 'invalid_dpop_proof' });
  });
});
