import { createHmac } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { attachTokenRelay } from '@tokenrelay/axios';
import { createTokenManager, type RefreshHandler, type TokenManager } from '@tokenrelay/core';
import { fileStore } from '@tokenrelay/core/node';
import {
  isSalesforceSessionExpired,
  jsforceRefreshFn,
  readSalesforceSession,
  salesforceRefreshGrant,
} from '@tokenrelay/salesforce';
import { salesforceFixtures, startOAuthServer, type OAuthServer, type OAuthServerOptions } from '@tokenrelay/testing';
import axios from 'axios';
import jsforce, { type Connection } from 'jsforce';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { connectedApp, startRejectingOrg, type RejectingOrg } from './helpers/salesforce.js';

const VERSION = '59.0';
const SOQL = 'SELECT Id, Name FROM Account LIMIT 1';
const closers: Array<() => Promise<void>> = [];

afterEach(async () => {
  await Promise.all(closers.splice(0).map((close) => close()));
});

async function startOrg(options: OAuthServerOptions = {}): Promise<OAuthServer> {
  const server = await startOAuthServer({ mode: 'salesforce', clients: [connectedApp], ...options });
  closers.push(() => server.close());
  return server;
}

async function startBrokenOrg(rejections?: number): Promise<RejectingOrg> {
  const org = await startRejectingOrg(rejections);
  closers.push(() => org.close());
  return org;
}

function grantFor(server: OAuthServer, options: { sessionTimeoutMs?: number } = {}): RefreshHandler {
  return salesforceRefreshGrant({ loginUrl: server.url, clientId: connectedApp.clientId, clientSecret: connectedApp.clientSecret, ...options });
}

/** A jsforce Connection on the manager's current session, refreshing through the manager. */
async function connectionOn(manager: TokenManager): Promise<Connection> {
  const tokens = await manager.getTokens();
  return new jsforce.Connection({
    instanceUrl: readSalesforceSession(tokens).instanceUrl,
    accessToken: tokens?.accessToken,
    refreshFn: jsforceRefreshFn(manager),
    version: VERSION,
  });
}

async function rejectionOf(promise: PromiseLike<unknown>): Promise<Error> {
  return promise.then(
    () => expect.unreachable('the call should have failed'),
    (error: unknown) => error as Error,
  );
}

