/*
 * Interop with a real authorization server: panva's oidc-provider (OpenID certified) on
 * 127.0.0.1, with refresh-token rotation on, for a client_secret_basic, a client_secret_post and a
 * public (PKCE) client. Each test signs in with a real authorization-code login, then lets the
 * access token expire and checks that tokenrelay's refreshTokenGrant, manager and fetch adapter
 * refresh, rotate, replay and give up exactly as documented against the provider's own rules.
 */
import { generateKeyPairSync } from 'node:crypto';
import { ErrorCode, createTokenManager, refreshTokenGrant, type TokenSet } from '@tokenrelay/core';
import { clientCredentialsGrant, privateKeyJwt } from '@tokenrelay/core/grants';
import { withTokenRelay } from '@tokenrelay/fetch';
import { loopbackOnlyFetch } from '@tokenrelay/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  machineClientPrivateKey,
  machineClients,
  oidcClients,
  startOidcServer,
  startProtectedResource,
  type OidcServer,
  type ProtectedResource,
} from './helpers/oidc-server.js';

/** Whole seconds (the provider's unit). Long enough that a fresh token outlives a replay on a busy machine. */
const accessTokenTtlSeconds = 3;
const testTimeoutMs = 30_000;

let server: OidcServer;
let resource: ProtectedResource;

// One provider for the file: every test signs in afresh, so each has a grant of its own.
beforeAll(async () => {
  server = await startOidcServer({ accessTokenTtlSeconds });
  resource = await startProtectedResource(server);
});

