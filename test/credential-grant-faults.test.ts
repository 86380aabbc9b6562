/*
 * The token endpoint misbehaves under a job or a server that gets its tokens with its own
 * credentials (client credentials, JWT bearer): no refresh token, a manager with no tokens, the
 * fetch adapter. Each row injects one fault into @tokenrelay/testing's server and checks: the
 * request fails with the documented code within a bound (or is served, when asking again helps);
 * the token calls made; no secret the grant sent (the client secret, the assertion or any of its
 * segments) in the error's message, JSON or util.inspect (cause chain included); and the next
 * request, once the server behaves, gets a token.
 */
import { generateKeyPairSync } from 'node:crypto';
import { inspect } from 'node:util';
import { ErrorCode, createTokenManager, findTokenRelayError, type RefreshHandler } from '@tokenrelay/core';
import { clientCredentialsGrant, jwtBearerGrant } from '@tokenrelay/core/grants';
import { withTokenRelay } from '@tokenrelay/fetch';
import { loopbackOnlyFetch, startOAuthServer, type OAuthServer, type TokenEndpointFailure } from '@tokenrelay/testing';
import { afterEach, describe, expect, it } from 'vitest';

const refreshTimeoutMs = 1_500;
const lateAnswerWaitMs = 2_500;
const retry = { retries: 2, minDelayMs: 20, maxDelayMs: 2_000, pauseAfterFailureMs: 50, maxPauseAfterFailureMs: 100 };
const attempts = retry.retries + 1;
/** Every attempt hung to the late-answer limit, plus every backoff at its cap, plus slack for a busy machine. */
const settleBoundMs = attempts * (lateAnswerWaitMs + retry.maxDelayMs) + 2_000;

const clientSecret = 'etl-client-secret-4f1c9b2e';
const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
const privateKey = keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const publicKey = keys.publicKey.export({ type: 'spki', format: 'pem' }).toString();

let server: OAuthServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

const grants: Record<string, (server: OAuthServer, fetch: typeof globalThis.fetch) => RefreshHandler> = {
  'client credentials': (at, fetch) => clientCredentialsGrant({ tokenEndpoint: at.tokenEndpoint, clientId: 'etl', clientSecret, fetch }),
  'JWT bearer': (at, fetch) =>
    jwtBearerGrant({ tokenEndpoint: at.tokenEndpoint, clientId: 'etl', subject: 'svc-etl', audience: at.tokenEndpoint, privateKey, fetch }),
};

/** A manager with no tokens on `grant`, behind the fetch adapter; records every secret its token calls carried. */
async function startJob(grantName: string) {
  server = await startOAuthServer({ clients: [{ clientId: 'etl', clientSecret, authMethod: 'client_secret_basic', publicKey }] });
  const sent: string[] = [clientSecret];
  const tokenFetch: typeof fetch = (input, init) => {
    const assertion = new URLSearchParams(String(init?.body)).get('assertion');
    if (assertion) sent.push(assertion, ...assertion.split('.').slice(1));
    return loopbackOnlyFetch()(input, init);
  };
  const manager = createTokenManager({ refresh: grants[grantName]!(server, tokenFetch), refreshTimeoutMs, lateAnswerWaitMs, retry });
  const api = withTokenRelay(loopbackOnlyFetch(), manager, { origins: [server.url] });
  return { server, api, sent };
}

interface Row {
  fault: string;
  failure: TokenEndpointFailure;
  times: number;
  tokenCalls: number;
  /** The code the request fails with, or 'served' when asking again got a token. */
  outcome: ErrorCode | 'served';
  /** The code of the error behind a REFRESH_FAILED. */
  behind?: ErrorCode;
}

