/*
 * How a token request that failed is classified, against real servers on 127.0.0.1: only a request
 * that certainly never reached the server may be repeated with the same refresh token.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { inspect } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCode, type TokenRelayError } from './errors.js';
import { refreshTokenGrant } from './grant.js';

const tokens = { accessToken: 'at', refreshToken: 'rt' };
const signal = new AbortController().signal;
const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
});

/** A server whose every request is handled by `handle` once its body was read completely. */
async function serve(handle: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const server = createServer((req, res) => {
    req.resume();
    req.once('end', () => handle(req, res));
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`;
}

/** A port nothing listens on: taken, then given back. */
async function closedPort(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return `http://127.0.0.1:${port}/token`;
}

const refreshAt = (tokenEndpoint: string, fetch?: typeof globalThis.fetch) =>
  refreshTokenGrant({ tokenEndpoint, clientId: 'app', ...(fetch ? { fetch } : {}) })({ tokens, signal }).then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error as TokenRelayError,
  );

describe('a token request that fails', () => {
  it('is a transient NETWORK_ERROR, not in doubt, when the connection is refused', async () => {
    const error = await refreshAt(await closedPort());
    expect(error).toMatchObject({ code: ErrorCode.NETWORK_ERROR, transient: true });
    expect(error.inDoubt).toBeUndefined();
  });

  it('is in doubt when the connection is reset after the server read the request', async () => {
    const error = await refreshAt(await serve((req) => req.socket.resetAndDestroy()));
    expect(error).toMatchObject({ code: ErrorCode.NETWORK_ERROR, transient: true, inDoubt: true });
  });

  it('is in doubt when the connection closes in the middle of the response body', async () => {
    const endpoint = await serve((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '200' });
      res.write('{"access_token":"new');
      setTimeout(() => req.socket.destroy(), 10);
    });
    expect(await refreshAt(endpoint)).toMatchObject({ code: ErrorCode.NETWORK_ERROR, inDoubt: true });
  });

  it('is not in doubt when the server answered a complete error response', async () => {
    const endpoint = await serve((_req, res) => {
      res.writeHead(503, { 'content-type': 'text/html' }).end('<html>busy</html>');
    });
    const error = await refreshAt(endpoint);
    expect(error).toMatchObject({ code: ErrorCode.TOKEN_ENDPOINT_ERROR, status: 503, transient: true });
    expect(error.inDoubt).toBeUndefined();
  });

  it('is not in doubt when the server answered a redirect, which is never followed', async () => {
    const requests: string[] = [];
    const elsewhere = await serve((req, res) => {
      requests.push(req.url ?? '');
      res.writeHead(200).end();
    });
    const endpoint = await serve((_req, res) => res.writeHead(307, { location: elsewhere }).end());
    const error = await refreshAt(endpoint);
    expect(error).toMatchObject({ code: ErrorCode.NETWORK_ERROR, status: 307 });
    expect(error.inDoubt).toBeUndefined();
    expect(requests).toEqual([]);
  });

  it.each([
    ['a DNS failure', 'ENOTFOUND'],
    ['a temporary DNS failure', 'EAI_AGAIN'],
    ['a connect timeout', 'UND_ERR_CONNECT_TIMEOUT'],
    ['an unreachable host', 'EHOSTUNREACH'],
    ['a TLS certificate failure', 'CERT_HAS_EXPIRED'],
  ])('is not in doubt after %s (undici cause.code %s)', async (_name, code) => {
    const failing = async () => {
      throw new TypeError('fetch failed', { cause: Object.assign(new Error(code), { code }) });
    };
    const error = await refreshAt('https://auth.example.test/token', failing);
    expect(error).toMatchObject({ code: ErrorCode.NETWORK_ERROR, transient: true });
    expect(error.inDoubt).toBeUndefined();
  });

  it.each([
    ['a browser opaque TypeError', new TypeError('Failed to fetch')],
    ['a closed socket', new TypeError('fetch failed', { cause: Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }) })],
    ['an unknown cause', new Error('something else')],
  ])('is in doubt after %s', async (_name, thrown) => {
    const error = await refreshAt('https://auth.example.test/token', async () => {
      throw thrown;
    });
    expect(error).toMatchObject({ code: ErrorCode.NETWORK_ERROR, transient: true, inDoubt: true });
  });
});

