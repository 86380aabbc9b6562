/*
 * HTTP clients against the embedded OAuth server, set up as docs/clients.md recommends and proven
 * with the real packages: those that take a `fetch` (ky, ofetch, openapi-fetch) given withTokenRelay's,
 * and got with the hooks of @tokenrelay/got.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { ErrorCode, createTokenManager, findTokenRelayError, isTokenRelayError, type TokenManager, type TokenManagerOptions } from '@tokenrelay/core';
import { withTokenRelay } from '@tokenrelay/fetch';
import { tokenRelayHooks } from '@tokenrelay/got';
import { loopbackOnlyFetch, startOAuthServer, type OAuthServer, type OAuthServerOptions } from '@tokenrelay/testing';
import got from 'got';
import ky from 'ky';
import { createFetch } from 'ofetch';
import createClient from 'openapi-fetch';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultClientGrant } from './helpers/default-client-grant.js';

const servers: OAuthServer[] = [];

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

/** The upload the POST tests send, and what the server must have received. */
const upload = { items: Array.from({ length: 200 }, (_, i) => `item-${i}`) };
const uploadSha256 = createHash('sha256').update(JSON.stringify(upload)).digest('hex');

/** The part of the embedded server's API that openapi-fetch is typed with (openapi-typescript's output shape). */
interface paths {
  '/api/items/{id}': {
    get: {
      parameters: { path: { id: string } };
      responses: { 200: { content: { 'application/json': { ok: boolean } } } };
    };
  };
  '/api/upload': {
    post: {
      requestBody: { content: { 'application/json': typeof upload } };
      responses: { 200: { content: { 'application/json': { bodySha256: string } } } };
    };
  };
}

/** What each test does with a client: a GET that resolves to its status, a POST of `upload` that resolves to the hash the server saw. */
interface ClientUnderTest {
  get(id: string): Promise<number>;
  postUpload(): Promise<string | undefined>;
}

type RelayedFetch = (input: Request | string | URL, init?: RequestInit) => Promise<Response>;

/** A signed-in session: its manager, withTokenRelay's fetch on it, and the API's base URL. */
interface Session {
  readonly manager: TokenManager;
  readonly relayedFetch: RelayedFetch;
  readonly baseUrl: string;
}

/** Each client as docs/clients.md sets it up. */
const clients: Record<string, (session: Session) => ClientUnderTest> = {
  'ky (its default retry)': ({ relayedFetch, baseUrl }) => {
    const api = ky.create({ prefixUrl: baseUrl, fetch: relayedFetch });
    return {
      get: async (id) => (await api.get(`api/items/${id}`)).status,
      postUpload: async () => (await api.post('api/upload', { json: upload }).json<{ bodySha256?: string }>()).bodySha256,
    };
  },
  'ofetch (its default retry)': ({ relayedFetch, baseUrl }) => {
    const api = createFetch({ fetch: relayedFetch });
    return {
      get: async (id) => (await api.raw(`${baseUrl}/api/items/${id}`)).status,
      postUpload: async () => (await api<{ bodySha256?: string }>(`${baseUrl}/api/upload`, { method: 'POST', body: upload })).bodySha256,
    };
  },
  'openapi-fetch': ({ relayedFetch, baseUrl }) => {
    const api = createClient<paths>({ baseUrl, fetch: relayedFetch });
    return {
      get: async (id) => (await api.GET('/api/items/{id}', { params: { path: { id } } })).response.status,
      postUpload: async () => (await api.POST('/api/upload', { body: upload })).data?.bodySha256,
    };
  },
  'got (its default retry) with tokenRelayHooks': ({ manager, baseUrl }) => {
    const api = got.extend({ prefixUrl: baseUrl, hooks: tokenRelayHooks(manager, { origins: [baseUrl] }) });
    return {
      get: async (id) => (await api.get(`api/items/${id}`)).statusCode,
      postUpload: async () => (await api.post('api/upload', { json: upload }).json<{ bodySha256?: string }>()).bodySha256,
    };
  },
};

async function startSession(
  options: OAuthServerOptions = {},
  retry?: TokenManagerOptions['retry'],
): Promise<Session & { server: OAuthServer }> {
  const server = await startOAuthServer(options);
  servers.push(server);
  const manager = createTokenManager({
    tokens: server.issue(),
    refresh: defaultClientGrant(server),
    retry,
  });
  const relayedFetch: RelayedFetch = withTokenRelay(loopbackOnlyFetch(), manager, { origins: [server.url] });
  return { server, manager, relayedFetch, baseUrl: server.url };
}

/**
 * The token calls one GET with a revoked token makes against a token endpoint that answers only 503s.
 * The pause after a failed refresh outlasts the client's own retries (ky's default schedule ends about
 * 0.9 s after the first failure, as the default 0.9–1 s pause does, and a busy machine's timers decide
 * which comes first): what is compared is the client's retries inside the pause.
 */
async function tokenCallsAgainstADownTokenEndpoint(send: (session: Session & { server: OAuthServer }) => Promise<unknown>) {
  const session = await startSession({}, { pauseAfterFailureMs: 10_000, maxPauseAfterFailureMs: 10_000 });
  session.server.revokeAccessTokens();
  session.server.failNextTokenRequests(100, 'unavailable');
  const error = await send(session).then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(findTokenRelayError(error)).toMatchObject({ name: 'TokenRelayError' });
  return session.server.stats().tokenRequests;
}

