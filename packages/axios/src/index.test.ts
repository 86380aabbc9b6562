import { Readable } from 'node:stream';
import { inspect } from 'node:util';
import { ErrorCode, TokenRelayError, createTokenManager, isTokenRelayError, type FailedResponse } from '@tokenrelay/core';
import axios, { AxiosError, type InternalAxiosRequestConfig } from 'axios';
import { http, HttpResponse } from 'msw';
import { setupServer } from 'msw/node';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { attachTokenRelay, type AttachTokenRelayOptions } from './index.js';

const API = 'https://api.example.test';
const OTHER = 'https://other.example.test';
const TOKEN_ENDPOINT = `${API}/oauth/token`;

const server = setupServer();
beforeAll(() => server.listen({ onUnhandledRequest: 'error' }));
afterEach(() => server.resetHandlers());
afterAll(() => server.close());

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => (resolve = done));
  return { promise, resolve };
}

interface Hit {
  url: string;
  authorization: string | null;
  contentType: string | null;
  body: string;
}

/**
 * Records every request to API and OTHER. `respond` answers API requests; by default API accepts
 * only `Bearer v2` and answers 401 `Bearer error="invalid_token"` to anything else.
 */
function serve(respond: (hit: Hit) => Response | Promise<Response> = (hit) => acceptOnly('v2', hit)) {
  const hits: Hit[] = [];
  const record = async (request: Request) => {
    const url = new URL(request.url);
    const hit: Hit = {
      url: url.origin + url.pathname + url.search,
      authorization: request.headers.get('authorization'),
      contentType: request.headers.get('content-type'),
      body: await request.text(),
    };
    hits.push(hit);
    return hit;
  };
  server.use(
    http.all(`${API}/*`, async ({ request }) => respond(await record(request))),
    http.all(`${OTHER}/*`, async ({ request }) => {
      await record(request);
      return HttpResponse.json({ open: true });
    }),
  );
  return { hits, authorizations: (url: string) => hits.filter((hit) => hit.url === url).map((hit) => hit.authorization) };
}

function acceptOnly(token: string, hit: Hit): Response {
  if (hit.authorization === `Bearer ${token}`) return HttpResponse.json({ url: hit.url, body: hit.body });
  return new HttpResponse('expired', { status: 401, headers: { 'WWW-Authenticate': 'Bearer error="invalid_token"' } });
}

/**
 * An axios instance on API with tokenrelay attached to a real token manager holding `v1`, whose
 * refresh returns v2, v3, … and counts its calls.
 */
function setup(options: { gate?: Promise<void>; fail?: Error; attach?: AttachTokenRelayOptions } = {}) {
  let refreshes = 0;
  const refresh = Object.assign(
    async () => {
      const n = ++refreshes + 1;
      await options.gate;
      if (options.fail) throw options.fail;
      return { accessToken: `v${n}`, refreshToken: `r${n}` };
    },
    { tokenEndpoint: TOKEN_ENDPOINT },
  );
  const manager = createTokenManager({ tokens: { accessToken: 'v1', refreshToken: 'r1' }, refresh, retry: false });
  const api = axios.create({ baseURL: API });
  const detach = attachTokenRelay(api, manager, options.attach);
  return { api, manager, detach, refreshes: () => refreshes };
}

async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => expect.unreachable('the request should have failed'),
    (error: unknown) => error,
  );
}

