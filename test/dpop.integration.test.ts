/*
 * @tokenrelay/dpop through the doors (fetch, axios on its http and fetch adapters, undici's interceptor;
 * got, and undici without `dpop`, which carry no proofs, refuse a DPoP-bound session) against the testing
 * server's DPoP mode on loopback: bound tokens, nonces, refresh on expiry, replayed proofs refused.
 */
import { attachDpop, attachTokenRelay } from '@tokenrelay/axios';
import { ErrorCode, createTokenManager, findTokenRelayError } from '@tokenrelay/core';
import { createDpop } from '@tokenrelay/dpop';
import { withTokenRelay } from '@tokenrelay/fetch';
import { tokenRelayHooks } from '@tokenrelay/got';
import { startOAuthServer, type OAuthServer } from '@tokenrelay/testing';
import { tokenRelayInterceptor } from '@tokenrelay/undici';
import axios from 'axios';
import got from 'got';
import { Agent, interceptors, request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultClientGrant } from './helpers/default-client-grant.js';

let server: OAuthServer | undefined;

afterEach(async () => {
  await server?.close();
});

/** A DPoP-bound session: the key, the manager refreshing through dpop.fetch, and the server. */
async function signedIn() {
  server = await startOAuthServer({ rotateRefreshTokens: true, reuseDetection: true, dpop: true });
  const dpop = createDpop();
  const manager = createTokenManager({
    tokens: server.issue({ dpopJkt: await dpop.thumbprint() }),
    refresh: defaultClientGrant(server, { fetch: dpop.fetch }),
  });
  return { server, dpop, manager };
}

