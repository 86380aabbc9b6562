import { describe, expect, it } from 'vitest';
import { ErrorCode } from './errors.js';
import { tokenSetFromResponse } from './token-response.js';

describe('tokenSetFromResponse', () => {
  it('turns expires_in into expiresAt from the given time and keeps the other fields in raw', () => {
    const response = { access_token: 'at', token_type: 'bearer', expires_in: 60, refresh_token: 'rt', scope: 'a b', id_token: 'idt' };
    expect(tokenSetFromResponse(response, { now: 1_700_000_000_000 })).toEqual({
      accessToken: 'at',
      refreshToken: 'rt',
      expiresAt: 1_700_000_060_000,
      tokenType: 'bearer',
      scope: 'a b',
      raw: { id_token: 'idt' },
    });
  });

  it('accepts a DPoP-bound token (RFC 9449) and keeps its token type', () => {
    expect(tokenSetFromResponse({ access_token: 'at', token_type: 'DPoP' })).toEqual({ accessToken: 'at', tokenType: 'DPoP', raw: {} });
  });

  it('leaves expiresAt out when the response has no expires_in', () => {
    expect(tokenSetFromResponse({ access_token: 'at' })).toEqual({ accessToken: 'at', tokenType: 'Bearer', raw: {} });
  });

  it('leaves expiresAt out for expires_in 0, so a token that does not expire is not refreshed on every request', () => {
    expect(tokenSetFromResponse({ access_token: 'at', expires_in: 0 }, { now: 1_000 })).toEqual({ accessToken: 'at', tokenType: 'Bearer', raw: {} });
  });

  it.each([
    ['not an object', 'tok-1'],
    ['no access_token', { token_type: 'Bearer' }],
    ['an access token that cannot go in a header', { access_token: 'tok 1' }],
    ['an expiry that overflows to Infinity', { access_token: 'tok-1', expires_in: 1e306 }],
    ['a negative expires_in', { access_token: 'tok-1', expires_in: -1 }],
    ['a token type it cannot send (MAC)', { access_token: 'tok-1', token_type: 'MAC' }],
    ['a token type that is not a string', { access_token: 'tok-1', token_type: ['DPoP'] }],
    ['an empty refresh_token', { access_token: 'tok-1', refresh_token: '' }],
  ])('refuses a response with %s as INVALID_TOKEN_RESPONSE, naming no token', (_name, response) => {
    let thrown: unknown;
    try {
      tokenSetFromResponse(response, { now: 1_700_000_000_000 });
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toMatchObject({ code: ErrorCode.INVALID_TOKEN_RESPONSE });
    expect((thrown as Error).message).not.toMatch(/tok.1/);
  });
});
