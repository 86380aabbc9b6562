/*
 * Issue 11's API, written as the issue wrote it: `clientCredentialsGrant`, `jwtBearerGrant`,
 * `privateKeyJwt` and `revokeToken` imported from `@tokenrelay/core` itself, and `private_key_jwt`
 * named as a string with `privateKey`, `algorithm?` and `keyId?` beside it, for every grant that
 * authenticates the client and for revocation. Against @tokenrelay/testing's server, which verifies
 * every assertion's signature with the client's registered public key, its aud and its jti.
 */
import { generateKeyPairSync } from 'node:crypto';
import {
  ErrorCode,
  clientCredentialsGrant,
  jwtBearerGrant,
  privateKeyJwt,
  refreshTokenGrant,
  revokeToken,
  type SigningAlgorithm,
} from '@tokenrelay/core';
import { startOAuthServer, type OAuthClient, type OAuthServer, type OAuthServerOptions } from '@tokenrelay/testing';
import { afterEach, describe, expect, it } from 'vitest';

const servers: OAuthServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});
async function start(options: OAuthServerOptions): Promise<OAuthServer> {
  const server = await startOAuthServer(options);
  servers.push(server);
  return server;
}

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsaPem = rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const rsaPublicPem = rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString();
const rsaJwk = rsa.privateKey.export({ format: 'jwk' }) as JsonWebKey;
const ecPem = ec.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const ecJwk = ec.privateKey.export({ format: 'jwk' }) as JsonWebKey;
const ecPublicJwk = ec.publicKey.export({ format: 'jwk' }) as JsonWebKey;
const signal = new AbortController().signal;

const webCryptoImports = {
  RS256: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
  PS256: { name: 'RSA-PSS', hash: 'SHA-256' },
  ES256: { name: 'ECDSA', namedCurve: 'P-256' },
} as const;
/** A non-extractable WebCrypto key for `algorithm`, imported from the test key pairs. */
const cryptoKey = (algorithm: SigningAlgorithm): Promise<CryptoKey> =>
  crypto.subtle.importKey('jwk', algorithm === 'ES256' ? ecJwk : rsaJwk, webCryptoImports[algorithm], false, ['sign']);

/** Every algorithm in every key form issue 11 names: PEM PKCS#8, JWK, CryptoKey. */
const keyCases: Array<[string, SigningAlgorithm, () => Promise<CryptoKey | JsonWebKey | string>, OAuthClient['publicKey']]> = [
  ['RS256, a PEM', 'RS256', async () => rsaPem, rsaPublicPem],
  ['RS256, a JWK', 'RS256', async () => rsaJwk, rsaPublicPem],
  ['RS256, a CryptoKey', 'RS256', () => cryptoKey('RS256'), rsaPublicPem],
  ['ES256, a PEM', 'ES256', async () => ecPem, ecPublicJwk],
  ['ES256, a JWK', 'ES256', async () => ecJwk, ecPublicJwk],
  ['ES256, a CryptoKey', 'ES256', () => cryptoKey('ES256'), ecPublicJwk],
  ['PS256, a PEM', 'PS256', async () => rsaPem, rsaPublicPem],
  ['PS256, a JWK', 'PS256', async () => rsaJwk, rsaPublicPem],
  ['PS256, a CryptoKey', 'PS256', () => cryptoKey('PS256'), rsaPublicPem],
];

/** The form bodies sent, for reading the assertions back. */
function recordingFetch() {
  const bodies: URLSearchParams[] = [];
  const fetchImpl: typeof fetch = async (input, init) => {
    bodies.push(new URLSearchParams(String(init?.body)));
    return fetch(input, init);
  };
  return { bodies, fetch: fetchImpl };
}