describe('@tokenrelay/dpop with the testing server in DPoP mode', () => {
  it('sends Authorization: DPoP with a proof through the fetch door, and refreshes once for concurrent requests after expiry', async () => {
    const { server, dpop, manager } = await signedIn();
    const api = withTokenRelay(dpop.fetch, manager, { origins: [server.url] });

    expect((await api(`${server.url}/api/me`)).status).toBe(200);
    server.revokeAccessTokens();
    const statuses = await Promise.all(Array.from({ length: 10 }, async (_, index) => (await api(`${server.url}/api/item-${index}`)).status));

    expect(statuses).toEqual(Array(10).fill(200));
    const refreshes = server.stats().tokenRequestLog.filter((entry) => entry.params.refresh_token !== 'tokenrelay-dpop-nonce-probe');
    expect(refreshes.map((entry) => entry.status)).toEqual([200]);
    expect(await manager.getTokens()).toMatchObject({ tokenType: 'DPoP' });
  });

  it('carries proofs through axios on its fetch adapter', async () => {
    const { server, dpop, manager } = await signedIn();
    const api = axios.create({ baseURL: server.url, adapter: 'fetch', env: { fetch: dpop.fetch } });
    attachTokenRelay(api, manager);

    expect((await api.get('/api/me')).status).toBe(200);
    server.rotateDpopNonce();
    server.revokeAccessTokens();
    expect((await api.post('/api/items', { name: 'x' })).status).toBe(200);
    expect(server.stats().apiRequestLog.filter((entry) => entry.status === 200).every((entry) => entry.dpopJkt !== undefined)).toBe(true);
  });

  for (const order of ['attachTokenRelay then attachDpop', 'attachDpop then attachTokenRelay']) {
    it(`carries proofs through axios on Node's http adapter (${order}): a nonce challenge is retried, and the replay after a refresh carries a new proof`, async () => {
      const { server, dpop, manager } = await signedIn();
      const api = axios.create({ baseURL: server.url, adapter: 'http' });
      if (order.startsWith('attachTokenRelay')) {
        attachTokenRelay(api, manager);
        attachDpop(api, dpop);
      } else {
        attachDpop(api, dpop);
        attachTokenRelay(api, manager);
      }
      const before = await manager.getAccessToken();

      expect((await api.get('/api/me')).status).toBe(200);
      server.rotateDpopNonce();
      server.revokeAccessTokens();
      expect((await api.post('/api/items', { name: 'x' })).status).toBe(200);

      const stats = server.stats();
      const posts = stats.apiRequestLog.filter((entry) => entry.path === '/api/items');
      // The stale nonce (401 use_dpop_nonce, retried with the new one), the revoked token (401), the replay.
      expect(posts.map((entry) => entry.status)).toEqual([401, 401, 200]);
      expect(posts[2]?.accessToken).not.toBe(before);
      expect(stats.apiRequestLog.filter((entry) => entry.status === 200).every((entry) => entry.dpopJkt === posts[2]?.dpopJkt)).toBe(true);
      expect(posts[2]?.dpopJkt).toBe(await dpop.thumbprint());
      expect(stats.dpopReplaysRefused).toBe(0);
      expect(stats.tokenRequestLog.filter((entry) => entry.params.refresh_token !== 'tokenrelay-dpop-nonce-probe').map((entry) => entry.status)).toEqual([200]);
    });
  }

  it('stops signing when attachDpop is detached: the API refuses the DPoP token without a proof', async () => {
    const { server, dpop, manager } = await signedIn();
    const api = axios.create({ baseURL: server.url, adapter: 'http', validateStatus: () => true });
    attachTokenRelay(api, manager);
    const detach = attachDpop(api, dpop);

    expect((await api.get('/api/me')).status).toBe(200);
    detach();
    detach();
    const unsigned = await api.get('/api/me');
    expect(unsigned.status).toBe(401);
    expect(String(unsigned.headers['www-authenticate'])).toMatch(/DPoP/);
  });

  it('has a replayed proof refused by the API', async () => {
    const { server, dpop, manager } = await signedIn();
    const accessToken = await manager.getAccessToken();
    // A first request teaches the nonce; then one proof is sent twice.
    await withTokenRelay(dpop.fetch, manager, { origins: [server.url] })(`${server.url}/api/me`);
    const proof = await dpop.proof('GET', `${server.url}/api/me`, accessToken);
    const send = () => fetch(`${server.url}/api/me`, { headers: { authorization: `DPoP ${accessToken}`, dpop: proof } });

    expect((await send()).status).toBe(200);
    const replay = await send();
    expect(replay.status).toBe(401);
    expect(replay.headers.get('www-authenticate')).toMatch(/invalid_dpop_proof/);
  });

  it('carries proofs through the undici interceptor given dpop: a nonce challenge is retried, and the replay after a refresh carries a new proof', async () => {
    const { server, dpop, manager } = await signedIn();
    const dispatcher = new Agent().compose(tokenRelayInterceptor(manager, { origins: [server.url], dpop }));
    const before = await manager.getAccessToken();

    expect((await request(`${server.url}/api/me`, { dispatcher })).statusCode).toBe(200);
    server.rotateDpopNonce();
    server.revokeAccessTokens();
    const posted = await request(`${server.url}/api/items`, { dispatcher, method: 'POST', body: '{"name":"x"}', headers: { 'content-type': 'application/json' } });
    expect(posted.statusCode).toBe(200);
    await posted.body.text();
    // Node's own fetch through the same dispatcher is signed too.
    expect((await fetch(`${server.url}/api/me`, { dispatcher } as RequestInit)).status).toBe(200);

    const stats = server.stats();
    const posts = stats.apiRequestLog.filter((entry) => entry.path === '/api/items');
    // The stale nonce (401 use_dpop_nonce, retried with the new one), the revoked token (401), the replay.
    expect(posts.map((entry) => entry.status)).toEqual([401, 401, 200]);
    expect(posts[2]?.accessToken).not.toBe(before);
    expect(stats.apiRequestLog.at(-1)).toMatchObject({ path: '/api/me', status: 200, accessToken: posts[2]?.accessToken });
    expect(posts[2]?.dpopJkt).toBe(await dpop.thumbprint());
    expect(stats.dpopReplaysRefused).toBe(0);
    expect(stats.tokenRequestLog.filter((entry) => entry.params.refresh_token !== 'tokenrelay-dpop-nonce-probe').map((entry) => entry.status)).toEqual([200]);
    await dispatcher.close();
  });

  it('signs every hop of a redirect within the API anew through the doors that see the hops: fetch outside a browser, undici with the redirect interceptor after it', async () => {
    const { server, dpop, manager } = await signedIn();
    const api = withTokenRelay(dpop.fetch, manager, { origins: [server.url] });
    const dispatcher = new Agent().compose(tokenRelayInterceptor(manager, { origins: [server.url], dpop }), interceptors.redirect({ maxRedirections: 3 }));

    const viaFetch = await api(`${server.url}/redirect?to=/api/items`);
    const viaUndici = await request(`${server.url}/redirect?status=307&to=/api/items`, { dispatcher });
    await viaUndici.body.dump();

    expect([viaFetch.status, viaUndici.statusCode]).toEqual([200, 200]);
    expect(server.stats().dpopProofsRefused).toBe(0);
    await dispatcher.close();
  });

  it('has the undici interceptor without dpop refuse a DPoP-bound session with a CONFIGURATION_ERROR naming the doors that carry proofs, before the API sees the token', async () => {
    const { server, manager } = await signedIn();
    const dispatcher = new Agent().compose(tokenRelayInterceptor(manager, { origins: [server.url] }));

    const failure: unknown = await fetch(`${server.url}/api/me`, { dispatcher } as RequestInit).catch((error: unknown) => error);

    const error = findTokenRelayError(failure);
    expect(error?.code).toBe(ErrorCode.CONFIGURATION_ERROR);
    expect(error?.message).toMatch(/tokenRelayInterceptor sends no DPoP proofs.*withTokenRelay\(dpop\.fetch, manager\).*attachDpop.*\{ origins, dpop \}/);
    expect(server.stats().apiRequests).toBe(0);
    await dispatcher.close();
  });

  it('has the got hooks refuse a DPoP-bound session with a CONFIGURATION_ERROR naming the doors that carry proofs, before the API sees the token', async () => {
    const { server, manager } = await signedIn();
    const api = got.extend({ prefixUrl: server.url, hooks: tokenRelayHooks(manager, { origins: [server.url] }), retry: { limit: 0 } });

    const failure: unknown = await api.get('api/me').catch((error: unknown) => error);

    const error = findTokenRelayError(failure);
    expect(error?.code).toBe(ErrorCode.CONFIGURATION_ERROR);
    expect(error?.message).toMatch(/tokenRelayHooks sends no DPoP proofs.*attachDpop/);
    expect(server.stats().apiRequests).toBe(0);
  });
});
