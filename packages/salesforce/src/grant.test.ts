import { createHmac } from 'node:crypto';
import { ErrorCode, createTokenManager, isTokenRelayError, type TokenSet } from '@tokenrelay/core';
import { describe, expect, it } from 'vitest';
import { readSalesforceSession, salesforceRefreshGrant, type SalesforceRefreshGrantOptions } from './grant.js';

const clientId = '3MVG9-consumer-key';
const clientSecret = 'consumer-secret-0123456789';
const tokens: TokenSet = { accessToken: '00D000000000001!old-access', refreshToken: '5Aep861-old-refresh' };
const signal = new AbortController().signal;
const identity = 'https://login.salesforce.com/id/00D000000000001AAA/005000000000001AAA';

const sign = (secret: string, id: string, issuedAt: string) => createHmac('sha256', secret).update(id + issuedAt).digest('base64');

/** A Salesforce token response, signed with `clientSecret` unless `fields` says otherwise. */
function salesforceResponse(fields: Record<string, unknown> = {}): Record<string, unknown> {
  const issuedAt = String(fields.issued_at ?? '1718000000123');
  const id = String(fields.id ?? identity);
  return {
    access_token: '00D000000000001!new-access',
    signature: sign(clientSecret, id, issuedAt),
    scope: 'api refresh_token',
    instance_url: 'https://acme.my.salesforce.com',
    id,
    token_type: 'Bearer',
    issued_at: issuedAt,
    ...fields,
  };
}

/** A fetch that answers every call with `body` and records what was asked. */
function tokenEndpoint(body: Record<string, unknown>, status = 200) {
  const calls: { url: string; form: URLSearchParams; headers: Headers }[] = [];
  const fetchImpl = (async (input: RequestInfo | URL, init?: RequestInit) => {
    calls.push({ url: String(input), form: new URLSearchParams(String(init?.body)), headers: new Headers(init?.headers) });
    return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json;charset=UTF-8' } });
  }) as typeof fetch;
  return { calls, fetch: fetchImpl };
}

function grant(body: Record<string, unknown>, options: Partial<SalesforceRefreshGrantOptions> = {}) {
  const endpoint = tokenEndpoint(body);
  return { calls: endpoint.calls, refresh: salesforceRefreshGrant({ clientId, clientSecret, fetch: endpoint.fetch, ...options }) };
}

async function errorOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => expect.unreachable('expected a rejection'),
    (error: unknown) => error,
  );
}