describe.each(Object.entries(clients))('%s on withTokenRelay', (_name, clientFor) => {
  it('makes one token call for a burst after revocation, and every request succeeds', async () => {
    const session = await startSession({ tokenEndpointLatencyMs: 100 });
    const { server } = session;
    const client = clientFor(session);
    server.revokeAccessTokens();

    const statuses = await Promise.all(Array.from({ length: 10 }, (_, i) => client.get(String(i))));

    expect(statuses).toEqual(Array(10).fill(200));
    expect(server.stats()).toMatchObject({ tokenRequests: 1, apiOk: 10 });
  });

  it('replays a POST body with the same bytes', async () => {
    const session = await startSession();
    const { server } = session;
    const client = clientFor(session);
    server.revokeAccessTokens();

    expect(await client.postUpload()).toBe(uploadSha256);
    expect(server.stats()).toMatchObject({ apiRequests: 2, tokenRequests: 1 });
  });

  it('lets findTokenRelayError reach the SESSION_EXPIRED of a dead session, with one token call', async () => {
    const session = await startSession();
    const { server } = session;
    const client = clientFor(session);
    server.revokeRefreshTokens();

    const results = await Promise.allSettled(Array.from({ length: 3 }, (_, i) => client.get(String(i))));

    for (const result of results) {
      expect(result.status).toBe('rejected');
      if (result.status === 'rejected') expect(findTokenRelayError(result.reason)?.code).toBe(ErrorCode.SESSION_EXPIRED);
    }
    expect(server.stats().tokenRequests).toBe(1);
  });

  it('makes no more token calls against a failing token endpoint than withTokenRelay alone', async () => {
    const alone = await tokenCallsAgainstADownTokenEndpoint(({ server, relayedFetch }) => relayedFetch(`${server.url}/api/items/1`));
    const withClient = await tokenCallsAgainstADownTokenEndpoint((session) => clientFor(session).get('1'));

    expect(withClient).toBeGreaterThan(0);
    expect(withClient).toBeLessThanOrEqual(alone);
  });
});

describe('errors through clients', () => {
  it('ofetch wraps our error in its FetchError: isTokenRelayError says no, findTokenRelayError finds it', async () => {
    const { server, relayedFetch } = await startSession();
    server.revokeRefreshTokens();

    const error: unknown = await createFetch({ fetch: relayedFetch })(`${server.url}/api/items`, { retry: 0 }).catch((reason: unknown) => reason);

    expect(error).toMatchObject({ name: 'FetchError' });
    expect(isTokenRelayError(error)).toBe(false);
    expect(findTokenRelayError(error)?.code).toBe(ErrorCode.SESSION_EXPIRED);
  });
});

describe('tokenRelayHooks on got', () => {
  const gotFor = ({ manager, baseUrl }: Session) => got.extend({ hooks: tokenRelayHooks(manager, { origins: [baseUrl] }), throwHttpErrors: false, retry: { limit: 0 } });

  it('never carries the bearer along a same-origin redirect to the token endpoint', async () => {
    const session = await startSession();
    const { server } = session;

    const response = await gotFor(session).post(`${server.url}/redirect?status=307&to=/oauth/token`, { body: 'grant_type=refresh_token' });

    expect(response.statusCode).toBe(400);
    expect(server.stats().tokenRequestLog.map((entry) => [entry.method, entry.accessToken])).toEqual([['POST', undefined]]);
  });

  it('keeps the bearer along a redirect within origins, and a 401 from elsewhere makes no token call', async () => {
    const session = await startSession();
    const { server } = session;
    const elsewhere = await startOAuthServer();
    servers.push(elsewhere);

    expect((await gotFor(session).get(`${server.url}/redirect?to=/api/items`)).statusCode).toBe(200);
    expect((await gotFor(session).get(`${server.url}/redirect?to=${encodeURIComponent(`${elsewhere.url}/api/items`)}`)).statusCode).toBe(401);
    expect(elsewhere.stats().apiRequestLog.map((entry) => entry.accessToken)).toEqual([undefined]);
    expect(server.stats().tokenRequests).toBe(0);
  });

  it('leaves a request with its own Authorization header untouched, and its 401 makes no token call', async () => {
    const session = await startSession();
    session.server.revokeAccessTokens();

    const response = await gotFor(session).get(`${session.baseUrl}/api/items`, { headers: { authorization: 'Bearer mine' } });

    expect(response.statusCode).toBe(401);
    expect(session.server.stats().apiRequestLog.map((entry) => entry.accessToken)).toEqual(['mine']);
    expect(session.server.stats().tokenRequests).toBe(0);
  });

  it('signed out, sends requests without a bearer and returns their 401 with no token call', async () => {
    const session = await startSession();
    await session.manager.clear();

    const response = await gotFor(session).get(`${session.baseUrl}/api/items`);

    expect(response.statusCode).toBe(401);
    expect(session.server.stats().apiRequestLog.map((entry) => entry.accessToken)).toEqual([undefined]);
    expect(session.server.stats().tokenRequests).toBe(0);
  });

  it('never sends a stream body twice: the caller gets the 401, the next request the new token', async () => {
    const session = await startSession();
    session.server.revokeAccessTokens();

    const response = await gotFor(session).post(`${session.baseUrl}/api/upload`, { body: Readable.from([JSON.stringify(upload)]) });

    expect(response.statusCode).toBe(401);
    expect(session.server.stats()).toMatchObject({ apiRequests: 1, tokenRequests: 1 });
    expect((await gotFor(session).get(`${session.baseUrl}/api/items`)).statusCode).toBe(200);
  });
});
