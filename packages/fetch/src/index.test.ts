import { ErrorCode, TokenRelayError, createTokenManager, type FailedResponse } from '@tokenrelay/core';
import { unwrappedFetch } from '@tokenrelay/core/kit';
import { http, HttpResponse } from 'msw';
import { setupServer } from 'msw/node';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { installTokenRelay, withTokenRelay, type InstallTokenRelayOptions } from './index.js';

const API = 'https://api.example.test';
const OTHER = 'https://other.example.test';

const server = setupServer();
beforeAll(() => server.listen({ onUnhandledRequest: 'error' }));
afterEach(() => {
  server.resetHandlers();
  vi.unstubAllGlobals();
});
afterAll(() => server.close());

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => (resolve = done));
  return { promise, resolve };
}

/** Resolves to 'still pending' if `promise` has not settled within `ms`, so a slow rejection fails the test instead of hanging it. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | 'still pending'> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<'still pending'>((resolve) => (timer = setTimeout(() => resolve('still pending'), ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A real token manager holding `v0` whose refresh returns v1, v2, … and counts its calls. */
function countingManager(options: { gate?: Promise<void>; tokenEndpoint?: string; fail?: Error } = {}) {
  let calls = 0;
  const refresh = Object.assign(
    async () => {
      const n = ++calls;
      await options.gate;
      if (options.fail) throw options.fail;
      return { accessToken: `v${n}`, refreshToken: `r${n}` };
    },
    { tokenEndpoint: options.tokenEndpoint },
  );
  const manager = createTokenManager({ tokens: { accessToken: 'v0', refreshToken: 'r0' }, refresh, retry: false });
  return { manager, refreshCalls: () => calls };
}

interface Hit {
  path: string;
  authorization: string | null;
  body: Uint8Array;
}

/**
 * A protected API on API and an open one on OTHER, recording every hit. The protected one accepts
 * only `Bearer <validToken()>` and answers 401 `Bearer error="invalid_token"` otherwise.
 */
function serveApi(validToken: () => string, beforeAnswer?: (request: Request) => Promise<void>) {
  const hits: Hit[] = [];
  const record = async (request: Request) => {
    const hit = {
      path: new URL(request.url).pathname + new URL(request.url).search,
      authorization: request.headers.get('authorization'),
      body: new Uint8Array(await request.arrayBuffer()),
    };
    hits.push(hit);
    return hit;
  };
  server.use(
    http.all(`${API}/*`, async ({ request }) => {
      const hit = await record(request);
      await beforeAnswer?.(request);
      if (hit.authorization === `Bearer ${validToken()}`) return HttpResponse.json({ path: hit.path });
      return new HttpResponse('token expired', {
        status: 401,
        headers: { 'WWW-Authenticate': 'Bearer error="invalid_token"' },
      });
    }),
    http.all(`${OTHER}/*`, async ({ request }) => {
      await record(request);
      return HttpResponse.json({ open: true });
    }),
  );
  return hits;
}

