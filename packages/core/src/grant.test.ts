import { http, HttpResponse } from 'msw';
import { setupServer } from 'msw/node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { unwrappedFetch } from './adapter-kit.js';
import { ErrorCode } from './errors.js';
import { clientCredentialsGrant, jwtBearerGrant } from './credential-grants.js';
import { refreshTokenGrant } from './grant.js';
import { privateKeyJwt } from './private-key-jwt.js';
import { createTokenManager } from './manager.js';

const tokenEndpoint = 'https://auth.example.test/oauth/token';
const server = setupServer();
beforeAll(() => server.listen({ onUnhandledRequest: 'error' }));
afterEach(() => server.resetHandlers());
afterAll(() => server.close());

const tokens = { accessToken: 'old-access-token', refreshToken: 'old-refresh-token' };
const signal = new AbortController().signal;

/** Answers the token endpoint with `response` and records each request it receives. */
function answerWith(response: () => Response) {
  const requests: { headers: Headers; form: URLSearchParams }[] = [];
  server.use(
    http.post(tokenEndpoint, async ({ request }) => {
      requests.push({ headers: request.headers, form: new URLSearchParams(await request.text()) });
      return response();
    }),
  );
  return requests;
}

const success = (body: Record<string, unknown> = {}) => () =>
  HttpResponse.json({ access_token: 'new-access-token', token_type: 'Bearer', expires_in: 3600, ...body });

describe('the refresh request', () => {
  it('posts grant_type=refresh_token and authenticates with client_secret_basic, form-encoding id and secret first', async () => {
    const requests = answerWith(success());
    const grant = refreshTokenGrant({ tokenEndpoint, clientId: 'my app', clientSecret: 'p@ss:w+rd', scope: ['a', 'b'] });
    await grant({ tokens, signal });
    const [request] = requests;
    expect(request?.form.get('grant_type')).toBe('refresh_token');
    expect(request?.form.get('refresh_token')).toBe('old-refresh-token');
    expect(request?.form.get('scope')).toBe('a b');
    expect(request?.form.has('client_id')).toBe(false);
    expect(request?.headers.get('content-type')).toMatch(/^application\/x-www-form-urlencoded/);
    expect(request?.headers.get('authorization')).toBe(`Basic ${btoa('my+app:p%40ss%3Aw%2Brd')}`);
  });

  it('puts client_id and client_secret in the body with client_secret_post, never in the header', async () => {
    const requests = answerWith(success());
    await refreshTokenGrant({ tokenEndpoint, clientId: 'app', clientSecret: 's', clientAuthentication: 'client_secret_post' })({
      tokens,
      signal,
    });
    expect(requests[0]?.form.get('client_id')).toBe('app');
    expect(requests[0]?.form.get('client_secret')).toBe('s');
    expect(requests[0]?.headers.get('authorization')).toBeNull();
  });

  it('sends client_id alone for a public client and adds extra params', async () => {
    const requests = answerWith(success());
    await refreshTokenGrant({ tokenEndpoint, clientId: 'spa', extraParams: { format: 'json' } })({ tokens, signal });
    expect(requests[0]?.form.get('client_id')).toBe('spa');
    expect(requests[0]?.form.has('client_secret')).toBe(false);
    expect(requests[0]?.form.get('format')).toBe('json');
  });

  it('bypasses a tokenrelay fetch wrapper so the token call never passes through our interceptor', async () => {
    answerWith(success());
    const calls: string[] = [];
    const wrapper = Object.assign(
      async (input: RequestInfo | URL, init?: RequestInit) => {
        calls.push('wrapper');
        return fetch(input, init);
      },
      { [unwrappedFetch]: fetch },
    );
    await refreshTokenGrant({ tokenEndpoint, clientId: 'app', fetch: wrapper as typeof fetch })({ tokens, signal });
    expect(calls).toEqual([]);
  });

  it('fails with SESSION_EXPIRED without calling the endpoint when there is no refresh token', async () => {
    const requests = answerWith(success());
    const grant = refreshTokenGrant({ tokenEndpoint, clientId: 'app' });
    await expect(grant({ tokens: { accessToken: 'a' }, signal })).rejects.toMatchObject({ code: ErrorCode.SESSION_EXPIRED });
    expect(requests).toHaveLength(0);
  });
});

