/*
 * DPoP (RFC 9449) interop with a real authorization server: oidc-provider with DPoP-bound tokens
 * required of a public client, nonces required of every proof and refresh-token rotation on. A real
 * authorization-code login whose code exchange carries a proof (so the refresh token is bound to the
 * key), then @tokenrelay/dpop + the manager + the fetch door against the provider and a resource
 * server that checks each proof with jose (`ath`, `cnf.jkt` from introspection, its own nonce).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, createTokenManager, refreshTokenGrant, type TokenSet } from '@tokenrelay/core';
import { fileStore } from '@tokenrelay/core/node';
import { createDpop, sessionDpopKey } from '@tokenrelay/dpop';
import { withTokenRelay } from '@tokenrelay/fetch';
import { loopbackOnlyFetch } from '@tokenrelay/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startDpopResource, type DpopResource } from './helpers/dpop-resource.js';
import { dpopClient, startOidcServer, type OidcServer } from './helpers/oidc-server.js';
import { burst, disposeWorkers, startWorkers, stopWorkers } from './helpers/worker-pool.js';

/** Whole seconds (the provider's unit). Long enough that a fresh token outlives a replay on a busy machine. */
const accessTokenTtlSeconds = 3;
const testTimeoutMs = 60_000;

let server: OidcServer;
let resource: DpopResource;
let directory: string;

beforeAll(async () => {
  server = await startOidcServer({ accessTokenTtlSeconds });
  resource = await startDpopResource(async (accessToken) => {
    const { active, cnf } = await server.introspect(accessToken);
    return { active: active === true, jkt: typeof cnf?.jkt === 'string' ? cnf.jkt : undefined };
  });
  directory = await mkdtemp(join(tmpdir(), 'tokenrelay-dpop-interop-'));
});

afterEach(stopWorkers);