describe('jsforceRefreshFn with real jsforce Connections', () => {
  it('recovers 50 concurrent queries on 3 connections after the session is revoked with exactly one token call', async () => {
    const server = await startOrg({ tokenEndpointLatencyMs: 100 });
    const manager = createTokenManager({ tokens: server.issue(), refresh: grantFor(server) });
    const connections = await Promise.all([1, 2, 3].map(() => connectionOn(manager)));
    const refreshEvents = connections.map((conn) => {
      const listener = vi.fn();
      conn.on('refresh', listener);
      return listener;
    });
    server.revokeAccessTokens();
    server.resetStats();

    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => connections[i % 3]!.query(SOQL)));

    expect(results.every((result) => result.records[0]?.Id === salesforceFixtures.account.Id)).toBe(true);
    const stats = server.stats();
    expect(stats).toMatchObject({ tokenRequests: 1, tokenSuccesses: 1, maxInFlightTokenRequests: 1, api401: 50, apiOk: 50 });
    const current = await manager.getTokens();
    for (const [index, conn] of connections.entries()) {
      expect(conn.accessToken).toBe(current?.accessToken);
      expect(conn.instanceUrl).toBe(server.url);
      // jsforce's own event still fires, once per connection, with a TokenResponse-shaped payload.
      expect(refreshEvents[index]).toHaveBeenCalledTimes(1);
      expect(refreshEvents[index]).toHaveBeenCalledWith(
        current?.accessToken,
        expect.objectContaining({ access_token: current?.accessToken, instance_url: server.url, token_type: 'Bearer' }),
      );
    }
    expect(stats.apiRequestLog.filter((entry) => entry.status === 200).every((entry) => entry.accessToken === current?.accessToken)).toBe(true);
  });

  it('recovers from 5 consecutive expiries with refresh token rotation, presenting each rotated refresh token once', async () => {
    const server = await startOrg({ rotateRefreshTokens: true, reuseDetection: true });
    const signIn = server.issue();
    const manager = createTokenManager({ tokens: signIn, refresh: grantFor(server) });
    const connections = await Promise.all([1, 2, 3].map(() => connectionOn(manager)));
    const refreshTokens = [signIn.refreshToken];

    for (let expiry = 1; expiry <= 5; expiry++) {
      server.revokeAccessTokens();
      const results = await Promise.all(Array.from({ length: 15 }, (_, i) => connections[i % 3]!.query(SOQL)));
      expect(results).toHaveLength(15);
      expect(server.stats().tokenRequests).toBe(expiry);
      refreshTokens.push((await manager.getTokens())?.refreshToken);
    }

    const stats = server.stats();
    expect(stats).toMatchObject({ tokenSuccesses: 5, refreshTokenReuses: 0, familiesRevoked: 0, tokenErrors: {} });
    expect(new Set(refreshTokens).size).toBe(6);
    // Each refresh presented the refresh token the previous one returned.
    expect(stats.tokenRequestLog.map((entry) => entry.params.refresh_token)).toEqual(refreshTokens.slice(0, 5));
  });

  it('contrast: plain jsforce with rotation on is locked out at its second refresh, because it drops the rotated refresh token', async () => {
    const server = await startOrg({ rotateRefreshTokens: true, reuseDetection: true });
    const signIn = server.issue();
    const conn = new jsforce.Connection({
      oauth2: { clientId: connectedApp.clientId, clientSecret: connectedApp.clientSecret, loginUrl: server.url },
      instanceUrl: server.url,
      accessToken: signIn.accessToken,
      refreshToken: signIn.refreshToken,
      version: VERSION,
    });

    server.revokeAccessTokens();
    await conn.query(SOQL); // first refresh: works, but the new refresh token is thrown away
    expect(conn.refreshToken).toBe(signIn.refreshToken);

    server.revokeAccessTokens();
    const error = await rejectionOf(conn.query(SOQL));
    expect(error.message).toBe('Unable to refresh session due to: expired access/refresh token');
    const stats = server.stats();
    expect(stats.tokenRequestLog.map((entry) => [entry.params.refresh_token, entry.status])).toEqual([
      [signIn.refreshToken, 200],
      [signIn.refreshToken, 400], // the retired token again: a reuse, so the server revokes the whole grant
    ]);
    expect(stats).toMatchObject({ refreshTokenReuses: 1, familiesRevoked: 1, tokenErrors: { invalid_grant: 1 } });
    // Locked out: the rotated refresh token jsforce never kept died with the family.
    expect((await rejectionOf(conn.query(SOQL))).message).toMatch(/^Unable to refresh session/);
  });

  it('gives a connection the token another client already refreshed, without a token call', async () => {
    const server = await startOrg();
    const manager = createTokenManager({ tokens: server.issue(), refresh: grantFor(server) });
    const conn = await connectionOn(manager);
    const api = axios.create({ baseURL: server.url, proxy: false });
    attachTokenRelay(api, manager, { shouldRefresh: isSalesforceSessionExpired });
    server.revokeAccessTokens();

    expect((await api.get(`/services/data/v${VERSION}/sobjects/Account/${salesforceFixtures.account.Id}`)).status).toBe(200);
    expect(server.stats().tokenRequests).toBe(1);
    expect((await conn.query(SOQL)).totalSize).toBe(1);

    expect(server.stats().tokenRequests).toBe(1);
    expect(conn.accessToken).toBe((await manager.getTokens())?.accessToken);
  });

  it('fails the query with the session-expired error once the refresh token is dead, and then fails fast', async () => {
    const server = await startOrg();
    const manager = createTokenManager({ tokens: server.issue(), refresh: grantFor(server) });
    const sessionExpired = vi.fn();
    manager.on('sessionExpired', sessionExpired);
    const conn = await connectionOn(manager);
    server.revokeRefreshTokens();

    const error = await rejectionOf(conn.query(SOQL));
    expect(error.message).toMatch(/^Unable to refresh session due to: Token endpoint answered HTTP 400 invalid_grant.*; refresh token refused; sign in again/);
    await rejectionOf(conn.query(SOQL));

    expect(server.stats().tokenRequests).toBe(1);
    expect(sessionExpired).toHaveBeenCalledTimes(1);
  });
});