describe('the token response', () => {
  it('maps a standard response to a TokenSet, with expiresAt measured from before the request', async () => {
    answerWith(success({ refresh_token: 'rotated', scope: 'read', id_token: 'idt' }));
    const before = Date.now();
    const result = await refreshTokenGrant({ tokenEndpoint, clientId: 'app' })({ tokens, signal });
    expect(result).toMatchObject({ accessToken: 'new-access-token', refreshToken: 'rotated', scope: 'read', tokenType: 'Bearer' });
    expect(result.raw).toEqual({ id_token: 'idt' });
    expect(result.expiresAt).toBeGreaterThanOrEqual(before + 3_600_000);
    expect(result.expiresAt).toBeLessThanOrEqual(Date.now() + 3_600_000);
  });

  it.each([
    ['invalid_grant with 400', 400],
    ['invalid_grant with 401', 401],
    ['invalid_grant with 403 (Auth0)', 403],
  ])('treats %s as SESSION_EXPIRED', async (_name, status) => {
    answerWith(() => HttpResponse.json({ error: 'invalid_grant', error_description: 'expired' }, { status }));
    await expect(refreshTokenGrant({ tokenEndpoint, clientId: 'app' })({ tokens, signal })).rejects.toMatchObject({
      code: ErrorCode.SESSION_EXPIRED,
      status,
      oauthError: 'invalid_grant',
    });
  });

  it('reports invalid_client as a non-transient CREDENTIALS_REJECTED', async () => {
    answerWith(() => HttpResponse.json({ error: 'invalid_client' }, { status: 401 }));
    await expect(refreshTokenGrant({ tokenEndpoint, clientId: 'app' })({ tokens, signal })).rejects.toMatchObject({
      code: ErrorCode.CREDENTIALS_REJECTED,
      status: 401,
      oauthError: 'invalid_client',
      transient: false,
    });
  });

  it('marks 5xx and 429 as transient and reads Retry-After', async () => {
    answerWith(() => new HttpResponse('<html>busy</html>', { status: 503, headers: { 'content-type': 'text/html' } }));
    await expect(refreshTokenGrant({ tokenEndpoint, clientId: 'app' })({ tokens, signal })).rejects.toMatchObject({
      code: ErrorCode.TOKEN_ENDPOINT_ERROR,
      status: 503,
      transient: true,
    });
    answerWith(() => HttpResponse.json({ error: 'slow_down' }, { status: 429, headers: { 'retry-after': '3' } }));
    await expect(refreshTokenGrant({ tokenEndpoint, clientId: 'app' })({ tokens, signal })).rejects.toMatchObject({
      status: 429,
      transient: true,
      retryAfterMs: 3000,
    });
  });

  it.each([
    ['an HTML page', () => new HttpResponse('<html>login</html>', { headers: { 'content-type': 'text/html' } })],
    ['truncated JSON', () => new HttpResponse('{"access_token":"x', { headers: { 'content-type': 'application/json' } })],
    ['a JSON array', () => HttpResponse.json([{ access_token: 'x' }])],
    ['no access_token', () => HttpResponse.json({ token_type: 'Bearer' })],
    ['expires_in as a string', success({ expires_in: '3600' })],
    ['a negative expires_in', success({ expires_in: -5 })],
    ['an expires_in that overflows to Infinity', () =>
      new HttpResponse('{"access_token":"x","token_type":"Bearer","expires_in":1e400}', { headers: { 'content-type': 'application/json' } })],
    ['a token_type it cannot send (MAC)', success({ token_type: 'MAC' })],
    ['a numeric refresh_token', success({ refresh_token: 42 })],
    ['a body over the size limit', () => HttpResponse.json({ access_token: 'x', padding: 'y'.repeat(300_000) })],
    ['an access_token with a line break (it could never be sent in a header)', success({ access_token: 'abc\r\nX-Injected: 1' })],
    ['an access_token with a NUL', success({ access_token: 'abc\u0000def' })],
    ['an access_token outside Latin-1', success({ access_token: 'tökén→' })],
    ['an expires_in whose expiry overflows to Infinity (1e306)', success({ expires_in: 1e306 })],
  ])('rejects %s with INVALID_TOKEN_RESPONSE carrying the HTTP status', async (_name, response) => {
    answerWith(response);
    await expect(refreshTokenGrant({ tokenEndpoint, clientId: 'app' })({ tokens, signal })).rejects.toMatchObject({
      code: ErrorCode.INVALID_TOKEN_RESPONSE,
      status: 200,
    });
  });

  it('treats a 200 carrying an error field as an error response', async () => {
    answerWith(() => HttpResponse.json({ error: 'server_error' }));
    await expect(refreshTokenGrant({ tokenEndpoint, clientId: 'app' })({ tokens, signal })).rejects.toMatchObject({
      code: ErrorCode.TOKEN_ENDPOINT_ERROR,
      status: 200,
      oauthError: 'server_error',
    });
  });

  it('reports an unreachable endpoint as a transient NETWORK_ERROR', async () => {
    server.use(http.post(tokenEndpoint, () => HttpResponse.error()));
    await expect(refreshTokenGrant({ tokenEndpoint, clientId: 'app' })({ tokens, signal })).rejects.toMatchObject({
      code: ErrorCode.NETWORK_ERROR,
      transient: true,
    });
  });

  it('refuses to follow a redirect, so the refresh token cannot be re-posted to another host', async () => {
    answerWith(() => new HttpResponse(null, { status: 307, headers: { location: 'https://evil.example.test/steal' } }));
    await expect(refreshTokenGrant({ tokenEndpoint, clientId: 'app' })({ tokens, signal })).rejects.toMatchObject({
      code: ErrorCode.NETWORK_ERROR,
    });
  });

  it('stores nothing when the access token cannot go in an HTTP header or the expiry overflows', async () => {
    const manager = createTokenManager({ tokens, refresh: refreshTokenGrant({ tokenEndpoint, clientId: 'app' }) });
    for (const body of [{ access_token: 'bad\ntoken' }, { expires_in: 1e306 }]) {
      answerWith(success(body));
      await expect(manager.refresh()).rejects.toMatchObject({ code: ErrorCode.INVALID_TOKEN_RESPONSE });
      expect(await manager.getTokens()).toEqual(tokens);
    }
  });

  it('leaves the stored tokens untouched when the response is malformed', async () => {
    answerWith(() => new HttpResponse('<html/>', { headers: { 'content-type': 'text/html' } }));
    const manager = createTokenManager({ tokens, refresh: refreshTokenGrant({ tokenEndpoint, clientId: 'app' }) });
    await expect(manager.refresh()).rejects.toMatchObject({ code: ErrorCode.INVALID_TOKEN_RESPONSE });
    expect(await manager.getTokens()).toEqual(tokens);
  });
});

