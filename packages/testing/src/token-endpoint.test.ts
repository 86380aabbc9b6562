import { describe, expect, it } from 'vitest';
import { basicAuthorization, callApi, demoBasic, postToken, refreshWith, useServers } from './test-helpers.js';

const start = useServers();

describe('issue()', () => {
  it('returns a fresh TokenSet with opaque random tokens, Bearer type, scope and an expiry from the TTL', async () => {
    const server = await start({ accessTokenTtlSeconds: 60 });
    const before = Date.now();
    const first = server.issue();
    const second = server.issue({ scope: 'read' });

    expect(first.accessToken).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(first.refreshToken).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(new Set([first.accessToken, first.refreshToken, second.accessToken, second.refreshToken]).size).toBe(4);
    expect(first).toMatchObject({ tokenType: 'Bearer', scope: 'read write', raw: {} });
    expect(second.scope).toBe('read');
    expect(first.expiresAt).toBeGreaterThanOrEqual(before + 60_000);
    expect(first.expiresAt).toBeLessThanOrEqual(Date.now() + 60_000);
    expect((await callApi(server, '/api/me', first.accessToken)).status).toBe(200);
  });

  it('throws for a client the server does not know', async () => {
    const server = await start();
    expect(() => server.issue({ clientId: 'nobody' })).toThrow(/unknown client "nobody"/);
  });
});

