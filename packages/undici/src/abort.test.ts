import { createTokenManager } from '@tokenrelay/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { FakeHandler, Sent } from './test-helpers.js';
import { tokenRelayInterceptor } from './index.js';

const API = 'https://api.example.test';

afterEach(() => {
  vi.unstubAllGlobals();
});

/** A manager whose access token is fresh: requests go out at once, none waits. */
const freshManager = () =>
  createTokenManager({ tokens: { accessToken: 'v0', refreshToken: 'r0', expiresAt: Date.now() + 3_600_000 }, refresh: async () => ({ accessToken: 'v1' }), retry: false });

/** The caller's handler, recording what it saw and keeping the abort it was given. */
function caller() {
  const seen: unknown[] = [];
  let abort: (reason?: Error) => void = () => {};
  const handler: FakeHandler = {
    onConnect: (given) => {
      abort = given;
      seen.push('connect');
    },
    onHeaders: (status) => (seen.push(status), true),
    onData: () => true,
    onComplete: () => void seen.push('complete'),
    onError: (error) => void seen.push(error),
  };
  return { handler, seen, abort: (reason: Error) => abort(reason) };
}

describe('tokenRelayInterceptor aborts', () => {
  it('makes no AbortController for a request whose token is fresh and whose answer is kept', () => {
    let made = 0;
    vi.stubGlobal(
      'AbortController',
      class extends AbortController {
        constructor() {
          super();
          made++;
        }
      },
    );
    const next = (_options: Sent, handler: FakeHandler) => {
      handler.onConnect(() => {});
      handler.onHeaders(200, [], () => {}, 'OK');
      handler.onComplete(null);
      return true;
    };
    const dispatch = tokenRelayInterceptor(freshManager(), { origins: [API] })(next);
    const { handler, seen } = caller();

    dispatch({ origin: API, path: '/me' }, handler);

    expect(seen).toEqual(['connect', 200, 'complete']);
    expect(made).toBe(0);
  });

  it("hands the caller's abort of a request whose token was fresh to its attempt, with the reason", () => {
    const attemptAborts: unknown[] = [];
    const next = (_options: Sent, handler: FakeHandler) => {
      handler.onConnect((reason) => {
        attemptAborts.push(reason);
        handler.onError(reason ?? new Error('aborted'));
      });
      return true;
    };
    const dispatch = tokenRelayInterceptor(freshManager(), { origins: [API] })(next);
    const { handler, seen, abort } = caller();
    const reason = new Error('caller gave up');

    dispatch({ origin: API, path: '/me' }, handler);
    abort(reason);

    expect(attemptAborts).toEqual([reason]);
    expect(seen).toEqual(['connect', reason]);
  });
});
