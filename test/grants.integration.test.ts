/*
 * The grants that need no refresh token (client credentials, JWT bearer), private_key_jwt client
 * authentication and revocation, against @tokenrelay/testing's server, which verifies every
 * assertion's signature with the client's registered public key and refuses replayed jti values.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, createTokenManager, refreshTokenGrant, type RefreshHandler } from '@tokenrelay/core';
import { fileStore } from '@tokenrelay/core/node';
import { withTokenRelay } from '@tokenrelay/fetch';
import { clientCredentialsGrant, jwtBearerGrant, privateKeyJwt, revokeToken, type SigningAlgorithm } from '@tokenrelay/core/grants';
import {
  createJsforceConnection,
  readSalesforceSession,
  revokeSalesforceToken,
  salesforceClientCredentialsGrant,
  salesforceJwtBearerGrant,
} from '@tokenrelay/salesforce';
import { salesforceFixtures, startOAuthServer, type OAuthClient, type OAuthServer, type OAuthServerOptions } from '@tokenrelay/testing';
import jsforce from 'jsforce';
import { afterEach, describe, expect, it } from 'vitest';

const servers: OAuthServer[] = [];
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  await Promise.all([...servers.splice(0).map((server) => server.close()), ...closers.splice(0).map((close) => close())]);
});
async function start(options: OAuthServerOptions): Promise<OAuthServer> {
  const server = await startOAuthServer(options);
  servers.push(server);
  return server;
}

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const otherRsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsaPem = rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const rsaPublicPem = rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString();
const rsaJwk = rsa.privateKey.export({ format: 'jwk' }) as JsonWebKey;
const ecJwk = ec.privateKey.export({ format: 'jwk' }) as JsonWebKey;
const ecPublicJwk = ec.publicKey.export({ format: 'jwk' }) as JsonWebKey;
const signal = new AbortController().signal;

/** A non-extractable WebCrypto key for `algorithm`, imported from the test key pair. */
async function nonExtractable(algorithm: SigningAlgorithm): Promise<CryptoKey> {
  const imports = {
    RS256: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
    PS256: { name: 'RSA-PSS', hash: 'SHA-256' },
    ES256: { name: 'ECDSA', namedCurve: 'P-256' },
  } as const;
  return crypto.subtle.importKey('jwk', algorithm === 'ES256' ? ecJwk : rsaJwk, imports[algorithm], false, ['sign']);
}

const keyCases: Array<[string, SigningAlgorithm, () => Promise<CryptoKey | JsonWebKey | string>, OAuthClient['publicKey']]> = [
  ['an RS256 PEM PKCS#8 string', 'RS256', async () => rsaPem, rsaPublicPem],
  ['a PS256 JWK without alg', 'PS256', async () => rsaJwk, rsaPublicPem],
  ['an ES256 JWK with alg', 'ES256', async () => ({ ...ecJwk, alg: 'ES256' }), ecPublicJwk],
  ['a non-extractable RS256 CryptoKey', 'RS256', () => nonExtractable('RS256'), rsaPublicPem],
  ['a non-extractable PS256 CryptoKey', 'PS256', () => nonExtractable('PS256'), rsaPublicPem],
  ['a non-extractable ES256 CryptoKey', 'ES256', () => nonExtractable('ES256'), ecPublicJwk],
];

/** The token call's form bodies, as sent. */
function recordingFetch() {
  const bodies: URLSearchParams[] = [];
  const fetchImpl: typeof fetch = async (input, init) => {
    bodies.push(new URLSearchParams(String(init?.body)));
    return fetch(input, init);
  };
  return { bodies, fetch: fetchImpl };
}

/** Everything an error shows: message, stack, cause, JSON. */
const visibleParts = (error: Error) => [error.message, error.stack, String(error.cause), JSON.stringify(error)].join('\n');

const apiAccepts = async (server: OAuthServer, accessToken: string) =>
  (await fetch(`${server.url}/api/me`, { headers: { authorization: `Bearer ${accessToken}` } })).status === 200;

