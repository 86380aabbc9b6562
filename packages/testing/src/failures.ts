import type { OutgoingHttpHeaders } from 'node:http';
import { JSON_TYPE } from './http.js';
import { opaqueToken } from './token-registry.js';
import type { OAuthServerMode, TokenEndpointFailure, TokenEndpointFailureKind } from './types.js';

/** A failure with its numbers filled in. */
export interface InjectedFailure {
  readonly kind: TokenEndpointFailureKind;
  readonly retryAfterSeconds: number;
  readonly bytes: number;
  readonly delayMs: number;
}

/** What the token endpoint does for an injected failure. */
export type FailureAnswer =
  | { type: 'oauth_error'; status: number; error: string; description: string; headers?: OutgoingHttpHeaders }
  | { type: 'raw'; status: number; headers: OutgoingHttpHeaders; body: string | Buffer }
  | { type: 'hang' }
  | { type: 'reset' }
  | { type: 'slow'; delayMs: number };

const kinds: ReadonlySet<string> = new Set<TokenEndpointFailureKind>([
  'unavailable',
  'rate_limited',
  'invalid_grant',
  'invalid_grant_403',
  'invalid_client',
  'html',
  'not_json',
  'truncated_json',
  'missing_access_token',
  'expires_in_string',
  'error_in_200',
  'huge_body',
  'hang',
  'reset',
  'slow',
]);

const FIVE_MEGABYTES = 5 * 1024 * 1024;

function nonNegative(value: unknown, what: string, integer: boolean): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (integer && !Number.isInteger(value))) {
    throw new TypeError(`${what} must be a non-negative ${integer ? 'integer' : 'number'}`);
  }
  return value;
}

/** Validates a failure given by the user and fills in its defaults. */
export function normalizeFailure(failure: TokenEndpointFailure): InjectedFailure {
  const kind: unknown = typeof failure === 'string' ? failure : (failure as { kind?: unknown } | null)?.kind;
  if (typeof kind !== 'string' || !kinds.has(kind)) {
    throw new TypeError(`Unknown token endpoint failure: ${JSON.stringify(failure)}`);
  }
  const object = typeof failure === 'object' ? failure : undefined;
  if (kind === 'slow' && !object) throw new TypeError("'slow' needs the object form { kind: 'slow', delayMs }");
  return {
    kind: kind as TokenEndpointFailureKind,
    retryAfterSeconds:
      object?.kind === 'rate_limited' && object.retryAfterSeconds !== undefined
        ? nonNegative(object.retryAfterSeconds, 'retryAfterSeconds', true)
        : 1,
    bytes: object?.kind === 'huge_body' && object.bytes !== undefined ? nonNegative(object.bytes, 'bytes', true) : FIVE_MEGABYTES,
    delayMs: object?.kind === 'slow' ? nonNegative(object.delayMs, 'delayMs', false) : 0,
  };
}

const json = (status: number, body: string | Buffer): FailureAnswer => ({
  type: 'raw',
  status,
  headers: { 'content-type': JSON_TYPE, 'cache-control': 'no-store' },
  body,
});

/** Valid JSON of exactly `bytes` bytes (or just the bare fields when that is smaller): a token response padded out. */
function hugeBody(bytes: number): Buffer {
  const head = `{"access_token":"${opaqueToken()}","token_type":"Bearer","expires_in":3600,"padding":"`;
  const tail = '"}';
  const padding = Math.max(0, bytes - head.length - tail.length);
  return Buffer.concat([Buffer.from(head), Buffer.alloc(padding, 'a'), Buffer.from(tail)]);
}

/**
 * The answer for an injected failure. Access tokens in malformed 200s are random and never
 * registered, so a client that wrongly accepts one gets 401s from the API.
 */
export function answerFor(failure: InjectedFailure, mode: OAuthServerMode): FailureAnswer {
  switch (failure.kind) {
    case 'unavailable':
      return {
        type: 'raw',
        status: 503,
        headers: { 'content-type': 'text/html; charset=utf-8' },
        body: '<html><head><title>503 Service Unavailable</title></head><body><h1>503 Service Unavailable</h1></body></html>',
      };
    case 'rate_limited':
      return {
        type: 'oauth_error',
        status: 429,
        error: 'temporarily_unavailable',
        description: 'Too many requests',
        headers: { 'retry-after': String(failure.retryAfterSeconds) },
      };
    case 'invalid_grant':
      return {
        type: 'oauth_error',
        status: 400,
        error: 'invalid_grant',
        description: mode === 'salesforce' ? 'expired access/refresh token' : 'The refresh token is invalid, expired or revoked',
      };
    case 'invalid_grant_403':
      return { type: 'oauth_error', status: 403, error: 'invalid_grant', description: 'Unknown or invalid refresh token.' };
    case 'invalid_client':
      return {
        type: 'oauth_error',
        status: 401,
        error: 'invalid_client',
        description: 'Client authentication failed',
        headers: { 'www-authenticate': 'Basic realm="tokenrelay-testing"' },
      };
    case 'html':
      return {
        type: 'raw',
        status: 200,
        headers: { 'content-type': 'text/html; charset=utf-8' },
        body: '<!doctype html><html><head><title>Sign in</title></head><body><form method="post"><input name="username"></form></body></html>',
      };
    case 'not_json':
      return json(200, 'this is not JSON');
    case 'truncated_json':
      return json(200, `{"access_token":"${opaqueToken()}","token_type":"Bea`);
    case 'missing_access_token':
      return json(200, JSON.stringify({ token_type: 'Bearer', expires_in: 3600 }));
    case 'expires_in_string':
      return json(200, JSON.stringify({ access_token: opaqueToken(), token_type: 'Bearer', expires_in: '3600' }));
    case 'error_in_200':
      return json(200, JSON.stringify({ error: 'server_error' }));
    case 'huge_body':
      return json(200, hugeBody(failure.bytes));
    case 'hang':
      return { type: 'hang' };
    case 'reset':
      return { type: 'reset' };
    case 'slow':
      return { type: 'slow', delayMs: failure.delayMs };
  }
}