describe('an OAuth error answer', () => {
  const answering = (body: unknown) => async () => Response.json(body, { status: 400 });

  it.each(['toString', 'constructor', '__proto__', 'valueOf'])(
    'named "%s", like a member of every object, is a TOKEN_ENDPOINT_ERROR naming it',
    async (name) => {
      const error = await refreshAt('https://auth.example.test/token', answering({ error: name }));
      expect(error).toMatchObject({ name: 'TokenRelayError', code: ErrorCode.TOKEN_ENDPOINT_ERROR, status: 400, oauthError: name });
    },
  );

  it('that echoes the client secret as its error code keeps the secret out of oauthError, the message and the JSON', async () => {
    const secret = 'client-secret-echoed-back';
    const error = await refreshTokenGrant({
      tokenEndpoint: 'https://auth.example.test/token',
      clientId: 'app',
      clientSecret: secret,
      fetch: answering({ error: secret }),
    })({ tokens, signal }).then(
      () => expect.unreachable('expected a rejection'),
      (caught: unknown) => caught as TokenRelayError,
    );
    expect(error).toMatchObject({ code: ErrorCode.TOKEN_ENDPOINT_ERROR, oauthError: '[redacted]' });
    expect([error.message, JSON.stringify(error), inspect(error)].join('\n')).not.toContain(secret.slice(0, 12));
  });
});

describe('a 2xx answer that is not a usable token response', () => {
  const secret = 'client-secret-echoed-back';
  // Longer than any cut of a quoted field: a cut before the redaction would leave its first part behind.
  const longSecret = `${'a-long-client-secret-'.repeat(4)}end`;
  it.each([
    ['as its token_type', secret, { access_token: 'at-1', token_type: secret }],
    ['in an expires_in array', secret, { access_token: 'at-1', expires_in: [secret] }],
    ['as its token_type, and longer than any cut', longSecret, { access_token: 'at-1', token_type: longSecret }],
    ['in an expires_in array, and longer than any cut', longSecret, { access_token: 'at-1', expires_in: [longSecret] }],
  ])('keeps the client secret echoed %s out of the INVALID_TOKEN_RESPONSE', async (_where, echoed, body) => {
    const endpoint = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
    const error = await refreshTokenGrant({ tokenEndpoint: endpoint, clientId: 'app', clientSecret: echoed })({ tokens, signal }).then(
      () => expect.unreachable('expected a rejection'),
      (caught: unknown) => caught as TokenRelayError,
    );
    expect(error).toMatchObject({ code: ErrorCode.INVALID_TOKEN_RESPONSE, status: 200 });
    expect([error.message, JSON.stringify(error), inspect(error)].join('\n')).not.toContain(echoed.slice(0, 12));
  });
});

describe('a token response body', () => {
  it('is read whole when its UTF-8 characters are split between chunks', async () => {
    const body = Buffer.from(JSON.stringify({ access_token: 'at-2', token_type: 'Bearer', scope: 'lecture écriture 読み取り' }));
    const split = body.indexOf(Buffer.from('é')) + 1; // between the two bytes of "é"
    const endpoint = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write(body.subarray(0, split));
      setTimeout(() => res.end(body.subarray(split)), 20);
    });
    const result = await refreshTokenGrant({ tokenEndpoint: endpoint, clientId: 'app' })({ tokens, signal });
    expect(result).toMatchObject({ accessToken: 'at-2', scope: 'lecture écriture 読み取り' });
  });
});