/** The header and claims of the client assertion a form carried. */
function clientAssertion(body: URLSearchParams | undefined) {
  expect(body?.get('client_assertion_type')).toBe('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
  const [header, claims] = String(body?.get('client_assertion'))
    .split('.')
    .slice(0, 2)
    .map((part) => JSON.parse(Buffer.from(part, 'base64url').toString()));
  return { header, claims };
}

const apiAccepts = async (server: OAuthServer, accessToken: string) =>
  (await fetch(`${server.url}/api/me`, { headers: { authorization: `Bearer ${accessToken}` } })).status === 200;

describe("clientCredentialsGrant from @tokenrelay/core, as issue 11 wrote it", () => {
  it.each(['client_secret_basic', 'client_secret_post'] as const)('gets tokens the API accepts with %s', async (clientAuthentication) => {
    const server = await start({ clients: [{ clientId: 'etl', clientSecret: 'etl secret', authMethod: clientAuthentication }] });
    const grant = clientCredentialsGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'etl', clientSecret: 'etl secret', clientAuthentication, scope: 'read' });
    const tokens = await grant({ tokens: undefined, signal });
    expect(await apiAccepts(server, tokens.accessToken)).toBe(true);
    expect(server.stats().tokenRequestLog[0]).toMatchObject({ clientAuthentication, params: { grant_type: 'client_credentials', scope: 'read' } });
  });

  it.each(keyCases)("authenticates with clientAuthentication: 'private_key_jwt' and a privateKey (%s), verified by the server", async (_name, algorithm, key, publicKey) => {
    const server = await start({ clients: [{ clientId: 'worker', authMethod: 'private_key_jwt', publicKey }] });
    const recorder = recordingFetch();
    const grant = clientCredentialsGrant({
      tokenEndpoint: server.tokenEndpoint,
      clientId: 'worker',
      clientAuthentication: 'private_key_jwt',
      privateKey: await key(),
      algorithm,
      keyId: 'worker-key-1',
      fetch: recorder.fetch,
    });
    const tokens = await grant({ tokens: undefined, signal });
    expect(await apiAccepts(server, tokens.accessToken)).toBe(true);
    expect(server.stats().tokenRequestLog[0]?.clientAuthentication).toBe('private_key_jwt');
    const { header, claims } = clientAssertion(recorder.bodies[0]);
    expect(header).toEqual({ alg: algorithm, typ: 'JWT', kid: 'worker-key-1' });
    expect(claims).toMatchObject({ iss: 'worker', sub: 'worker', aud: server.tokenEndpoint });
  });

  it("signs with RS256 when 'private_key_jwt' is given no algorithm, and sends no kid without a keyId", async () => {
    const server = await start({ clients: [{ clientId: 'worker', authMethod: 'private_key_jwt', publicKey: rsaPublicPem }] });
    const recorder = recordingFetch();
    await clientCredentialsGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'worker', clientAuthentication: 'private_key_jwt', privateKey: rsaPem, fetch: recorder.fetch })({ tokens: undefined, signal });
    expect(clientAssertion(recorder.bodies[0]).header).toEqual({ alg: 'RS256', typ: 'JWT' });
  });

  it("authenticates with private_key_jwt when given only a privateKey, as a clientSecret alone means client_secret_basic", async () => {
    const server = await start({ clients: [{ clientId: 'worker', authMethod: 'private_key_jwt', publicKey: ecPublicJwk }] });
    const recorder = recordingFetch();
    const grant = clientCredentialsGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'worker', privateKey: ecPem, algorithm: 'ES256', keyId: 'k1', fetch: recorder.fetch });
    const tokens = await grant({ tokens: undefined, signal });
    expect(await apiAccepts(server, tokens.accessToken)).toBe(true);
    expect(server.stats().tokenRequestLog[0]?.clientAuthentication).toBe('private_key_jwt');
    expect(clientAssertion(recorder.bodies[0]).header).toEqual({ alg: 'ES256', typ: 'JWT', kid: 'k1' });
  });

  it("is refused as CREDENTIALS_REJECTED when the server holds another key, with no part of the assertion in the error", async () => {
    const server = await start({ clients: [{ clientId: 'worker', authMethod: 'private_key_jwt', publicKey: ecPublicJwk }] });
    const recorder = recordingFetch();
    const grant = clientCredentialsGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'worker', clientAuthentication: 'private_key_jwt', privateKey: rsaPem, fetch: recorder.fetch });
    const error = (await grant({ tokens: undefined, signal }).catch((e: unknown) => e)) as Error;
    expect(error).toMatchObject({ code: ErrorCode.CREDENTIALS_REJECTED, oauthError: 'invalid_client', transient: false });
    const visible = [error.message, error.stack, String(error.cause), JSON.stringify(error)].join('\n');
    for (const part of String(recorder.bodies[0]?.get('client_assertion')).split('.').slice(1)) expect(visible).not.toContain(part);
  });
});

