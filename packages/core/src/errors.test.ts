import { describe, expect, it } from 'vitest';
import { ErrorCode, TokenRelayError, isTokenRelayError, redactSecrets } from './errors.js';

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

describe('redactSecrets', () => {
  it('replaces every occurrence of each secret and ignores empty ones', () => {
    expect(redactSecrets('a rt1 b rt1 c s3', ['rt1', undefined, '', 's3'])).toBe('a [redacted] b [redacted] c [redacted]');
  });
});