describe('client authentication', () => {
  const awkwardClient = { clientId: 'my app+1', clientSecret: 'a b:c+d', authMethod: 'client_secret_basic' as const };

  it('accepts client_secret_basic whose id and secret were form-urlencoded before base64', async () => {
    const server = await start({ clients: [awkwardClient] });
    const tokens = server.issue();
    const response = await postToken(
      server,
      { grant_type: 'refresh_token', refresh_token: tokens.refreshToken! },
      basicAuthorization('my app+1', 'a b:c+d'),
    );
    expect(response.status).toBe(200);
    expect(server.stats().tokenRequestLog[0]).toMatchObject({ clientAuthentication: 'client_secret_basic', clientId: 'my app+1' });
  });

  it('rejects Basic credentials that were base64-encoded without form-urlencoding, with 401 and WWW-Authenticate', async () => {
    const server = await start({ clients: [awkwardClient] });
    const tokens = server.issue();
    const naive = `Basic ${Buffer.from('my app+1:a b:c+d').toString('base64')}`;
    const response = await postToken(server, { grant_type: 'refresh_token', refresh_token: tokens.refreshToken! }, naive);
    expect(response.status).toBe(401);
    expect(response.json).toMatchObject({ error: 'invalid_client' });
    expect(response.headers.get('www-authenticate')).toBe('Basic realm="tokenrelay-testing"');
  });

  it('rejects a wrong secret with 401 invalid_client and WWW-Authenticate: Basic', async () => {
    const server = await start();
    const tokens = server.issue();
    const response = await postToken(
      server,
      { grant_type: 'refresh_token', refresh_token: tokens.refreshToken! },
      basicAuthorization('tokenrelay-demo', 'wrong'),
    );
    expect(response.status).toBe(401);
    expect(response.json?.error).toBe('invalid_client');
    expect(response.headers.get('www-authenticate')).toMatch(/^Basic /);
    expect(response.text).not.toContain('tokenrelay-demo-secret');
  });

  it('accepts client_secret_post for a client registered with it and refuses Basic from that client', async () => {
    const server = await start({ clients: [{ clientId: 'poster', clientSecret: 's3cret', authMethod: 'client_secret_post' }] });
    const tokens = server.issue();
    const params = { grant_type: 'refresh_token', refresh_token: tokens.refreshToken! };

    const viaBody = await postToken(server, { ...params, client_id: 'poster', client_secret: 's3cret' }, null);
    expect(viaBody.status).toBe(200);
    const viaBasic = await postToken(server, params, basicAuthorization('poster', 's3cret'));
    expect(viaBasic.status).toBe(401);
    expect(viaBasic.json?.error).toBe('invalid_client');

    const [first] = server.stats().tokenRequestLog;
    expect(first).toMatchObject({ clientAuthentication: 'client_secret_post', clientId: 'poster' });
    expect(first?.params).toEqual({ grant_type: 'refresh_token', refresh_token: tokens.refreshToken, client_id: 'poster' });
  });

  it('accepts client_id alone for a public client, and rejects a request that names no client', async () => {
    const server = await start({ clients: [{ clientId: 'spa', authMethod: 'none' }] });
    const tokens = server.issue();
    const params = { grant_type: 'refresh_token', refresh_token: tokens.refreshToken! };

    expect((await postToken(server, { ...params, client_id: 'spa' }, null)).status).toBe(200);
    const anonymous = await postToken(server, params, null);
    expect(anonymous.status).toBe(401);
    expect(anonymous.json?.error).toBe('invalid_client');
    // No Authorization header was used, so no WWW-Authenticate challenge either.
    expect(anonymous.headers.get('www-authenticate')).toBeNull();
    expect(server.stats().tokenRequestLog.map((entry) => entry.clientAuthentication)).toEqual(['none', undefined]);
  });

  it('rejects a secret sent by a public client registered without one', async () => {
    const server = await start({ clients: [{ clientId: 'spa', authMethod: 'none' }] });
    const tokens = server.issue();
    const response = await postToken(
      server,
      { grant_type: 'refresh_token', refresh_token: tokens.refreshToken!, client_id: 'spa', client_secret: 'guess' },
      null,
    );
    expect(response.status).toBe(401);
  });

  it('rejects a request that uses Basic and client_secret in the body at once', async () => {
    const server = await start();
    const tokens = server.issue();
    const response = await postToken(server, {
      grant_type: 'refresh_token',
      refresh_token: tokens.refreshToken!,
      client_id: 'tokenrelay-demo',
      client_secret: 'tokenrelay-demo-secret',
    });
    expect(response.status).toBe(401);
    expect(response.json?.error).toBe('invalid_client');
    expect(response.headers.get('www-authenticate')).toMatch(/^Basic /);
  });

  it('rejects an unknown client', async () => {
    const server = await start();
    const tokens = server.issue();
    const response = await postToken(
      server,
      { grant_type: 'refresh_token', refresh_token: tokens.refreshToken! },
      basicAuthorization('stranger', 'tokenrelay-demo-secret'),
    );
    expect(response.status).toBe(401);
    expect(server.stats().tokenErrors).toEqual({ invalid_client: 1 });
  });

  it('never records the client secret in the request log', async () => {
    const server = await start({ clients: [{ clientId: 'poster', clientSecret: 's3cret', authMethod: 'client_secret_post' }] });
    const tokens = server.issue();
    await postToken(server, { grant_type: 'refresh_token', refresh_token: tokens.refreshToken!, client_id: 'poster', client_secret: 's3cret' }, null);
    expect(JSON.stringify(server.stats())).not.toContain('s3cret');
  });
});