describe('clientCredentialsGrant', () => {
  it.each(['client_secret_basic', 'client_secret_post'] as const)(
    'gets tokens the API accepts with %s, and says it needs no refresh token',
    async (authMethod) => {
      const server = await start({ clients: [{ clientId: 'etl', clientSecret: 'etl secret', authMethod }] });
      const grant = clientCredentialsGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'etl', clientSecret: 'etl secret', clientAuthentication: authMethod, scope: ['read'] });
      expect(grant.needsRefreshToken).toBe(false);
      expect(grant.tokenEndpoint).toBe(server.tokenEndpoint);
      const tokens = await grant({ tokens: undefined, signal });
      expect(tokens.refreshToken).toBeUndefined();
      expect(tokens.scope).toBe('read');
      expect(await apiAccepts(server, tokens.accessToken)).toBe(true);
      expect(server.stats().tokenRequestLog[0]).toMatchObject({ clientAuthentication: authMethod, params: { grant_type: 'client_credentials' } });
    },
  );

  it.each(keyCases)('authenticates with private_key_jwt signed by %s, verified by the server', async (_name, algorithm, key, publicKey) => {
    const server = await start({ clients: [{ clientId: 'worker', authMethod: 'private_key_jwt', publicKey }] });
    const recorder = recordingFetch();
    const grant = clientCredentialsGrant({
      tokenEndpoint: server.tokenEndpoint,
      clientId: 'worker',
      clientAuthentication: privateKeyJwt({ privateKey: await key(), algorithm, keyId: 'key-1' }),
      fetch: recorder.fetch,
    });
    const tokens = await grant({ tokens: undefined, signal });
    expect(await apiAccepts(server, tokens.accessToken)).toBe(true);
    const assertion = recorder.bodies[0]?.get('client_assertion') ?? '';
    const [header, claims] = assertion.split('.').slice(0, 2).map((part) => JSON.parse(Buffer.from(part, 'base64url').toString()));
    expect(header).toEqual({ alg: algorithm, typ: 'JWT', kid: 'key-1' });
    expect(claims).toMatchObject({ iss: 'worker', sub: 'worker', aud: server.tokenEndpoint });
    expect(claims.exp - claims.iat).toBeLessThanOrEqual(300);
    expect(typeof claims.jti).toBe('string');
  });

  it('signs a fresh assertion with a new jti for every acquisition', async () => {
    const server = await start({ clients: [{ clientId: 'worker', authMethod: 'private_key_jwt', publicKey: rsaPublicPem }] });
    const recorder = recordingFetch();
    const grant = clientCredentialsGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'worker', clientAuthentication: privateKeyJwt({ privateKey: rsaPem }), fetch: recorder.fetch });
    await grant({ tokens: undefined, signal });
    await grant({ tokens: undefined, signal });
    const jtis = recorder.bodies.map((body) => JSON.parse(Buffer.from(String(body.get('client_assertion')).split('.')[1] ?? '', 'base64url').toString()).jti);
    expect(new Set(jtis).size).toBe(2);
    expect(server.stats().tokenSuccesses).toBe(2);
  });

  it('is refused as CREDENTIALS_REJECTED, without any part of the assertion or the secret in the error', async () => {
    const server = await start({ clients: [{ clientId: 'worker', authMethod: 'private_key_jwt', publicKey: rsaPublicPem }, { clientId: 'etl', clientSecret: 'right', authMethod: 'client_secret_basic' }] });
    const recorder = recordingFetch();
    const wrongKey = otherRsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const keyed = clientCredentialsGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'worker', clientAuthentication: privateKeyJwt({ privateKey: wrongKey }), fetch: recorder.fetch });
    const error = (await keyed({ tokens: undefined, signal }).catch((e: unknown) => e)) as Error;
    expect(error).toMatchObject({ code: ErrorCode.CREDENTIALS_REJECTED, status: 401, oauthError: 'invalid_client', transient: false });
    for (const part of String(recorder.bodies[0]?.get('client_assertion')).split('.').slice(1)) expect(visibleParts(error)).not.toContain(part);
    expect(visibleParts(error)).not.toContain('PRIVATE KEY');

    const secret = clientCredentialsGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'etl', clientSecret: 'wrong-secret' });
    const refused = (await secret({ tokens: undefined, signal }).catch((e: unknown) => e)) as Error;
    expect(refused).toMatchObject({ code: ErrorCode.CREDENTIALS_REJECTED, transient: false });
    expect(visibleParts(refused)).not.toContain('wrong-secret');
  });

  it('refuses a replayed client assertion at the server (same jti)', async () => {
    const server = await start({ clients: [{ clientId: 'worker', authMethod: 'private_key_jwt', publicKey: rsaPublicPem }] });
    const recorder = recordingFetch();
    await clientCredentialsGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'worker', clientAuthentication: privateKeyJwt({ privateKey: rsaPem }), fetch: recorder.fetch })({ tokens: undefined, signal });
    const replay = await fetch(server.tokenEndpoint, { method: 'POST', body: recorder.bodies[0] });
    expect(replay.status).toBe(401);
    expect(await replay.json()).toMatchObject({ error: 'invalid_client', error_description: expect.stringMatching(/jti/) });
  });
});

