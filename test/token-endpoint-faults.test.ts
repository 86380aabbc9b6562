/*
 * The token endpoint misbehaves; tokenrelay must stay sane. Each row injects one fault into the
 * embedded OAuth server (@tokenrelay/testing, rotation on) and drives a real manager with
 * refreshTokenGrant through the fetch adapter. Each failure must give its exact error code,
 * settle within a bound, leave the stored tokens untouched, retry only what is transient, and
 * let the next request recover with the same (still valid) refresh token.
 *
 * Three response shapes the embedded server cannot inject (a negative or non-finite expires_in,
 * a missing token_type) are produced in front of it: `scripted` answers from the token fetch
 * without reaching the server; `rewrite` edits the server's real answer.
 */
import {
  ErrorCode,
  createTokenManager,
  isTokenRelayError,
  memoryStore,
  type StoredTokens,
  type TokenSet,
  type TokenStore,
} from '@tokenrelay/core';
import { withTokenRelay } from '@tokenrelay/fetch';
import {
  defaultClient,
  loopbackOnlyFetch,
  startOAuthServer,
  type OAuthServer,
  type TokenEndpointFailure,
} from '@tokenrelay/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultClientGrant } from './helpers/default-client-grant.js';

// Long enough that reading (and refusing) a 5 MB answer never outlasts it on a loaded machine.
const refreshTimeoutMs = 1_500;
/** A hung token request is given up after this; only then may its refresh token be presented again. */
const lateAnswerWaitMs = 2_500;
const retry = { retries: 2, minDelayMs: 20, maxDelayMs: 2_000, pauseAfterFailureMs: 50, maxPauseAfterFailureMs: 100 };
const attemptsWhenTransient = retry.retries + 1;
/** No row may take longer than every attempt timing out plus every backoff at its cap, and some slack for a busy machine. */
const settleBoundMs = attemptsWhenTransient * (refreshTimeoutMs + retry.maxDelayMs) + 2_000;

type Injection =
  | { inject: TokenEndpointFailure; times: number }
  | { scripted: string }
  | { rewrite: (answer: Record<string, unknown>) => Record<string, unknown> };

let server: OAuthServer | undefined;

afterEach(async () => {
  await server?.close();
  server = undefined;
});

/** A store that counts writes, so "stored tokens untouched" is a fact, not an inference. */
function recordingStore(initial: TokenSet): TokenStore & { writes: TokenSet[] } {
  const inner = memoryStore({ tokens: initial, revision: 1 });
  const writes: TokenSet[] = [];
  return {
    writes,
    get: () => inner.get(),
    set: (value: StoredTokens, options) => {
      writes.push(value.tokens);
      return inner.set(value, options);
    },
    clear: () => inner.clear(),
  };
}

/** The tokens a recording store holds now. */
const storedTokens = async (store: TokenStore) => (await store.get())?.tokens;

