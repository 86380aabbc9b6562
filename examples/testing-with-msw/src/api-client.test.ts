/**
 * Testing an app that uses tokenrelay with vitest and msw. msw answers both the API and the token
 * endpoint, so the test checks what the app sends (the bearer, the refresh request) and how it
 * survives an expired token, without a network.
 */
import { installTokenRelay } from '@tokenrelay/fetch';
import { isTokenRelayError, type TokenSet } from '@tokenrelay/core';
import { http, HttpResponse } from 'msw';
import { setupServer } from 'msw/node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { apiOrigin, createApiClient, tokenEndpoint } from './api-client.js';

const server = setupServer();
// listen() replaces globalThis.fetch: everything that wraps the global fetch comes after it.
beforeAll(() => server.listen({ onUnhandledRequest: 'error' }));
afterEach(() => server.resetHandlers());
afterAll(() => server.close());

const signedIn = (accessToken = 'at-1'): TokenSet => ({
  accessToken,
  refreshToken: 'rt-1',
  expiresAt: Date.now() + 3_600_000,
});

/** The API: 200 for the one access token it currently accepts, 401 `invalid_token` for any other. */
function apiAccepting(validAccessToken: string, seen: string[] = []) {
  return http.get(`${apiOrigin}/me`, ({ request }) => {
    const authorization = request.headers.get('authorization') ?? '';
    seen.push(authorization);
    if (authorization !== `Bearer ${validAccessToken}`) {
      return new HttpResponse(null, { status: 401, headers: { 'www-authenticate': 'Bearer error="invalid_token"' } });
    }
    return HttpResponse.json({ name: 'Ada' });
  });
}

/** A token endpoint that answers the refresh of `rt-1` with rotated tokens, and counts its calls. */
function tokenEndpointRotating(calls: URLSearchParams[]) {
  return http.post(tokenEndpoint, async ({ request }) => {
    const form = new URLSearchParams(await request.text());
    calls.push(form);
    if (form.get('grant_type') !== 'refresh_token' || form.get('refresh_token') !== 'rt-1') {
      return HttpResponse.json({ error: 'invalid_grant' }, { status: 400 });
    }
    return HttpResponse.json({ access_token: 'at-2', token_type: 'Bearer', expires_in: 3600, refresh_token: 'rt-2' });
  });
}

describe('an API client kept authenticated by tokenrelay, tested with msw', () => {
  it('sends the access token as a bearer to the API', async () => {
    const seen: string[] = [];
    server.use(apiAccepting('at-1', seen));

    const client = createApiClient(signedIn('at-1'));

    await expect(client.getProfile()).resolves.toEqual({ name: 'Ada' });
    expect(seen).toEqual(['Bearer at-1']);
  });

  it('refreshes once for concurrent 401s and replays each request with the new token', async () => {
    const tokenCalls: URLSearchParams[] = [];
    server.use(apiAccepting('at-2'), tokenEndpointRotating(tokenCalls));

    const client = createApiClient(signedIn('at-1')); // the server no longer accepts at-1

    const profiles = await Promise.all(Array.from({ length: 5 }, () => client.getProfile()));

    expect(profiles).toEqual(Array.from({ length: 5 }, () => ({ name: 'Ada' })));
    expect(tokenCalls).toHaveLength(1);
    expect(tokenCalls[0]?.get('client_id')).toBe('my-app');
    expect(await client.manager.getTokens()).toMatchObject({ accessToken: 'at-2', refreshToken: 'rt-2' });
  });

  it('rejects with SESSION_EXPIRED and fires sessionExpired once when the refresh token is dead', async () => {
    server.use(
      apiAccepting('at-2'),
      http.post(tokenEndpoint, () => HttpResponse.json({ error: 'invalid_grant' }, { status: 400 })),
    );
    const client = createApiClient(signedIn('at-1'));
    let sessionExpiredEvents = 0;
    client.manager.on('sessionExpired', () => sessionExpiredEvents++);

    const results = await Promise.allSettled([client.getProfile(), client.getProfile()]);

    for (const result of results) {
      expect(result.status).toBe('rejected');
      const reason: unknown = result.status === 'rejected' ? result.reason : undefined;
      expect(isTokenRelayError(reason) && reason.code).toBe('SESSION_EXPIRED');
    }
    expect(sessionExpiredEvents).toBe(1);
  });

  it('puts the bearer on the global fetch when installTokenRelay runs after server.listen()', async () => {
    const seen: string[] = [];
    server.use(apiAccepting('at-1', seen));
    const { manager } = createApiClient(signedIn('at-1'));

    const restore = installTokenRelay(manager, { origins: [apiOrigin] });
    try {
      const response = await fetch(`${apiOrigin}/me`);
      expect(response.status).toBe(200);
    } finally {
      restore();
    }
    expect(seen).toEqual(['Bearer at-1']);
  });
});