describe('refreshTokenGrant with private_key_jwt', () => {
  it('refreshes with a client assertion whose aud is the exact token endpoint', async () => {
    const server = await start({ clients: [{ clientId: 'app', authMethod: 'private_key_jwt', publicKey: ecPublicJwk }] });
    const grant = refreshTokenGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'app', clientAuthentication: privateKeyJwt({ privateKey: ecJwk, algorithm: 'ES256' }) });
    expect(grant.needsRefreshToken).toBe(true);
    const tokens = await grant({ tokens: server.issue(), signal });
    expect(await apiAccepts(server, tokens.accessToken)).toBe(true);
    expect(server.stats().tokenRequestLog[0]?.clientAuthentication).toBe('private_key_jwt');
  });
});

describe('jwtBearerGrant', () => {
  const client = (publicKey: OAuthClient['publicKey']): OAuthClient => ({ clientId: 'reporting', clientSecret: 'unused', authMethod: 'client_secret_basic', publicKey });

  it.each(keyCases)('gets tokens with an assertion signed by %s', async (_name, algorithm, key, publicKey) => {
    const server = await start({ clients: [client(publicKey)] });
    const grant = jwtBearerGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'reporting', subject: 'svc-reporting', audience: server.tokenEndpoint, privateKey: await key(), algorithm });
    expect(grant.needsRefreshToken).toBe(false);
    const tokens = await grant({ tokens: undefined, signal });
    expect(await apiAccepts(server, tokens.accessToken)).toBe(true);
    expect(server.stats().tokenRequestLog[0]?.params.grant_type).toBe('urn:ietf:params:oauth:grant-type:jwt-bearer');
  });

  it('is refused as CREDENTIALS_REJECTED for an expired assertion, a wrong audience or a wrong key, never showing the assertion', async () => {
    const server = await start({ clients: [client(rsaPublicPem)] });
    const base = { tokenEndpoint: server.tokenEndpoint, clientId: 'reporting', subject: 'svc', audience: server.tokenEndpoint, privateKey: rsaPem };
    const recorder = recordingFetch();
    const cases: RefreshHandler[] = [
      jwtBearerGrant({ ...base, clock: { now: () => Date.now() - 10 * 60_000 }, fetch: recorder.fetch }),
      jwtBearerGrant({ ...base, audience: 'https://elsewhere.example', fetch: recorder.fetch }),
      jwtBearerGrant({ ...base, privateKey: otherRsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), fetch: recorder.fetch }),
    ];
    for (const [index, grant] of cases.entries()) {
      const error = (await grant({ tokens: undefined, signal }).catch((e: unknown) => e)) as Error;
      expect(error).toMatchObject({ code: ErrorCode.CREDENTIALS_REJECTED, oauthError: 'invalid_grant', transient: false });
      for (const part of String(recorder.bodies[index]?.get('assertion')).split('.').slice(1)) expect(visibleParts(error)).not.toContain(part);
    }
    expect(server.stats().tokenErrors).toEqual({ invalid_grant: 3 });
  });
});

describe('a manager on a grant that needs no refresh token', () => {
  it('acquires tokens on the first request, then asks again with the same single flight when they are refused', async () => {
    const server = await start({ clients: [{ clientId: 'etl', clientSecret: 's', authMethod: 'client_secret_basic' }] });
    const manager = createTokenManager({ refresh: clientCredentialsGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'etl', clientSecret: 's' }) });
    expect(await manager.getTokens()).toBeUndefined();
    const tokens = await Promise.all(Array.from({ length: 5 }, () => manager.getAccessToken()));
    expect(new Set(tokens).size).toBe(1);
    expect(server.stats().tokenRequests).toBe(1);
    server.revokeAccessTokens();
    const renewed = await Promise.all(Array.from({ length: 5 }, () => manager.refresh({ staleAccessToken: tokens[0] })));
    expect(server.stats().tokenRequests).toBe(2);
    expect(await apiAccepts(server, renewed[0]!.accessToken)).toBe(true);
  });
});

