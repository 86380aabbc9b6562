import fc from 'fast-check';
import PQueue from 'p-queue';
import { describe, expect, it } from 'vitest';
import {
  accessTokenIfSignedIn,
  bearerAuthorization,
  createOriginMatcher,
  defaultShouldRefresh,
  dpopUnsupported,
  isSecureOrLoopback,
  isSignedOut,
  parseWwwAuthenticate,
  queuePlace,
  type FailedResponse,
} from './adapter-kit.js';
import { ErrorCode, TokenRelayError } from './errors.js';

function failed(status: number, wwwAuthenticate?: string): FailedResponse {
  return {
    status,
    url: 'https://api.example.test/me',
    header: (name) => (name.toLowerCase() === 'www-authenticate' ? wwwAuthenticate : undefined),
    text: async () => '',
  };
}

describe('parseWwwAuthenticate', () => {
  it('splits several challenges and reads quoted and token parameters', () => {
    expect(
      parseWwwAuthenticate('Bearer realm="api, v2", error="invalid_token", error_description="The \\"token\\" expired", DPoP algs="ES256 PS256", error=use_dpop_nonce'),
    ).toEqual([
      { scheme: 'bearer', params: { realm: 'api, v2', error: 'invalid_token', error_description: 'The "token" expired' } },
      { scheme: 'dpop', params: { algs: 'ES256 PS256', error: 'use_dpop_nonce' } },
    ]);
  });

  it('skips token68 credentials and tolerates an empty header', () => {
    expect(parseWwwAuthenticate('Negotiate abc123==, Basic realm="x"')).toEqual([
      { scheme: 'negotiate', params: {} },
      { scheme: 'basic', params: { realm: 'x' } },
    ]);
    expect(parseWwwAuthenticate(undefined)).toEqual([]);
  });
});

describe('defaultShouldRefresh', () => {
  it.each([
    ['a bare 401', failed(401), true],
    ['401 Bearer error="invalid_token"', failed(401, 'Bearer realm="x", error="invalid_token"'), true],
    ['401 Bearer without error', failed(401, 'Bearer realm="x"'), true],
    ['401 Bearer error="invalid_request"', failed(401, 'Bearer error="invalid_request"'), false],
    ['403 insufficient_scope', failed(403, 'Bearer error="insufficient_scope", scope="admin"'), false],
    ['401 DPoP error="use_dpop_nonce"', failed(401, 'DPoP algs="ES256", error="use_dpop_nonce"'), false],
    ['401 Bearer beside DPoP error="use_dpop_nonce"', failed(401, 'Bearer realm="x", DPoP algs="ES256", error="use_dpop_nonce"'), false],
    ['401 DPoP error="invalid_dpop_proof"', failed(401, 'DPoP algs="ES256", error="invalid_dpop_proof"'), false],
    ['401 DPoP error="invalid_token" (an expired DPoP-bound token)', failed(401, 'DPoP algs="ES256", error="invalid_token"'), true],
    ['500', failed(500), false],
  ])('answers %s with %s', (_name, response, expected) => {
    expect(defaultShouldRefresh(response)).toBe(expected);
  });
});

describe('bearerAuthorization', () => {
  it('sends a DPoP-bound token with the DPoP scheme and every other token as Bearer', () => {
    expect(bearerAuthorization('at', 'dpop')).toBe('DPoP at');
    expect(bearerAuthorization('at', 'Bearer')).toBe('Bearer at');
    expect(bearerAuthorization('at')).toBe('Bearer at');
  });

  it('gives the value of the token and type it is given, again after either changed', () => {
    const token = ['a'.repeat(600), 'b'.repeat(600)].join('.');

    expect(bearerAuthorization(token)).toBe(`Bearer ${token}`);
    expect(bearerAuthorization(token)).toBe(`Bearer ${token}`);
    expect(bearerAuthorization(token, 'DPoP')).toBe(`DPoP ${token}`);
    expect(bearerAuthorization('next')).toBe('Bearer next');
    expect(bearerAuthorization(token)).toBe(`Bearer ${token}`);
  });
});

describe('dpopUnsupported', () => {
  it('refuses a DPoP authorization and lets any other pass, its verdict following every change of token or type', () => {
    const token = ['a'.repeat(600), 'b'.repeat(600)].join('.');
    const verdict = (authorization: string) => dpopUnsupported('door', authorization)?.code;

    expect(verdict(bearerAuthorization(token))).toBeUndefined();
    expect(verdict(bearerAuthorization(token))).toBeUndefined();
    expect(verdict(bearerAuthorization(token, 'DPoP'))).toBe(ErrorCode.CONFIGURATION_ERROR);
    expect(verdict(bearerAuthorization(token, 'DPoP'))).toBe(ErrorCode.CONFIGURATION_ERROR);
    expect(verdict(bearerAuthorization('next', 'Bearer'))).toBeUndefined();
    // Values built elsewhere, equal to one checked before but not the same string.
    expect(verdict(`DPoP ${token}`)).toBe(ErrorCode.CONFIGURATION_ERROR);
    expect(verdict(['Bearer', token].join(' '))).toBeUndefined();
  });

  it('names the door that refuses, a fresh error each time', () => {
    const first = dpopUnsupported('tokenRelayHooks', 'DPoP at');
    const second = dpopUnsupported('tokenRelayHooks', 'DPoP at');

    expect(first?.message).toMatch(/^tokenRelayHooks sends no DPoP proofs/);
    expect(second).not.toBe(first);
  });
});