afterAll(async () => {
  await Promise.all([resource?.close(), server?.close()]);
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A session for `client`: the manager refreshes at the provider; the adapter sends bearers to the resource only. */
function connect(client: (typeof oidcClients)[number], tokens: TokenSet) {
  const presentedRefreshTokens: string[] = [];
  const tokenFetch: typeof fetch = async (input, init) => {
    presentedRefreshTokens.push(new URLSearchParams(String(init?.body)).get('refresh_token') ?? '');
    return loopbackOnlyFetch()(input, init);
  };
  const manager = createTokenManager({
    tokens,
    refresh: refreshTokenGrant({
      tokenEndpoint: server.tokenEndpoint,
      clientId: client.clientId,
      clientSecret: client.clientSecret,
      clientAuthentication: client.authMethod,
      fetch: tokenFetch,
    }),
  });
  const api = withTokenRelay(loopbackOnlyFetch(), manager, { origins: [resource.url] });
  return { manager, api, presentedRefreshTokens };
}

/** Waits (bounded) until the resource refuses `accessToken`: the provider now considers it expired. */
async function waitUntilExpired(accessToken: string): Promise<void> {
  const deadline = Date.now() + (accessTokenTtlSeconds + 3) * 1000;
  while (Date.now() < deadline) {
    const response = await fetch(`${resource.url}/api/probe`, { headers: { authorization: `Bearer ${accessToken}` } });
    if (response.status === 401) return;
    await sleep(200);
  }
  throw new Error(`the access token was still active after ${accessTokenTtlSeconds + 3} s`);
}

/** What the resource received since `start` with any of `accessTokens` (tests run concurrently: others' requests interleave). */
function requestsWith(start: number, ...accessTokens: Array<string | undefined>) {
  return resource.requests.slice(start).filter((entry) => accessTokens.includes(entry.accessToken));
}

// Concurrent: the expiry waits overlap, and the provider serves several sessions at once.
describe.concurrent.each(oidcClients)('against oidc-provider with a $authMethod client', (client) => {
  it(
    'refreshes an access token that expired unannounced on its 401, replays every waiting request once, and rotates the refresh token',
    async () => {
      const signedIn = await server.signIn(client);
      // No expiresAt: the manager learns of the expiry from the resource's 401 only.
      const { manager, api, presentedRefreshTokens } = connect(client, { ...signedIn, expiresAt: undefined });
      expect((await api(`${resource.url}/api/me`)).status).toBe(200);
      await waitUntilExpired(signedIn.accessToken);
      const logStart = resource.requests.length;

      const responses = await Promise.all(Array.from({ length: 5 }, (_, i) => api(`${resource.url}/api/items/${i}`)));

      expect(responses.map((response) => response.status)).toEqual([200, 200, 200, 200, 200]);
      expect(presentedRefreshTokens).toEqual([signedIn.refreshToken]);
      const refreshed = await manager.getTokens();
      expect(refreshed?.accessToken).not.toBe(signedIn.accessToken);
      expect(refreshed?.refreshToken).not.toBe(signedIn.refreshToken);
      expect(refreshed?.expiresAt).toBeGreaterThan(Date.now());
      // Each request went out once with the expired token (401) and once more with the new one (200).
      const log = requestsWith(logStart, signedIn.accessToken, refreshed?.accessToken);
      expect(log.filter((entry) => entry.accessToken === signedIn.accessToken)).toEqual(
        Array.from({ length: 5 }, () => ({ accessToken: signedIn.accessToken, status: 401 })),
      );
      expect(log.filter((entry) => entry.accessToken === refreshed?.accessToken)).toEqual(
        Array.from({ length: 5 }, () => ({ accessToken: refreshed?.accessToken, status: 200 })),
      );
    },
    testTimeoutMs,
  );

  it(
    'refreshes before sending once the announced expiry has passed, so the expired token is never sent',
    async () => {
      const signedIn = await server.signIn(client);
      const { manager, api, presentedRefreshTokens } = connect(client, signedIn);
      await sleep(Math.max(0, signedIn.expiresAt - Date.now()) + 50);
      const logStart = resource.requests.length;

      const responses = await Promise.all(Array.from({ length: 3 }, (_, i) => api(`${resource.url}/api/items/${i}`)));

      expect(responses.map((response) => response.status)).toEqual([200, 200, 200]);
      expect(presentedRefreshTokens).toEqual([signedIn.refreshToken]);
      const refreshed = await manager.getTokens();
      expect(requestsWith(logStart, signedIn.accessToken, refreshed?.accessToken)).toEqual(
        Array.from({ length: 3 }, () => ({ accessToken: refreshed?.accessToken, status: 200 })),
      );
    },
    testTimeoutMs,
  );

  it(
    'keeps only the newest refresh token: the provider refuses a rotated one, and its reuse revokes the whole grant',
    async () => {
      const signedIn = await server.signIn(client);
      const { manager, presentedRefreshTokens } = connect(client, signedIn);
      const first = await manager.refresh();
      const second = await manager.refresh();
      expect(presentedRefreshTokens).toEqual([signedIn.refreshToken, first.refreshToken]);
      expect(new Set([signedIn.refreshToken, first.refreshToken, second.refreshToken]).size).toBe(3);

      // Someone presents the first, already rotated, refresh token: the provider calls it reuse.
      expect(await server.rawRefresh(client, signedIn.refreshToken)).toEqual({ status: 400, error: 'invalid_grant' });

      // Reuse detection revoked the grant, the manager's newest refresh token included.
      await expect(manager.refresh()).rejects.toMatchObject({ code: ErrorCode.SESSION_EXPIRED, oauthError: 'invalid_grant' });
      expect(presentedRefreshTokens).toEqual([signedIn.refreshToken, first.refreshToken, second.refreshToken]);
    },
    testTimeoutMs,
  );

  it(
    'ends the session when the refresh token is revoked: one token call, every request rejects with SESSION_EXPIRED, sessionExpired fires once',
    async () => {
      const signedIn = await server.signIn(client);
      const { manager, api, presentedRefreshTokens } = connect(client, signedIn);
      const sessionExpiredErrors: unknown[] = [];
      manager.on('sessionExpired', (error) => sessionExpiredErrors.push(error));
      expect((await api(`${resource.url}/api/me`)).status).toBe(200);

      // Revoking the refresh token revokes its grant at the provider: the access token dies with it.
      await server.revoke(client, signedIn.refreshToken, 'refresh_token');
      const results = await Promise.allSettled(Array.from({ length: 3 }, (_, i) => api(`${resource.url}/api/items/${i}`)));

      for (const result of results) {
        // The request whose 401 started the refresh gets the token endpoint's error; one whose 401
        // came after it gets the manager's fail-fast error (same code, the first as its cause).
        expect(result).toMatchObject({ status: 'rejected', reason: { code: ErrorCode.SESSION_EXPIRED } });
        const { reason } = result as PromiseRejectedResult;
        const shown = `${String(reason)} ${JSON.stringify(reason)} ${String((reason as Error).cause ?? '')}`;
        expect(shown).not.toContain(signedIn.refreshToken);
        expect(shown).not.toContain(signedIn.accessToken);
      }
      expect(presentedRefreshTokens).toEqual([signedIn.refreshToken]);
      expect(sessionExpiredErrors).toEqual([expect.objectContaining({ oauthError: 'invalid_grant', status: 400 })]);

      // Later requests fail fast: no token call, nothing sent to the resource.
      const logStart = resource.requests.length;
      await expect(api(`${resource.url}/api/later`)).rejects.toMatchObject({ code: ErrorCode.SESSION_EXPIRED });
      expect(presentedRefreshTokens).toHaveLength(1);
      expect(requestsWith(logStart, signedIn.accessToken)).toEqual([]);
      expect(sessionExpiredErrors).toHaveLength(1);
    },
    testTimeoutMs,
  );
});

describe.concurrent.each(machineClients)('client credentials against oidc-provider with a $authMethod client', (client) => {
  const grantFor = (privateKey = machineClientPrivateKey) =>
    clientCredentialsGrant({
      tokenEndpoint: server.tokenEndpoint,
      clientId: client.clientId,
      ...(client.authMethod === 'private_key_jwt'
        ? { clientAuthentication: privateKeyJwt({ privateKey }) }
        : { clientSecret: client.clientSecret, clientAuthentication: client.authMethod }),
      fetch: loopbackOnlyFetch(),
    });

  it(
    'acquires a token on the first request with no sign-in, and the resource accepts it',
    async () => {
      const manager = createTokenManager({ refresh: grantFor() });
      expect(await manager.getTokens()).toBeUndefined();
      const api = withTokenRelay(loopbackOnlyFetch(), manager, { origins: [resource.url] });
      const responses = await Promise.all(Array.from({ length: 3 }, () => api(`${resource.url}/api/items`)));
      expect(responses.map((response) => response.status)).toEqual([200, 200, 200]);
      const tokens = await manager.getTokens();
      expect(tokens?.refreshToken).toBeUndefined();
      expect(requestsWith(0, tokens?.accessToken)).toHaveLength(3);
    },
    testTimeoutMs,
  );

  it(
    'reports refused credentials as CREDENTIALS_REJECTED, never transient',
    async () => {
      const wrong =
        client.authMethod === 'private_key_jwt'
          ? clientCredentialsGrant({
              tokenEndpoint: server.tokenEndpoint,
              clientId: client.clientId,
              clientAuthentication: privateKeyJwt({
                privateKey: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
              }),
              fetch: loopbackOnlyFetch(),
            })
          : clientCredentialsGrant({ tokenEndpoint: server.tokenEndpoint, clientId: client.clientId, clientSecret: 'not the secret', fetch: loopbackOnlyFetch() });
      await expect(wrong({ tokens: undefined, signal: new AbortController().signal })).rejects.toMatchObject({
        code: ErrorCode.CREDENTIALS_REJECTED,
        oauthError: 'invalid_client',
        transient: false,
      });
    },
    testTimeoutMs,
  );
});