describe('origins', () => {
  it('attaches the bearer to the configured origins and to no other origin', async () => {
    const hits = serveApi(() => 'v0');
    const api = withTokenRelay(fetch, countingManager().manager, { origins: [API] });

    expect((await api(`${API}/me`)).status).toBe(200);
    expect((await api(new URL(`${OTHER}/public`))).status).toBe(200);

    expect(hits.map(({ path, authorization }) => ({ path, authorization }))).toEqual([
      { path: '/me', authorization: 'Bearer v0' },
      { path: '/public', authorization: null },
    ]);
  });

  it('never sends the bearer to the token endpoint and never refreshes on its 401, even on a configured origin', async () => {
    const tokenEndpointAuthorization: (string | null)[] = [];
    server.use(
      http.post(`${API}/oauth/token`, ({ request }) => {
        tokenEndpointAuthorization.push(request.headers.get('authorization'));
        return HttpResponse.json({ error: 'invalid_client' }, { status: 401 });
      }),
    );
    const { manager, refreshCalls } = countingManager({ tokenEndpoint: `${API}/oauth/token` });
    const api = withTokenRelay(fetch, manager, { origins: [API] });

    const response = await api(`${API}/oauth/token`, { method: 'POST', body: 'grant_type=refresh_token' });

    expect(response.status).toBe(401);
    expect(tokenEndpointAuthorization).toEqual([null]);
    expect(refreshCalls()).toBe(0);
  });

  it("passes requests to other origins to fetchImpl with the caller's exact arguments", async () => {
    const response = new Response('ok');
    const fetchImpl = vi.fn<typeof fetch>(async () => response);
    const api = withTokenRelay(fetchImpl, countingManager().manager, { origins: [API] });
    const init = { method: 'POST', body: 'payload', headers: { 'x-trace': '1' } };
    const request = new Request(`${OTHER}/upload`, { method: 'PUT', body: 'bytes' });

    await expect(api(`${OTHER}/public`, init)).resolves.toBe(response);
    await expect(api(request)).resolves.toBe(response);

    expect(fetchImpl.mock.calls[0]?.[0]).toBe(`${OTHER}/public`);
    expect(fetchImpl.mock.calls[0]?.[1]).toBe(init);
    expect(fetchImpl.mock.calls[1]?.[0]).toBe(request);
    expect(request.bodyUsed).toBe(false);
  });

  it('throws a CONFIGURATION_ERROR synchronously when no origins are given outside a browser', () => {
    const { manager } = countingManager();
    const attempt = () => withTokenRelay(fetch, manager);

    expect(attempt).toThrow(TokenRelayError);
    expect(attempt).toThrow(expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR }));
  });

  it('in a browser defaults origins to location.origin and resolves relative URLs against location.href', async () => {
    vi.stubGlobal('location', { origin: API, href: `${API}/app/page` });
    const authorization: (string | null)[] = [];
    const fetchImpl: typeof fetch = async (_input, init) => {
      authorization.push(new Headers(init?.headers).get('authorization'));
      return new Response('ok');
    };
    const api = withTokenRelay(fetchImpl, countingManager().manager);

    await api('data');
    await api('/root');
    await api(`${OTHER}/data`);

    expect(authorization).toEqual(['Bearer v0', 'Bearer v0', null]);
  });
});

describe('the URL actually requested', () => {
  it('sends to the URL it checked: a URL object the caller changes after the call does not move the bearer', async () => {
    const hits = serveApi(() => 'v0');
    const api = withTokenRelay(fetch, countingManager().manager, { origins: [API] });
    const url = new URL(`${API}/me`);

    const response = api(url);
    url.href = `${OTHER}/steal`;

    expect((await response).status).toBe(200);
    expect(hits.map(({ path, authorization }) => ({ path, authorization }))).toEqual([{ path: '/me', authorization: 'Bearer v0' }]);
  });

  it.each([
    ['an invalid header name', () => ({ headers: { 'bad name': 'x' } })],
    ['an invalid header value', () => ({ headers: { 'x-trace': 'a\nb' } })],
  ])('reports %s as a rejected promise, never a synchronous throw', async (_kind, makeInit) => {
    const api = withTokenRelay(fetch, countingManager().manager, { origins: [API] });

    let result: Promise<Response> | undefined;
    expect(() => (result = api(`${API}/me`, makeInit()))).not.toThrow();
    await expect(result).rejects.toThrow(TypeError);
  });

  it('reports an origins predicate that throws as a rejected promise', async () => {
    const broken = new Error('origins predicate failed');
    const api = withTokenRelay(fetch, countingManager().manager, {
      origins: () => {
        throw broken;
      },
    });

    let result: Promise<Response> | undefined;
    expect(() => (result = api(`${API}/me`))).not.toThrow();
    await expect(result).rejects.toBe(broken);
  });

  it('reports a shouldRefresh that throws as a rejected promise', async () => {
    serveApi(() => 'v1');
    const broken = new Error('shouldRefresh failed');
    const api = withTokenRelay(fetch, countingManager().manager, {
      origins: [API],
      shouldRefresh: () => {
        throw broken;
      },
    });

    await expect(api(`${API}/me`)).rejects.toBe(broken);
  });
});