describe('secrets', () => {
  it('never puts a token or the client secret in an error message, toString() or enumerable property', async () => {
    answerWith(() =>
      HttpResponse.json(
        { error: 'invalid_grant', error_description: 'refresh token old-refresh-token for client with secret top-secret is revoked' },
        { status: 400 },
      ),
    );
    const error: Error = await refreshTokenGrant({ tokenEndpoint, clientId: 'app', clientSecret: 'top-secret' })({ tokens, signal }).then(
      () => new Error('expected a rejection'),
      (e: unknown) => e as Error,
    );
    const visible = [error.message, String(error), JSON.stringify(error), JSON.stringify(Object.entries(error))].join('\n');
    for (const secret of ['old-refresh-token', 'old-access-token', 'top-secret']) expect(visible).not.toContain(secret);
    expect(error.message).toContain('[redacted]');
  });
});

describe('secrets echoed in an encoded form', () => {
  const clientId = 'my app';
  const clientSecret = 'p@ss:w+rd/é?';
  const refreshToken = 'rt+/with=odd&chars';
  const encoded = (value: string) => new URLSearchParams([['', value]]).toString().slice(1);
  const base64 = (value: string) => Buffer.from(value, 'utf8').toString('base64');
  const credentials = `${encoded(clientId)}:${encoded(clientSecret)}`;
  const echoes: Array<[string, string]> = [
    ['the base64 of the Basic credentials', base64(credentials)],
    ['the whole Basic header', `Basic ${base64(credentials)}`],
    ['the form-encoded secret', encoded(clientSecret)],
    ['the percent-encoded secret', encodeURIComponent(clientSecret)],
    ['the percent-encoded secret in lower case', encodeURIComponent(clientSecret).toLowerCase()],
    ['the form-encoded refresh token', encoded(refreshToken)],
    ['the base64url refresh token', Buffer.from(refreshToken).toString('base64url')],
    ['the base64 secret', base64(clientSecret)],
  ];

  it.each(echoes)('keeps %s out of the message, cause, JSON and stack', async (_name, echo) => {
    answerWith(() => HttpResponse.json({ error: 'invalid_request', error_description: `received ${echo} which is wrong` }, { status: 400 }));
    const grant = refreshTokenGrant({ tokenEndpoint, clientId, clientSecret });
    const error = (await grant({ tokens: { accessToken: 'at', refreshToken }, signal }).catch((e: unknown) => e)) as Error;
    expect(error).toMatchObject({ code: ErrorCode.TOKEN_ENDPOINT_ERROR });
    const visible = [error.message, error.stack, String(error.cause), JSON.stringify(error)].join('\n');
    expect(visible).not.toContain(echo);
    expect(visible.toLowerCase()).not.toContain(echo.toLowerCase());
    expect(error.message).toContain('[redacted]');
  });
});