describe('request validation', () => {
  it('answers unsupported_grant_type to any grant but refresh_token', async () => {
    const server = await start();
    const response = await postToken(server, { grant_type: 'password', username: 'u', password: 'p' });
    expect(response.status).toBe(400);
    expect(response.json?.error).toBe('unsupported_grant_type');
  });

  it('answers invalid_request to a missing refresh_token, a repeated parameter, a JSON body and a GET', async () => {
    const server = await start();
    const tokens = server.issue();
    expect((await postToken(server, { grant_type: 'refresh_token' })).json?.error).toBe('invalid_request');

    const repeated = await fetch(server.tokenEndpoint, {
      method: 'POST',
      headers: { authorization: demoBasic, 'content-type': 'application/x-www-form-urlencoded' },
      body: `grant_type=refresh_token&refresh_token=${tokens.refreshToken!}&refresh_token=${tokens.refreshToken!}`,
    });
    expect(repeated.status).toBe(400);
    expect(await repeated.json()).toMatchObject({ error: 'invalid_request' });

    const asJson = await fetch(server.tokenEndpoint, {
      method: 'POST',
      headers: { authorization: demoBasic, 'content-type': 'application/json' },
      body: JSON.stringify({ grant_type: 'refresh_token', refresh_token: tokens.refreshToken }),
    });
    expect(asJson.status).toBe(400);
    expect(await asJson.json()).toMatchObject({ error: 'invalid_request' });

    const get = await fetch(server.tokenEndpoint);
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST, OPTIONS');
    expect(server.stats().tokenSuccesses).toBe(0);
  });

  it('answers invalid_grant to an unknown refresh token and to one issued to another client', async () => {
    const server = await start({
      clients: [
        { clientId: 'one', clientSecret: 'secret-1', authMethod: 'client_secret_basic' },
        { clientId: 'two', clientSecret: 'secret-2', authMethod: 'client_secret_basic' },
      ],
    });
    const ofOne = server.issue({ clientId: 'one' });
    const unknown = await postToken(server, { grant_type: 'refresh_token', refresh_token: 'made-up' }, basicAuthorization('one', 'secret-1'));
    expect(unknown.status).toBe(400);
    expect(unknown.json?.error).toBe('invalid_grant');
    const stolen = await postToken(
      server,
      { grant_type: 'refresh_token', refresh_token: ofOne.refreshToken! },
      basicAuthorization('two', 'secret-2'),
    );
    expect(stolen.status).toBe(400);
    expect(stolen.json?.error).toBe('invalid_grant');
    expect(server.stats().tokenErrors).toEqual({ invalid_grant: 2 });
  });

  it('grants a narrower scope on request and refuses a wider one with invalid_scope', async () => {
    const server = await start();
    const tokens = server.issue({ scope: 'read write' });
    const narrower = await postToken(server, { grant_type: 'refresh_token', refresh_token: tokens.refreshToken!, scope: 'read' });
    expect(narrower.json?.scope).toBe('read');
    const wider = await postToken(server, { grant_type: 'refresh_token', refresh_token: tokens.refreshToken!, scope: 'read admin' });
    expect(wider.status).toBe(400);
    expect(wider.json?.error).toBe('invalid_scope');
    // Omitting scope means the original grant, even after a narrower refresh.
    expect((await refreshWith(server, tokens.refreshToken!)).json?.scope).toBe('read write');
  });
});

describe('without rotation', () => {
  it('answers a standard token response without refresh_token and keeps the refresh token valid', async () => {
    const server = await start({ accessTokenTtlSeconds: 120 });
    const tokens = server.issue();

    const first = await refreshWith(server, tokens.refreshToken!);
    expect(first.status).toBe(200);
    expect(first.headers.get('cache-control')).toBe('no-store');
    expect(first.headers.get('content-type')).toMatch(/^application\/json/);
    expect(first.json).toEqual({ access_token: expect.any(String), token_type: 'Bearer', expires_in: 120, scope: 'read write' });

    const second = await refreshWith(server, tokens.refreshToken!);
    expect(second.status).toBe(200);
    expect(second.json?.access_token).not.toBe(first.json?.access_token);
    for (const accessToken of [tokens.accessToken, first.json?.access_token, second.json?.access_token]) {
      expect((await callApi(server, '/api/me', String(accessToken))).status).toBe(200);
    }
  });

  it('sends a fractional expires_in for a fractional TTL', async () => {
    const server = await start({ accessTokenTtlSeconds: 0.5 });
    const response = await refreshWith(server, server.issue().refreshToken!);
    expect(response.json?.expires_in).toBe(0.5);
  });
});