describe('a manager on a grant that needs no refresh token, behind the fetch door', () => {
  const grantsFor = {
    'client credentials': (server: OAuthServer) => clientCredentialsGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'etl', clientSecret: 's' }),
    'JWT bearer': (server: OAuthServer) =>
      jwtBearerGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'etl', subject: 'svc', audience: server.tokenEndpoint, privateKey: rsaPem }),
  };
  const startJob = async (grantName: keyof typeof grantsFor, options: OAuthServerOptions = {}) => {
    const server = await start({ clients: [{ clientId: 'etl', clientSecret: 's', authMethod: 'client_secret_basic', publicKey: rsaPublicPem }], tokenEndpointLatencyMs: 50, ...options });
    const manager = createTokenManager({ refresh: grantsFor[grantName](server) });
    const api = withTokenRelay(fetch, manager, { origins: [server.url] });
    const burst = async () => (await Promise.all(Array.from({ length: 30 }, () => api(`${server.url}/api/me`)))).map((response) => response.status);
    return { server, burst };
  };

  it.each(Object.keys(grantsFor) as Array<keyof typeof grantsFor>)(
    'with %s, 30 requests after the token expired make one token call between them',
    async (grantName) => {
      const { server, burst } = await startJob(grantName, { accessTokenTtlSeconds: 1.5 });
      expect(await burst()).toEqual(Array(30).fill(200));
      await new Promise((resolve) => setTimeout(resolve, 1_600));
      server.resetStats();
      expect(await burst()).toEqual(Array(30).fill(200));
      expect(server.stats()).toMatchObject({ tokenRequests: 1, api401: 0, maxInFlightTokenRequests: 1 });
    },
  );

  it.each(Object.keys(grantsFor) as Array<keyof typeof grantsFor>)(
    'with %s, 30 requests whose fresh token is refused make one token call and are each replayed once',
    async (grantName) => {
      const { server, burst } = await startJob(grantName);
      expect(await burst()).toEqual(Array(30).fill(200));
      server.revokeAccessTokens();
      server.resetStats();
      expect(await burst()).toEqual(Array(30).fill(200));
      const { tokenRequests, apiRequests, api401 } = server.stats();
      expect(tokenRequests).toBe(1);
      // A request sent with the refused token gets its 401 and one replay; none is sent a third time.
      expect(apiRequests).toBe(30 + api401);
      expect(api401).toBeGreaterThan(0);
      expect(api401).toBeLessThanOrEqual(30);
    },
  );
});

describe('a manager on a grant that needs no refresh token, when a token request may have reached the server', () => {
  it.each(['client credentials', 'JWT bearer'] as const)(
    'asks again with %s after the connection was reset, signing nothing twice, and the request gets its token',
    async (grantName) => {
      const server = await start({ clients: [{ clientId: 'etl', clientSecret: 's', authMethod: 'client_secret_basic', publicKey: rsaPublicPem }] });
      const recorder = recordingFetch();
      const refresh =
        grantName === 'client credentials'
          ? clientCredentialsGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'etl', clientSecret: 's', fetch: recorder.fetch })
          : jwtBearerGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'etl', subject: 'svc', audience: server.tokenEndpoint, privateKey: rsaPem, fetch: recorder.fetch });
      server.failNextTokenRequests(1, 'reset');
      const manager = createTokenManager({ refresh });

      expect(await apiAccepts(server, await manager.getAccessToken())).toBe(true);
      expect(server.stats()).toMatchObject({ tokenRequests: 2, tokenSuccesses: 1 });
      // The JWT bearer grant signed a new assertion (its own jti) for the second request.
      const assertions = recorder.bodies.flatMap((body) => body.get('assertion') ?? []);
      expect(new Set(assertions).size).toBe(assertions.length);
    },
  );

  it('still never presents a refresh token again after a reset: the refresh token grant fails instead', async () => {
    const server = await start({ clients: [{ clientId: 'app', clientSecret: 's', authMethod: 'client_secret_basic' }], rotateRefreshTokens: true });
    server.failNextTokenRequests(1, 'reset');
    const manager = createTokenManager({ tokens: server.issue(), refresh: refreshTokenGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'app', clientSecret: 's' }) });
    await expect(manager.refresh()).rejects.toMatchObject({ code: ErrorCode.REFRESH_FAILED, cause: { code: ErrorCode.NETWORK_ERROR, inDoubt: true } });
    expect(server.stats().tokenRequests).toBe(1);
  });
});