describe('redirects', () => {
  interface RedirectHit {
    url: string;
    method: string;
    authorization: string | null;
    contentType: string | null;
    body: string;
  }

  /**
   * `${API}/hop/<status>?to=<url>` redirects (`?left=<n>`: n more times); the token endpoint answers 401, `${OTHER}/denied`
   * 401 `invalid_token`, every other path 200.
   */
  function serveRedirects() {
    const hits: RedirectHit[] = [];
    const record = async (request: Request) => {
      hits.push({
        url: request.url,
        method: request.method,
        authorization: request.headers.get('authorization'),
        contentType: request.headers.get('content-type'),
        body: await request.text(),
      });
    };
    server.use(
      http.all(`${API}/hop/:status`, async ({ request, params }) => {
        await record(request);
        const query = new URL(request.url).searchParams;
        // Without `to`, a chain of `left` more redirects: bounded, so a client that never stops still ends.
        const to = query.get('to') ?? (Number(query.get('left')) > 0 ? `/hop/${String(params.status)}?left=${Number(query.get('left')) - 1}` : '/ok');
        return new HttpResponse(null, { status: Number(params.status), headers: { location: to } });
      }),
      http.all(`${API}/oauth/token`, async ({ request }) => {
        await record(request);
        return HttpResponse.json({ error: 'invalid_client' }, { status: 401 });
      }),
      http.all(`${API}/*`, async ({ request }) => {
        await record(request);
        return HttpResponse.json({ ok: true });
      }),
      http.all(`${OTHER}/denied`, async ({ request }) => {
        await record(request);
        return new HttpResponse('not yours', { status: 401, headers: { 'WWW-Authenticate': 'Bearer error="invalid_token"' } });
      }),
      http.all(`${OTHER}/*`, async ({ request }) => {
        await record(request);
        return HttpResponse.json({ open: true });
      }),
    );
    return hits;
  }

  it('never carries the bearer along a same-origin redirect to the token endpoint, and never refreshes for its 401', async () => {
    const hits = serveRedirects();
    const { manager, refreshCalls } = countingManager({ tokenEndpoint: `${API}/oauth/token` });
    const api = withTokenRelay(fetch, manager, { origins: [API] });

    const response = await api(`${API}/hop/307?to=/oauth/token`, { method: 'POST', body: 'x=1' });

    expect(response.status).toBe(401);
    expect(hits.map((hit) => [new URL(hit.url).pathname, hit.authorization])).toEqual([
      ['/hop/307', 'Bearer v0'],
      ['/oauth/token', null],
    ]);
    expect(refreshCalls()).toBe(0);
  });

  it('never refreshes or replays for a 401 from an origin outside origins reached by a redirect', async () => {
    const hits = serveRedirects();
    const { manager, refreshCalls } = countingManager();
    const api = withTokenRelay(fetch, manager, { origins: [API] });

    const response = await api(`${API}/hop/302?to=${OTHER}/denied`);

    expect(response.status).toBe(401);
    expect(response.url).toBe(`${OTHER}/denied`);
    expect(response.redirected).toBe(true);
    expect(await response.text()).toBe('not yours');
    expect(hits.map((hit) => [hit.url, hit.authorization])).toEqual([
      [`${API}/hop/302?to=${OTHER}/denied`, 'Bearer v0'],
      [`${OTHER}/denied`, null],
    ]);
    expect(refreshCalls()).toBe(0);
  });

  it('never puts the bearer back on a hop after the chain left origins, nor refreshes for its 401, as fetch never restores a dropped Authorization', async () => {
    const hits = serveRedirects();
    // Another origin sends the request back to the API, to a URL and with a method and body of its choosing.
    server.use(
      http.all(`${OTHER}/bounce`, async ({ request }) => {
        hits.push({ url: request.url, method: request.method, authorization: request.headers.get('authorization'), contentType: null, body: await request.text() });
        return new HttpResponse(null, { status: 307, headers: { location: `${API}/account/delete` } });
      }),
      http.all(`${API}/account/delete`, async ({ request }) => {
        hits.push({ url: request.url, method: request.method, authorization: request.headers.get('authorization'), contentType: null, body: await request.text() });
        return new HttpResponse(null, { status: 401, headers: { 'WWW-Authenticate': 'Bearer error="invalid_token"' } });
      }),
    );
    const fresh = countingManager();
    const waiting = countingManager();
    await waiting.manager.setTokens({ accessToken: 'v0', refreshToken: 'r0', expiresAt: Date.now() - 1_000 });
    // The first request goes out at once; the second waits for a refresh and is released through a queue.
    for (const api of [
      withTokenRelay(fetch, fresh.manager, { origins: [API] }),
      withTokenRelay(fetch, waiting.manager, { origins: [API], queue: { add: (task) => task() } }),
    ]) {
      hits.length = 0;
      const response = await api(`${API}/hop/307?to=${OTHER}/bounce`, { method: 'POST', body: 'x=1' });

      expect(response.status).toBe(401);
      expect(hits.map((hit) => [hit.url, hit.method, hit.authorization])).toEqual([
        [`${API}/hop/307?to=${OTHER}/bounce`, 'POST', expect.stringMatching(/^Bearer v[01]$/)],
        [`${OTHER}/bounce`, 'POST', null],
        [`${API}/account/delete`, 'POST', null],
      ]);
    }
    expect(fresh.refreshCalls()).toBe(0);
    // The one refresh is the one the expired token needed before the request was sent.
    expect(waiting.refreshCalls()).toBe(1);
  });

  it('follows redirects as fetch does: 303 and a 302 POST become a bodiless GET, 307 and 308 resend method and body', async () => {
    const hits = serveRedirects();
    const api = withTokenRelay(fetch, countingManager().manager, { origins: [API] });
    const post = { method: 'POST', body: 'name=value', headers: { 'content-type': 'application/x-www-form-urlencoded' } };

    for (const status of [302, 303, 307, 308]) await api(`${API}/hop/${status}?to=/ok`, post);
    await api(new Request(`${API}/hop/307?to=/ok`, post));

    const followed = hits.filter((hit) => new URL(hit.url).pathname === '/ok');
    expect(followed.map(({ method, body, contentType, authorization }) => ({ method, body, contentType, authorization }))).toEqual([
      { method: 'GET', body: '', contentType: null, authorization: 'Bearer v0' },
      { method: 'GET', body: '', contentType: null, authorization: 'Bearer v0' },
      { method: 'POST', body: 'name=value', contentType: 'application/x-www-form-urlencoded', authorization: 'Bearer v0' },
      { method: 'POST', body: 'name=value', contentType: 'application/x-www-form-urlencoded', authorization: 'Bearer v0' },
      { method: 'POST', body: 'name=value', contentType: 'application/x-www-form-urlencoded', authorization: 'Bearer v0' },
    ]);
  });

  it('rejects after 20 redirects, as fetch does', async () => {
    const hits = serveRedirects();
    const api = withTokenRelay(fetch, countingManager().manager, { origins: [API] });

    await expect(api(`${API}/hop/302?left=25`)).rejects.toThrow(TypeError);
    expect(hits).toHaveLength(21);
  });

  it("leaves a caller's redirect: 'manual' alone and returns the redirect", async () => {
    const hits = serveRedirects();
    const api = withTokenRelay(fetch, countingManager().manager, { origins: [API] });

    const response = await api(`${API}/hop/302?to=/ok`, { redirect: 'manual' });

    expect(response.status).toBe(302);
    expect(hits).toHaveLength(1);
  });
});

