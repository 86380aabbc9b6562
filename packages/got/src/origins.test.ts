import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createTokenManager } from '@tokenrelay/core';
import got from 'got';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenRelayHooks } from './index.js';

/** An API on 127.0.0.1 that answers every request with the `Authorization` it was sent, and `/hop` with a redirect to `?to=`. */
let server: Server;
let baseUrl: string;

beforeAll(async () => {
  server = createServer((request, response) => {
    const to = new URL(request.url ?? '/', 'http://127.0.0.1').searchParams.get('to');
    if (to !== null) return response.writeHead(302, { location: to }).end();
    response.end(request.headers.authorization ?? 'none');
  });
  await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((closed) => server.close(() => closed())));

/** A manager whose refresh names a token endpoint on the API's own origin, as refreshTokenGrant's does. */
function managerWithTokenEndpoint() {
  const refresh = Object.assign(async () => ({ accessToken: 'v1' }), { tokenEndpoint: `${baseUrl}/oauth/token` });
  return createTokenManager({ tokens: { accessToken: 'v0', refreshToken: 'r0' }, refresh, retry: false });
}

describe('tokenRelayHooks origins', () => {
  it('puts the bearer on requests to its origins only, never on the token endpoint on the same origin, and drops it on a redirect there', async () => {
    const manager = managerWithTokenEndpoint();
    const api = got.extend({ hooks: tokenRelayHooks(manager, { origins: [baseUrl] }), retry: { limit: 0 } });
    const answer = (url: string | URL) => api.get(url).text();

    expect(await answer(`${baseUrl}/v1/me`)).toBe('Bearer v0');
    expect(await answer(new URL('/v1/me?x=1', baseUrl))).toBe('Bearer v0');
    expect(await answer(`${baseUrl}/oauth/token`)).toBe('none');
    expect(await answer(`${baseUrl}/oauth/./token?x=1`)).toBe('none');
    expect(await answer(`${baseUrl}/oauth/token/`)).toBe('Bearer v0');
    expect(await answer(`${baseUrl}/hop?to=${encodeURIComponent('/oauth/token')}`)).toBe('none');
    expect(await answer(`${baseUrl}/hop?to=${encodeURIComponent('/v1/me')}`)).toBe('Bearer v0');
    expect(await answer(`${baseUrl.replace('127.0.0.1', 'localhost')}/v1/me`)).toBe('none');
  });

  it('hands a predicate origins a parsed URL, and keeps the token endpoint from it', async () => {
    const manager = managerWithTokenEndpoint();
    const seen: unknown[] = [];
    const origins = (url: URL) => {
      seen.push(url);
      return url.pathname.startsWith('/v1/');
    };
    const api = got.extend({ hooks: tokenRelayHooks(manager, { origins }), retry: { limit: 0 } });

    expect(await api.get(`${baseUrl}/v1/me`).text()).toBe('Bearer v0');
    expect(await api.get(`${baseUrl}/v2/me`).text()).toBe('none');
    expect(await api.get(`${baseUrl}/oauth/token`).text()).toBe('none');
    expect(seen.every((url) => url instanceof URL)).toBe(true);
  });
});
