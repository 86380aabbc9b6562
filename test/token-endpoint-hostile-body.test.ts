/*
 * A token endpoint whose body never ends: it drips a byte at a time, or streams more than
 * maxResponseBytes without a Content-Length. A tiny node:http server on 127.0.0.1 plays it, since
 * the embedded OAuth server always answers whole bodies. The refresh token must be presented once,
 * waiters must be released at refreshTimeoutMs, and the connection must be given up.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { ErrorCode, createTokenManager, refreshTokenGrant } from '@tokenrelay/core';
import { afterEach, describe, expect, it } from 'vitest';

let server: Server | undefined;

afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve) ?? resolve(undefined));
  server = undefined;
});

/** Starts a token endpoint on 127.0.0.1; `answer` writes each response. Records each refresh token presented. */
async function tokenEndpoint(answer: (response: ServerResponse, closed: () => boolean) => void) {
  const presented: string[] = [];
  const connectionsClosed: boolean[] = [];
  server = createServer((request: IncomingMessage, response: ServerResponse) => {
    let body = '';
    request.on('data', (chunk: Buffer) => (body += chunk.toString()));
    request.on('end', () => {
      presented.push(new URLSearchParams(body).get('refresh_token') ?? '');
      const index = connectionsClosed.push(false) - 1;
      response.on('close', () => (connectionsClosed[index] = true));
      answer(response, () => connectionsClosed[index] === true);
    });
  });
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/token`, presented, connectionsClosed };
}

/** Writes `chunk` every `everyMs` until the client goes away or `limit` chunks were written (every loop is bounded). */
function drip(response: ServerResponse, closed: () => boolean, chunk: string, everyMs: number, limit: number): void {
  let written = 0;
  const next = () => {
    if (closed() || written >= limit) return;
    written++;
    response.write(chunk, () => setTimeout(next, everyMs));
  };
  next();
}

const waitUntil = async (condition: () => boolean, boundMs: number) => {
  for (const started = Date.now(); !condition() && Date.now() - started < boundMs; ) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
};

describe('a token endpoint whose body never ends', () => {
  it('releases waiters at refreshTimeoutMs while the body drips, presents the refresh token once, and gives the connection up after lateAnswerWaitMs', async () => {
    const endpoint = await tokenEndpoint((response, closed) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      drip(response, closed, ' ', 25, 2_000);
    });
    const manager = createTokenManager({
      tokens: { accessToken: 'at.0', refreshToken: 'rt.0' },
      refresh: refreshTokenGrant({ tokenEndpoint: endpoint.url, clientId: 'app' }),
      refreshTimeoutMs: 300,
      lateAnswerWaitMs: 1_000,
    });

    await expect(manager.refresh({ staleAccessToken: 'at.0' })).rejects.toMatchObject({ code: ErrorCode.REFRESH_TIMEOUT });
    // A request meanwhile joins the open token request instead of presenting rt.0 again.
    await expect(manager.refresh({ staleAccessToken: 'at.0' })).rejects.toMatchObject({ code: ErrorCode.REFRESH_TIMEOUT });
    expect(endpoint.presented).toEqual(['rt.0']);

    await waitUntil(() => endpoint.connectionsClosed[0] === true, 5_000);
    expect(endpoint.connectionsClosed).toEqual([true]);
  });

  it('refuses a body over maxResponseBytes sent without a Content-Length, and stops reading it', async () => {
    const endpoint = await tokenEndpoint((response, closed) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.write('{"access_token":"at.1","padding":"');
      drip(response, closed, 'x'.repeat(16_384), 1, 1_000);
    });
    const manager = createTokenManager({
      tokens: { accessToken: 'at.0', refreshToken: 'rt.0' },
      refresh: refreshTokenGrant({ tokenEndpoint: endpoint.url, clientId: 'app', maxResponseBytes: 65_536 }),
      retry: false,
    });

    await expect(manager.refresh({ staleAccessToken: 'at.0' })).rejects.toMatchObject({ code: ErrorCode.INVALID_TOKEN_RESPONSE });

    await waitUntil(() => endpoint.connectionsClosed[0] === true, 5_000);
    expect(endpoint.connectionsClosed).toEqual([true]);
    expect(endpoint.presented).toEqual(['rt.0']);
  });

  it('refuses a gzip bomb (a small compressed body that inflates past maxResponseBytes) by what it inflates to', async () => {
    // 8 MiB of spaces, some 8 KiB compressed: its Content-Length passes the limit, what it inflates to does not.
    const bomb = gzipSync(Buffer.concat([Buffer.from('{"access_token":"at.1","padding":"'), Buffer.alloc(8 * 1024 * 1024, ' ')]));
    expect(bomb.length).toBeLessThan(65_536);
    const endpoint = await tokenEndpoint((response) => {
      response.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': bomb.length }).end(bomb);
    });
    const manager = createTokenManager({
      tokens: { accessToken: 'at.0', refreshToken: 'rt.0' },
      refresh: refreshTokenGrant({ tokenEndpoint: endpoint.url, clientId: 'app', maxResponseBytes: 65_536 }),
      retry: false,
    });

    await expect(manager.refresh({ staleAccessToken: 'at.0' })).rejects.toMatchObject({
      code: ErrorCode.INVALID_TOKEN_RESPONSE,
      message: expect.stringContaining('body over 65536 bytes'),
    });
    expect(endpoint.presented).toEqual(['rt.0']);
  });
});