describe('salesforceRefreshGrant: the token request', () => {
  it('posts the refresh token grant to login.salesforce.com by default, with the consumer key and secret in the body', async () => {
    const { calls, refresh } = grant(salesforceResponse());
    await refresh({ tokens, signal });

    expect(refresh.tokenEndpoint).toBe('https://login.salesforce.com/services/oauth2/token');
    expect(calls).toHaveLength(1);
    expect(calls[0]?.url).toBe('https://login.salesforce.com/services/oauth2/token');
    expect(Object.fromEntries(calls[0]?.form ?? [])).toEqual({
      grant_type: 'refresh_token',
      refresh_token: tokens.refreshToken,
      client_id: clientId,
      client_secret: clientSecret,
    });
    expect(calls[0]?.headers.get('authorization')).toBeNull();
  });

  it('sends client_id alone for a connected app that does not require the secret, and Basic when asked', async () => {
    const publicApp = tokenEndpoint(salesforceResponse());
    await salesforceRefreshGrant({ clientId, fetch: publicApp.fetch })({ tokens, signal });
    expect(Object.fromEntries(publicApp.calls[0]?.form ?? [])).toEqual({
      grant_type: 'refresh_token',
      refresh_token: tokens.refreshToken,
      client_id: clientId,
    });

    const { calls, refresh } = grant(salesforceResponse(), { clientAuthentication: 'client_secret_basic' });
    await refresh({ tokens, signal });
    expect(calls[0]?.headers.get('authorization')).toBe(`Basic ${btoa(`${clientId}:${clientSecret}`)}`);
    expect(calls[0]?.form.has('client_secret')).toBe(false);
  });

  it.each([
    ['https://test.salesforce.com', 'https://test.salesforce.com/services/oauth2/token'],
    ['https://acme.my.salesforce.com/', 'https://acme.my.salesforce.com/services/oauth2/token'],
    ['https://acme--uat.sandbox.my.salesforce.com', 'https://acme--uat.sandbox.my.salesforce.com/services/oauth2/token'],
    ['https://acme.my.site.com/customers', 'https://acme.my.site.com/customers/services/oauth2/token'],
    [new URL('http://127.0.0.1:8080'), 'http://127.0.0.1:8080/services/oauth2/token'],
    ['http://localhost:3000', 'http://localhost:3000/services/oauth2/token'],
  ])('derives the token endpoint from loginUrl %s', (loginUrl, expected) => {
    expect(salesforceRefreshGrant({ loginUrl, clientId }).tokenEndpoint).toBe(expected);
  });

  it.each([
    ['not a url', /absolute URL/],
    ['http://login.salesforce.com', /https \(http is allowed for loopback hosts only\)/],
    ['ftp://login.salesforce.com', /https/],
    ['https://user:pass@login.salesforce.com', /credentials/],
    ['https://login.salesforce.com?x=1', /query or a fragment/],
    ['https://login.salesforce.com/services/oauth2/token', /not the token endpoint/],
  ])('refuses the loginUrl %s with a configuration error', (loginUrl, message) => {
    let thrown: unknown;
    try {
      salesforceRefreshGrant({ loginUrl, clientId });
    } catch (error) {
      thrown = error;
    }
    expect(isTokenRelayError(thrown) && thrown.code).toBe(ErrorCode.CONFIGURATION_ERROR);
    expect((thrown as Error).message).toMatch(message);
  });

  it.each([0, -1, Number.NaN, Infinity])('refuses sessionTimeoutMs %s', (sessionTimeoutMs) => {
    expect(() => salesforceRefreshGrant({ clientId, sessionTimeoutMs })).toThrow(/sessionTimeoutMs must be a positive number/);
  });
});

