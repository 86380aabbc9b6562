/*
 * The one assertion signer of RFC 7523 (the JWT bearer grant's assertion and private_key_jwt's
 * client assertion), and the redaction of what it signs from the errors of every door that uses it.
 */
import { constants, generateKeyPairSync, verify, type KeyObject } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { clientCredentialsGrant, jwtBearerGrant } from './credential-grants.js';
import { ErrorCode } from './errors.js';
import { refreshTokenGrant } from './grant.js';
import { assertionSigner, type SigningAlgorithm } from './jwt.js';
import { privateKeyJwt } from './private-key-jwt.js';
import { revokeToken } from './revoke.js';

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const pkcs8 = (key: KeyObject) => key.export({ type: 'pkcs8', format: 'pem' }).toString();
const rsaPem = pkcs8(rsa.privateKey);
const signal = new AbortController().signal;
const parties = { iss: 'client-1', sub: 'user-1', aud: 'https://auth.example.test' };
const clockAt = (ms: number) => ({ now: () => ms });
const decode = (segment: string | undefined): unknown => JSON.parse(Buffer.from(segment ?? '', 'base64url').toString('utf8'));

/** How node:crypto checks each algorithm's signature: JOSE's ES256 is r‖s (IEEE P1363), PS256 salts 32 bytes. */
const verifiers: Record<SigningAlgorithm, { privateKey: string; check: (data: Buffer, signature: Buffer) => boolean }> = {
  RS256: { privateKey: rsaPem, check: (data, signature) => verify('sha256', data, rsa.publicKey, signature) },
  PS256: {
    privateKey: rsaPem,
    check: (data, signature) =>
      verify('sha256', data, { key: rsa.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, signature),
  },
  ES256: {
    privateKey: pkcs8(ec.privateKey),
    check: (data, signature) => verify('sha256', data, { key: ec.publicKey, dsaEncoding: 'ieee-p1363' }, signature),
  },
};

describe('the assertion signer', () => {
  it.each(Object.keys(verifiers) as SigningAlgorithm[])(
    'signs a %s assertion the public key verifies, holding the parties, iat, exp two minutes later and a jti',
    async (algorithm) => {
      const { privateKey, check } = verifiers[algorithm];
      const { assertion } = await assertionSigner({ privateKey, algorithm, keyId: 'k1' }, 'test')(parties, clockAt(1_700_000_000_500));
      const [header, payload, signature] = assertion.split('.');
      expect(check(Buffer.from(`${header}.${payload}`), Buffer.from(signature ?? '', 'base64url'))).toBe(true);
      expect(decode(header)).toEqual({ alg: algorithm, typ: 'JWT', kid: 'k1' });
      expect(decode(payload)).toEqual({ ...parties, iat: 1_700_000_000, exp: 1_700_000_120, jti: expect.any(String) });
    },
  );

  it('names the assertion and each of its three segments as the secrets to redact', async () => {
    const { assertion, secrets } = await assertionSigner({ privateKey: rsaPem }, 'test')(parties, Date);
    const segments = assertion.split('.');
    expect(segments).toHaveLength(3);
    expect(secrets).toEqual([assertion, ...segments]);
  });

  it('signs a fresh assertion each time, with the time of the clock it is given and a new jti', async () => {
    const sign = assertionSigner({ privateKey: rsaPem }, 'test');
    const first = decode((await sign(parties, clockAt(1_000_000))).assertion.split('.')[1]) as Record<string, unknown>;
    const second = decode((await sign(parties, clockAt(2_000_000))).assertion.split('.')[1]) as Record<string, unknown>;
    expect([first.iat, second.iat]).toEqual([1000, 2000]);
    expect(first.jti).not.toBe(second.jti);
  });
});

describe('a signed assertion echoed back by the server', () => {
  const tokenEndpoint = 'https://auth.example.test/oauth/token';
  const revocationEndpoint = 'https://auth.example.test/oauth/revoke';
  const tokens = { accessToken: 'at', refreshToken: 'rt' };
  const echoes: Array<[string, (assertion: string) => string]> = [
    ['the whole assertion', (assertion) => assertion],
    ['its payload alone', (assertion) => assertion.split('.')[1] ?? ''],
    ['its signature alone', (assertion) => assertion.split('.')[2] ?? ''],
  ];
  const doors: Array<[string, string, (fetch: typeof globalThis.fetch) => Promise<unknown>]> = [
    [
      'jwtBearerGrant',
      'assertion',
      (fetch) => jwtBearerGrant({ tokenEndpoint, clientId: 'c', subject: 's', audience: 'https://auth.example.test', privateKey: rsaPem, fetch })({ tokens: undefined, signal }),
    ],
    [
      'clientCredentialsGrant with privateKeyJwt',
      'client_assertion',
      (fetch) => clientCredentialsGrant({ tokenEndpoint, clientId: 'c', clientAuthentication: privateKeyJwt({ privateKey: rsaPem }), fetch })({ tokens: undefined, signal }),
    ],
    [
      'refreshTokenGrant with privateKeyJwt',
      'client_assertion',
      (fetch) => refreshTokenGrant({ tokenEndpoint, clientId: 'c', clientAuthentication: privateKeyJwt({ privateKey: rsaPem }), fetch })({ tokens, signal }),
    ],
    [
      'revokeToken with privateKeyJwt',
      'client_assertion',
      (fetch) => revokeToken({ revocationEndpoint, clientId: 'c', clientAuthentication: privateKeyJwt({ privateKey: rsaPem }), token: 'rt', fetch }),
    ],
  ];
  const cases = doors.flatMap(([door, field, call]) => echoes.map(([echoName, echo]) => [door, echoName, field, call, echo] as const));

  it.each(cases)('keeps it out of the error of %s when the server echoes %s', async (_door, _echoName, field, call, echo) => {
    let echoed = '';
    const fetch: typeof globalThis.fetch = async (_url, init) => {
      echoed = echo(new URLSearchParams(String(init?.body)).get(field) ?? '');
      return Response.json({ error: 'invalid_request', error_description: `cannot read ${echoed}` }, { status: 400 });
    };
    const error = (await call(fetch).catch((e: unknown) => e)) as Error;
    expect(echoed.length).toBeGreaterThan(20);
    expect(error).toMatchObject({ code: ErrorCode.TOKEN_ENDPOINT_ERROR });
    const visible = [error.message, error.stack, String(error.cause), JSON.stringify(error)].join('\n');
    expect(visible).not.toContain(echoed);
    expect(error.message).toContain('cannot read [redacted]');
  });
});