describe('signed out', () => {
  it.each([
    ['that never held tokens', () => createTokenManager({ refresh: async () => ({ accessToken: 'never' }) })],
    [
      'after clear()',
      () => {
        const { manager } = countingManager();
        void manager.clear();
        return manager;
      },
    ],
  ])('with a manager %s, sends the request without a bearer and returns its 401 as it is, with no token call', async (_kind, makeManager) => {
    const hits = serveApi(() => 'v0');
    const manager = makeManager();
    const refresh = vi.spyOn(manager, 'refresh');
    const api = withTokenRelay(fetch, manager, { origins: [API] });

    const response = await api(`${API}/me`);

    expect(response.status).toBe(401);
    expect(await response.text()).toBe('token expired');
    expect(hits.map((hit) => hit.authorization)).toEqual([null]);
    expect(refresh).not.toHaveBeenCalled();
  });

  it('after SESSION_EXPIRED rejects every request with SESSION_EXPIRED, and sessionExpired fires once', async () => {
    const hits = serveApi(() => 'v1');
    const dead = new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'refresh token revoked', { oauthError: 'invalid_grant' });
    const { manager, refreshCalls } = countingManager({ fail: dead });
    const expired = vi.fn();
    manager.on('sessionExpired', expired);
    const api = withTokenRelay(fetch, manager, { origins: [API] });

    const failures = [await api(`${API}/a`).catch((error: unknown) => error), await api(`${API}/b`).catch((error: unknown) => error)];

    for (const failure of failures) expect(failure).toMatchObject({ code: ErrorCode.SESSION_EXPIRED });
    expect(hits.map((hit) => hit.path)).toEqual(['/a']);
    expect(refreshCalls()).toBe(1);
    expect(expired).toHaveBeenCalledTimes(1);
  });
});