/**
 * The rule createOriginMatcher implements, written out plainly as the oracle of its property test:
 * the URL parses, its origin is allowed, and its origin and path are not the token endpoint's.
 */
function mayCarryBearer(url: string, allowed: readonly string[], tokenEndpoint: string): boolean {
  if (!URL.canParse(url)) return false;
  const { origin, pathname } = new URL(url);
  const endpoint = new URL(tokenEndpoint);
  return allowed.includes(origin) && !(origin === endpoint.origin && pathname === endpoint.pathname);
}

describe('createOriginMatcher', () => {
  it('matches scheme, host and port exactly and never the token endpoint', () => {
    const matches = createOriginMatcher(['https://api.example.test/any/path'], 'https://api.example.test/oauth/token');
    expect(matches(new URL('https://api.example.test/v1/me'))).toBe(true);
    expect(matches(new URL('https://api.example.test/oauth/token?x=1'))).toBe(false);
    expect(matches(new URL('http://api.example.test/v1/me'))).toBe(false);
    expect(matches(new URL('https://api.example.test:8443/v1/me'))).toBe(false);
    expect(matches(new URL('https://api.example.test.evil.test/v1/me'))).toBe(false);
  });

  it.each([
    ['https://api.example.test/v1/me', true],
    ['https://api.example.test', true],
    ['https://api.example.test?x=1', true],
    ['https://api.example.test/v1/file.json#top', true],
    ['https://api.example.test/oauth/token', false],
    ['https://api.example.test/oauth/token?x=1', false],
    ['https://api.example.test/oauth/token#x', false],
    ['https://api.example.test/oauth/./token', false],
    ['https://api.example.test/v1/../oauth/token', false],
    ['https://api.example.test/oauth/%74oken', true],
    ['https://api.example.test/oauth\\token', false],
    ['https://api.example.test/oauth/to\tken', false],
    ['https://api.example.test/oauth/token/', true],
    ['https://api.example.test:443/v1/me', true],
    ['https://api.example.test:443/oauth/token', false],
    ['HTTPS://API.example.test/v1/me', true],
    ['https://api.example.test.evil.test/v1/me', false],
    ['https://api.example.test@evil.test/v1/me', false],
    ['https://api.example.test:8443/v1/me', false],
    ['https://api.example.test\\@evil.test/', true],
    ['http://api.example.test/v1/me', false],
    ['https://other.example.test/oauth/token', true],
    ['/v1/me', false],
    ['not a url', false],
  ])('decides the string %s as the parsed URL would: %s', (url, expected) => {
    const matches = createOriginMatcher(
      ['https://api.example.test', 'https://other.example.test'],
      'https://api.example.test/oauth/token',
    );
    expect(matches(url)).toBe(expected);
    if (URL.canParse(url)) expect(matches(new URL(url))).toBe(expected);
  });

  it("decides every URL, as a string, a URL object or that object's href, as its origin and path say, with the token endpoint on an allowed origin or elsewhere", () => {
    const allowed = ['https://api.example.test', 'https://other.example.test'];
    const origin = fc.constantFrom('https://api.example.test', 'https://api.example.test:443', 'HTTPS://api.EXAMPLE.test', 'https://api.example.test.evil.test', 'https://api.example.test@evil.test', 'https://user:pw@api.example.test', 'http://api.example.test', 'https://other.example.test');
    const segment = fc.constantFrom('', 'oauth', 'token', '.', '..', '%74oken', 'to\tken', 'a\\b', 'x y', 'é', ':', '@', 'v1');
    const path = fc.array(segment, { maxLength: 4 }).map((segments) => segments.map((name) => `/${name}`).join(''));
    const tail = fc.constantFrom('', '?x=1', '#top', '?a#b', '\\@evil.test/', ':8443/', '.');
    fc.assert(
      fc.property(origin, path, tail, fc.constantFrom('https://api.example.test/oauth/token', 'https://auth.example.test/oauth/token', 'https://api.example.test'), (start, middle, end, tokenEndpoint) => {
        const url = `${start}${middle}${end}`;
        const matches = createOriginMatcher(allowed, tokenEndpoint);
        const expected = mayCarryBearer(url, allowed, tokenEndpoint);
        expect(matches(url)).toBe(expected);
        if (!URL.canParse(url)) return;
        const parsed = new URL(url);
        expect(matches(parsed)).toBe(expected);
        expect(matches(parsed.href)).toBe(expected);
      }),
      { numRuns: 2_000 },
    );
  });

  it('decides a URL object on an allowed origin by its href, without reading its origin or pathname', () => {
    const matches = createOriginMatcher(['https://api.example.test'], 'https://api.example.test/oauth/token');
    const reads: string[] = [];
    const watched = (href: string) => {
      const url = new URL(href);
      for (const name of ['origin', 'pathname'] as const) {
        const value = url[name];
        Object.defineProperty(url, name, { get: () => (reads.push(name), value) });
      }
      return url;
    };

    expect(matches(watched('https://api.example.test/v1/me?page=2'))).toBe(true);
    expect(matches(watched('https://api.example.test/oauth/token'))).toBe(false);
    expect(reads).toEqual([]);
    // A lookalike is not decided by its first characters: it is read, and refused.
    expect(matches(watched('https://api.example.test.evil.test/v1/me'))).toBe(false);
    expect(reads).toContain('origin');
  });

  it('resolves a relative string against the base it is given', () => {
    const matches = createOriginMatcher(['https://app.example.test'], 'https://app.example.test/oauth/token');
    expect(matches('/v1/me', 'https://app.example.test/page')).toBe(true);
    expect(matches('../oauth/token', 'https://app.example.test/a/b')).toBe(false);
  });

  it('accepts a predicate and still excludes the token endpoint', () => {
    const matches = createOriginMatcher((url) => url.hostname.endsWith('.example.test'), 'https://auth.example.test/token');
    expect(matches(new URL('https://a.example.test/x'))).toBe(true);
    expect(matches(new URL('https://auth.example.test/token'))).toBe(false);
    expect(matches('https://a.example.test/x')).toBe(true);
    expect(matches('https://auth.example.test/token')).toBe(false);
  });

  it.each([[[]], [['not a url']], [['ftp://files.example.test']]])('rejects %j with CONFIGURATION_ERROR', (origins) => {
    expect(() => createOriginMatcher(origins)).toThrow(expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR }));
  });
});