describe('attachTokenRelay: where the bearer goes', () => {
  it('sends the bearer to the baseURL origin only, never to another origin or the token endpoint', async () => {
    const { hits } = serve((hit) => (hit.url === TOKEN_ENDPOINT ? new HttpResponse(null, { status: 401 }) : acceptOnly('v1', hit)));
    const { api, refreshes } = setup();

    await api.get('/me');
    await api.get(`${OTHER}/public`);
    const tokenCall = await rejectionOf(api.post('/oauth/token', 'grant_type=refresh_token'));

    expect(hits.map((hit) => [hit.url, hit.authorization])).toEqual([
      [`${API}/me`, 'Bearer v1'],
      [`${OTHER}/public`, null],
      [TOKEN_ENDPOINT, null],
    ]);
    // A 401 from the token endpoint is the caller's, never a reason to refresh.
    expect((tokenCall as AxiosError).response?.status).toBe(401);
    expect(refreshes()).toBe(0);
  });

  it('uses the given origins when the instance has no baseURL', async () => {
    const { hits } = serve((hit) => acceptOnly('v1', hit));
    const manager = createTokenManager({ tokens: { accessToken: 'v1' }, refresh: async () => ({ accessToken: 'v2' }) });
    const api = axios.create();
    attachTokenRelay(api, manager, { origins: [API] });

    await api.get(`${API}/me`);
    await api.get(`${OTHER}/public`);

    expect(hits.map((hit) => hit.authorization)).toEqual(['Bearer v1', null]);
  });

  it.each([
    ['no baseURL', undefined],
    ['a relative baseURL', '/api'],
    ['a non-http baseURL', 'ftp://files.example.test'],
  ])('throws CONFIGURATION_ERROR synchronously with neither origins nor an absolute baseURL (%s)', (_, baseURL) => {
    const manager = createTokenManager({ tokens: { accessToken: 'v1' }, refresh: async () => ({ accessToken: 'v2' }) });
    const api = axios.create({ baseURL });

    let thrown: unknown;
    try {
      attachTokenRelay(api, manager);
    } catch (error) {
      thrown = error;
    }

    expect(isTokenRelayError(thrown) && thrown.code).toBe(ErrorCode.CONFIGURATION_ERROR);
  });

  it("leaves a caller's own Authorization header alone and never refreshes for its 401", async () => {
    const { hits } = serve();
    const { api, refreshes } = setup();

    const error = await rejectionOf(api.get('/me', { headers: { Authorization: 'Basic dXNlcjpwdw==' } }));

    expect((error as AxiosError).response?.status).toBe(401);
    expect(hits.map((hit) => hit.authorization)).toEqual(['Basic dXNlcjpwdw==']);
    expect(refreshes()).toBe(0);
  });

  it("leaves a request with axios's auth option (its own Basic Authorization) alone: no bearer, no refresh for its 401, no wait for a refresh", async () => {
    const { hits } = serve();
    const { api, refreshes } = setup();
    const basic = `Basic ${btoa('user:pw')}`;

    const error = await rejectionOf(api.get('/admin', { auth: { username: 'user', password: 'pw' } }));

    expect((error as AxiosError).response?.status).toBe(401);
    expect(hits.map((hit) => hit.authorization)).toEqual([basic]);
    expect(refreshes()).toBe(0);

    // Not ours, so it never waits for a refresh either: a refresh handler may send its token request this way.
    const gate = deferred();
    const waiting = setup({ gate: gate.promise });
    const refreshing = waiting.manager.refresh();
    const during = await rejectionOf(waiting.api.post('/oauth2/token', 'grant_type=refresh_token', { auth: { username: 'user', password: 'pw' } }));
    expect((during as AxiosError).response?.status).toBe(401);
    gate.resolve();
    await refreshing;
    expect(hits.map((hit) => hit.authorization)).toEqual([basic, basic]);
    expect(waiting.refreshes()).toBe(1);
  });

  it('strips the bearer it set when a copy of an authorized config is sent to another origin', async () => {
    const { hits } = serve(() => new HttpResponse('boom', { status: 500 }));
    const { api } = setup();
    const failed = (await rejectionOf(api.get('/me'))) as AxiosError;

    await api.request({ ...failed.config, url: `${OTHER}/elsewhere` });

    expect(hits.map((hit) => [hit.url, hit.authorization])).toEqual([
      [`${API}/me`, 'Bearer v1'],
      [`${OTHER}/elsewhere`, null],
    ]);
  });
});

