import { createTokenManager } from '@tokenrelay/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { withTokenRelay } from './index.js';

const API = 'https://api.example.test';

interface Hit {
  path: string;
  method: string;
  authorization: string | null;
  body: string;
}

/** A real token manager holding `v0` whose refresh returns v1, v2, … */
function manager() {
  let calls = 0;
  return createTokenManager({
    tokens: { accessToken: 'v0', refreshToken: 'r0' },
    refresh: async () => ({ accessToken: `v${++calls}`, refreshToken: `r${calls}` }),
    retry: false,
  });
}

/**
 * A fetch for API, recording every hit: `/hop/<status>?to=<path>` redirects there, `/slow` answers
 * only when the request's signal aborts (then it rejects as fetch does), and every other path
 * accepts only `Bearer <valid>`, answering 401 `invalid_token` otherwise. It never clones a Request.
 */
function apiFetch(valid: string) {
  const hits: Hit[] = [];
  let slowHitNow!: () => void;
  const slowHit = new Promise<void>((resolve) => (slowHitNow = resolve));
  const fetchImpl = async (input: string | Request, init?: RequestInit): Promise<Response> => {
    const request = new Request(input, init);
    const url = new URL(request.url);
    hits.push({
      path: url.pathname + url.search,
      method: request.method,
      authorization: request.headers.get('authorization'),
      body: await request.text(),
    });
    const hop = /^\/hop\/(\d+)$/.exec(url.pathname);
    if (hop) return new Response(null, { status: Number(hop[1]), headers: { location: url.searchParams.get('to') ?? '/' } });
    if (url.pathname === '/slow') {
      slowHitNow();
      const { signal } = request;
      return new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }));
    }
    if (request.headers.get('authorization') === `Bearer ${valid}`) return new Response('ok');
    return new Response('token expired', { status: 401, headers: { 'www-authenticate': 'Bearer error="invalid_token"' } });
  };
  return { fetchImpl, hits, slowHit };
}

/** Counts `Request.prototype.clone` calls (each one a tee of the body). */
function countClones() {
  const spy = vi.spyOn(Request.prototype, 'clone');
  return () => spy.mock.calls.length;
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('Request bodies across the first send, its redirects and its replay', () => {
  it('clones a Request body once for a first send that succeeds', async () => {
    const { fetchImpl, hits } = apiFetch('v0');
    const api = withTokenRelay(fetchImpl, manager(), { origins: [API] });
    const clones = countClones();

    const response = await api(new Request(`${API}/upload`, { method: 'POST', body: 'payload' }));

    expect(response.status).toBe(200);
    expect(clones()).toBe(1);
    expect(hits.map(({ path, body }) => [path, body])).toEqual([['/upload', 'payload']]);
  });

  it('replays a Request body after a 401 with the same bytes, from the one copy the first send kept', async () => {
    const { fetchImpl, hits } = apiFetch('v1');
    const api = withTokenRelay(fetchImpl, manager(), { origins: [API] });
    const clones = countClones();

    const response = await api(new Request(`${API}/upload`, { method: 'POST', body: 'payload' }));

    expect(response.status).toBe(200);
    expect(hits.map(({ path, authorization, body }) => [path, authorization, body])).toEqual([
      ['/upload', 'Bearer v0', 'payload'],
      ['/upload', 'Bearer v1', 'payload'],
    ]);
    // The first send's copy, which the replay sends; the replay keeps one of it for a 307/308.
    expect(clones()).toBe(2);
  });

  it.each([307, 308])('resends a Request body on a %i redirect, and again on that redirect after a 401 replay', async (status) => {
    const { fetchImpl, hits } = apiFetch('v1');
    const api = withTokenRelay(fetchImpl, manager(), { origins: [API] });

    const response = await api(new Request(`${API}/hop/${status}?to=/upload`, { method: 'POST', body: 'payload' }));

    expect(response.status).toBe(200);
    expect(response.redirected).toBe(true);
    expect(hits.map(({ path, method, authorization, body }) => [path, method, authorization, body])).toEqual([
      [`/hop/${status}?to=/upload`, 'POST', 'Bearer v0', 'payload'],
      ['/upload', 'POST', 'Bearer v0', 'payload'],
      [`/hop/${status}?to=/upload`, 'POST', 'Bearer v1', 'payload'],
      ['/upload', 'POST', 'Bearer v1', 'payload'],
    ]);
  });

  it('resends a body given in init on a 307 redirect after a 401 replay, as it is', async () => {
    const { fetchImpl, hits } = apiFetch('v1');
    const api = withTokenRelay(fetchImpl, manager(), { origins: [API] });
    const clones = countClones();

    const response = await api(`${API}/hop/307?to=/upload`, { method: 'PUT', body: new URLSearchParams({ name: 'value' }) });

    expect(response.status).toBe(200);
    expect(hits.map(({ method, body }) => [method, body])).toEqual(Array(4).fill(['PUT', 'name=value']));
    expect(clones()).toBe(0);
  });

  it('rejects a 307 redirect of a stream body, as fetch does, without sending it anywhere again', async () => {
    const { fetchImpl, hits } = apiFetch('v0');
    const api = withTokenRelay(fetchImpl, manager(), { origins: [API] });
    const body = new Blob(['chunk']).stream();

    const sent = api(`${API}/hop/307?to=/upload`, { method: 'POST', body, duplex: 'half' } as RequestInit);

    await expect(sent).rejects.toThrow(new TypeError('fetch failed: cannot follow a redirect with a streamed body'));
    expect(hits.map(({ path, body: sentBody }) => [path, sentBody])).toEqual([['/hop/307?to=/upload', 'chunk']]);
  });
});

describe('cancellation during a redirect', () => {
  it.each([
    ['in init', (api: typeof fetch, url: string, signal: AbortSignal) => api(url, { signal })],
    ["of the Request's own", (api: typeof fetch, url: string, signal: AbortSignal) => api(new Request(url, { signal }))],
  ])('rejects with the reason when a signal %s aborts while a redirect is followed', async (_where, call) => {
    const { fetchImpl, hits, slowHit } = apiFetch('v0');
    const api = withTokenRelay(fetchImpl as typeof fetch, manager(), { origins: [API] });
    const controller = new AbortController();

    const sent = call(api, `${API}/hop/302?to=/slow`, controller.signal);
    await slowHit;
    controller.abort();

    await expect(sent).rejects.toBe(controller.signal.reason);
    expect(hits.map(({ path, authorization }) => [path, authorization])).toEqual([
      ['/hop/302?to=/slow', 'Bearer v0'],
      ['/slow', 'Bearer v0'],
    ]);
  });
});
