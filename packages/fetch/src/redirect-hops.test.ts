import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createTokenManager } from '@tokenrelay/core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { withTokenRelay } from './index.js';

interface Hit {
  path: string;
  method: string;
  authorization: string | undefined;
  referer: string | undefined;
  cacheControl: string | undefined;
  pragma: string | undefined;
  body: string;
}

/**
 * An API on 127.0.0.1, recording every hit: `/hop/<status>?to=<path>` redirects there (with
 * `&policy=<p>`, a `Referrer-Policy: <p>` header on the redirect), `/upload` answers 401
 * `invalid_token` to anything but `Bearer v1`, every other path 200 `ok`.
 */
let server: Server;
let api: string;
let hits: Hit[] = [];

beforeAll(async () => {
  server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const url = new URL(request.url ?? '/', api);
      hits.push({
        path: url.pathname,
        method: request.method ?? '',
        authorization: request.headers.authorization,
        referer: request.headers.referer,
        cacheControl: request.headers['cache-control'],
        pragma: request.headers.pragma,
        body: Buffer.concat(chunks).toString(),
      });
      const hop = /^\/hop\/(\d{3})$/.exec(url.pathname);
      if (hop) {
        const policy = url.searchParams.get('policy');
        response.writeHead(Number(hop[1]), { location: url.searchParams.get('to') ?? '/ok', ...(policy && { 'referrer-policy': policy }) });
        return response.end('moved');
      }
      if (url.pathname === '/upload' && request.headers.authorization !== 'Bearer v1') {
        response.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"' });
        return response.end('token expired');
      }
      response.end('ok');
    });
  });
  await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
  api = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

beforeEach(() => {
  hits = [];
});

afterEach(() => {
  vi.unstubAllGlobals();
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((closed) => server.close(() => closed()));
});

/** Node's fetch wrapped, with a manager holding `v0` whose refresh returns `v1`. */
function relayFetch() {
  const manager = createTokenManager({
    tokens: { accessToken: 'v0', refreshToken: 'r0' },
    refresh: async () => ({ accessToken: 'v1', refreshToken: 'r1' }),
    retry: false,
  });
  return withTokenRelay(fetch, manager, { origins: [api] });
}

/**
 * What a hit shows of the request's members, without the bearer only the wrapper adds, and without the
 * `Referer`: Node's own fetch sends a Request's referrer under undici 6 (Node 20, 22) and not under
 * undici 7 (Node 24), while the wrapper always sends the one the caller gave; the tests check it apart.
 */
const membersSeen = (seen: Hit[]) => seen.map(({ path, method, cacheControl, pragma, body }) => ({ path, method, cacheControl, pragma, body }));

/** The hits of `send`, and what it resolved or rejected with, for `fetch` itself and for the wrapper. */
async function sentByBoth(send: (fetchImpl: typeof fetch) => Promise<Response>) {
  const outcome = (sent: Promise<Response>) =>
    sent.then(
      async (response) => ({ status: response.status, url: response.url, redirected: response.redirected, body: await response.text() }),
      (error: unknown) => ({ rejected: error instanceof TypeError }),
    );
  const byFetch = await outcome(send(fetch));
  const fetchHits = hits;
  hits = [];
  const byWrapper = await outcome(send(relayFetch()));
  return { byFetch, byWrapper, fetchHits, wrapperHits: hits };
}

/** A redirect with status `first` to one with status `second` to `/ok`. */
const chain = (first: number, second: number) => `/hop/${first}?to=${encodeURIComponent(`/hop/${second}?to=/ok`)}`;
const integrityOf = (body: string) => `sha256-${createHash('sha256').update(body).digest('base64')}`;

describe('a Request the caller sends without an init', () => {
  it.each([
    ['outside a browser', undefined],
    ['in a browser, which follows redirects itself', 'browser'],
  ])("goes with its own referrer and referrer policy beside the bearer %s, otherwise as fetch sends it", async (_where, build) => {
    if (build) vi.stubGlobal('location', { origin: api, href: `${api}/app` });
    const { byFetch, byWrapper, fetchHits, wrapperHits } = await sentByBoth((fetchImpl) =>
      fetchImpl(new Request(`${api}/ok`, { referrer: `${api}/page`, referrerPolicy: 'unsafe-url' })),
    );

    expect(byWrapper).toEqual(byFetch);
    expect(membersSeen(wrapperHits)).toEqual(membersSeen(fetchHits));
    expect(wrapperHits.map(({ referer, authorization }) => [referer, authorization])).toEqual([[`${api}/page`, 'Bearer v0']]);
  });
});