describe('attachTokenRelay: what an AxiosError shows', () => {
  /** What logging the error shows: its JSON (axios's toJSON) and its config and response as Node prints them. */
  const shown = (error: AxiosError) =>
    [JSON.stringify(error), inspect(error.config, { depth: 8 }), inspect(error.response?.config, { depth: 8 }), inspect(error, { depth: 1 })].join('\n');

  it('leaves no access token of ours in the AxiosError of a failed request, and a retry of its config is authorized anew', async () => {
    const { hits } = serve((hit) => (hit.url === `${API}/boom` ? new HttpResponse('boom', { status: 500 }) : acceptOnly('v1', hit)));
    const { api } = setup();

    const error = (await rejectionOf(api.get('/boom'))) as AxiosError;
    expect(error.response?.status).toBe(500);
    expect(shown(error)).not.toContain('Bearer v1');

    await api.request({ ...error.config, url: '/again' });
    expect(hits.map((hit) => [hit.url, hit.authorization])).toEqual([
      [`${API}/boom`, 'Bearer v1'],
      [`${API}/again`, 'Bearer v1'],
    ]);
  });

  it('leaves neither token in the AxiosError of a replay that fails again', async () => {
    serve(() => new HttpResponse('expired', { status: 401, headers: { 'WWW-Authenticate': 'Bearer error="invalid_token"' } }));
    const { api, refreshes } = setup();

    const error = (await rejectionOf(api.get('/me'))) as AxiosError;

    expect(error.response?.status).toBe(401);
    expect(refreshes()).toBe(1);
    expect(shown(error)).not.toMatch(/Bearer v[12]/);
  });

  it("keeps the caller's own Authorization in the AxiosError", async () => {
    serve();
    const { api } = setup();

    const error = (await rejectionOf(api.get('/me', { headers: { Authorization: 'Basic dXNlcjpwdw==' } }))) as AxiosError;

    expect(error.config?.headers.get('Authorization')).toBe('Basic dXNlcjpwdw==');
  });
});

describe('attachTokenRelay: a URL object', () => {
  it('sends a request whose url is a URL object (axios takes one without a baseURL), with the bearer only where origins allow', async () => {
    const { hits } = serve((hit) => acceptOnly('v1', hit));
    const manager = createTokenManager({ tokens: { accessToken: 'v1' }, refresh: async () => ({ accessToken: 'v2' }) });
    const api = axios.create();
    attachTokenRelay(api, manager, { origins: [API] });

    await api.get(new URL(`${API}/me`) as unknown as string);
    await api.get(new URL(`${OTHER}/public`) as unknown as string);

    expect(hits.map((hit) => [hit.url, hit.authorization])).toEqual([
      [`${API}/me`, 'Bearer v1'],
      [`${OTHER}/public`, null],
    ]);
  });
});