describe('revocation', () => {
  it('revokeToken revokes a refresh token and its access tokens, authenticating the client as the grants do', async () => {
    const server = await start({ clients: [{ clientId: 'app', clientSecret: 'app secret', authMethod: 'client_secret_basic' }] });
    const tokens = server.issue();
    await revokeToken({ revocationEndpoint: server.revocationEndpoint, clientId: 'app', clientSecret: 'app secret', token: tokens.refreshToken!, tokenTypeHint: 'refresh_token' });
    expect(await apiAccepts(server, tokens.accessToken)).toBe(false);
    const refresh = refreshTokenGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'app', clientSecret: 'app secret' });
    await expect(refresh({ tokens, signal })).rejects.toMatchObject({ code: ErrorCode.SESSION_EXPIRED });
    expect(server.stats().revocations).toBe(1);
  });

  it('revokeToken reports a refused client as CREDENTIALS_REJECTED without the token or the secret', async () => {
    const server = await start({ clients: [{ clientId: 'app', clientSecret: 'app secret', authMethod: 'client_secret_basic' }] });
    const tokens = server.issue();
    const error = (await revokeToken({ revocationEndpoint: server.revocationEndpoint, clientId: 'app', clientSecret: 'bad secret', token: tokens.refreshToken! }).catch((e: unknown) => e)) as Error;
    expect(error).toMatchObject({ code: ErrorCode.CREDENTIALS_REJECTED, status: 401 });
    expect(visibleParts(error)).not.toContain(tokens.refreshToken);
    expect(visibleParts(error)).not.toContain('bad secret');
    expect(await apiAccepts(server, tokens.accessToken)).toBe(true);
  });

  it('refuses a plain-http revocation endpoint on a non-loopback host before sending anything', async () => {
    await expect(revokeToken({ revocationEndpoint: 'http://auth.example.com/revoke', clientId: 'app', token: 't' })).rejects.toMatchObject({
      code: ErrorCode.CONFIGURATION_ERROR,
    });
  });
});