describe('with rotation', () => {
  it('returns a new refresh token on every refresh and refuses the rotated one', async () => {
    const server = await start({ rotateRefreshTokens: true });
    const tokens = server.issue();
    const first = await refreshWith(server, tokens.refreshToken!);
    const rotated = String(first.json?.refresh_token);
    expect(rotated).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(rotated).not.toBe(tokens.refreshToken);

    const second = await refreshWith(server, rotated);
    expect(second.status).toBe(200);
    expect(second.json?.refresh_token).not.toBe(rotated);
    expect(server.stats().tokenSuccesses).toBe(2);
  });

  it('revokes the whole family (every access and refresh token) when a rotated refresh token is reused', async () => {
    const server = await start({ rotateRefreshTokens: true });
    const tokens = server.issue();
    const bystander = server.issue();
    const first = await refreshWith(server, tokens.refreshToken!);
    const newest = String(first.json?.refresh_token);

    const reuse = await refreshWith(server, tokens.refreshToken!);
    expect(reuse.status).toBe(400);
    expect(reuse.json?.error).toBe('invalid_grant');

    expect((await refreshWith(server, newest)).json?.error).toBe('invalid_grant');
    expect((await callApi(server, '/api/me', tokens.accessToken)).status).toBe(401);
    expect((await callApi(server, '/api/me', String(first.json?.access_token))).status).toBe(401);
    // Another sign-in is a different family and lives on.
    expect((await callApi(server, '/api/me', bystander.accessToken)).status).toBe(200);
    expect((await refreshWith(server, bystander.refreshToken!)).status).toBe(200);
    expect(server.stats()).toMatchObject({ refreshTokenReuses: 1, familiesRevoked: 1, tokenErrors: { invalid_grant: 2 } });
  });

  it('only refuses the reused token, keeping the family, when reuseDetection is off', async () => {
    const server = await start({ rotateRefreshTokens: true, reuseDetection: false });
    const tokens = server.issue();
    const first = await refreshWith(server, tokens.refreshToken!);

    expect((await refreshWith(server, tokens.refreshToken!)).json?.error).toBe('invalid_grant');
    expect((await refreshWith(server, String(first.json?.refresh_token))).status).toBe(200);
    expect((await callApi(server, '/api/me', tokens.accessToken)).status).toBe(200);
    expect(server.stats()).toMatchObject({ refreshTokenReuses: 1, familiesRevoked: 0 });
  });
});

describe('session revocation and expiry', () => {
  it('revokeRefreshTokens() kills every family: invalid_grant at the token endpoint and 401 at the API', async () => {
    const server = await start();
    const tokens = server.issue();
    server.revokeRefreshTokens();
    expect((await refreshWith(server, tokens.refreshToken!)).json?.error).toBe('invalid_grant');
    expect((await callApi(server, '/api/me', tokens.accessToken)).status).toBe(401);
    expect(server.stats().familiesRevoked).toBe(1);
    // A new sign-in works again.
    expect((await refreshWith(server, server.issue().refreshToken!)).status).toBe(200);
  });

  it('answers invalid_grant to a refresh token older than refreshTokenTtlSeconds', async () => {
    const server = await start({ refreshTokenTtlSeconds: 0.4 });
    const tokens = server.issue();
    expect((await refreshWith(server, tokens.refreshToken!)).status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 420));
    const late = await refreshWith(server, tokens.refreshToken!);
    expect(late.status).toBe(400);
    expect(late.json).toMatchObject({ error: 'invalid_grant', error_description: 'The refresh token expired' });
  });
});

describe('latency and concurrency', () => {
  it('delays every token response by tokenEndpointLatencyMs', async () => {
    const server = await start({ tokenEndpointLatencyMs: 150 });
    const startedAt = Date.now();
    expect((await refreshWith(server, server.issue().refreshToken!)).status).toBe(200);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(140);
  });

  it('reports how many token requests were processed at the same time', async () => {
    const server = await start({ tokenEndpointLatencyMs: 100 });
    const tokens = server.issue();
    await refreshWith(server, tokens.refreshToken!);
    await refreshWith(server, tokens.refreshToken!);
    expect(server.stats().maxInFlightTokenRequests).toBe(1);

    await Promise.all([1, 2, 3].map(() => refreshWith(server, tokens.refreshToken!)));
    expect(server.stats().maxInFlightTokenRequests).toBe(3);
  });
});