describe('jwtBearerGrant from @tokenrelay/core', () => {
  it('gets tokens with an assertion the server verifies', async () => {
    const server = await start({ clients: [{ clientId: 'reporting', clientSecret: 'unused', authMethod: 'client_secret_basic', publicKey: ecPublicJwk }] });
    const grant = jwtBearerGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'reporting', subject: 'svc-reporting', audience: server.tokenEndpoint, privateKey: ecJwk, algorithm: 'ES256', keyId: 'k1' });
    const tokens = await grant({ tokens: undefined, signal });
    expect(await apiAccepts(server, tokens.accessToken)).toBe(true);
    expect(server.stats().tokenRequestLog[0]?.params.grant_type).toBe('urn:ietf:params:oauth:grant-type:jwt-bearer');
  });
});

describe("refreshTokenGrant with clientAuthentication: 'private_key_jwt' and a privateKey", () => {
  it('refreshes twice, each time with a fresh assertion: kid = keyId, iss = sub = clientId, aud = the token endpoint, a new jti', async () => {
    const server = await start({ clients: [{ clientId: 'app', authMethod: 'private_key_jwt', publicKey: rsaPublicPem }] });
    const recorder = recordingFetch();
    const grant = refreshTokenGrant({
      tokenEndpoint: server.tokenEndpoint,
      clientId: 'app',
      clientAuthentication: 'private_key_jwt',
      privateKey: rsaPem,
      algorithm: 'PS256',
      keyId: 'app-key-2026',
      fetch: recorder.fetch,
    });
    const issued = server.issue();
    const first = await grant({ tokens: issued, signal });
    // The manager keeps the refresh token when an answer has none; here the test does.
    const second = await grant({ tokens: { ...first, refreshToken: first.refreshToken ?? issued.refreshToken }, signal });
    expect(await apiAccepts(server, second.accessToken)).toBe(true);
    const assertions = recorder.bodies.map(clientAssertion);
    expect(assertions).toHaveLength(2);
    for (const { header, claims } of assertions) {
      expect(header).toEqual({ alg: 'PS256', typ: 'JWT', kid: 'app-key-2026' });
      expect(claims).toMatchObject({ iss: 'app', sub: 'app', aud: server.tokenEndpoint });
      expect(claims.exp - claims.iat).toBeLessThanOrEqual(300);
    }
    expect(assertions[0]?.claims.jti).not.toBe(assertions[1]?.claims.jti);
    expect(server.stats().tokenRequestLog.map((entry) => entry.clientAuthentication)).toEqual(['private_key_jwt', 'private_key_jwt']);
  });

  it("means exactly what privateKeyJwt({ privateKey, algorithm, keyId }) means: the same header and claims", async () => {
    const server = await start({ clients: [{ clientId: 'app', authMethod: 'private_key_jwt', publicKey: ecPublicJwk }] });
    const recorder = recordingFetch();
    const options = { tokenEndpoint: server.tokenEndpoint, clientId: 'app', fetch: recorder.fetch };
    const key = { privateKey: ecJwk, algorithm: 'ES256', keyId: 'k' } as const;
    await refreshTokenGrant({ ...options, clientAuthentication: 'private_key_jwt', ...key })({ tokens: server.issue(), signal });
    await refreshTokenGrant({ ...options, clientAuthentication: privateKeyJwt(key) })({ tokens: server.issue(), signal });
    const [named, made] = recorder.bodies.map(clientAssertion);
    expect(named?.header).toEqual(made?.header);
    expect(Object.keys(named?.claims ?? {}).sort()).toEqual(Object.keys(made?.claims ?? {}).sort());
    expect({ ...named?.claims, iat: 0, exp: 0, jti: '' }).toEqual({ ...made?.claims, iat: 0, exp: 0, jti: '' });
    expect(recorder.bodies.map((body) => [...body.keys()].sort())).toEqual([
      ['client_assertion', 'client_assertion_type', 'client_id', 'grant_type', 'refresh_token'],
      ['client_assertion', 'client_assertion_type', 'client_id', 'grant_type', 'refresh_token'],
    ]);
  });
});