describe('configuration', () => {
  it.each([
    [{ tokenEndpoint: 'not a url', clientId: 'a' }, /absolute URL/],
    [{ tokenEndpoint: 'http://auth.example.test/token', clientId: 'a' }, /https/],
    [{ tokenEndpoint: 'https://user:pw@auth.example.test/token', clientId: 'a' }, /credentials/],
    [{ tokenEndpoint, clientId: '' }, /clientId/],
    [{ tokenEndpoint, clientId: 'a', clientAuthentication: 'client_secret_post' as const }, /needs a clientSecret/],
    [{ tokenEndpoint, clientId: 'a', clientSecret: 's', clientAuthentication: 'none' as const }, /"none"/],
    [{ tokenEndpoint, clientId: 'a', extraParams: { grant_type: 'password' } }, /grant_type/],
  ])('rejects invalid options with CONFIGURATION_ERROR (%#)', (options, message) => {
    expect(() => refreshTokenGrant(options)).toThrow(message);
    expect(() => refreshTokenGrant(options)).toThrow(expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR }));
  });

  it('accepts plain http on loopback only and exposes its token endpoint', () => {
    expect(refreshTokenGrant({ tokenEndpoint: 'http://127.0.0.1:8080/token', clientId: 'a' }).tokenEndpoint).toBe(
      'http://127.0.0.1:8080/token',
    );
    expect(refreshTokenGrant({ tokenEndpoint: 'http://localhost/token', clientId: 'a' }).tokenEndpoint).toBe(
      'http://localhost/token',
    );
  });
});