describe('Salesforce', () => {
  const jwtApp: OAuthClient = { clientId: 'sf-integration', clientSecret: 'sf-secret', authMethod: 'client_secret_post', publicKey: rsaPublicPem };

  it('salesforceJwtBearerGrant gets a session for the pre-authorized user, with aud = the login host and exp within 3 minutes', async () => {
    const server = await start({ mode: 'salesforce', clients: [jwtApp] });
    const recorder = recordingFetch();
    const grant = salesforceJwtBearerGrant({ loginUrl: `${server.url}/`, clientId: jwtApp.clientId, username: salesforceFixtures.username, privateKey: rsaPem, fetch: recorder.fetch });
    expect(grant.needsRefreshToken).toBe(false);
    expect(grant.tokenEndpoint).toBe(server.tokenEndpoint);
    const tokens = await grant({ tokens: undefined, signal });
    expect(readSalesforceSession(tokens)).toMatchObject({ instanceUrl: server.url, identityUrl: expect.stringContaining(salesforceFixtures.userId) });
    const claims = JSON.parse(Buffer.from(String(recorder.bodies[0]?.get('assertion')).split('.')[1] ?? '', 'base64url').toString());
    expect(claims).toMatchObject({ iss: jwtApp.clientId, sub: salesforceFixtures.username, aud: server.url });
    expect(claims.exp - Math.floor(Date.now() / 1000)).toBeLessThanOrEqual(180);
  });

  it("salesforceJwtBearerGrant with sessionTimeoutMs dates Salesforce's JWT bearer answer, which has no issued_at, from when it was asked", async () => {
    // Salesforce documents its JWT bearer answer without issued_at and signature (its refresh and client credentials answers have both).
    const answer = { access_token: '00D000000000001!jwt-session', scope: 'api', instance_url: 'https://acme.my.salesforce.com', id: 'https://login.salesforce.com/id/00D000000000001AAA/005000000000001AAA', token_type: 'Bearer' };
    const org = createServer((req, res) => {
      req.resume();
      req.once('end', () => res.writeHead(200, { 'content-type': 'application/json;charset=UTF-8' }).end(JSON.stringify(answer)));
    });
    await new Promise<void>((resolve) => org.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise((resolve) => org.close(() => resolve())));
    const sessionTimeoutMs = 2 * 60 * 60 * 1000;
    const manager = createTokenManager({
      refresh: salesforceJwtBearerGrant({ loginUrl: `http://127.0.0.1:${(org.address() as AddressInfo).port}`, clientId: 'c', username: 'etl@acme.example', privateKey: rsaPem, sessionTimeoutMs }),
    });
    const before = Date.now();
    expect(await manager.getAccessToken()).toBe(answer.access_token);
    const tokens = await manager.getTokens();
    expect(tokens?.expiresAt).toBeGreaterThanOrEqual(before + sessionTimeoutMs);
    expect(tokens?.expiresAt).toBeLessThanOrEqual(Date.now() + sessionTimeoutMs);
    expect(readSalesforceSession(tokens)).toMatchObject({ instanceUrl: answer.instance_url, issuedAt: undefined });
  });

  it('salesforceJwtBearerGrant is refused as CREDENTIALS_REJECTED for a user that is not pre-authorized', async () => {
    const server = await start({ mode: 'salesforce', clients: [jwtApp] });
    const grant = salesforceJwtBearerGrant({ loginUrl: server.url, clientId: jwtApp.clientId, username: 'someone@else.example', privateKey: rsaPem });
    await expect(grant({ tokens: undefined, signal })).rejects.toMatchObject({ code: ErrorCode.CREDENTIALS_REJECTED, oauthError: 'invalid_grant' });
  });

  it('salesforceJwtBearerGrant defaults the audience of a My Domain to login.salesforce.com (test.salesforce.com for a sandbox)', async () => {
    for (const [loginUrl, audience] of [
      ['https://acme.my.salesforce.com', 'https://login.salesforce.com'],
      ['https://acme--uat.sandbox.my.salesforce.com', 'https://test.salesforce.com'],
      ['https://test.salesforce.com/', 'https://test.salesforce.com'],
      ['https://acme.my.site.com/customers/', 'https://acme.my.site.com/customers'],
    ] as const) {
      let sent: URLSearchParams | undefined;
      const capture: typeof fetch = async (_input, init) => {
        sent = new URLSearchParams(String(init?.body));
        return Response.json({ error: 'invalid_grant' }, { status: 400 });
      };
      const grant = salesforceJwtBearerGrant({ loginUrl, clientId: 'c', username: 'u', privateKey: rsaPem, fetch: capture });
      await grant({ tokens: undefined, signal }).catch(() => undefined);
      expect(JSON.parse(Buffer.from(String(sent?.get('assertion')).split('.')[1] ?? '', 'base64url').toString()).aud).toBe(audience);
    }
  });

  it('salesforceClientCredentialsGrant gets a signed session from the My Domain and refuses the login host', async () => {
    const server = await start({ mode: 'salesforce', clients: [jwtApp] });
    const grant = salesforceClientCredentialsGrant({ myDomainUrl: server.url, clientId: jwtApp.clientId, clientSecret: 'sf-secret' });
    expect(grant.needsRefreshToken).toBe(false);
    const tokens = await grant({ tokens: undefined, signal });
    expect(tokens.refreshToken).toBeUndefined();
    expect(readSalesforceSession(tokens).instanceUrl).toBe(server.url);
    expect(() => salesforceClientCredentialsGrant({ myDomainUrl: 'https://login.salesforce.com', clientId: 'c', clientSecret: 's' })).toThrow(/My Domain/);
    const wrong = salesforceClientCredentialsGrant({ myDomainUrl: server.url, clientId: jwtApp.clientId, clientSecret: 'wrong' });
    await expect(wrong({ tokens: undefined, signal })).rejects.toMatchObject({ code: ErrorCode.CREDENTIALS_REJECTED });
  });

  it('the testing org keeps at most 5 token pairs per user and app: a 6th sign-in revokes the oldest', async () => {
    const server = await start({ mode: 'salesforce', clients: [jwtApp] });
    const grant = salesforceJwtBearerGrant({ loginUrl: server.url, clientId: jwtApp.clientId, username: salesforceFixtures.username, privateKey: rsaPem });
    const sessions = [];
    for (let index = 0; index < 6; index++) sessions.push(await grant({ tokens: undefined, signal }));
    const restCall = (accessToken: string) =>
      fetch(`${server.url}/services/data/v62.0/sobjects/Account/${salesforceFixtures.account.Id}`, { headers: { authorization: `Bearer ${accessToken}` } });
    expect((await restCall(sessions[0]!.accessToken)).status).toBe(401);
    for (const session of sessions.slice(1)) expect((await restCall(session.accessToken)).status).toBe(200);
    expect(server.stats().tokenPairsEvicted).toBe(1);
  });

  it('revokeSalesforceToken revokes a session at /services/oauth2/revoke', async () => {
    const server = await start({ mode: 'salesforce', clients: [jwtApp] });
    const tokens = server.issue();
    await revokeSalesforceToken({ loginUrl: server.url, clientId: jwtApp.clientId, token: tokens.refreshToken! });
    expect(server.stats().revocations).toBe(1);
    const refused = await fetch(`${server.url}/services/data/v62.0/query?q=SELECT+Id+FROM+Account`, { headers: { authorization: `Bearer ${tokens.accessToken}` } });
    expect(refused.status).toBe(401);
  });
});

