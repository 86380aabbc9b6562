/*
 * Where the bearer goes when the URL is spelled to mislead: userinfo, backslashes, tabs and newlines,
 * a fragment or query holding an allowed origin, upper case, a default port spelled out, a `URL` object,
 * a `Request`. Two servers on 127.0.0.1 record the `Authorization` they were sent; every door (fetch,
 * undici, got) sends each spelling as its client would, and only the allowed server may see the bearer.
 * A guard: every spelling is decided as the WHATWG URL parser that all three clients use reads it.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createTokenManager } from '@tokenrelay/core';
import { withTokenRelay } from '@tokenrelay/fetch';
import { tokenRelayHooks } from '@tokenrelay/got';
import { tokenRelayInterceptor } from '@tokenrelay/undici';
import got from 'got';
import * as undici from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/** A server that records the `Authorization` of every request. */
async function recordingServer() {
  const seen: (string | undefined)[] = [];
  const server = createServer((request, response) => {
    seen.push(request.headers.authorization);
    response.end('ok');
  });
  await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
  return { server, seen, port: (server.address() as AddressInfo).port };
}

let servers: Server[] = [];
let allowed: Awaited<ReturnType<typeof recordingServer>>;
let other: Awaited<ReturnType<typeof recordingServer>>;

beforeAll(async () => {
  allowed = await recordingServer();
  other = await recordingServer();
  servers = [allowed.server, other.server];
});

afterAll(async () => {
  for (const server of servers) {
    server.closeAllConnections();
    await new Promise((closed) => server.close(closed));
  }
});

/** Spellings of a URL on the other server that start with, or hold, the allowed origin. */
const toOther = () => {
  const a = `127.0.0.1:${allowed.port}`;
  const b = `127.0.0.1:${other.port}`;
  return [
    `http://${a}@${b}/me`,
    `http://${b}\\@${a}/me`,
    `http:\\\\${b}\\me`,
    `http://${b}#@${a}/me`,
    `http://${b}?@${a}/me`,
    `HTTP://${b}/me`,
    `http://127.0.0.1:${String(other.port).slice(0, -1)}\t${String(other.port).slice(-1)}/me`,
    `http://127.0.0.1\n:${other.port}/me`,
    ` http://${b}/me`,
  ];
};

/** Spellings of a URL on the allowed server: the bearer goes with each. */
const toAllowed = () => {
  const a = `127.0.0.1:${allowed.port}`;
  return [`HTTP://${a}/me`, `http://${a}/./me`, `http:\\\\${a}\\me`, `http://${a}\n/me`, ` http://${a}/me `];
};

function manager() {
  return createTokenManager({ tokens: { accessToken: 'access-token', refreshToken: 'r0' }, refresh: async () => ({ accessToken: 'next' }), retry: false });
}

const origins = () => [`http://127.0.0.1:${allowed.port}/some/path/`];

const doors: [string, () => (url: string) => Promise<unknown>][] = [
  ['withTokenRelay (fetch)', () => {
    const api = withTokenRelay(fetch, manager(), { origins: origins() });
    return (url) => api(url);
  }],
  ['withTokenRelay (fetch) given a URL object and a Request', () => {
    const api = withTokenRelay(fetch, manager(), { origins: origins() });
    return async (url) => {
      await api(new URL(url)).catch(() => undefined);
      await api(new Request(url));
    };
  }],
  ['tokenRelayInterceptor (undici.request)', () => {
    const dispatcher = new undici.Agent().compose(tokenRelayInterceptor(manager(), { origins: origins() }));
    return (url) => undici.request(url, { dispatcher }).then((response) => response.body.dump());
  }],
  ['tokenRelayHooks (got)', () => {
    const api = got.extend({ hooks: tokenRelayHooks(manager(), { origins: origins() }), retry: { limit: 0 } });
    return (url) => api.get(url).text();
  }],
];

describe('a URL spelled to mislead', () => {
  it.each(doors)('%s sends the bearer only to the allowed server, however the URL is spelled', async (_door, make) => {
    const send = make();
    allowed.seen.length = 0;
    other.seen.length = 0;

    for (const url of toOther()) await send(url).catch(() => undefined);
    for (const url of toAllowed()) await send(url).catch(() => undefined);

    expect(other.seen.length).toBeGreaterThan(0);
    expect(other.seen.filter((authorization) => authorization?.includes('access-token'))).toEqual([]);
    expect(allowed.seen.length).toBeGreaterThan(0);
    expect(allowed.seen.every((authorization) => authorization === 'Bearer access-token')).toBe(true);
  });
});