describe('attachTokenRelay: the URL axios finally sends', () => {
  it('judges the URL after every interceptor: one registered before attach that retargets to another origin gets no bearer', async () => {
    const { hits } = serve();
    const api = axios.create({ baseURL: API });
    // Registered first, so axios runs it after ours.
    api.interceptors.request.use((config) => ({ ...config, baseURL: OTHER }) as typeof config);
    const manager = createTokenManager({ tokens: { accessToken: 'v1' }, refresh: async () => ({ accessToken: 'v2' }) });
    attachTokenRelay(api, manager);

    await api.get('/me');

    expect(hits.map((hit) => [hit.url, hit.authorization])).toEqual([[`${OTHER}/me`, null]]);
  });

  it('never refreshes for a 401 from another origin that a later-running interceptor retargeted to', async () => {
    server.use(http.all(`${OTHER}/*`, () => new HttpResponse(null, { status: 401 })));
    const api = axios.create({ baseURL: API });
    api.interceptors.request.use((config) => {
      config.url = `${OTHER}/me`;
      return config;
    });
    const refresh = vi.fn(async () => ({ accessToken: 'v2' }));
    attachTokenRelay(api, createTokenManager({ tokens: { accessToken: 'v1' }, refresh }));

    const error = await rejectionOf(api.get('/me'));

    expect((error as AxiosError).response?.status).toBe(401);
    expect(refresh).not.toHaveBeenCalled();
  });

  it('drops the bearer on a same-origin redirect to the token endpoint, and never refreshes for its 401', async () => {
    const { hits } = serve((hit) =>
      hit.url === `${API}/moved`
        ? new HttpResponse(null, { status: 302, headers: { location: '/oauth/token' } })
        : HttpResponse.json({ error: 'invalid_client' }, { status: 401 }),
    );
    const { api, refreshes } = setup();

    const error = await rejectionOf(api.get('/moved'));

    expect((error as AxiosError).response?.status).toBe(401);
    expect(hits.map((hit) => [hit.url, hit.authorization])).toEqual([
      [`${API}/moved`, 'Bearer v1'],
      [TOKEN_ENDPOINT, null],
    ]);
    expect(refreshes()).toBe(0);
  });

  it('keeps the bearer on a redirect within origins', async () => {
    const { hits } = serve((hit) =>
      hit.url === `${API}/moved` ? new HttpResponse(null, { status: 302, headers: { location: '/here' } }) : acceptOnly('v1', hit),
    );
    const { api } = setup();

    expect((await api.get('/moved')).status).toBe(200);
    expect(hits.map((hit) => hit.authorization)).toEqual(['Bearer v1', 'Bearer v1']);
  });
});

describe('attachTokenRelay: signed out', () => {
  it.each([
    ['that never held tokens', () => createTokenManager({ refresh: async () => ({ accessToken: 'never' }) })],
    [
      'after clear()',
      () => {
        const manager = createTokenManager({ tokens: { accessToken: 'v1' }, refresh: async () => ({ accessToken: 'v2' }) });
        void manager.clear();
        return manager;
      },
    ],
  ])('with a manager %s, sends the request without a bearer and gives its 401 to the caller, with no token call', async (_kind, makeManager) => {
    const { hits } = serve();
    const manager = makeManager();
    const refresh = vi.spyOn(manager, 'refresh');
    const api = axios.create({ baseURL: API });
    attachTokenRelay(api, manager);

    const error = await rejectionOf(api.get('/public'));

    expect((error as AxiosError).response?.status).toBe(401);
    expect(hits.map((hit) => [hit.url, hit.authorization])).toEqual([[`${API}/public`, null]]);
    expect(refresh).not.toHaveBeenCalled();
  });

  it('after SESSION_EXPIRED rejects every request with SESSION_EXPIRED, and sessionExpired fires once', async () => {
    serve();
    const { api, manager } = setup({
      fail: new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'The refresh token was rejected', { oauthError: 'invalid_grant' }),
    });
    const expired = vi.fn();
    manager.on('sessionExpired', expired);

    const errors = [await rejectionOf(api.get('/a')), await rejectionOf(api.get('/b'))];

    for (const error of errors) expect(isTokenRelayError(error) && error.code).toBe(ErrorCode.SESSION_EXPIRED);
    expect(expired).toHaveBeenCalledTimes(1);
  });
});