describe('authorization set by the caller', () => {
  it('leaves a request that already carries an Authorization header alone: no bearer, no refresh', async () => {
    const hits = serveApi(() => 'v0');
    const { manager, refreshCalls } = countingManager();
    const api = withTokenRelay(fetch, manager, { origins: [API] });

    const fromInit = await api(`${API}/me`, { headers: { Authorization: 'Basic YWxpY2U6cw==' } });
    const fromRequest = await api(new Request(`${API}/me`, { headers: { authorization: 'Bearer mine' } }));

    expect([fromInit.status, fromRequest.status]).toEqual([401, 401]);
    expect(hits.map((hit) => hit.authorization)).toEqual(['Basic YWxpY2U6cw==', 'Bearer mine']);
    expect(refreshCalls()).toBe(0);
  });
});

describe('a fresh token', () => {
  it('calls the wrapped fetch before the wrapper returns: no promise of ours while the token is fresh', async () => {
    const { manager } = countingManager();
    const calls: [string, HeadersInit | undefined][] = [];
    const canned = async (input: string, init?: RequestInit) => {
      calls.push([input, init?.headers]);
      return new Response('{}');
    };
    const api = withTokenRelay(canned, manager, { origins: [API] });

    const response = api(`${API}/me`, { headers: { accept: 'application/json' }, redirect: 'manual' });

    expect(calls).toEqual([[`${API}/me`, { accept: 'application/json', authorization: 'Bearer v0' }]]);
    expect((await response).status).toBe(200);
  });

  it("adds the bearer to the caller's Headers and header pairs alike, leaving the caller's own object untouched", async () => {
    const hits = serveApi(() => 'v0');
    const { manager } = countingManager();
    const api = withTokenRelay(fetch, manager, { origins: [API] });
    const headers = new Headers({ 'x-trace': '1' });

    await api(`${API}/a`, { headers });
    await api(`${API}/b`, { headers: [['x-trace', '2']] });

    expect(hits.map((hit) => hit.authorization)).toEqual(['Bearer v0', 'Bearer v0']);
    expect(headers.has('authorization')).toBe(false);
  });
});

describe('refresh and replay', () => {
  it('refreshes once for N concurrent 401s and replays each request once with the new token', async () => {
    const hits = serveApi(() => 'v1');
    const releaseRefresh = deferred();
    const { manager, refreshCalls } = countingManager({ gate: releaseRefresh.promise });
    const api = withTokenRelay(fetch, manager, { origins: [API] });

    const responses = Promise.all(Array.from({ length: 5 }, (_, i) => api(`${API}/item?i=${i}`)));
    // Hold the refresh until every request has had its 401, so all of them queue behind the one flight.
    await vi.waitFor(() => expect(hits).toHaveLength(5));
    releaseRefresh.resolve();

    expect((await responses).map((response) => response.status)).toEqual([200, 200, 200, 200, 200]);
    expect(refreshCalls()).toBe(1);
    for (let i = 0; i < 5; i++) {
      expect(hits.filter((hit) => hit.path === `/item?i=${i}`).map((hit) => hit.authorization)).toEqual([
        'Bearer v0',
        'Bearer v1',
      ]);
    }
  });

  it('replays a request whose 401 arrives after the refresh finished without refreshing again', async () => {
    const sent = deferred();
    const answer = deferred();
    let valid = 'v0';
    serveApi(
      () => valid,
      async (request) => {
        if (new URL(request.url).pathname !== '/slow') return;
        sent.resolve();
        await answer.promise;
      },
    );
    const { manager, refreshCalls } = countingManager();
    const api = withTokenRelay(fetch, manager, { origins: [API] });

    const slow = api(`${API}/slow`);
    await sent.promise;
    // Meanwhile another request's 401 made the manager move to v1, and the server revoked v0.
    await manager.refresh();
    valid = 'v1';
    answer.resolve();

    expect((await slow).status).toBe(200);
    expect(refreshCalls()).toBe(1);
  });

  it('replays at most once: a replay that fails again is returned to the caller', async () => {
    const hits = serveApi(() => 'never valid');
    const { manager, refreshCalls } = countingManager();
    const api = withTokenRelay(fetch, manager, { origins: [API] });

    const response = await api(`${API}/me`);

    expect(response.status).toBe(401);
    expect(await response.text()).toBe('token expired');
    expect(refreshCalls()).toBe(1);
    expect(hits.map((hit) => hit.authorization)).toEqual(['Bearer v0', 'Bearer v1']);
  });

  it('cancels the body of the response it discards for the replay', async () => {
    let cancelled = false;
    const responses = [
      new Response(new ReadableStream({ cancel: () => void (cancelled = true) }), { status: 401 }),
      new Response('ok'),
    ];
    const fetchImpl: typeof fetch = async () => responses.shift() ?? Response.error();
    const api = withTokenRelay(fetchImpl, countingManager().manager, { origins: [API] });

    expect(await (await api(`${API}/me`)).text()).toBe('ok');
    expect(cancelled).toBe(true);
  });

  it('rejects with the TokenRelayError SESSION_EXPIRED when the refresh token is dead', async () => {
    serveApi(() => 'v1');
    const dead = new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'refresh token revoked', { oauthError: 'invalid_grant' });
    const { manager } = countingManager({ fail: dead });
    const api = withTokenRelay(fetch, manager, { origins: [API] });

    const failure = await api(`${API}/me`).catch((error: unknown) => error);

    expect(failure).toBeInstanceOf(TokenRelayError);
    expect(failure).toMatchObject({ code: ErrorCode.SESSION_EXPIRED });
  });

  it('calls fetchImpl as a plain function, so a browser fetch never sees a foreign this', async () => {
    const thisValues: unknown[] = [];
    const fetchImpl = function (this: unknown) {
      thisValues.push(this);
      return Promise.resolve(new Response('ok'));
    } as typeof fetch;
    const holder = { fetch: withTokenRelay(fetchImpl, countingManager().manager, { origins: [API] }) };

    await holder.fetch(`${API}/me`);
    await holder.fetch(`${OTHER}/public`);

    expect(thisValues).toEqual([undefined, undefined]);
  });
});

