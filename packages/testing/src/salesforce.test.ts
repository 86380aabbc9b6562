import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { salesforceFixtures } from './salesforce.js';
import { basicAuthorization, callApi, postToken, useServers } from './test-helpers.js';

const start = useServers();

const connectedApp = { clientId: 'sf-app', clientSecret: 'sf-consumer-secret', authMethod: 'client_secret_post' as const };
const expectedSignature = (id: string, issuedAt: string) =>
  createHmac('sha256', connectedApp.clientSecret).update(id + issuedAt).digest('base64');
const refreshInBody = (refreshToken: string) => ({
  grant_type: 'refresh_token',
  refresh_token: refreshToken,
  client_id: connectedApp.clientId,
  client_secret: connectedApp.clientSecret,
});

describe('Salesforce mode', () => {
  it('serves the token endpoint at /services/oauth2/token', async () => {
    const server = await start({ mode: 'salesforce', clients: [connectedApp] });
    expect(server.tokenEndpoint).toBe(`${server.url}/services/oauth2/token`);
    expect(server.mode).toBe('salesforce');
  });

  it('issue() gives tokens whose raw part looks like a Salesforce response, with no expiresAt', async () => {
    const server = await start({ mode: 'salesforce', clients: [connectedApp] });
    const tokens = server.issue();
    const id = `${server.url}/id/${salesforceFixtures.organizationId}/${salesforceFixtures.userId}`;
    expect(tokens).toMatchObject({ tokenType: 'Bearer', scope: 'api refresh_token' });
    expect(tokens.expiresAt).toBeUndefined();
    expect(tokens.accessToken).toMatch(/^00D000000000001!/);
    expect(tokens.raw).toEqual({ instance_url: server.url, id, issued_at: expect.stringMatching(/^\d{13}$/), signature: expect.any(String) });
    const issuedAt = String(tokens.raw?.issued_at);
    expect(tokens.raw?.signature).toBe(expectedSignature(id, issuedAt));
  });

  it('answers a refresh with a signed Salesforce token response: no expires_in and no refresh_token', async () => {
    const server = await start({ mode: 'salesforce', clients: [connectedApp] });
    const tokens = server.issue();
    const response = await postToken(server, refreshInBody(tokens.refreshToken!), null);

    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('application/json;charset=UTF-8');
    expect(response.headers.get('cache-control')).toBe('no-store');
    const body = response.json!;
    expect(Object.keys(body)).toEqual(['access_token', 'signature', 'scope', 'instance_url', 'id', 'token_type', 'issued_at']);
    expect(body).toMatchObject({
      instance_url: server.url,
      id: `${server.url}/id/00D000000000001AAA/005000000000001AAA`,
      token_type: 'Bearer',
      scope: 'api refresh_token',
    });
    const issuedAt = String(body.issued_at);
    expect(issuedAt).toMatch(/^\d{13}$/);
    expect(Math.abs(Number(issuedAt) - Date.now())).toBeLessThan(5000);
    expect(body.signature).toBe(expectedSignature(String(body.id), issuedAt));
    expect((await callApi(server, '/services/data/v59.0/query?q=SELECT+Id+FROM+Account', String(body.access_token))).status).toBe(200);
  });

  it('accepts the connected app credentials as Basic too, and client_id alone for an app without a required secret', async () => {
    const publicApp = { clientId: 'sf-public', authMethod: 'none' as const };
    const server = await start({ mode: 'salesforce', clients: [connectedApp, publicApp] });
    const viaBasic = await postToken(
      server,
      { grant_type: 'refresh_token', refresh_token: server.issue().refreshToken! },
      basicAuthorization(connectedApp.clientId, connectedApp.clientSecret),
    );
    expect(viaBasic.status).toBe(200);
    const withoutSecret = await postToken(
      server,
      { grant_type: 'refresh_token', refresh_token: server.issue({ clientId: 'sf-public' }).refreshToken!, client_id: 'sf-public' },
      null,
    );
    expect(withoutSecret.status).toBe(200);
    const missingSecret = await postToken(
      server,
      { grant_type: 'refresh_token', refresh_token: server.issue().refreshToken!, client_id: connectedApp.clientId },
      null,
    );
    expect(missingSecret.status).toBe(401);
  });

  it('returns a new refresh token on each refresh when rotation is on', async () => {
    const server = await start({ mode: 'salesforce', clients: [connectedApp], rotateRefreshTokens: true });
    const tokens = server.issue();
    const response = await postToken(server, refreshInBody(tokens.refreshToken!), null);
    expect(response.json?.refresh_token).toEqual(expect.any(String));
    expect(response.json?.refresh_token).not.toBe(tokens.refreshToken);
  });

  it('answers a dead refresh token with Salesforce\'s invalid_grant body', async () => {
    const server = await start({ mode: 'salesforce', clients: [connectedApp] });
    const response = await postToken(server, refreshInBody('5Aep861-not-a-real-token'), null);
    expect(response.status).toBe(400);
    expect(response.json).toEqual({ error: 'invalid_grant', error_description: 'expired access/refresh token' });
  });

  it('answers an expired session with 401 INVALID_SESSION_ID and no WWW-Authenticate', async () => {
    const server = await start({ mode: 'salesforce', clients: [connectedApp], salesforceSessionTimeoutSeconds: 0.4 });
    const { accessToken } = server.issue();
    const path = '/services/data/v59.0/sobjects/Account/001000000000001AAA';
    expect((await callApi(server, path, accessToken)).status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 420));

    for (const token of [accessToken, undefined]) {
      const response = await callApi(server, path, token);
      expect(response.status).toBe(401);
      expect(response.headers.get('content-type')).toBe('application/json;charset=UTF-8');
      expect(response.headers.get('www-authenticate')).toBeNull();
      expect(JSON.parse(response.text)).toEqual([{ message: 'Session expired or invalid', errorCode: 'INVALID_SESSION_ID' }]);
    }
    // /api/ paths speak Salesforce too in this mode.
    expect((await callApi(server, '/api/me', accessToken)).text).toContain('INVALID_SESSION_ID');
  });

  it('answers a SOQL query the way jsforce sends it with the fixture Account', async () => {
    const server = await start({ mode: 'salesforce', clients: [connectedApp] });
    const { accessToken } = server.issue();
    const soql = encodeURIComponent('SELECT Id, Name FROM Account LIMIT 1');
    for (const resource of ['query', 'queryAll']) {
      const response = await callApi(server, `/services/data/v50.0/${resource}?q=${soql}`, accessToken);
      expect(response.status).toBe(200);
      expect(response.json).toEqual({
        totalSize: 1,
        done: true,
        records: [
          {
            attributes: { type: 'Account', url: '/services/data/v50.0/sobjects/Account/001000000000001AAA' },
            Id: '001000000000001AAA',
            Name: 'Acme',
          },
        ],
      });
    }
    const noQuery = await callApi(server, '/services/data/v50.0/query', accessToken);
    expect(noQuery.status).toBe(400);
    expect(JSON.parse(noQuery.text)).toEqual([{ errorCode: 'MALFORMED_QUERY', message: expect.any(String) }]);
  });

  it('retrieves the fixture Account by its 18- or 15-character id and answers NOT_FOUND otherwise', async () => {
    const server = await start({ mode: 'salesforce', clients: [connectedApp] });
    const { accessToken } = server.issue();
    for (const id of ['001000000000001AAA', '001000000000001']) {
      const response = await callApi(server, `/services/data/v59.0/sobjects/Account/${id}?fields=Id,Name`, accessToken);
      expect(response.status).toBe(200);
      expect(response.json).toMatchObject({ attributes: { type: 'Account' }, Id: '001000000000001AAA', Name: 'Acme' });
    }
    const missing = await callApi(server, '/services/data/v59.0/sobjects/Account/001000000000099AAA', accessToken);
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.text)).toEqual([{ errorCode: 'NOT_FOUND', message: expect.any(String) }]);
  });

  it('keeps 5 live token pairs per user and app: a 6th evicts the oldest, while sessions that ended hold no place', async () => {
    const server = await start({ mode: 'salesforce', clients: [connectedApp] });
    const acquire = async () => {
      const response = await postToken(server, { grant_type: 'client_credentials', client_id: connectedApp.clientId, client_secret: connectedApp.clientSecret }, null);
      return String(response.json?.access_token);
    };
    const query = async (accessToken: string) => (await callApi(server, '/services/data/v59.0/query?q=SELECT+Id+FROM+Account', accessToken)).status;

    // Twelve sessions one after the other, each ended (expired) before the next: never more than one live pair.
    for (let session = 0; session < 12; session++) {
      server.revokeAccessTokens();
      await acquire();
    }
    expect(server.stats().tokenPairsEvicted).toBe(0);

    // Six live sessions at once (one is the last of the twelve): the 6th evicts the oldest live one.
    const live = [];
    for (let session = 0; session < 5; session++) live.push(await acquire());
    expect(server.stats().tokenPairsEvicted).toBe(1);
    expect(await Promise.all(live.map(query))).toEqual([200, 200, 200, 200, 200]);

    // A session with a usable refresh token stays live after its access token expired.
    server.revokeAccessTokens();
    const signedIn = server.issue();
    server.revokeAccessTokens();
    for (let session = 0; session < 5; session++) await acquire();
    expect(server.stats().tokenPairsEvicted).toBe(2);
    expect((await postToken(server, refreshInBody(signedIn.refreshToken!), null)).json).toMatchObject({ error: 'invalid_grant' });
  });

  it('does not serve the standard /oauth/token endpoint', async () => {
    const server = await start({ mode: 'salesforce', clients: [connectedApp] });
    expect((await fetch(`${server.url}/oauth/token`, { method: 'POST' })).status).toBe(404);
  });
});