describe('attachTokenRelay: refresh and replay', () => {
  it('refreshes once for N concurrent 401s and replays each request once with the new token', async () => {
    const { authorizations } = serve();
    const { api, refreshes } = setup();

    const responses = await Promise.all([1, 2, 3, 4, 5].map((i) => api.get(`/items/${i}`)));

    expect(responses.map((response) => response.status)).toEqual([200, 200, 200, 200, 200]);
    expect(refreshes()).toBe(1);
    for (const i of [1, 2, 3, 4, 5]) expect(authorizations(`${API}/items/${i}`)).toEqual(['Bearer v1', 'Bearer v2']);
  });

  it('replays a request that 401s after the refresh finished without refreshing again', async () => {
    const slowAnswer = deferred();
    const { hits, authorizations } = serve(async (hit) => {
      if (hit.url === `${API}/slow` && hit.authorization === 'Bearer v1') await slowAnswer.promise;
      return acceptOnly('v2', hit);
    });
    const { api, refreshes } = setup();

    const slow = api.get('/slow');
    await vi.waitFor(() => expect(hits).toHaveLength(1));
    await api.get('/fast');
    expect(refreshes()).toBe(1);
    slowAnswer.resolve();

    expect((await slow).status).toBe(200);
    expect(refreshes()).toBe(1);
    expect(authorizations(`${API}/slow`)).toEqual(['Bearer v1', 'Bearer v2']);
  });

  it('sends a request that starts during a refresh once, with the new token', async () => {
    const gate = deferred();
    const { authorizations } = serve();
    const { api, refreshes } = setup({ gate: gate.promise });

    const first = api.get('/first');
    await vi.waitFor(() => expect(refreshes()).toBe(1));
    const second = api.get('/second');
    gate.resolve();
    await Promise.all([first, second]);

    expect(authorizations(`${API}/second`)).toEqual(['Bearer v2']);
    expect(refreshes()).toBe(1);
  });

  it('replays only once: a second 401 goes to the caller as the AxiosError', async () => {
    // A third attempt would succeed, so a replay loop fails this test instead of hanging it.
    const { hits, authorizations } = serve(() =>
      hits.length > 2 ? HttpResponse.json({ looped: true }) : new HttpResponse('nope', { status: 401 }),
    );
    const { api, refreshes } = setup();

    const error = await rejectionOf(api.get('/me'));

    expect(error).toBeInstanceOf(AxiosError);
    expect((error as AxiosError).response?.status).toBe(401);
    expect(authorizations(`${API}/me`)).toEqual(['Bearer v1', 'Bearer v2']);
    expect(refreshes()).toBe(1);
  });

  it("passes the replay through the instance's other request interceptors exactly once more", async () => {
    serve();
    const { api } = setup();
    const intercepted: string[] = [];
    api.interceptors.request.use((config) => {
      intercepted.push(String(config.url));
      return config;
    });

    await api.get('/me');

    expect(intercepted).toEqual(['/me', '/me']);
  });

  it('replays a JSON POST body intact', async () => {
    const { hits } = serve();
    const { api } = setup();
    const payload = { name: 'Ada', tags: ['a', 'b'], nested: { n: 1 } };

    await api.post('/items', payload);

    expect(hits).toHaveLength(2);
    for (const hit of hits) {
      expect(JSON.parse(hit.body)).toEqual(payload);
      expect(hit.contentType).toContain('application/json');
    }
  });

  it('does not send a stream body twice: it refreshes, then rejects with the original 401', async () => {
    const { hits } = serve();
    const { api, refreshes } = setup();

    const error = await rejectionOf(
      api.post('/upload', Readable.from([Buffer.from('one-shot')]), { headers: { 'Content-Type': 'application/octet-stream' } }),
    );

    expect((error as AxiosError).response?.status).toBe(401);
    expect(hits.map((hit) => [hit.url, hit.body])).toEqual([[`${API}/upload`, 'one-shot']]);
    expect(refreshes()).toBe(1);
    // The refresh was not wasted: the next request goes out with the new token.
    expect((await api.get('/me')).status).toBe(200);
  });

  it('handles a 401 that validateStatus lets resolve: resolves with the replay, and with a second 401 as is', async () => {
    // `/always` answers 401 to its first two attempts only, so a replay loop fails this test instead of hanging it.
    const { authorizations } = serve((hit) =>
      hit.url === `${API}/always` && authorizations(hit.url).length <= 2 ? new HttpResponse(null, { status: 401 }) : acceptOnly('v2', hit),
    );
    const { api, refreshes } = setup();

    const replayed = await api.get('/me', { validateStatus: () => true });
    const stillFailing = await api.get('/always', { validateStatus: () => true });

    expect(replayed.status).toBe(200);
    expect(stillFailing.status).toBe(401);
    expect(authorizations(`${API}/always`)).toEqual(['Bearer v2', 'Bearer v3']);
    expect(refreshes()).toBe(2);
  });

  it('rejects a queued request at once when it is aborted, while the refresh completes for the others', async () => {
    const gate = deferred();
    const { hits } = serve();
    const { api, manager, refreshes } = setup({ gate: gate.promise });
    const refreshSpy = vi.spyOn(manager, 'refresh');
    const getAccessTokenSpy = vi.spyOn(manager, 'getAccessToken');
    const abortedAfter401 = new AbortController();
    const abortedBeforeSending = new AbortController();

    const waitingToReplay = api.get('/a', { signal: abortedAfter401.signal });
    const other = api.get('/b');
    await vi.waitFor(() => expect(refreshSpy).toHaveBeenCalledTimes(2));
    const waitingToSend = api.get('/c', { signal: abortedBeforeSending.signal });
    // /a and /b took the fresh token without waiting; /c waits for the refresh in getAccessToken.
    await vi.waitFor(() => expect(getAccessTokenSpy).toHaveBeenCalledTimes(1));

    abortedAfter401.abort();
    abortedBeforeSending.abort();
    expect(axios.isCancel(await rejectionOf(waitingToReplay))).toBe(true);
    expect(axios.isCancel(await rejectionOf(waitingToSend))).toBe(true);
    gate.resolve();

    expect((await other).status).toBe(200);
    expect(refreshes()).toBe(1);
    expect(hits.map((hit) => [hit.url, hit.authorization])).toEqual([
      [`${API}/a`, 'Bearer v1'],
      [`${API}/b`, 'Bearer v1'],
      [`${API}/b`, 'Bearer v2'],
    ]);
  });

  it('rejects with TokenRelayError SESSION_EXPIRED when the refresh token is dead, then fails fast', async () => {
    const { hits } = serve();
    const { api, refreshes } = setup({
      fail: new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'The refresh token was rejected', { oauthError: 'invalid_grant' }),
    });

    const first = await rejectionOf(api.get('/me'));
    const later = await rejectionOf(api.get('/me'));

    for (const error of [first, later]) expect(isTokenRelayError(error) && error.code).toBe(ErrorCode.SESSION_EXPIRED);
    expect(hits).toHaveLength(1);
    expect(refreshes()).toBe(1);
  });
});