describe('the requests of a redirect that the wrapper follows hop by hop, against fetch following it', () => {
  it("keeps a Request's referrer, referrer policy and cache mode on every hop, otherwise as fetch sends them", async () => {
    const { byFetch, byWrapper, fetchHits, wrapperHits } = await sentByBoth((fetchImpl) =>
      fetchImpl(new Request(`${api}${chain(302, 307)}`, { referrer: `${api}/page`, referrerPolicy: 'unsafe-url', cache: 'no-store' })),
    );

    expect(byWrapper).toEqual(byFetch);
    expect(membersSeen(wrapperHits)).toEqual(membersSeen(fetchHits));
    expect(wrapperHits.map(({ referer, cacheControl }) => [referer, cacheControl])).toEqual(Array(3).fill([`${api}/page`, 'no-cache']));
    expect(wrapperHits.map(({ authorization }) => authorization)).toEqual(Array(3).fill('Bearer v0'));
  });

  it("applies a redirect's Referrer-Policy to the next hop, as fetch does", async () => {
    const { byFetch, byWrapper, fetchHits, wrapperHits } = await sentByBoth((fetchImpl) =>
      fetchImpl(`${api}/hop/302?to=/ok&policy=${encodeURIComponent('no-such-policy, origin')}`, { referrer: `${api}/page`, referrerPolicy: 'unsafe-url' }),
    );

    expect(byWrapper).toEqual(byFetch);
    expect(membersSeen(wrapperHits)).toEqual(membersSeen(fetchHits));
    expect(wrapperHits.map(({ referer }) => referer)).toEqual([`${api}/page`, `${api}/`]);
  });

  it.each([
    ['a Request', (url: string, integrity: string) => new Request(url, { integrity })],
    ['init', (url: string, integrity: string) => [url, { integrity }] as const],
  ])("checks the integrity metadata of %s against the redirect's final response only, as fetch does", async (_where, call) => {
    for (const [body, settles] of [
      ['ok', 'resolves'],
      ['not ok', 'rejects'],
    ] as const) {
      const send = (fetchImpl: typeof fetch) => {
        const args = call(`${api}${chain(301, 308)}`, integrityOf(body));
        return Array.isArray(args) ? fetchImpl(args[0], args[1]) : fetchImpl(args as Request);
      };
      const { byFetch, byWrapper, wrapperHits } = await sentByBoth(send);

      expect(byWrapper).toEqual(byFetch);
      expect(byWrapper).toEqual(settles === 'resolves' ? { status: 200, url: `${api}/ok`, redirected: true, body: 'ok' } : { rejected: true });
      expect(wrapperHits.map(({ path }) => path)).toEqual(['/hop/301', '/hop/308', '/ok']);
    }
  });

  it.each([
    ['a stronger hash function with no value', (good: string) => `${good} sha512-`],
    ['a stronger hash function with a value that is no base64', (good: string) => `${good} sha512-!!!!`],
    ['a value followed by more than its padding', (good: string) => `${good}=junk`],
    ['a value with more padding than base64 has', (good: string) => `${good}===`],
  ])('reads integrity metadata with %s as fetch does', async (_what, metadata) => {
    const send = (fetchImpl: typeof fetch) => fetchImpl(`${api}${chain(301, 308)}`, { integrity: metadata(integrityOf('ok')) });
    const { byFetch, byWrapper } = await sentByBoth(send);

    expect(byWrapper).toEqual(byFetch);
  });

  it('rejects a 302 of a POST with a stream body, as fetch does, without following it', async () => {
    const { byFetch, byWrapper, wrapperHits } = await sentByBoth((fetchImpl) =>
      fetchImpl(`${api}/hop/302?to=/ok`, { method: 'POST', body: new Blob(['chunk']).stream(), duplex: 'half' } as RequestInit),
    );

    expect(byWrapper).toEqual(byFetch);
    expect(byWrapper).toEqual({ rejected: true });
    expect(wrapperHits.map(({ path, body }) => [path, body])).toEqual([['/hop/302', 'chunk']]);
  });

  it.each([307, 308])('replays a Request body after a 401 at the end of a %i redirect, sending the same bytes on every hop', async (status) => {
    const response = await relayFetch()(new Request(`${api}/hop/${status}?to=/upload`, { method: 'PUT', body: 'payload', cache: 'no-store' }));

    expect([response.status, await response.text()]).toEqual([200, 'ok']);
    expect(hits.map(({ path, method, authorization, cacheControl, body }) => [path, method, authorization, cacheControl, body])).toEqual([
      [`/hop/${status}`, 'PUT', 'Bearer v0', 'no-cache', 'payload'],
      ['/upload', 'PUT', 'Bearer v0', 'no-cache', 'payload'],
      [`/hop/${status}`, 'PUT', 'Bearer v1', 'no-cache', 'payload'],
      ['/upload', 'PUT', 'Bearer v1', 'no-cache', 'payload'],
    ]);
  });
});