describe('cancellation', () => {
  it('rejects at once when the signal aborts while queued behind a refresh, and the refresh completes for the others', async () => {
    const hits = serveApi(() => 'v1');
    const releaseRefresh = deferred();
    const { manager, refreshCalls } = countingManager({ gate: releaseRefresh.promise });
    const api = withTokenRelay(fetch, manager, { origins: [API] });
    const controller = new AbortController();

    const aborted = api(`${API}/a`, { signal: controller.signal });
    const other = api(`${API}/b`);
    await vi.waitFor(() => expect(hits).toHaveLength(2));
    await vi.waitFor(() => expect(refreshCalls()).toBe(1));
    controller.abort();

    await expect(within(aborted, 1000)).rejects.toBe(controller.signal.reason);
    expect(controller.signal.reason).toMatchObject({ name: 'AbortError' });
    releaseRefresh.resolve();
    expect((await other).status).toBe(200);
    expect(refreshCalls()).toBe(1);
  });

  it("waits for a refresh in flight before sending, and rejects at once when the Request's own signal aborts", async () => {
    const hits = serveApi(() => 'v1');
    const releaseRefresh = deferred();
    const { manager } = countingManager({ gate: releaseRefresh.promise });
    const api = withTokenRelay(fetch, manager, { origins: [API] });
    const controller = new AbortController();
    const inFlight = manager.refresh();

    const aborted = api(new Request(`${API}/a`, { signal: controller.signal }));
    const waiting = api(`${API}/b`);
    controller.abort();

    await expect(within(aborted, 1000)).rejects.toMatchObject({ name: 'AbortError' });
    releaseRefresh.resolve();
    await inFlight;
    expect((await waiting).status).toBe(200);
    // Nothing went out with the dying token, and the aborted request was never sent.
    expect(hits.map((hit) => [hit.path, hit.authorization])).toEqual([['/b', 'Bearer v1']]);
  });
});

