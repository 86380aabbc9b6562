import { describe, expect, it } from 'vitest';
import type { TokenEndpointFailure } from './types.js';
import { callApi, refreshWith, useServers, waitUntil, type RawResponse } from './test-helpers.js';

const start = useServers();

interface Case {
  failure: TokenEndpointFailure;
  status: number;
  contentType: RegExp;
  check: (response: RawResponse) => void;
}

const cases: Case[] = [
  {
    failure: 'unavailable',
    status: 503,
    contentType: /^text\/html/,
    check: (response) => expect(response.text).toContain('503 Service Unavailable'),
  },
  {
    failure: 'rate_limited',
    status: 429,
    contentType: /^application\/json/,
    check: (response) => {
      expect(response.headers.get('retry-after')).toBe('1');
      expect(response.json?.error).toBe('temporarily_unavailable');
    },
  },
  {
    failure: { kind: 'rate_limited', retryAfterSeconds: 7 },
    status: 429,
    contentType: /^application\/json/,
    check: (response) => expect(response.headers.get('retry-after')).toBe('7'),
  },
  {
    failure: 'invalid_grant',
    status: 400,
    contentType: /^application\/json/,
    check: (response) => expect(response.json?.error).toBe('invalid_grant'),
  },
  {
    failure: 'invalid_grant_403',
    status: 403,
    contentType: /^application\/json/,
    check: (response) => expect(response.json?.error).toBe('invalid_grant'),
  },
  {
    failure: 'invalid_client',
    status: 401,
    contentType: /^application\/json/,
    check: (response) => {
      expect(response.json?.error).toBe('invalid_client');
      expect(response.headers.get('www-authenticate')).toMatch(/^Basic /);
    },
  },
  {
    failure: 'html',
    status: 200,
    contentType: /^text\/html/,
    check: (response) => expect(response.text).toMatch(/^<!doctype html>/),
  },
  {
    failure: 'not_json',
    status: 200,
    contentType: /^application\/json/,
    check: (response) => expect(() => JSON.parse(response.text) as unknown).toThrow(),
  },
  {
    failure: 'truncated_json',
    status: 200,
    contentType: /^application\/json/,
    check: (response) => {
      expect(response.text).toMatch(/^\{"access_token":"/);
      expect(() => JSON.parse(response.text) as unknown).toThrow();
    },
  },
  {
    failure: 'missing_access_token',
    status: 200,
    contentType: /^application\/json/,
    check: (response) => {
      expect(response.json).toBeDefined();
      expect(response.json).not.toHaveProperty('access_token');
    },
  },
  {
    failure: 'expires_in_string',
    status: 200,
    contentType: /^application\/json/,
    check: (response) => expect(response.json?.expires_in).toBe('3600'),
  },
  {
    failure: 'error_in_200',
    status: 200,
    contentType: /^application\/json/,
    check: (response) => expect(response.json).toEqual({ error: 'server_error' }),
  },
  {
    failure: 'huge_body',
    status: 200,
    contentType: /^application\/json/,
    check: (response) => {
      expect(Buffer.byteLength(response.text)).toBe(5 * 1024 * 1024);
      expect(response.json?.access_token).toEqual(expect.any(String));
    },
  },
  {
    failure: { kind: 'huge_body', bytes: 100_000 },
    status: 200,
    contentType: /^application\/json/,
    check: (response) => expect(Buffer.byteLength(response.text)).toBe(100_000),
  },
];

describe('injected token endpoint failures', () => {
  it.each(cases)('answers $failure with HTTP $status and leaves every token as it was', async ({ failure, status, contentType, check }) => {
    const server = await start();
    const tokens = server.issue();
    server.failNextTokenRequests(1, failure);

    const response = await refreshWith(server, tokens.refreshToken!);
    expect(response.status).toBe(status);
    expect(response.headers.get('content-type')).toMatch(contentType);
    check(response);
    // Any access token inside a malformed answer is a fake: the API refuses it.
    if (typeof response.json?.access_token === 'string') {
      expect((await callApi(server, '/api/me', response.json.access_token)).status).toBe(401);
    }

    // Consumed once; the refresh token and the old access token still work.
    expect((await refreshWith(server, tokens.refreshToken!)).status).toBe(200);
    expect((await callApi(server, '/api/me', tokens.accessToken)).status).toBe(200);
    const kind = typeof failure === 'string' ? failure : failure.kind;
    expect(server.stats()).toMatchObject({ tokenRequests: 2, tokenSuccesses: 1, injectedFailures: { [kind]: 1 } });
    expect(server.stats().tokenRequestLog.map((entry) => entry.injected)).toEqual([kind, undefined]);
  });

  it('does not rotate the refresh token on an injected failure', async () => {
    const server = await start({ rotateRefreshTokens: true });
    const tokens = server.issue();
    server.failNextTokenRequests(1, 'unavailable');
    expect((await refreshWith(server, tokens.refreshToken!)).status).toBe(503);
    const retried = await refreshWith(server, tokens.refreshToken!);
    expect(retried.status).toBe(200);
    expect(server.stats().refreshTokenReuses).toBe(0);
  });

  it('consumes queued failures in order, one per request, then answers normally', async () => {
    const server = await start();
    const tokens = server.issue();
    server.failNextTokenRequests(2, 'unavailable');
    server.failNextTokenRequests(1, 'invalid_grant');

    const statuses: number[] = [];
    for (let attempt = 0; attempt < 4; attempt++) statuses.push((await refreshWith(server, tokens.refreshToken!)).status);
    expect(statuses).toEqual([503, 503, 400, 200]);
    expect(server.stats()).toMatchObject({ injectedFailures: { unavailable: 2, invalid_grant: 1 }, tokenErrors: { invalid_grant: 1 } });
  });

  it('forgets pending failures on clearFailures()', async () => {
    const server = await start();
    server.failNextTokenRequests(3, 'unavailable');
    server.clearFailures();
    expect((await refreshWith(server, server.issue().refreshToken!)).status).toBe(200);
  });

  it("'slow' waits delayMs and then answers normally", async () => {
    const server = await start();
    const tokens = server.issue();
    server.failNextTokenRequests(1, { kind: 'slow', delayMs: 200 });
    const startedAt = Date.now();
    const response = await refreshWith(server, tokens.refreshToken!);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(190);
    expect(response.status).toBe(200);
    expect((await callApi(server, '/api/me', String(response.json?.access_token))).status).toBe(200);
  });

  it("'reset' destroys the connection so the request fails, and the server keeps serving", async () => {
    const server = await start();
    const tokens = server.issue();
    server.failNextTokenRequests(1, 'reset');
    await expect(refreshWith(server, tokens.refreshToken!)).rejects.toThrow();
    expect((await refreshWith(server, tokens.refreshToken!)).status).toBe(200);
    expect(server.stats().tokenRequestLog[0]).toMatchObject({ injected: 'reset', status: undefined });
  });

  it("'hang' never answers, and close() still finishes at once and fails the hung request", async () => {
    const server = await start();
    server.failNextTokenRequests(1, 'hang');
    const hung = refreshWith(server, server.issue().refreshToken!);
    const settled = hung.then(
      () => 'answered',
      () => 'failed',
    );
    await waitUntil(() => server.stats().tokenRequestLog[0]?.injected === 'hang');
    const outcome = await Promise.race([settled, new Promise((resolve) => setTimeout(() => resolve('pending'), 200))]);
    expect(outcome).toBe('pending');

    const closingStarted = Date.now();
    await server.close();
    expect(Date.now() - closingStarted).toBeLessThan(1000);
    expect(await settled).toBe('failed');
  });

  it('close() does not wait for a token request parked in latency', async () => {
    const server = await start({ tokenEndpointLatencyMs: 10_000 });
    const pending = refreshWith(server, server.issue().refreshToken!).then(
      () => 'answered',
      () => 'failed',
    );
    await waitUntil(() => server.stats().tokenRequests === 1);
    const closingStarted = Date.now();
    await server.close();
    expect(Date.now() - closingStarted).toBeLessThan(1000);
    expect(await pending).toBe('failed');
  });

  it('validates its arguments', async () => {
    const server = await start();
    expect(() => server.failNextTokenRequests(-1, 'unavailable')).toThrow(RangeError);
    expect(() => server.failNextTokenRequests(1.5, 'unavailable')).toThrow(RangeError);
    expect(() => server.failNextTokenRequests(1, 'teapot' as TokenEndpointFailure)).toThrow(TypeError);
    expect(() => server.failNextTokenRequests(1, 'slow' as TokenEndpointFailure)).toThrow(/delayMs/);
    expect(() => server.failNextTokenRequests(1, { kind: 'rate_limited', retryAfterSeconds: -2 })).toThrow(TypeError);
    expect(() => server.failNextTokenRequests(1, { kind: 'slow', delayMs: Number.NaN })).toThrow(TypeError);
  });
});