describe('jsforce on a manager that needs no refresh token', () => {
  const app: OAuthClient = { clientId: 'sf-etl', clientSecret: 'sf-etl-secret', authMethod: 'client_secret_post', publicKey: rsaPublicPem };
  const grants = {
    'JWT bearer': (server: OAuthServer) =>
      salesforceJwtBearerGrant({ loginUrl: server.url, clientId: app.clientId, username: salesforceFixtures.username, privateKey: rsaPem }),
    'client credentials': (server: OAuthServer) =>
      salesforceClientCredentialsGrant({ myDomainUrl: server.url, clientId: app.clientId, clientSecret: 'sf-etl-secret' }),
  };

  it('a process that starts on a store holding a session takes it, with no token call (no new token pair)', async () => {
    const server = await start({ mode: 'salesforce', clients: [app] });
    const directory = await mkdtemp(join(tmpdir(), 'tokenrelay-sf-jwt-'));
    closers.push(() => rm(directory, { recursive: true, force: true }));
    const path = join(directory, 'acme-etl.json');
    const startProcess = () => {
      const store = fileStore(path);
      closers.push(async () => store.close());
      return createTokenManager({ store, refresh: grants['JWT bearer'](server) });
    };

    const first = await createJsforceConnection(startProcess(), jsforce.Connection, { version: '62.0' });
    expect((await first.query('SELECT Id FROM Account')).totalSize).toBe(1);
    const restarted = await createJsforceConnection(startProcess(), jsforce.Connection, { version: '62.0' });
    expect((await restarted.query('SELECT Id FROM Account')).totalSize).toBe(1);

    expect(restarted.accessToken).toBe(first.accessToken);
    expect(server.stats()).toMatchObject({ tokenRequests: 1, tokenPairsEvicted: 0 });
  });

  it.each(Object.entries(grants))(
    'creates a Connection with the %s manager\'s first session and gets one new session for 10 queries after it expires',
    async (_name, grantFor) => {
      const server = await start({ mode: 'salesforce', clients: [app] });
      const manager = createTokenManager({ refresh: grantFor(server) });
      const conn = await createJsforceConnection(manager, jsforce.Connection, { version: '62.0' });
      expect(conn.instanceUrl).toBe(server.url);
      expect((await conn.query('SELECT Id FROM Account')).totalSize).toBe(1);
      server.revokeAccessTokens();
      const results = await Promise.all(Array.from({ length: 10 }, () => conn.query('SELECT Id FROM Account')));
      expect(results.every((result) => result.totalSize === 1)).toBe(true);
      expect(server.stats()).toMatchObject({ tokenRequests: 2, tokenSuccesses: 2, tokenPairsEvicted: 0 });
      expect(conn.accessToken).toBe((await manager.getTokens())?.accessToken);
    },
  );
});