/** A signed-in session whose access token the manager already considers expired, so the first request refreshes. */
async function startSession(injection: Injection) {
  server = await startOAuthServer({ rotateRefreshTokens: true });
  const issued = server.issue();
  const initial: TokenSet = { ...issued, expiresAt: Date.now() - 1_000 };
  const store = recordingStore(initial);
  const presentedRefreshTokens: string[] = [];
  let scripted = 'scripted' in injection ? injection.scripted : undefined;
  const tokenFetch: typeof fetch = async (input, init) => {
    presentedRefreshTokens.push(new URLSearchParams(String(init?.body)).get('refresh_token') ?? '');
    if (scripted !== undefined) {
      const body = scripted;
      scripted = undefined;
      return new Response(body, { status: 200, headers: { 'content-type': 'application/json' } });
    }
    const response = await loopbackOnlyFetch()(input, init);
    if (!('rewrite' in injection) || response.status !== 200) return response;
    const answer = injection.rewrite((await response.json()) as Record<string, unknown>);
    return new Response(JSON.stringify(answer), { status: 200, headers: response.headers });
  };
  const manager = createTokenManager({
    store,
    refresh: defaultClientGrant(server, { fetch: tokenFetch }),
    refreshTimeoutMs,
    lateAnswerWaitMs,
    retry,
  });
  const sessionExpired: unknown[] = [];
  manager.on('sessionExpired', (error) => sessionExpired.push(error));
  const api = withTokenRelay(loopbackOnlyFetch(), manager, { origins: [server.url] });
  if ('inject' in injection) server.failNextTokenRequests(injection.times, injection.inject);
  return { server, manager, api, store, initial, presentedRefreshTokens, sessionExpired };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Settles `promise` into a value, and how long it took. */
async function timed<T>(promise: Promise<T>): Promise<{ outcome: { value: T } | { error: unknown }; ms: number }> {
  const startedAt = performance.now();
  const outcome = await promise.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
  return { outcome, ms: performance.now() - startedAt };
}

interface FailureRow {
  fault: string;
  injection: Injection;
  /** Token calls made: 1, or every attempt of the retry policy for a transient fault. */
  attempts: number;
  error: { code: ErrorCode; status?: number; oauthError?: string };
  /** For a transient fault that exhausted the retries: the code of the last attempt's error. */
  lastAttempt?: ErrorCode;
}

const transient = (injection: TokenEndpointFailure) => ({ inject: injection, times: attemptsWhenTransient });
const once = (injection: TokenEndpointFailure) => ({ inject: injection, times: 1 });

const failureRows: FailureRow[] = [
  {
    // The request may have reached the server: it is never presented again while it may be answered.
    fault: 'hangs past the refresh timeout',
    injection: transient('hang'),
    attempts: 1,
    error: { code: ErrorCode.REFRESH_TIMEOUT },
  },
  {
    // Reset after the request was sent: the server may have spent the refresh token, so no retry.
    fault: 'resets the connection',
    injection: transient('reset'),
    attempts: 1,
    error: { code: ErrorCode.REFRESH_FAILED },
    lastAttempt: ErrorCode.NETWORK_ERROR,
  },
  {
    fault: 'answers 503 with an HTML page',
    injection: transient('unavailable'),
    attempts: attemptsWhenTransient,
    error: { code: ErrorCode.REFRESH_FAILED, status: 503 },
    lastAttempt: ErrorCode.TOKEN_ENDPOINT_ERROR,
  },
  {
    fault: 'answers 429 with Retry-After',
    injection: transient({ kind: 'rate_limited', retryAfterSeconds: 1 }),
    attempts: attemptsWhenTransient,
    error: { code: ErrorCode.REFRESH_FAILED, status: 429, oauthError: 'temporarily_unavailable' },
    lastAttempt: ErrorCode.TOKEN_ENDPOINT_ERROR,
  },
  {
    fault: 'answers 200 with an HTML login page',
    injection: once('html'),
    attempts: 1,
    error: { code: ErrorCode.INVALID_TOKEN_RESPONSE, status: 200 },
  },
  {
    fault: 'answers 200 with truncated JSON',
    injection: once('truncated_json'),
    attempts: 1,
    error: { code: ErrorCode.INVALID_TOKEN_RESPONSE, status: 200 },
  },
  {
    fault: 'answers 200 with a body that is not JSON',
    injection: once('not_json'),
    attempts: 1,
    error: { code: ErrorCode.INVALID_TOKEN_RESPONSE, status: 200 },
  },
  {
    fault: 'answers 200 with an error field',
    injection: once('error_in_200'),
    attempts: 1,
    error: { code: ErrorCode.TOKEN_ENDPOINT_ERROR, status: 200, oauthError: 'server_error' },
  },
  {
    fault: 'answers 200 without an access_token',
    injection: once('missing_access_token'),
    attempts: 1,
    error: { code: ErrorCode.INVALID_TOKEN_RESPONSE, status: 200 },
  },
  {
    fault: 'answers expires_in as a string',
    injection: once('expires_in_string'),
    attempts: 1,
    error: { code: ErrorCode.INVALID_TOKEN_RESPONSE, status: 200 },
  },
  {
    fault: 'answers a negative expires_in',
    injection: { scripted: '{"access_token":"scripted-access","token_type":"Bearer","expires_in":-3600}' },
    attempts: 1,
    error: { code: ErrorCode.INVALID_TOKEN_RESPONSE, status: 200 },
  },
  {
    fault: 'answers an expires_in too large for a number (1e400, parsed as Infinity)',
    injection: { scripted: '{"access_token":"scripted-access","token_type":"Bearer","expires_in":1e400}' },
    attempts: 1,
    error: { code: ErrorCode.INVALID_TOKEN_RESPONSE, status: 200 },
  },
  {
    fault: 'answers a 5 MB body',
    injection: once('huge_body'),
    attempts: 1,
    error: { code: ErrorCode.INVALID_TOKEN_RESPONSE, status: 200 },
  },
  {
    fault: 'answers 401 invalid_client',
    injection: once('invalid_client'),
    attempts: 1,
    error: { code: ErrorCode.CREDENTIALS_REJECTED, status: 401, oauthError: 'invalid_client' },
  },
  {
    fault: 'answers 400 invalid_grant',
    injection: once('invalid_grant'),
    attempts: 1,
    error: { code: ErrorCode.SESSION_EXPIRED, status: 400, oauthError: 'invalid_grant' },
  },
  {
    fault: 'answers 403 invalid_grant (as Auth0 does)',
    injection: once('invalid_grant_403'),
    attempts: 1,
    error: { code: ErrorCode.SESSION_EXPIRED, status: 403, oauthError: 'invalid_grant' },
  },
];

describe('a token endpoint that fails', () => {
  it.each(failureRows.map((row) => [row.error.code, row.fault, row] as const))(
    'rejects with %s when it %s, within a bound, with the stored tokens untouched',
    async (_code, _fault, { injection, attempts, error, lastAttempt }) => {
      const { server, manager, api, store, initial, presentedRefreshTokens, sessionExpired } = await startSession(injection);

      const { outcome, ms } = await timed(api(`${server.url}/api/items`).then((response) => response.status));

      expect(outcome).toEqual({ error: expect.objectContaining(error) });
      const failure = (outcome as { error: Error }).error;
      expect(isTokenRelayError(failure)).toBe(true);
      if (lastAttempt) expect(failure.cause).toMatchObject({ code: lastAttempt, transient: true });
      expect(ms).toBeLessThan(settleBoundMs);
      // Retried only when transient, and always with the one refresh token the session holds.
      expect(presentedRefreshTokens).toEqual(Array(attempts).fill(initial.refreshToken));
      if ('inject' in injection) expect(server.stats().tokenRequests).toBe(attempts);
      expect(server.stats().apiRequests).toBe(0);
      // Untouched: nothing written (but the dead-session mark of the same tokens, for the other holders of the
      // store), and the manager still holds the tokens it had.
      expect(store.writes).toEqual(error.code === ErrorCode.SESSION_EXPIRED ? [initial] : []);
      expect(await storedTokens(store)).toEqual(initial);
      expect(await manager.getTokens()).toEqual(initial);
      // Never a token or secret in what a log would show.
      const shown = `${String(failure)} ${JSON.stringify(failure)} ${String(failure.cause ?? '')}`;
      for (const secret of [initial.accessToken, initial.refreshToken, defaultClient.clientSecret]) {
        expect(shown).not.toContain(secret);
      }
      expect(sessionExpired).toHaveLength(error.code === ErrorCode.SESSION_EXPIRED ? 1 : 0);
    },
    20_000,
  );

  it.each(failureRows.filter((row) => row.error.code !== ErrorCode.SESSION_EXPIRED).map((row) => [row.fault, row] as const))(
    'recovers on the next request with the same refresh token after it %s',
    async (_fault, { injection }) => {
      const { server, api, store, initial, presentedRefreshTokens } = await startSession(injection);
      await expect(api(`${server.url}/api/items`)).rejects.toThrow();
      server.clearFailures();
      const failedCalls = presentedRefreshTokens.length;
      // After a failed refresh the next one waits out a pause (and a hung request its late-answer wait).
      const injected = 'inject' in injection ? injection.inject : undefined;
      const hung = injected === 'hang' ? lateAnswerWaitMs : 0;
      const retryAfter = typeof injected === 'object' && injected.kind === 'rate_limited' ? (injected.retryAfterSeconds ?? 0) * 1000 : 0;
      await sleep(hung + Math.max(retry.maxPauseAfterFailureMs, retryAfter) + 50);

      const response = await api(`${server.url}/api/items`);

      expect(response.status).toBe(200);
      // The refresh token was still the valid one: the rotating server accepted it, and issued the next.
      expect(presentedRefreshTokens.slice(failedCalls)).toEqual([initial.refreshToken]);
      expect(store.writes).toHaveLength(1);
      expect(store.writes[0]?.refreshToken).not.toBe(initial.refreshToken);
      expect(server.stats().apiRequestLog.map((entry) => entry.accessToken)).toEqual([store.writes[0]?.accessToken]);
    },
    20_000,
  );

  it.each(failureRows.filter((row) => row.error.code === ErrorCode.SESSION_EXPIRED).map((row) => [row.fault, row] as const))(
    'fails later requests fast, without another token call, after it %s',
    async (_fault, { injection }) => {
      const { server, api, presentedRefreshTokens, sessionExpired } = await startSession(injection);
      await expect(api(`${server.url}/api/items`)).rejects.toMatchObject({ code: ErrorCode.SESSION_EXPIRED });

      await expect(api(`${server.url}/api/items`)).rejects.toMatchObject({ code: ErrorCode.SESSION_EXPIRED });

      expect(presentedRefreshTokens).toHaveLength(1);
      expect(server.stats().apiRequests).toBe(0);
      expect(sessionExpired).toHaveLength(1);
    },
  );

  it('waits for Retry-After before retrying a 429', async () => {
    const { server, api } = await startSession(transient({ kind: 'rate_limited', retryAfterSeconds: 1 }));

    await expect(api(`${server.url}/api/items`)).rejects.toMatchObject({ code: ErrorCode.REFRESH_FAILED, status: 429 });

    const arrivals = server.stats().tokenRequestLog.map((entry) => entry.at);
    expect(arrivals).toHaveLength(attemptsWhenTransient);
    for (let i = 1; i < arrivals.length; i++) {
      // Full jitter alone would allow ~0 ms; Retry-After: 1 means a second (less timer rounding).
      expect((arrivals[i] as number) - (arrivals[i - 1] as number)).toBeGreaterThanOrEqual(950);
    }
  }, 20_000);
});

interface RecoveryRow {
  fault: string;
  injection: Injection;
  attempts: number;
}

describe('a token endpoint that misbehaves but answers in time', () => {
  const recoveryRows: RecoveryRow[] = [
    { fault: 'is slow but within the refresh timeout', injection: once({ kind: 'slow', delayMs: 200 }), attempts: 1 },
    { fault: 'answers one 503', injection: once('unavailable'), attempts: 2 },
    { fault: 'answers one 429 with Retry-After', injection: once({ kind: 'rate_limited', retryAfterSeconds: 1 }), attempts: 2 },
  ];
  it.each(recoveryRows.map((row) => [row.fault, row] as const))(
    'refreshes once the token endpoint recovers when it %s',
    async (_fault, { injection, attempts }) => {
      const { server, api, store, initial, presentedRefreshTokens } = await startSession(injection);

      const { outcome, ms } = await timed(api(`${server.url}/api/items`).then((response) => response.status));

      expect(outcome).toEqual({ value: 200 });
      expect(ms).toBeLessThan(settleBoundMs);
      expect(presentedRefreshTokens).toEqual(Array(attempts).fill(initial.refreshToken));
      expect(server.stats().tokenRequests).toBe(attempts);
      expect(store.writes).toHaveLength(1);
      expect(store.writes[0]?.refreshToken).not.toBe(initial.refreshToken);
    },
    20_000,
  );

  it('never presents the refresh token again while a hung token request may still be answered, and recovers after lateAnswerWaitMs', async () => {
    const { server, api, store, initial, presentedRefreshTokens } = await startSession(once('hang'));

    await expect(api(`${server.url}/api/items`)).rejects.toMatchObject({ code: ErrorCode.REFRESH_TIMEOUT });
    // A request while the hung one is still open joins it: no second presentation of the same refresh token.
    await expect(api(`${server.url}/api/items`)).rejects.toMatchObject({ code: ErrorCode.REFRESH_TIMEOUT });
    expect(presentedRefreshTokens).toEqual([initial.refreshToken]);

    await sleep(lateAnswerWaitMs + retry.maxPauseAfterFailureMs + 50);
    const response = await api(`${server.url}/api/items`);

    expect(response.status).toBe(200);
    expect(presentedRefreshTokens).toEqual([initial.refreshToken, initial.refreshToken]);
    expect(store.writes).toHaveLength(1);
  }, 20_000);

  it('accepts a response without token_type as a Bearer token (RFC 6749 requires it; core tolerates its absence)', async () => {
    const { server, api, store } = await startSession({
      rewrite: ({ token_type: _omitted, ...answer }) => answer,
    });

    const response = await api(`${server.url}/api/items`);

    expect(response.status).toBe(200);
    expect(store.writes).toEqual([expect.objectContaining({ tokenType: 'Bearer' })]);
    expect(server.stats().apiRequestLog.map((entry) => entry.accessToken)).toEqual([store.writes[0]?.accessToken]);
  });
});