describe('replays after a refresh are capped at once', () => {
  /** A manager that refreshes at the embedded server but whose sessions live on `org`, which may reject them. */
  function managerOnBrokenOrg(server: OAuthServer, org: RejectingOrg): TokenManager {
    const grant = grantFor(server);
    const pointToOrg = (raw: Record<string, unknown> | undefined) => ({ ...raw, instance_url: org.url });
    const signIn = server.issue();
    return createTokenManager({
      tokens: { ...signIn, raw: pointToOrg(signIn.raw) },
      refresh: async (context) => {
        const tokens = await grant(context);
        return { ...tokens, raw: pointToOrg(tokens.raw) };
      },
    });
  }

  it('makes one token call for a query the org keeps rejecting, and fails it instead of looping', async () => {
    const server = await startOrg();
    const org = await startBrokenOrg();
    const manager = managerOnBrokenOrg(server, org);
    const conn = await connectionOn(manager);
    const signInToken = conn.accessToken;

    const error = await rejectionOf(conn.query(SOQL));

    expect(error.message).toMatch(/^Unable to refresh session due to: Salesforce rejected the session just given by a refresh/);
    expect(server.stats().tokenRequests).toBe(1);
    // The query was sent with the old token, then replayed once with the new one.
    expect(org.requests.map((request) => request.accessToken)).toEqual([signInToken, (await manager.getTokens())?.accessToken]);
  });

  it('fails later queries on that connection without a token call until the org accepts the new token', async () => {
    const server = await startOrg();
    const org = await startBrokenOrg(4);
    const manager = managerOnBrokenOrg(server, org);
    const conn = await connectionOn(manager);

    await rejectionOf(conn.query(SOQL)); // rejected twice: with the old token, then on its replay
    await rejectionOf(conn.query(SOQL));
    await rejectionOf(conn.query(SOQL));
    expect(server.stats().tokenRequests).toBe(1);
    expect(org.requests).toHaveLength(4);

    // The org accepts the session from now on: the same token works, and nothing refreshes.
    expect((await conn.query(SOQL)).done).toBe(true);
    expect(server.stats().tokenRequests).toBe(1);
  });

  it('lets a refused connection take a newer token the manager got elsewhere, without a token call of its own', async () => {
    const server = await startOrg();
    const org = await startBrokenOrg(3);
    const manager = managerOnBrokenOrg(server, org);
    const conn = await connectionOn(manager);
    await rejectionOf(conn.query(SOQL));

    const newer = await manager.refresh(); // e.g. another client of the manager refreshed
    expect(server.stats().tokenRequests).toBe(2);
    expect((await conn.query(SOQL)).done).toBe(true);

    expect(server.stats().tokenRequests).toBe(2);
    expect(org.requests.at(-1)?.accessToken).toBe(newer.accessToken);
  });

  it('caps a burst of 20 concurrent queries on 2 connections at one token call', async () => {
    const server = await startOrg({ tokenEndpointLatencyMs: 50 });
    const org = await startBrokenOrg();
    const manager = managerOnBrokenOrg(server, org);
    const connections = await Promise.all([1, 2].map(() => connectionOn(manager)));

    const outcomes = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => connections[i % 2]!.query(SOQL)));

    expect(outcomes.every((outcome) => outcome.status === 'rejected')).toBe(true);
    expect(server.stats().tokenRequests).toBe(1);
    // No query was sent more than twice: jsforce's resends after its replay are refused before they go out.
    expect(org.requests.length).toBeLessThanOrEqual(20 * 2);
  });

  it('contrast: plain jsforce refreshes again after every rejected replay of the same query', async () => {
    const server = await startOrg();
    const org = await startBrokenOrg(6);
    const signIn = server.issue();
    const conn = new jsforce.Connection({
      oauth2: { clientId: connectedApp.clientId, clientSecret: connectedApp.clientSecret, loginUrl: server.url },
      instanceUrl: org.url,
      accessToken: signIn.accessToken,
      refreshToken: signIn.refreshToken,
      version: VERSION,
    });

    // The org rejects 6 times, then answers: one query costs jsforce 6 token calls (it would go on forever).
    await conn.query(SOQL);
    expect(server.stats().tokenRequests).toBe(6);
    expect(org.requests).toHaveLength(7);
  });
});

