import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { inspect } from 'node:util';
import { ErrorCode, TokenRelayError, createTokenManager, findTokenRelayError } from '@tokenrelay/core';
import got, { type RequestError } from 'got';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenRelayHooks } from './index.js';

/** An API on 127.0.0.1 that answers every request with the `Authorization` it was sent. */
let server: Server;
let baseUrl: string;

beforeAll(async () => {
  server = createServer((request, response) => response.end(request.headers.authorization ?? 'none'));
  await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((closed) => server.close(() => closed())));

describe('tokenRelayHooks', () => {
  it('refuses every request of a DPoP-bound session with a CONFIGURATION_ERROR, and authorizes them again once the session is not', async () => {
    const manager = createTokenManager({ tokens: { accessToken: 'v0', refreshToken: 'r0' }, refresh: async () => ({ accessToken: 'v1' }), retry: false });
    const api = got.extend({ prefixUrl: baseUrl, hooks: tokenRelayHooks(manager, { origins: [baseUrl] }), retry: { limit: 0 } });
    const answer = () => api.get('me').text();
    const refusal = async () => findTokenRelayError(await answer().catch((error: unknown) => error));

    expect(await answer()).toBe('Bearer v0');
    await manager.setTokens({ accessToken: 'd1', refreshToken: 'r1', tokenType: 'DPoP' });
    expect(await refusal()).toMatchObject({ code: ErrorCode.CONFIGURATION_ERROR, message: expect.stringMatching(/^tokenRelayHooks sends no DPoP proofs/) });
    expect(await refusal()).toMatchObject({ code: ErrorCode.CONFIGURATION_ERROR });
    await manager.setTokens({ accessToken: 'v2', refreshToken: 'r2', tokenType: 'Bearer' });
    expect(await answer()).toBe('Bearer v2');
  });
});

describe('tokenRelayHooks and got errors', () => {
  it('leaves no access token of ours in the errors got rejects with, as JSON or inspected: an HTTP error, a failed replay, a failed refresh', async () => {
    const status = createServer((request, response) => {
      const code = Number(new URL(request.url ?? '/', 'http://127.0.0.1').searchParams.get('status'));
      response.writeHead(code).end();
    });
    await new Promise<void>((listening) => status.listen(0, '127.0.0.1', listening));
    const origin = `http://127.0.0.1:${(status.address() as AddressInfo).port}`;
    let refreshes = 0;
    const refresh = async () => {
      if (++refreshes > 1) throw new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'refresh token refused');
      return { accessToken: 'access-token-two' };
    };
    const manager = createTokenManager({ tokens: { accessToken: 'access-token-one', refreshToken: 'r0' }, refresh, retry: false });
    const api = got.extend({ prefixUrl: origin, hooks: tokenRelayHooks(manager, { origins: [origin] }), retry: { limit: 0 } });
    const failure = (status: number) => api.get(`x?status=${status}`).then(() => new Error('expected a rejection'), (error: unknown) => error as Error);

    const errors = [await failure(500), await failure(401), await failure(401)];
    await new Promise((closed) => status.close(closed));

    expect(errors.map((error) => [error.name, findTokenRelayError(error)?.code])).toEqual([
      ['HTTPError', undefined],
      ['HTTPError', undefined],
      ['RequestError', ErrorCode.SESSION_EXPIRED],
    ]);
    for (const error of errors) {
      const logged = `${JSON.stringify(error)}\n${inspect(error, { depth: 8 })}`;
      expect(logged).not.toMatch(/access-token-(one|two)/);
    }
  });

  it("keeps the caller's own Authorization in got's errors, as got does", async () => {
    const manager = createTokenManager({ tokens: { accessToken: 'v0', refreshToken: 'r0' }, refresh: async () => ({ accessToken: 'v1' }), retry: false });
    const api = got.extend({ hooks: tokenRelayHooks(manager, { origins: [baseUrl] }), retry: { limit: 0 } });
    const failing = { afterResponse: [() => Promise.reject(new Error('refused'))] };
    const error = (await api.get(`${baseUrl}/me`, { headers: { authorization: 'Basic mine' }, hooks: failing }).catch((e: unknown) => e)) as RequestError;
    expect(error.options.headers.authorization).toBe('Basic mine');
  });
});
