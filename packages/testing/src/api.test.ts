import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { callApi, refreshWith, useServers, waitUntil } from './test-helpers.js';

const start = useServers();

describe('protected API', () => {
  it('answers 200 to a valid bearer and echoes the request body with its SHA-256', async () => {
    const server = await start();
    const { accessToken } = server.issue();
    const body = JSON.stringify({ note: 'héllo', n: 1 });
    const response = await callApi(server, '/api/items/42?x=1', accessToken, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    });
    expect(response.status).toBe(200);
    expect(response.json).toEqual({
      ok: true,
      method: 'POST',
      path: '/api/items/42',
      body,
      bodySha256: createHash('sha256').update(body).digest('hex'),
    });
  });

  it('leaves body and bodySha256 out when the request had no body', async () => {
    const server = await start();
    const response = await callApi(server, '/api/me', server.issue().accessToken);
    expect(response.json).toEqual({ ok: true, method: 'GET', path: '/api/me' });
  });

  it('answers 401 with a bare Bearer challenge when no token is sent', async () => {
    const server = await start();
    const response = await callApi(server, '/api/me');
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toBe('Bearer realm="tokenrelay-testing"');
  });

  it('answers 401 invalid_token to an unknown token and to a malformed Authorization header', async () => {
    const server = await start();
    const unknown = await callApi(server, '/api/me', 'not-a-token-we-issued');
    expect(unknown.status).toBe(401);
    expect(unknown.headers.get('www-authenticate')).toBe(
      'Bearer realm="tokenrelay-testing", error="invalid_token", error_description="The access token is unknown"',
    );
    const malformed = await fetch(`${server.url}/api/me`, { headers: { authorization: 'Bearer two words' } });
    expect(malformed.status).toBe(401);
    expect(malformed.headers.get('www-authenticate')).toContain('error="invalid_token"');
  });

  it('refuses an access token once its TTL has passed', async () => {
    const server = await start({ accessTokenTtlSeconds: 0.4 });
    const { accessToken, expiresAt } = server.issue();
    expect((await callApi(server, '/api/me', accessToken)).status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, expiresAt! - Date.now() + 20));
    const expired = await callApi(server, '/api/me', accessToken);
    expect(expired.status).toBe(401);
    expect(expired.headers.get('www-authenticate')).toContain('error_description="The access token expired"');
  });

  it('refuses every access token issued before revokeAccessTokens(), but not later ones', async () => {
    const server = await start();
    const signIn = server.issue();
    const refreshed = await refreshWith(server, signIn.refreshToken!);
    server.revokeAccessTokens();

    for (const token of [signIn.accessToken, String(refreshed.json?.access_token)]) {
      const response = await callApi(server, '/api/me', token);
      expect(response.status).toBe(401);
      expect(response.headers.get('www-authenticate')).toContain('error_description="The access token was revoked"');
    }
    // The refresh token survives: a refresh gives a working access token.
    const after = await refreshWith(server, signIn.refreshToken!);
    expect((await callApi(server, '/api/me', String(after.json?.access_token))).status).toBe(200);
  });

  it('checks the token after ?delayMs, so a token revoked during the wait gets a late 401', async () => {
    const server = await start();
    const { accessToken } = server.issue();
    const startedAt = Date.now();
    const late = callApi(server, '/api/slow?delayMs=300', accessToken);
    await waitUntil(() => server.stats().apiRequests === 1);
    server.revokeAccessTokens();
    const response = await late;
    expect(response.status).toBe(401);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(290);
  });

  it('answers a valid token after ?delayMs with 200', async () => {
    const server = await start();
    const startedAt = Date.now();
    const response = await callApi(server, '/api/slow?delayMs=150', server.issue().accessToken);
    expect(response.status).toBe(200);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(140);
  });

  it('answers 400 to a delayMs that is not an integer from 0 to 30000', async () => {
    const server = await start();
    const { accessToken } = server.issue();
    for (const value of ['30001', '-1', 'abc', '1.5', '999999']) {
      expect((await callApi(server, `/api/me?delayMs=${value}`, accessToken)).status).toBe(400);
    }
  });

  it('close() does not wait for a request parked in ?delayMs', async () => {
    const server = await start();
    const pending = callApi(server, '/api/slow?delayMs=30000', server.issue().accessToken).then(
      () => 'answered',
      () => 'failed',
    );
    await waitUntil(() => server.stats().apiRequests === 1);
    const closingStarted = Date.now();
    await server.close();
    expect(Date.now() - closingStarted).toBeLessThan(1000);
    expect(await pending).toBe('failed');
  });

  it('answers /api/forbidden with 403 insufficient_scope to a valid token', async () => {
    const server = await start();
    const response = await callApi(server, '/api/forbidden', server.issue().accessToken);
    expect(response.status).toBe(403);
    expect(response.headers.get('www-authenticate')).toBe(
      'Bearer realm="tokenrelay-testing", error="insufficient_scope", scope="admin"',
    );
  });

  it('answers /api/dpop with a 401 DPoP nonce challenge and a DPoP-Nonce header', async () => {
    const server = await start();
    const response = await callApi(server, '/api/dpop', server.issue().accessToken);
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toMatch(/^DPoP algs="ES256", error="use_dpop_nonce"/);
    expect(response.headers.get('dpop-nonce')).toMatch(/^[A-Za-z0-9_-]+$/);
  });

  it('answers 404 outside /api/ and does not count it as an API request', async () => {
    const server = await start();
    const response = await callApi(server, '/elsewhere', server.issue().accessToken);
    expect(response.status).toBe(404);
    expect(server.stats().apiRequests).toBe(0);
  });
});