describe('isSecureOrLoopback', () => {
  it.each([
    ['https://auth.example.test/token', true],
    ['http://127.0.0.1:8080/token', true],
    ['http://localhost/token', true],
    ['http://[::1]:3000/token', true],
    ['http://auth.example.test/token', false],
    ['http://127.0.0.1.example.test/token', false],
    ['ftp://127.0.0.1/token', false],
  ])('answers %s with %s', (url, expected) => {
    expect(isSecureOrLoopback(new URL(url))).toBe(expected);
  });
});

describe('accessTokenIfSignedIn', () => {
  it('gives the access token, undefined when the manager holds no tokens, and rejects on every other failure', async () => {
    const expired = new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'sign in again');
    const managerFailing = (error: unknown) => ({ getAccessToken: () => Promise.reject(error) });

    await expect(accessTokenIfSignedIn({ getAccessToken: async () => 'at' })).resolves.toBe('at');
    await expect(accessTokenIfSignedIn(managerFailing(new TokenRelayError(ErrorCode.NO_TOKENS, 'none')))).resolves.toBeUndefined();
    await expect(accessTokenIfSignedIn(managerFailing(expired))).rejects.toBe(expired);
    expect(isSignedOut(expired)).toBe(false);
  });
});

describe('queuePlace', () => {
  it('holds a place until it is given back, once however often the give-back is called', async () => {
    const queue = new PQueue({ concurrency: 1 });
    const free = await queuePlace(queue, undefined);
    let secondGranted = false;
    const second = queuePlace(queue, undefined).then((freeSecond) => {
      secondGranted = true;
      return freeSecond;
    });
    await Promise.resolve();
    expect(queue.pending).toBe(1);
    expect(secondGranted).toBe(false);
    free();
    free();
    const freeSecond = await second;
    expect(queue.pending).toBe(1);
    freeSecond();
    await queue.onIdle();
    expect(queue.pending).toBe(0);
  });

  it('rejects with the reason of an abort while waiting, and gives the place back at once when its turn comes', async () => {
    const queue = new PQueue({ concurrency: 1 });
    const free = await queuePlace(queue, undefined);
    const controller = new AbortController();
    const waiting = queuePlace(queue, controller.signal);
    const reason = new Error('caller gave up');
    controller.abort(reason);
    await expect(waiting).rejects.toBe(reason);
    free();
    await queue.onIdle();
    expect(queue.pending).toBe(0);
    expect(queue.size).toBe(0);
  });

  it('rejects a signal aborted before it asks, without joining the queue', async () => {
    const queue = new PQueue({ concurrency: 1 });
    const reason = new Error('gone already');
    await expect(queuePlace(queue, AbortSignal.abort(reason))).rejects.toBe(reason);
    expect(queue.size + queue.pending).toBe(0);
  });
});