describe('attachTokenRelay: what counts as an expired token', () => {
  it.each([
    ['a 403 insufficient_scope', 403, 'Bearer error="insufficient_scope", scope="admin"'],
    ['a 401 DPoP use_dpop_nonce', 401, 'DPoP error="use_dpop_nonce"'],
  ])('does not refresh by default for %s', async (_, status, challenge) => {
    const { hits } = serve(() => new HttpResponse(null, { status, headers: { 'WWW-Authenticate': challenge } }));
    const { api, refreshes } = setup();

    const error = await rejectionOf(api.get('/me'));

    expect((error as AxiosError).response?.status).toBe(status);
    expect(hits).toHaveLength(1);
    expect(refreshes()).toBe(0);
  });

  it('asks a custom shouldRefresh, giving it the status, headers, absolute URL and body text', async () => {
    const invalidSession = '<error><exceptionCode>InvalidSessionId</exceptionCode></error>';
    const { authorizations } = serve((hit) =>
      hit.authorization === 'Bearer v2'
        ? HttpResponse.json({ ok: true })
        : new HttpResponse(invalidSession, { status: 400, headers: { 'Content-Type': 'application/xml' } }),
    );
    const seen: { status: number; url: string; contentType: string | undefined; text: string }[] = [];
    const { api, refreshes } = setup({
      attach: {
        shouldRefresh: async (response: FailedResponse) => {
          const text = await response.text();
          seen.push({ status: response.status, url: response.url, contentType: response.header('Content-Type'), text });
          return response.status === 400 && text.includes('InvalidSessionId');
        },
      },
    });

    const response = await api.get('/bulk', { params: { job: 7 } });

    expect(response.status).toBe(200);
    expect(refreshes()).toBe(1);
    expect(authorizations(`${API}/bulk?job=7`)).toEqual(['Bearer v1', 'Bearer v2']);
    expect(seen).toEqual([{ status: 400, url: `${API}/bulk?job=7`, contentType: 'application/xml', text: invalidSession }]);
  });

  it('gives a custom shouldRefresh a parsed JSON body as text and does not refresh when it says no', async () => {
    serve(() => HttpResponse.json([{ errorCode: 'INVALID_SESSION_ID' }], { status: 401 }));
    const texts: string[] = [];
    const { api, refreshes } = setup({
      attach: {
        shouldRefresh: async (response) => {
          texts.push(await response.text());
          return false;
        },
      },
    });

    const error = await rejectionOf(api.get('/me'));

    expect((error as AxiosError).response?.status).toBe(401);
    expect(texts).toEqual(['[{"errorCode":"INVALID_SESSION_ID"}]']);
    expect(refreshes()).toBe(0);
  });
});

