import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ErrorCode, createTokenManager, findTokenRelayError } from '@tokenrelay/core';
import got from 'got';
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