describe("revokeToken from @tokenrelay/core with clientAuthentication: 'private_key_jwt' and a privateKey", () => {
  it('revokes the refresh token, authenticating with an assertion whose aud is the revocation endpoint', async () => {
    const server = await start({ clients: [{ clientId: 'app', authMethod: 'private_key_jwt', publicKey: rsaPublicPem }] });
    const recorder = recordingFetch();
    const tokens = server.issue();
    await revokeToken({
      revocationEndpoint: server.revocationEndpoint,
      clientId: 'app',
      clientAuthentication: 'private_key_jwt',
      privateKey: rsaPem,
      keyId: 'app-key-2026',
      token: tokens.refreshToken!,
      tokenTypeHint: 'refresh_token',
      fetch: recorder.fetch,
    });
    expect(server.stats().revocations).toBe(1);
    expect(await apiAccepts(server, tokens.accessToken)).toBe(false);
    const { header, claims } = clientAssertion(recorder.bodies[0]);
    expect(header).toEqual({ alg: 'RS256', typ: 'JWT', kid: 'app-key-2026' });
    expect(claims).toMatchObject({ iss: 'app', sub: 'app', aud: server.revocationEndpoint });
  });
});

describe("the key options' configuration errors", () => {
  type Endpoints = { tokenEndpoint: string; revocationEndpoint: string; fetch: typeof fetch };
  it.each([
    ["'private_key_jwt' without a privateKey", (at: Endpoints) => clientCredentialsGrant({ ...at, clientId: 'c', clientAuthentication: 'private_key_jwt' }), /"private_key_jwt" needs a privateKey/],
    ['a privateKey with client_secret_basic', (at: Endpoints) => refreshTokenGrant({ ...at, clientId: 'c', clientSecret: 's', clientAuthentication: 'client_secret_basic', privateKey: rsaPem }), /privateKey is for clientAuthentication: 'private_key_jwt'/],
    ['a privateKey with client_secret_post', (at: Endpoints) => revokeToken({ ...at, token: 't', clientId: 'c', clientSecret: 's', clientAuthentication: 'client_secret_post', privateKey: rsaPem }), /privateKey is for clientAuthentication: 'private_key_jwt'/],
    ['both a privateKey and a clientSecret', (at: Endpoints) => clientCredentialsGrant({ ...at, clientId: 'c', clientSecret: 's', clientAuthentication: 'private_key_jwt', privateKey: rsaPem }), /clientSecret was given but clientAuthentication is "private_key_jwt"/],
    ['a privateKey beside a clientSecret, no method named', (at: Endpoints) => clientCredentialsGrant({ ...at, clientId: 'c', clientSecret: 's', privateKey: rsaPem }), /privateKey is for clientAuthentication: 'private_key_jwt'/],
    ['a keyId without a privateKey', (at: Endpoints) => refreshTokenGrant({ ...at, clientId: 'c', clientSecret: 's', keyId: 'k1' }), /keyId is for clientAuthentication: 'private_key_jwt'/],
    ['a keyId beside privateKeyJwt(…), where it would send no kid', (at: Endpoints) => clientCredentialsGrant({ ...at, clientId: 'c', clientAuthentication: privateKeyJwt({ privateKey: rsaPem }), keyId: 'k1' }), /keyId is for clientAuthentication: 'private_key_jwt'/],
    ['an algorithm without a privateKey', (at: Endpoints) => revokeToken({ ...at, token: 't', clientId: 'c', algorithm: 'ES256' }), /"private_key_jwt" needs a privateKey/],
  ])('refuses %s with CONFIGURATION_ERROR, and the server sees no request', async (_name, make, message) => {
    const server = await start({ clients: [{ clientId: 'c', clientSecret: 's', authMethod: 'client_secret_basic' }] });
    const recorder = recordingFetch();
    const at = { tokenEndpoint: server.tokenEndpoint, revocationEndpoint: server.revocationEndpoint, fetch: recorder.fetch };
    // revokeToken is async: its configuration error rejects; the grants throw when they are made.
    const outcome = await (async () => make(at))().then(() => undefined, (error: unknown) => error);
    expect(outcome).toMatchObject({ code: ErrorCode.CONFIGURATION_ERROR, message: expect.stringMatching(message) });
    expect(recorder.bodies).toEqual([]);
    expect(server.stats()).toMatchObject({ tokenRequests: 0, revocations: 0 });
  });
});