describe('bodies', () => {
  it('replays a Request body with identical bytes', async () => {
    const hits = serveApi(() => 'v1');
    const api = withTokenRelay(fetch, countingManager().manager, { origins: [API] });
    const bytes = crypto.getRandomValues(new Uint8Array(16_384));

    const response = await api(new Request(`${API}/upload`, { method: 'POST', body: bytes }));

    expect(response.status).toBe(200);
    expect(hits).toHaveLength(2);
    expect(hits[0]?.body).toEqual(bytes);
    expect(hits[1]?.body).toEqual(bytes);
  });

  it.each([
    ['a string', () => 'name=value'],
    ['a Uint8Array', () => new TextEncoder().encode('name=value')],
    ['an ArrayBuffer', () => new TextEncoder().encode('name=value').buffer],
    ['a Blob', () => new Blob(['name=value'])],
    ['URLSearchParams', () => new URLSearchParams({ name: 'value' })],
  ])('replays a body given in init as %s as it is', async (_kind, makeBody) => {
    const hits = serveApi(() => 'v1');
    const api = withTokenRelay(fetch, countingManager().manager, { origins: [API] });

    const response = await api(`${API}/form`, { method: 'POST', body: makeBody() });

    expect(response.status).toBe(200);
    expect(hits.map((hit) => new TextDecoder().decode(hit.body))).toEqual(['name=value', 'name=value']);
  });

  it.each([
    ['a ReadableStream', () => new Blob(['chunk']).stream()],
    [
      'an async iterable',
      () =>
        (async function* () {
          yield new TextEncoder().encode('chunk');
        })(),
    ],
  ])(
    'never sends a one-shot body given as %s twice: the tokens are refreshed and the caller gets the original 401',
    async (_kind, makeBody) => {
      const hits = serveApi(() => 'v1');
      const { manager, refreshCalls } = countingManager();
      const api = withTokenRelay(fetch, manager, { origins: [API] });
      const init = { method: 'POST', body: makeBody() as BodyInit, duplex: 'half' } as RequestInit;

      const response = await api(`${API}/stream`, init);

      expect(response.status).toBe(401);
      expect(await response.text()).toBe('token expired');
      expect(hits.map((hit) => new TextDecoder().decode(hit.body))).toEqual(['chunk']);
      expect(refreshCalls()).toBe(1);
      expect((await api(`${API}/next`)).status).toBe(200);
      expect(hits.at(-1)?.authorization).toBe('Bearer v1');
    },
  );
});

describe('shouldRefresh', () => {
  function serveFailure(status: number, headers: Record<string, string>, body = '') {
    let count = 0;
    server.use(
      http.all(`${API}/*`, ({ request }) => {
        count++;
        if (request.headers.get('authorization') === 'Bearer v1') return HttpResponse.json({ ok: true });
        return new HttpResponse(body, { status, headers });
      }),
    );
    return () => count;
  }

  it('does not refresh on a 403 insufficient_scope by default', async () => {
    const hits = serveFailure(403, { 'WWW-Authenticate': 'Bearer error="insufficient_scope", scope="admin"' });
    const { manager, refreshCalls } = countingManager();
    const api = withTokenRelay(fetch, manager, { origins: [API] });

    expect((await api(`${API}/admin`)).status).toBe(403);
    expect(refreshCalls()).toBe(0);
    expect(hits()).toBe(1);
  });

  it('does not refresh on a 401 DPoP use_dpop_nonce by default', async () => {
    const hits = serveFailure(401, { 'WWW-Authenticate': 'DPoP error="use_dpop_nonce"', 'DPoP-Nonce': 'n-1' });
    const { manager, refreshCalls } = countingManager();
    const api = withTokenRelay(fetch, manager, { origins: [API] });

    expect((await api(`${API}/me`)).status).toBe(401);
    expect(refreshCalls()).toBe(0);
    expect(hits()).toBe(1);
  });

  it('sends a DPoP-bound token as Authorization: DPoP, on the first send and on the replay after a refresh', async () => {
    const seen: (string | null)[] = [];
    server.use(
      http.get(`${API}/me`, ({ request }) => {
        seen.push(request.headers.get('authorization'));
        return request.headers.get('authorization') === 'DPoP v1'
          ? HttpResponse.json({ ok: true })
          : new HttpResponse(null, { status: 401, headers: { 'WWW-Authenticate': 'DPoP algs="ES256", error="invalid_token"' } });
      }),
    );
    const manager = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r0', tokenType: 'DPoP' },
      refresh: async () => ({ accessToken: 'v1', tokenType: 'DPoP' }),
    });
    const api = withTokenRelay(fetch, manager, { origins: [API] });

    expect((await api(`${API}/me`)).status).toBe(200);
    expect(seen).toEqual(['DPoP v0', 'DPoP v1']);
  });

  it('uses a custom shouldRefresh, which can read the status, URL, headers and body of the failed response', async () => {
    serveFailure(400, { 'content-type': 'application/xml' }, '<exceptionCode>InvalidSessionId</exceptionCode>');
    const seen: Omit<FailedResponse, 'header' | 'text'>[] = [];
    const { manager, refreshCalls } = countingManager();
    const api = withTokenRelay(fetch, manager, {
      origins: [API],
      shouldRefresh: async (failed) => {
        seen.push({ status: failed.status, url: failed.url });
        return failed.header('Content-Type') === 'application/xml' && (await failed.text()).includes('InvalidSessionId');
      },
    });

    expect((await api(`${API}/job`)).status).toBe(200);
    expect(refreshCalls()).toBe(1);
    expect(seen).toEqual([{ status: 400, url: `${API}/job` }]);
  });

  it('leaves the body readable for the caller when shouldRefresh read it and declined', async () => {
    serveFailure(400, {}, 'bad request details');
    const api = withTokenRelay(fetch, countingManager().manager, {
      origins: [API],
      shouldRefresh: async (failed) => (await failed.text()) === 'refresh please',
    });

    const response = await api(`${API}/me`);

    expect(response.status).toBe(400);
    expect(await response.text()).toBe('bad request details');
  });
});