describe('attachTokenRelay: a fresh token', () => {
  const cannedAdapter = (seen: (string | undefined)[]) =>
    vi.fn(async (config: InternalAxiosRequestConfig) => {
      seen.push(config.headers.get('Authorization')?.toString());
      return { data: {}, status: 200, statusText: 'OK', headers: {}, config, request: {} };
    });

  it('hands the request to the adapter before the call returns: no promise of ours while the token is fresh', async () => {
    const { api } = setup();
    const seen: (string | undefined)[] = [];
    api.defaults.adapter = cannedAdapter(seen);

    const response = api.get('/me');

    expect(seen).toEqual(['Bearer v1']);
    await response;
  });

  it('still waits for the refresh when the token is not fresh, with the other interceptors in their order', async () => {
    const gate = deferred();
    const { api, manager } = setup({ gate: gate.promise });
    const order: string[] = [];
    api.interceptors.request.use((config) => (order.push('registered after'), config));
    const seen: (string | undefined)[] = [];
    api.defaults.adapter = cannedAdapter(seen);

    const refreshing = manager.refresh();
    const response = api.get('/me');
    await Promise.resolve();
    expect(seen).toEqual([]);
    gate.resolve();
    await Promise.all([refreshing, response]);

    expect(seen).toEqual(['Bearer v2']);
    expect(order).toEqual(['registered after']);
  });

  it('judges the final URL of a request that brings its own transformRequest too', async () => {
    const { hits } = serve();
    const api = axios.create({ baseURL: API });
    // Registered first, so axios runs it after ours.
    api.interceptors.request.use((config) => ({ ...config, baseURL: OTHER }) as typeof config);
    const manager = createTokenManager({ tokens: { accessToken: 'v1' }, refresh: async () => ({ accessToken: 'v2' }) });
    attachTokenRelay(api, manager);

    await api.get('/me', { transformRequest: [(data: unknown) => data] });

    expect(hits.map((hit) => [hit.url, hit.authorization])).toEqual([[`${OTHER}/me`, null]]);
  });
});