const rows: Row[] = [
  { fault: 'resets the connection once', failure: 'reset', times: 1, tokenCalls: 2, outcome: 'served' },
  { fault: 'answers 503 once', failure: 'unavailable', times: 1, tokenCalls: 2, outcome: 'served' },
  { fault: 'answers 429 with Retry-After once', failure: { kind: 'rate_limited', retryAfterSeconds: 1 }, times: 1, tokenCalls: 2, outcome: 'served' },
  { fault: 'answers 503 every time', failure: 'unavailable', times: attempts, tokenCalls: attempts, outcome: ErrorCode.REFRESH_FAILED, behind: ErrorCode.TOKEN_ENDPOINT_ERROR },
  { fault: 'resets every connection', failure: 'reset', times: attempts, tokenCalls: attempts, outcome: ErrorCode.REFRESH_FAILED, behind: ErrorCode.NETWORK_ERROR },
  { fault: 'hangs', failure: 'hang', times: 1, tokenCalls: 1, outcome: ErrorCode.REFRESH_TIMEOUT },
  { fault: 'refuses the client (invalid_client)', failure: 'invalid_client', times: 1, tokenCalls: 1, outcome: ErrorCode.CREDENTIALS_REJECTED },
  { fault: 'refuses the grant (invalid_grant)', failure: 'invalid_grant', times: 1, tokenCalls: 1, outcome: ErrorCode.CREDENTIALS_REJECTED },
  { fault: 'answers 200 with an HTML login page', failure: 'html', times: 1, tokenCalls: 1, outcome: ErrorCode.INVALID_TOKEN_RESPONSE },
  { fault: 'answers 200 with a body that is not JSON', failure: 'not_json', times: 1, tokenCalls: 1, outcome: ErrorCode.INVALID_TOKEN_RESPONSE },
  { fault: 'answers 200 with 5 MB of JSON', failure: 'huge_body', times: 1, tokenCalls: 1, outcome: ErrorCode.INVALID_TOKEN_RESPONSE },
  { fault: 'answers 200 without an access_token', failure: 'missing_access_token', times: 1, tokenCalls: 1, outcome: ErrorCode.INVALID_TOKEN_RESPONSE },
  { fault: 'answers expires_in as a string', failure: 'expires_in_string', times: 1, tokenCalls: 1, outcome: ErrorCode.INVALID_TOKEN_RESPONSE },
  { fault: 'answers 200 with an error field', failure: 'error_in_200', times: 1, tokenCalls: 1, outcome: ErrorCode.TOKEN_ENDPOINT_ERROR },
];

const cases = Object.keys(grants).flatMap((grantName) => rows.map((row) => [grantName, row.fault, row] as const));

describe('a manager on a grant that needs no refresh token, when the token endpoint misbehaves', () => {
  it.each(cases)('with %s: when it %s, the request gets the documented outcome and no secret', async (grantName, _fault, row) => {
    const job = await startJob(grantName);
    job.server.failNextTokenRequests(row.times, row.failure);
    const startedAt = performance.now();

    const outcome = await job.api(`${job.server.url}/api/me`).then(
      (response) => ({ status: response.status }),
      (error: unknown) => ({ error }),
    );

    expect(performance.now() - startedAt).toBeLessThan(settleBoundMs);
    if (row.outcome === 'served') {
      expect(outcome).toEqual({ status: 200 });
    } else {
      const error = 'error' in outcome ? findTokenRelayError(outcome.error) : undefined;
      expect(error?.code).toBe(row.outcome);
      if (row.behind) expect(findTokenRelayError(error?.cause)?.code).toBe(row.behind);
      const visible = [String(error?.message), JSON.stringify(error), inspect(error, { depth: 8 })].join('\n');
      for (const secret of job.sent) expect(visible).not.toContain(secret);
    }
    // A hung request is still open (its answer would be adopted): count once the others have settled.
    expect(job.server.stats().tokenRequests).toBe(row.tokenCalls);

    job.server.clearFailures();
    await new Promise((resolve) => setTimeout(resolve, retry.maxPauseAfterFailureMs + 20));
    const next = await job.api(`${job.server.url}/api/me`).catch(async (error: unknown) => {
      // A hang's request is abandoned at lateAnswerWaitMs and asked again: give it that long, once.
      expect(findTokenRelayError(error)?.code).toBe(ErrorCode.REFRESH_TIMEOUT);
      await new Promise((resolve) => setTimeout(resolve, lateAnswerWaitMs));
      return job.api(`${job.server.url}/api/me`);
    });
    expect(next.status).toBe(200);
  });
});