describe('installTokenRelay', () => {
  it('wraps globalThis.fetch, and restore puts the original back; a second restore is harmless', async () => {
    const hits = serveApi(() => 'v0');
    const original = globalThis.fetch;
    const restore = installTokenRelay(countingManager().manager, { origins: [API] });
    try {
      expect(globalThis.fetch).not.toBe(original);
      await fetch(`${API}/me`);
    } finally {
      restore();
    }
    expect(globalThis.fetch).toBe(original);
    restore();
    expect(globalThis.fetch).toBe(original);
    await fetch(`${API}/me`);

    expect(hits.map((hit) => hit.authorization)).toEqual(['Bearer v0', null]);
  });

  it('restore leaves alone a fetch installed after ours', () => {
    const original = globalThis.fetch;
    const restore = installTokenRelay(countingManager().manager, { origins: [API] });
    const later: typeof fetch = async () => new Response('later');
    globalThis.fetch = later;
    try {
      restore();
      expect(globalThis.fetch).toBe(later);
    } finally {
      globalThis.fetch = original;
    }
  });

  it.each([
    // A (on API) restored first: it must stop adding the bearer although B still wraps it.
    ['A, B, restore A, restore B', 'A', null],
    ['A, B, restore B, restore A', 'B', 'Bearer v0'],
  ])(
    'installed twice and restored in any order (%s), puts the original fetch back and adds no bearer after',
    async (_order, restoredFirst, afterFirstRestore) => {
      const hits = serveApi(() => 'v0');
      const original = globalThis.fetch;
      const restoreA = installTokenRelay(countingManager().manager, { origins: [API] });
      const restoreB = installTokenRelay(countingManager().manager, { origins: [OTHER] });
      const [first, second] = restoredFirst === 'A' ? [restoreA, restoreB] : [restoreB, restoreA];

      try {
        first();
        await fetch(`${API}/after-first-restore`);
      } finally {
        second();
      }
      await fetch(`${API}/after-both`);

      expect(globalThis.fetch).toBe(original);
      expect(hits.map((hit) => [hit.path, hit.authorization])).toEqual([
        ['/after-first-restore', afterFirstRestore],
        ['/after-both', null],
      ]);
    },
  );

  it('a restored install that someone wrapped meanwhile stops adding the bearer', async () => {
    const hits = serveApi(() => 'v0');
    const original = globalThis.fetch;
    const restore = installTokenRelay(countingManager().manager, { origins: [API] });
    const ours = globalThis.fetch;
    globalThis.fetch = (input, init) => ours(input, init);
    try {
      restore();
      await fetch(`${API}/me`);
    } finally {
      globalThis.fetch = original;
    }

    expect(hits.map((hit) => hit.authorization)).toEqual([null]);
  });

  it('throws a CONFIGURATION_ERROR without origins outside a browser and leaves globalThis.fetch as it was', () => {
    const original = globalThis.fetch;
    const { manager } = countingManager();

    expect(() => installTokenRelay(manager, {} as InstallTokenRelayOptions)).toThrow(
      expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR }),
    );
    expect(globalThis.fetch).toBe(original);
  });

  it('exposes the wrapped fetch under the non-enumerable unwrappedFetch key, for the token endpoint call', () => {
    const fetchImpl: typeof fetch = async () => new Response('ok');
    const api = withTokenRelay(fetchImpl, countingManager().manager, { origins: [API] });

    expect(Object.getOwnPropertyDescriptor(api, unwrappedFetch)).toMatchObject({ value: fetchImpl, enumerable: false });
  });
});