describe('redirect route', () => {
  it('answers /redirect with the status and a Location to a path or a loopback URL, and refuses anything else', async () => {
    const server = await start();
    const answer = (query: string) => fetch(`${server.url}/redirect?${query}`, { redirect: 'manual' });

    const toPath = await answer('to=/api/items');
    const toLoopback = await answer(`status=307&to=${encodeURIComponent('http://127.0.0.1:1/x')}`);

    expect([toPath.status, toPath.headers.get('location')]).toEqual([302, `${server.url}/api/items`]);
    expect([toLoopback.status, toLoopback.headers.get('location')]).toEqual([307, 'http://127.0.0.1:1/x']);
    expect((await answer(`to=${encodeURIComponent('https://example.com/')}`)).status).toBe(400);
    expect((await answer('status=200&to=/api/items')).status).toBe(400);
  });

  it('records the bearer a token request carried, so a leak to the token endpoint shows', async () => {
    const server = await start();
    await fetch(server.tokenEndpoint, { method: 'POST', headers: { authorization: 'Bearer leaked' } });

    expect(server.stats().tokenRequestLog.map((entry) => entry.accessToken)).toEqual(['leaked']);
  });
});

describe('CORS', () => {
  it('answers a preflight on any path with 204 and the allowed headers', async () => {
    const server = await start();
    for (const path of ['/api/items', '/oauth/token']) {
      const response = await fetch(server.url + path, {
        method: 'OPTIONS',
        headers: {
          origin: 'http://localhost:5173',
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'authorization, content-type',
        },
      });
      expect(response.status).toBe(204);
      expect(response.headers.get('access-control-allow-origin')).toBe('*');
      expect(response.headers.get('access-control-allow-headers')).toBe('authorization, content-type, dpop');
      expect(response.headers.get('access-control-allow-methods')).toContain('POST');
    }
    expect(server.stats()).toMatchObject({ apiRequests: 0, tokenRequests: 0 });
  });

  it('lets browsers read WWW-Authenticate on every response', async () => {
    const server = await start();
    const response = await callApi(server, '/api/me');
    expect(response.headers.get('access-control-allow-origin')).toBe('*');
    expect(response.headers.get('access-control-expose-headers')).toContain('www-authenticate');
  });
});

describe('API stats', () => {
  it('counts requests, 200s and 401s and logs which token each request carried', async () => {
    const server = await start();
    const { accessToken } = server.issue();
    await callApi(server, '/api/a', accessToken);
    await callApi(server, '/api/b');
    await callApi(server, '/api/c', 'bogus');
    await callApi(server, '/api/forbidden', accessToken);

    const stats = server.stats();
    expect(stats).toMatchObject({ apiRequests: 4, apiOk: 1, api401: 2 });
    expect(stats.apiRequestLog.map(({ method, path, accessToken: token, status }) => ({ method, path, token, status }))).toEqual([
      { method: 'GET', path: '/api/a', token: accessToken, status: 200 },
      { method: 'GET', path: '/api/b', token: undefined, status: 401 },
      { method: 'GET', path: '/api/c', token: 'bogus', status: 401 },
      { method: 'GET', path: '/api/forbidden', token: accessToken, status: 403 },
    ]);
  });
});