describe('configuration of the grants that need no refresh token', () => {
  const pkcs1 = '-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----';
  const jwt = { tokenEndpoint, clientId: 'c', subject: 's', audience: 'https://auth.example.test', privateKey: { kty: 'RSA', n: 'x', e: 'AQAB', d: 'y' } };
  it.each([
    ['plain http on a non-loopback host (client credentials)', () => clientCredentialsGrant({ tokenEndpoint: 'http://auth.example.test/token', clientId: 'c', clientSecret: 's' }), /https/],
    ['plain http on a non-loopback host (JWT bearer)', () => jwtBearerGrant({ ...jwt, tokenEndpoint: 'http://auth.example.test/token' }), /https/],
    ['client credentials without a secret or a key', () => clientCredentialsGrant({ tokenEndpoint, clientId: 'c' }), /must authenticate/],
    ["'private_key_jwt' without a privateKey", () => clientCredentialsGrant({ tokenEndpoint, clientId: 'c', clientAuthentication: 'private_key_jwt' }), /clientCredentialsGrant: clientAuthentication "private_key_jwt" needs a privateKey/],
    ['a privateKey with another method', () => refreshTokenGrant({ tokenEndpoint, clientId: 'c', clientAuthentication: 'none', privateKey: jwt.privateKey }), /refreshTokenGrant: privateKey is for clientAuthentication: 'private_key_jwt'/],
    ['a keyId without a privateKey', () => clientCredentialsGrant({ tokenEndpoint, clientId: 'c', clientSecret: 's', keyId: 'k' }), /clientCredentialsGrant: keyId is for clientAuthentication: 'private_key_jwt'/],
    ["'private_key_jwt' with a PKCS#1 PEM, the grant named", () => clientCredentialsGrant({ tokenEndpoint, clientId: 'c', clientAuthentication: 'private_key_jwt', privateKey: pkcs1 }), /clientCredentialsGrant: .*PKCS#8.*openssl pkcs8/],
    ['privateKeyJwt with a PKCS#1 PEM', () => privateKeyJwt({ privateKey: pkcs1 }), /PKCS#8.*openssl pkcs8/],
    ['a PKCS#1 PEM', () => jwtBearerGrant({ ...jwt, privateKey: pkcs1 }), /PKCS#8.*openssl pkcs8/],
    ['a PKCS#8 PEM whose body is not base64 (a truncated copy)', () => jwtBearerGrant({ ...jwt, privateKey: '-----BEGIN PRIVATE KEY-----\nMIIEv=Q\n-----END PRIVATE KEY-----' }), /not a PEM PKCS#8 private key/],
    ['a public JWK', () => jwtBearerGrant({ ...jwt, privateKey: { kty: 'RSA', n: 'x', e: 'AQAB' } }), /without "d"/],
    ['a JWK whose alg contradicts algorithm', () => jwtBearerGrant({ ...jwt, privateKey: { ...jwt.privateKey, alg: 'RS256' }, algorithm: 'ES256' }), /for RS256, not for ES256/],
    ['an unknown algorithm', () => jwtBearerGrant({ ...jwt, algorithm: 'HS256' as 'RS256' }), /RS256, ES256 or PS256/],
    ['a JWT bearer grant without a subject', () => jwtBearerGrant({ ...jwt, subject: '' }), /subject is required/],
  ])('refuses %s with CONFIGURATION_ERROR before anything is sent', (_name, make, message) => {
    const requests = answerWith(success());
    expect(make).toThrow(message);
    expect(make).toThrow(expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR }));
    expect(requests).toHaveLength(0);
  });

  it('never shows key material in the error for a key WebCrypto cannot import', async () => {
    const requests = answerWith(success());
    const privateKey = '-----BEGIN PRIVATE KEY-----\nTUlJQnNlY3JldGtleW1hdGVyaWFs\n-----END PRIVATE KEY-----';
    const error = (await jwtBearerGrant({ ...jwt, privateKey })({ tokens: undefined, signal }).catch((e: unknown) => e)) as Error;
    expect(error).toMatchObject({ code: ErrorCode.CONFIGURATION_ERROR });
    expect([error.message, error.stack, JSON.stringify(error)].join('\n')).not.toContain('TUlJQnNlY3JldGtleW1hdGVyaWFs');
    expect(requests).toHaveLength(0);
  });
});