afterAll(async () => {
  await disposeWorkers();
  await Promise.all([resource?.close(), server?.close()]);
  if (directory) await rm(directory, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One request that left through the session's fetch: what the servers received. */
interface SentRequest {
  readonly url: string;
  readonly authorization: string | null;
  readonly proof: string | null;
  readonly refreshToken: string | null;
  readonly status: number;
}

/** A fetch that records every request (proofs included) before it goes to loopback. */
function recordingFetch(sent: SentRequest[]): typeof fetch {
  const send = loopbackOnlyFetch();
  return async (input, init) => {
    const request = new Request(input, init);
    const body = init?.body instanceof URLSearchParams ? init.body : new URLSearchParams(typeof init?.body === 'string' ? init.body : '');
    const response = await send(input, init);
    sent.push({
      url: request.url,
      authorization: request.headers.get('authorization'),
      proof: request.headers.get('dpop'),
      refreshToken: body.get('refresh_token'),
      status: response.status,
    });
    return response;
  };
}

/** A signed-in DPoP session in this process: the code exchange, every refresh and every API call go through dpop.fetch. */
async function signInDpop() {
  const sent: SentRequest[] = [];
  const dpop = createDpop({ fetch: recordingFetch(sent) });
  const signedIn = await server.signIn(dpopClient, dpop.fetch);
  const manager = createTokenManager({
    tokens: signedIn,
    refresh: refreshTokenGrant({ tokenEndpoint: server.tokenEndpoint, clientId: dpopClient.clientId, fetch: dpop.fetch }),
  });
  const api = withTokenRelay(dpop.fetch, manager, { origins: [resource.url] });
  return { dpop, signedIn, manager, api, sent };
}

/** The refresh tokens the provider saw presented with a refresh_token grant, with its answers, since `start`. */
const refreshesSince = (start: number) =>
  server.grants.slice(start).filter((grant) => grant.grantType === 'refresh_token');

describe('DPoP against oidc-provider (nonces required, rotation on)', () => {
  it(
    'binds the sign-in to the key: DPoP tokens with cnf.jkt, and the refresh token is refused with another key',
    async () => {
      const { dpop, signedIn, manager } = await signInDpop();
      expect(signedIn.tokenType).toBe('DPoP');
      expect((await server.introspect(signedIn.accessToken)).cnf).toEqual({ jkt: await dpop.thumbprint() });

      const thief = createDpop({ fetch: loopbackOnlyFetch() });
      const stolen = refreshTokenGrant({ tokenEndpoint: server.tokenEndpoint, clientId: dpopClient.clientId, fetch: thief.fetch });
      await expect(stolen({ tokens: signedIn, signal: new AbortController().signal })).rejects.toMatchObject({
        code: ErrorCode.SESSION_EXPIRED,
        oauthError: 'invalid_grant',
      });

      // The holder of the key still refreshes: the thief's attempt spent nothing.
      const refreshed = await manager.refresh();
      expect(refreshed.tokenType).toBe('DPoP');
      expect(refreshed.refreshToken).not.toBe(signedIn.refreshToken);
    },
    testTimeoutMs,
  );

  it(
    'after expiry, two processes sharing the session and its key refresh once for all their concurrent requests',
    async () => {
      const path = join(directory, 'two-processes', 'session.json');
      // The signing-in process: its key goes into the store with the tokens, for every process to sign with.
      const signingIn = createTokenManager({
        store: fileStore(path, { watch: false }),
        refresh: () => Promise.reject(new Error('the signing-in process never refreshes')),
      });
      const key = sessionDpopKey(signingIn);
      const dpop = createDpop({ key, fetch: loopbackOnlyFetch() });
      const signedIn: TokenSet = await server.signIn(dpopClient, dpop.fetch);
      await signingIn.setTokens(await key.attachTo(signedIn));
      const thumbprint = await dpop.thumbprint();

      const workers = await startWorkers(2, {
        apiUrl: resource.url,
        tokenEndpoint: server.tokenEndpoint,
        clientId: dpopClient.clientId,
        clientSecret: '',
        store: { kind: 'file', path },
        dpop: true,
      });
      await sleep(Math.max(0, (signedIn.expiresAt ?? 0) - Date.now()) + 200);
      const grantsStart = server.grants.length;
      const requestsStart = resource.requests.length;

      const outcomes = await burst(workers, 1, 5);

      expect(outcomes).toEqual([Array(5).fill('200'), Array(5).fill('200')]);
      // One refresh for ten requests in two processes; no real refresh token was ever refused (a nonce
      // probe presents a stand-in token).
      const refreshes = refreshesSince(grantsStart);
      expect(refreshes.filter((grant) => grant.error === undefined)).toEqual([
        { grantType: 'refresh_token', refreshToken: signedIn.refreshToken, error: undefined },
      ]);
      expect(refreshes.filter((grant) => grant.error !== undefined && grant.refreshToken === signedIn.refreshToken)).toEqual([]);
      const stored = (await fileStore(path, { watch: false }).get())?.tokens;
      expect(stored?.refreshToken).not.toBe(signedIn.refreshToken);
      expect((await server.introspect(stored?.accessToken ?? '')).cnf).toEqual({ jkt: thumbprint });
      const answered = resource.requests.slice(requestsStart).filter((request) => request.status === 200);
      expect(answered).toHaveLength(10);
      expect(new Set(answered.map((request) => request.accessToken))).toEqual(new Set([stored?.accessToken]));
    },
    testTimeoutMs,
  );

  it(
    'a nonce rotated mid-session: each server is retried once with its new nonce, and no refresh token is spent on the refusal',
    async () => {
      const { api, manager, sent } = await signInDpop();
      const before = await manager.refresh();
      expect((await api(`${resource.url}/api/me`)).status).toBe(200);

      server.rotateDpopNonceSecret();
      resource.rotateNonce();
      const grantsStart = server.grants.length;
      const sentStart = sent.length;

      expect((await api(`${resource.url}/api/me`)).status).toBe(200);
      const after = await manager.refresh();

      expect(after.refreshToken).not.toBe(before.refreshToken);
      // The provider refused the stale nonce before it looked at the refresh token; the retry used the same one.
      expect(refreshesSince(grantsStart)).toEqual([
        { grantType: 'refresh_token', refreshToken: before.refreshToken, error: 'use_dpop_nonce' },
        { grantType: 'refresh_token', refreshToken: before.refreshToken, error: undefined },
      ]);
      expect(sent.slice(sentStart).map((request) => [new URL(request.url).origin, request.status])).toEqual([
        [resource.url, 401],
        [resource.url, 200],
        [server.issuer, 400],
        [server.issuer, 200],
      ]);
      expect(resource.requests.at(-2)).toMatchObject({ status: 401, error: 'use_dpop_nonce' });
    },
    testTimeoutMs,
  );

  it(
    'a replayed proof is refused by the provider (the refresh token survives) and by the resource',
    async () => {
      const { api, manager, sent } = await signInDpop();
      const refreshed = await manager.refresh();
      const tokenProof = [...sent].reverse().find((request) => request.refreshToken !== null && request.status === 200)?.proof;
      expect(tokenProof).toBeTruthy();

      // Someone replays the last refresh's proof with the current refresh token.
      const grantsStart = server.grants.length;
      const replayed = await fetch(server.tokenEndpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', dpop: tokenProof ?? '' },
        body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshed.refreshToken ?? '', client_id: dpopClient.clientId }),
      });
      expect(replayed.status).toBe(400);
      expect(refreshesSince(grantsStart)).toEqual([{ grantType: 'refresh_token', refreshToken: refreshed.refreshToken, error: 'invalid_grant' }]);
      expect((await manager.refresh()).refreshToken).not.toBe(refreshed.refreshToken);

      expect((await api(`${resource.url}/api/me`)).status).toBe(200);
      const apiRequest = [...sent].reverse().find((request) => request.url.startsWith(resource.url) && request.status === 200);
      const replayedApi = await fetch(`${resource.url}/api/me`, {
        headers: { authorization: apiRequest?.authorization ?? '', dpop: apiRequest?.proof ?? '' },
      });
      expect(replayedApi.status).toBe(401);
      expect(resource.requests.at(-1)).toMatchObject({ status: 401, error: 'invalid_dpop_proof', description: 'jti replayed' });
    },
    testTimeoutMs,
  );

  it(
    'the resource checks ath and the key binding: a proof for another token, or from another key, is refused',
    async () => {
      const { dpop, manager, api } = await signInDpop();
      expect((await api(`${resource.url}/api/me`)).status).toBe(200);
      const { accessToken } = (await manager.getTokens()) ?? { accessToken: '' };
      const url = `${resource.url}/api/me`;

      const otherAth = await fetch(url, { headers: { authorization: `DPoP ${accessToken}`, dpop: await dpop.proof('GET', url, 'another token') } });
      expect(otherAth.status).toBe(401);
      expect(resource.requests.at(-1)).toMatchObject({ error: 'invalid_dpop_proof', description: 'ath mismatch' });

      const thief = createDpop({ fetch: loopbackOnlyFetch() });
      // thief.fetch learns the resource's nonce from its first refusal and retries, as any client would.
      expect((await thief.fetch(url, { headers: { authorization: `DPoP ${accessToken}` } })).status).toBe(401);
      expect(resource.requests.at(-1)).toMatchObject({ error: 'invalid_token', description: 'the access token is not bound to the proof key' });
    },
    testTimeoutMs,
  );
});