describe('salesforceRefreshGrant against the embedded org', () => {
  it('refreshes before the session timeout when sessionTimeoutMs is given, so the API sees no expired session', async () => {
    const server = await startOrg({ salesforceSessionTimeoutSeconds: 1 });
    const runWith = async (sessionTimeoutMs: number | undefined) => {
      server.resetStats();
      const manager = createTokenManager({
        tokens: server.issue(),
        refresh: grantFor(server, sessionTimeoutMs === undefined ? {} : { sessionTimeoutMs }),
      });
      // The sign-in's expiry is unknown either way; one refresh dates the session.
      await manager.refresh();
      const api = axios.create({ baseURL: server.url, proxy: false });
      attachTokenRelay(api, manager, { shouldRefresh: isSalesforceSessionExpired });
      await new Promise((resolve) => setTimeout(resolve, 1_200));
      expect((await api.get(`/services/data/v${VERSION}/query?q=${encodeURIComponent(SOQL)}`)).status).toBe(200);
      return server.stats();
    };

    expect(await runWith(1_000)).toMatchObject({ tokenRequests: 2, api401: 0 });
    expect(await runWith(undefined)).toMatchObject({ tokenRequests: 2, api401: 1 });
  });

  it('keeps instance_url, id, issued_at and signature, and the refresh token when none comes back', async () => {
    const server = await startOrg();
    const signIn = server.issue();
    const manager = createTokenManager({ tokens: signIn, refresh: grantFor(server) });

    const tokens = await manager.refresh();

    expect(tokens.refreshToken).toBe(signIn.refreshToken);
    expect(tokens.expiresAt).toBeUndefined();
    expect(tokens.raw).toEqual({
      instance_url: server.url,
      id: `${server.url}/id/${salesforceFixtures.organizationId}/${salesforceFixtures.userId}`,
      issued_at: expect.stringMatching(/^\d{13}$/),
      signature: expect.any(String),
    });
    expect(readSalesforceSession(tokens)).toEqual({
      instanceUrl: server.url,
      identityUrl: tokens.raw?.id,
      issuedAt: Number(tokens.raw?.issued_at),
    });
  });
});

describe('the token file Salesforce samples already keep, shared through fileStore', () => {
  it('refreshes twice with rotation on through jsforce, leaving a plain OAuth token response with a working access and refresh token for other tools', async () => {
    const server = await startOrg({ rotateRefreshTokens: true, reuseDetection: true });
    const signIn = server.issue();
    const raw = signIn.raw as Record<string, string>;
    // qa_data/tokens/_salesforce.json as the samples save it: the raw token response, issued_at a string.
    const sample = {
      access_token: signIn.accessToken,
      refresh_token: signIn.refreshToken,
      signature: raw.signature,
      scope: signIn.scope,
      instance_url: raw.instance_url,
      id: raw.id,
      token_type: 'Bearer',
      issued_at: raw.issued_at,
    };
    const directory = await mkdtemp(join(tmpdir(), 'tokenrelay-sf-file-'));
    closers.push(() => rm(directory, { recursive: true, force: true }));
    const path = join(directory, 'qa_data', 'tokens', '_salesforce.json');
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, JSON.stringify(sample, null, 2));
    const store = fileStore(path, { watch: false });
    closers.push(() => store.close());
    const manager = createTokenManager({ store, refresh: grantFor(server) });
    const conn = await connectionOn(manager);

    expect(conn.instanceUrl).toBe(server.url);
    expect((await conn.query(SOQL)).totalSize).toBe(1);
    for (let expiry = 1; expiry <= 2; expiry++) {
      server.revokeAccessTokens();
      expect((await conn.query(SOQL)).totalSize).toBe(1);
    }
    const stats = server.stats();
    expect(stats).toMatchObject({ tokenRequests: 2, tokenSuccesses: 2, refreshTokenReuses: 0, familiesRevoked: 0 });

    // Another tool reads the file as the token response it always was, with tokenrelay's revision added.
    const file = JSON.parse(await readFile(path, 'utf8')) as Record<string, string>;
    expect(Object.keys(file)).toEqual([...Object.keys(sample), 'tokenrelay_revision']);
    expect(file).toMatchObject({ instance_url: server.url, id: sample.id, scope: sample.scope, token_type: 'Bearer', tokenrelay_revision: 3 });
    expect(file.access_token).toBe(conn.accessToken);
    expect(file.issued_at).toMatch(/^\d{13}$/);
    expect(file.issued_at).not.toBe(sample.issued_at);
    // signature and issued_at come from the same response.
    expect(file.signature).toBe(createHmac('sha256', connectedApp.clientSecret).update(`${file.id}${file.issued_at}`).digest('base64'));
    // Each refresh presented the refresh token the one before issued; the file holds the newest, unused.
    const presented = stats.tokenRequestLog.map((entry) => entry.params.refresh_token);
    expect(presented[0]).toBe(sample.refresh_token);
    expect(new Set(presented).size).toBe(2);
    expect(presented).not.toContain(file.refresh_token);

    const query = await fetch(`${file.instance_url}/services/data/v${VERSION}/query?q=${encodeURIComponent(SOQL)}`, {
      headers: { authorization: `Bearer ${file.access_token}` },
    });
    expect(query.status).toBe(200);
    const refreshed = await fetch(`${file.instance_url}/services/oauth2/token`, {
      method: 'POST',
      body: new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: String(file.refresh_token),
        client_id: connectedApp.clientId,
        client_secret: connectedApp.clientSecret,
      }),
    });
    expect(refreshed.status).toBe(200);
  });
});