describe('salesforceRefreshGrant: the token response', () => {
  it('keeps instance_url, id, issued_at and signature as sent, and sets no expiry without sessionTimeoutMs', async () => {
    const body = salesforceResponse({ sfdc_community_url: 'https://acme.my.site.com/customers' });
    const result = await grant(body).refresh({ tokens, signal });

    expect(result).toEqual({
      accessToken: '00D000000000001!new-access',
      tokenType: 'Bearer',
      scope: 'api refresh_token',
      raw: {
        signature: body.signature,
        instance_url: 'https://acme.my.salesforce.com',
        id: identity,
        issued_at: '1718000000123',
        sfdc_community_url: 'https://acme.my.site.com/customers',
      },
    });
    expect(readSalesforceSession(result)).toEqual({
      instanceUrl: 'https://acme.my.salesforce.com',
      identityUrl: identity,
      issuedAt: 1_718_000_000_123,
    });
  });

  it('dates the token issued_at + sessionTimeoutMs when the session timeout is given', async () => {
    const result = await grant(salesforceResponse(), { sessionTimeoutMs: 7_200_000 }).refresh({ tokens, signal });
    expect(result.expiresAt).toBe(1_718_000_000_123 + 7_200_000);
  });

  it('keeps the old refresh token when none comes back, and takes a rotated one, through the manager', async () => {
    const plain = createTokenManager({ tokens, refresh: grant(salesforceResponse()).refresh });
    expect((await plain.refresh()).refreshToken).toBe(tokens.refreshToken);

    const rotating = createTokenManager({ tokens, refresh: grant(salesforceResponse({ refresh_token: '5Aep861-rotated' })).refresh });
    expect((await rotating.refresh()).refreshToken).toBe('5Aep861-rotated');
  });

  it('accepts a correctly signed response and verifies nothing when no client secret is known', async () => {
    await expect(grant(salesforceResponse()).refresh({ tokens, signal })).resolves.toMatchObject({ accessToken: expect.any(String) });
    const unsigned = salesforceResponse({ signature: 'not-a-signature' });
    const { fetch: publicFetch } = tokenEndpoint(unsigned);
    await expect(salesforceRefreshGrant({ clientId, fetch: publicFetch })({ tokens, signal })).resolves.toMatchObject({
      raw: expect.objectContaining({ signature: 'not-a-signature' }),
    });
  });

  it.each([
    ['a tampered issued_at', { issued_at: '1718000000999', signature: sign(clientSecret, identity, '1718000000123') }],
    ['a tampered id', { id: `${identity}X`, signature: sign(clientSecret, identity, '1718000000123') }],
    ['a signature made with another secret', { signature: sign('another-secret', identity, '1718000000123') }],
    ['a signature that is not base64', { signature: '!!not base64!!' }],
    ['a truncated signature', { signature: sign(clientSecret, identity, '1718000000123').slice(0, 20) }],
  ])('refuses %s with INVALID_TOKEN_RESPONSE, and the manager keeps its tokens', async (_case, fields) => {
    const body = salesforceResponse(fields);
    const manager = createTokenManager({ tokens, refresh: grant(body).refresh, retry: false });

    const error = await errorOf(manager.refresh());

    expect(isTokenRelayError(error) && error.code).toBe(ErrorCode.INVALID_TOKEN_RESPONSE);
    expect((error as Error).message).toMatch(/a signature that does not match/);
    expect(await manager.getTokens()).toEqual(tokens);
    // Neither the secret nor any token leaks into the error.
    const described = `${String(error)} ${JSON.stringify(error)} ${(error as Error).message}`;
    for (const secret of [clientSecret, tokens.accessToken, tokens.refreshToken, body.access_token, body.signature]) {
      expect(described).not.toContain(String(secret));
    }
  });

  it('refuses a response without the fields the signature covers when the secret is known', async () => {
    const { id: _id, ...withoutId } = salesforceResponse();
    const error = await errorOf(grant(withoutId).refresh({ tokens, signal }));
    expect(isTokenRelayError(error) && error.code).toBe(ErrorCode.INVALID_TOKEN_RESPONSE);
    expect((error as Error).message).toMatch(/without the id, issued_at and signature/);
  });

  it.each([
    ['missing', { instance_url: undefined }],
    ['plain http on a public host', { instance_url: 'http://acme.my.salesforce.com' }],
    ['not a URL', { instance_url: 'acme' }],
  ])('refuses an instance_url that is %s, since the bearer is sent there', async (_case, fields) => {
    const error = await errorOf(grant(salesforceResponse(fields)).refresh({ tokens, signal }));
    expect(isTokenRelayError(error) && error.code).toBe(ErrorCode.INVALID_TOKEN_RESPONSE);
    expect((error as Error).message).toMatch(/https instance_url/);
  });

  it('refuses an issued_at it cannot read when sessionTimeoutMs needs it', async () => {
    const { fetch: publicFetch } = tokenEndpoint(salesforceResponse({ issued_at: 'yesterday' }));
    const error = await errorOf(salesforceRefreshGrant({ clientId, fetch: publicFetch, sessionTimeoutMs: 1000 })({ tokens, signal }));
    expect(isTokenRelayError(error) && error.code).toBe(ErrorCode.INVALID_TOKEN_RESPONSE);
    expect((error as Error).message).toMatch(/issued_at/);
  });

  it("maps Salesforce's dead refresh token answer to SESSION_EXPIRED (core's grant does the exchange)", async () => {
    const { fetch: fetchImpl } = tokenEndpoint({ error: 'invalid_grant', error_description: 'expired access/refresh token' }, 400);
    const error = await errorOf(salesforceRefreshGrant({ clientId, clientSecret, fetch: fetchImpl })({ tokens, signal }));
    expect(isTokenRelayError(error) && error.code).toBe(ErrorCode.SESSION_EXPIRED);
    expect(isTokenRelayError(error) && error.oauthError).toBe('invalid_grant');
  });
});

describe('readSalesforceSession', () => {
  it('reads numbers and strings for issued_at and leaves malformed or absent fields undefined', () => {
    expect(readSalesforceSession({ accessToken: 'a', raw: { issued_at: 1_718_000_000_123 } }).issuedAt).toBe(1_718_000_000_123);
    expect(readSalesforceSession({ accessToken: 'a', raw: { issued_at: '12:00', instance_url: 42, id: '' } })).toEqual({
      instanceUrl: undefined,
      identityUrl: undefined,
      issuedAt: undefined,
    });
    expect(readSalesforceSession(undefined)).toEqual({ instanceUrl: undefined, identityUrl: undefined, issuedAt: undefined });
  });
});
