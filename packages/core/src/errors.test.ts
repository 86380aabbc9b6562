import { describe, expect, it } from 'vitest';
import { ErrorCode, TokenRelayError, findTokenRelayError, isTokenRelayError, redactSecrets } from './errors.js';

describe('TokenRelayError', () => {
  it('carries a stable code and keeps its cause out of enumerable properties', () => {
    const cause = new Error('inner');
    const error = new TokenRelayError(ErrorCode.TOKEN_ENDPOINT_ERROR, 'HTTP 503', { cause, status: 503, transient: true });
    expect(error).toMatchObject({ name: 'TokenRelayError', code: 'TOKEN_ENDPOINT_ERROR', status: 503, transient: true });
    expect(error.cause).toBe(cause);
    expect(Object.keys(error)).not.toContain('cause');
  });

  it('is recognised across copies of the library by its marker, not only by instanceof', () => {
    const marker = Object.getOwnPropertySymbols(TokenRelayError.prototype)[0] as symbol;
    const fromAnotherCopy = Object.assign(new Error('x'), { code: 'SESSION_EXPIRED', [marker]: true });
    expect(isTokenRelayError(fromAnotherCopy)).toBe(true);
    expect(isTokenRelayError(Object.assign(new Error('x'), { code: 'SESSION_EXPIRED' }))).toBe(false);
    expect(isTokenRelayError(null)).toBe(false);
  });
});

describe('findTokenRelayError', () => {
  const expired = new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'sign in again');

  it('finds the TokenRelayError an HTTP client wrapped as the cause of its own error, however many times', () => {
    expect(findTokenRelayError(expired)).toBe(expired);
    expect(findTokenRelayError(new TypeError('fetch failed', { cause: expired }))).toBe(expired);
    expect(findTokenRelayError(new Error('outer', { cause: new Error('inner', { cause: expired }) }))).toBe(expired);
  });

  it('finds nothing in other errors, non-objects, cycles or chains deeper than 8 causes', () => {
    const cyclic: Error & { cause?: unknown } = new Error('a');
    cyclic.cause = new Error('b', { cause: cyclic });
    let deep: unknown = expired;
    for (let depth = 0; depth < 9; depth++) deep = new Error('wrapper', { cause: deep });
    expect(findTokenRelayError(new Error('plain'))).toBeUndefined();
    expect(findTokenRelayError('SESSION_EXPIRED')).toBeUndefined();
    expect(findTokenRelayError(undefined)).toBeUndefined();
    expect(findTokenRelayError(cyclic)).toBeUndefined();
    expect(findTokenRelayError(deep)).toBeUndefined();
  });
});

describe('redactSecrets', () => {
  it('replaces every occurrence of each secret and ignores empty ones', () => {
    expect(redactSecrets('a rt1 b rt1 c s3', ['rt1', undefined, '', 's3'])).toBe('a [redacted] b [redacted] c [redacted]');
  });
});
