import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { inspect } from 'node:util';
import {
  ErrorCode,
  TokenRelayError,
  createTokenManager,
  defaultShouldRefresh,
  findTokenRelayError,
  type ShouldRefresh,
  type TokenManager,
} from '@tokenrelay/core';
import got, { type BeforeRequestHook, type RequestError } from 'got';
import PQueue from 'p-queue';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
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

  it('sends the Authorization a later beforeRequest hook of the caller sets, not our bearer', async () => {
    const manager = createTokenManager({ tokens: { accessToken: 'v0', refreshToken: 'r0' }, refresh: async () => ({ accessToken: 'v1' }), retry: false });
    const api = got.extend({ hooks: tokenRelayHooks(manager, { origins: [baseUrl] }), retry: { limit: 0 } });
    const later: BeforeRequestHook = (options) => void (options.headers.authorization = 'Basic later');
    const ownHook = { beforeRequest: [later] };
    expect(await api.get(`${baseUrl}/me`, { hooks: ownHook }).text()).toBe('Basic later');
    expect(await api.get(`${baseUrl}/me`).text()).toBe('Bearer v0');
  });

  it("keeps the caller's own Authorization in got's errors, as got does", async () => {
    const manager = createTokenManager({ tokens: { accessToken: 'v0', refreshToken: 'r0' }, refresh: async () => ({ accessToken: 'v1' }), retry: false });
    const api = got.extend({ hooks: tokenRelayHooks(manager, { origins: [baseUrl] }), retry: { limit: 0 } });
    const failing = { afterResponse: [() => Promise.reject(new Error('refused'))] };
    const error = (await api.get(`${baseUrl}/me`, { headers: { authorization: 'Basic mine' }, hooks: failing }).catch((e: unknown) => e)) as RequestError;
    expect(error.options.headers.authorization).toBe('Basic mine');
  });

  /** What a log of `error` shows: its JSON and `util.inspect` six levels deep. */
  const logged = (error: unknown) => `${JSON.stringify(error)}\n${inspect(error, { depth: 6 })}`;

  /**
   * An API on 127.0.0.1 that never answers `/hang` (the request stays in flight until the client goes)
   * and answers 401 to anything else; `arrived()` waits for the next request to reach it.
   */
  async function hangingApi() {
    const arrivals: (() => void)[] = [];
    const api = createServer((request, response) => {
      arrivals.splice(0).forEach((arrived) => arrived());
      if (request.url !== '/hang') response.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"' }).end();
    });
    await new Promise<void>((listening) => api.listen(0, '127.0.0.1', listening));
    return {
      origin: `http://127.0.0.1:${(api.address() as AddressInfo).port}`,
      arrived: () => new Promise<void>((arrived) => arrivals.push(arrived)),
      close: () => {
        api.closeAllConnections();
        return new Promise((closed) => api.close(closed));
      },
    };
  }

  /** A manager with access token `access-token-one` whose refresh waits until `release()`; `refreshing()` resolves when it starts. */
  function heldRefreshManager(tokens: { accessToken: string; expiresAt?: number } = { accessToken: 'access-token-one' }) {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let started!: () => void;
    const refreshing = new Promise<void>((resolve) => (started = resolve));
    const refresh = async () => {
      started();
      await released;
      return { accessToken: 'access-token-two' };
    };
    const manager = createTokenManager({ tokens: { ...tokens, refreshToken: 'r0' }, refresh, retry: false });
    return { manager, release, refreshing };
  }

  const rejection = (request: Promise<unknown>) =>
    request.then(
      () => expect.fail('expected a rejection'),
      (error: unknown) => error as RequestError,
    );

  const expectNoAccessToken = (error: RequestError, name: string) => {
    expect(error.name).toBe(name);
    // Neither the token nor `Bearer <token>`: what a log shows of them, if anything.
    expect(logged(error).match(/(Bearer )?access-token-(one|two)/g)).toBeNull();
  };

  it('leaves no access token of ours in the AbortError of a request whose signal aborts in flight', async () => {
    const api = await hangingApi();
    const { manager } = heldRefreshManager();
    const client = got.extend({ prefixUrl: api.origin, hooks: tokenRelayHooks(manager, { origins: [api.origin] }), retry: { limit: 0 } });
    const abort = new AbortController();

    const arrived = api.arrived();
    const failed = rejection(client.get('hang', { signal: abort.signal }));
    await arrived;
    abort.abort();

    expectNoAccessToken(await failed, 'AbortError');
    await api.close();
  });

  it('leaves no access token of ours in the TimeoutError of a request whose signal is AbortSignal.timeout()', async () => {
    const api = await hangingApi();
    const { manager } = heldRefreshManager();
    const client = got.extend({ prefixUrl: api.origin, hooks: tokenRelayHooks(manager, { origins: [api.origin] }), retry: { limit: 0 } });

    const failed = await rejection(client.get('hang', { signal: AbortSignal.timeout(50) }));

    expectNoAccessToken(failed, 'TimeoutError');
    await api.close();
  });

  it('leaves no access token of ours in the CancelError of a request cancelled in flight (promise.cancel())', async () => {
    const api = await hangingApi();
    const { manager } = heldRefreshManager();
    const client = got.extend({ prefixUrl: api.origin, hooks: tokenRelayHooks(manager, { origins: [api.origin] }), retry: { limit: 0 } });

    const arrived = api.arrived();
    const request = client.get('hang');
    const failed = rejection(request);
    await arrived;
    request.cancel();

    expectNoAccessToken(await failed, 'CancelError');
    await api.close();
  });

  /** A client of `api` whose hooks count in `refreshAsked` each failed response they judge (then the request waits for the refresh). */
  function judgingClient(manager: TokenManager, origin: string, queue?: PQueue) {
    const asked = { count: 0 };
    const shouldRefresh: ShouldRefresh = (response) => {
      asked.count++;
      return defaultShouldRefresh(response);
    };
    const client = got.extend({ prefixUrl: origin, hooks: tokenRelayHooks(manager, { origins: [origin], shouldRefresh, queue }), retry: { limit: 0 } });
    return { client, asked };
  }

  it('leaves no access token of ours in the AbortError of a request whose signal aborts while it waits for the refresh its 401 started', async () => {
    const api = await hangingApi();
    const { manager, release, refreshing } = heldRefreshManager();
    const { client } = judgingClient(manager, api.origin);
    const abort = new AbortController();

    const failed = rejection(client.get('expired', { signal: abort.signal }));
    await refreshing;
    abort.abort();

    expectNoAccessToken(await failed, 'AbortError');
    release();
    await api.close();
  });

  it('leaves no access token of ours in the CancelError of a request cancelled while it waits for the refresh its 401 started', async () => {
    const api = await hangingApi();
    const { manager, release } = heldRefreshManager();
    const { client, asked } = judgingClient(manager, api.origin);

    const request = client.get('expired');
    const failed = rejection(request);
    await vi.waitFor(() => expect(asked.count).toBe(1));
    request.cancel();

    expectNoAccessToken(await failed, 'CancelError');
    release();
    await api.close();
  });

  it('leaves no access token of ours in the errors of requests a refresh released into the queue, aborted or cancelled while they wait there', async () => {
    const api = await hangingApi();
    const { manager, release, refreshing } = heldRefreshManager({ accessToken: 'access-token-one', expiresAt: Date.now() - 1_000 });
    const queue = new PQueue({ concurrency: 1 });
    const { client } = judgingClient(manager, api.origin, queue);
    const abort = new AbortController();

    let free!: () => void;
    void queue.add(() => new Promise<void>((resolve) => (free = resolve)));
    const aborted = rejection(client.get('hang', { signal: abort.signal }));
    const cancelled = client.get('hang');
    const cancel = rejection(cancelled);
    await refreshing;
    release();
    await vi.waitFor(() => expect(queue.size).toBe(2));
    abort.abort();
    cancelled.cancel();

    expectNoAccessToken(await aborted, 'AbortError');
    expectNoAccessToken(await cancel, 'CancelError');
    free();
    await api.close();
  });

  it("keeps the caller's own Authorization in the AbortError of a request whose signal aborts in flight", async () => {
    const api = await hangingApi();
    const { manager } = heldRefreshManager();
    const client = got.extend({ prefixUrl: api.origin, hooks: tokenRelayHooks(manager, { origins: [api.origin] }), retry: { limit: 0 } });
    const abort = new AbortController();

    const arrived = api.arrived();
    const failed = rejection(client.get('hang', { signal: abort.signal, headers: { authorization: 'Basic mine' } }));
    await arrived;
    abort.abort();

    const error = await failed;
    expect(error.name).toBe('AbortError');
    expect(error.options.headers.authorization).toBe('Basic mine');
    await api.close();
  });
});