describe('attachTokenRelay: waiting for a refresh', () => {
  /** An instance whose request interceptor, registered before attach, records what it sees. */
  function instanceWithEarlierInterceptor(gate: Promise<void>) {
    const api = axios.create({ baseURL: API });
    const intercepted: (string | undefined)[] = [];
    // Registered first, so axios runs it after ours.
    api.interceptors.request.use((config) => {
      intercepted.push(config.headers.get('Authorization')?.toString());
      return config;
    });
    const refresh = Object.assign(
      async () => {
        await gate;
        return { accessToken: 'v2', refreshToken: 'r2' };
      },
      { tokenEndpoint: TOKEN_ENDPOINT },
    );
    const manager = createTokenManager({ tokens: { accessToken: 'v1', refreshToken: 'r1' }, refresh, retry: false });
    attachTokenRelay(api, manager);
    return { api, manager, intercepted };
  }

  it('runs every interceptor of a request that waits at once and holds back only its transport until the refresh ends', async () => {
    const gate = deferred();
    const { api, manager, intercepted } = instanceWithEarlierInterceptor(gate.promise);
    const seen: (string | undefined)[] = [];
    api.defaults.adapter = async (config) => {
      seen.push(config.headers.get('Authorization')?.toString());
      return { data: {}, status: 200, statusText: 'OK', headers: {}, config, request: {} };
    };

    const refreshing = manager.refresh();
    const response = api.get('/me');
    await vi.waitFor(() => expect(intercepted).toEqual([undefined]));
    expect(seen).toEqual([]);
    gate.resolve();
    await Promise.all([refreshing, response]);

    expect(seen).toEqual(['Bearer v2']);
  });

  it('sets the bearer after the request interceptors, so none of them sees it, while the transport gets it', async () => {
    const { hits } = serve((hit) => acceptOnly('v1', hit));
    const { api, intercepted } = instanceWithEarlierInterceptor(Promise.resolve());

    await api.get('/me');

    expect(intercepted).toEqual([undefined]);
    expect(hits.map((hit) => hit.authorization)).toEqual(['Bearer v1']);
  });

  it('sends a copy of a request that waited to another origin at once and without a bearer', async () => {
    const gate = deferred();
    const { hits } = serve(() => new HttpResponse('boom', { status: 500 }));
    const { api, manager } = setup({ gate: gate.promise });
    const refreshing = manager.refresh();
    const waited = api.get('/me');
    gate.resolve();
    await refreshing;
    const failed = (await rejectionOf(waited)) as AxiosError;
    const refreshSpy = vi.spyOn(manager, 'getAccessToken');

    await api.request({ ...failed.config, url: `${OTHER}/elsewhere` });

    expect(refreshSpy).not.toHaveBeenCalled();
    expect(hits.map((hit) => [hit.url, hit.authorization])).toEqual([
      [`${API}/me`, 'Bearer v2'],
      [`${OTHER}/elsewhere`, null],
    ]);
  });
});

describe('attachTokenRelay: detach', () => {
  it('removes both interceptors, and calling it twice is harmless', async () => {
    const { hits } = serve();
    const { api, detach, refreshes } = setup();
    const userInterceptor = vi.fn((config) => config);

    detach();
    api.interceptors.request.use(userInterceptor);
    detach();
    const error = await rejectionOf(api.get('/me'));

    expect((error as AxiosError).response?.status).toBe(401);
    expect(hits.map((hit) => hit.authorization)).toEqual([null]);
    expect(userInterceptor).toHaveBeenCalledTimes(1);
    expect(refreshes()).toBe(0);
  });

  it("puts the instance's transformRequest back as it was", async () => {
    const api = axios.create({ baseURL: API });
    const before = api.defaults.transformRequest;
    const manager = createTokenManager({ tokens: { accessToken: 'v1', refreshToken: 'r1' }, refresh: async () => ({ accessToken: 'v2' }) });

    const detach = attachTokenRelay(api, manager);
    expect(api.defaults.transformRequest).not.toEqual(before);
    detach();

    expect(api.defaults.transformRequest).toEqual(before);
  });

  it('does not replay a request that was in flight when detach was called', async () => {
    const answer = deferred();
    const { hits } = serve(async (hit) => {
      await answer.promise;
      return acceptOnly('v2', hit);
    });
    const { api, detach, refreshes } = setup();

    const inFlight = api.get('/me');
    await vi.waitFor(() => expect(hits).toHaveLength(1));
    detach();
    answer.resolve();
    const error = await rejectionOf(inFlight);

    expect((error as AxiosError).response?.status).toBe(401);
    expect(hits).toHaveLength(1);
    expect(refreshes()).toBe(0);
  });
});
