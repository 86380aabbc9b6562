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

/** What a hit shows of the request's members, without the bearer only the wrapper adds. */
const membersSeen = (seen: Hit[]) => seen.map(({ path, method, referer, cacheControl, pragma, body }) => ({ path, method, referer, cacheControl, pragma, body }));

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

describe('a Request the caller sends without an init', () => {
  it.each([
    ['outside a browser', undefined],
    ['in a browser, which follows redirects itself', 'browser'],
  ])("goes with its own referrer and referrer policy beside the bearer %s, as fetch sends it", async (_where, build) => {
    if (build) vi.stubGlobal('location', { origin: api, href: `${api}/app` });
    const { byFetch, byWrapper, fetchHits, wrapperHits } = await sentByBoth((fetchImpl) =>
      fetchImpl(new Request(`${api}/ok`, { referrer: `${api}/page`, referrerPolicy: 'unsafe-url' })),
    );

    expect(byWrapper).toEqual(byFetch);
    expect(membersSeen(wrapperHits)).toEqual(membersSeen(fetchHits));
    expect(wrapperHits.map(({ referer, authorization }) => [referer, authorization])).toEqual([[`${api}/page`, 'Bearer v0']]);
  });
});
