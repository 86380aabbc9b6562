import { Readable } from 'node:stream';
import { ErrorCode, TokenRelayError, createTokenManager, type TokenManager } from '@tokenrelay/core';
import { describe, expect, it, vi } from 'vitest';
import type { DpopRequest, DpopSender } from '@tokenrelay/core/kit';
import type { FakeHandler, Sent } from './test-helpers.js';
import { tokenRelayInterceptor } from './index.js';

const API = 'https://api.example.test';


/** What the caller's handler saw, in order. */
type Seen = [event: string, detail?: unknown];


/** A dispatcher that answers each request with the next status of `statuses`, and the caller's handler. */
function setUp(manager: TokenManager, statuses: number[]) {
  const sent: Sent[] = [];
  const seen: Seen[] = [];
  let abortCaller: (reason?: Error) => void = () => {};
  const next = (options: Sent, handler: FakeHandler) => {
    sent.push(options);
    const status = statuses.shift() ?? 200;
    queueMicrotask(() => {
      handler.onConnect(() => {});
      handler.onHeaders(status, [Buffer.from('content-type'), Buffer.from('text/plain')], () => {}, '');
      handler.onData(Buffer.from(`status ${status}`));
      handler.onComplete(null);
    });
    return true;
  };
  const dispatch = tokenRelayInterceptor(manager, { origins: [API] })(next);
  const handler: FakeHandler = {
    onConnect: (abort) => {
      abortCaller = abort;
      seen.push(['connect']);
    },
    onHeaders: (status) => (seen.push(['headers', status]), true),
    onData: (chunk) => (seen.push(['data', chunk.toString()]), true),
    onComplete: () => void seen.push(['complete']),
    onError: (error) => void seen.push(['error', error]),
  };
  const send = (options: Omit<Sent, 'origin'> & { origin?: string | URL }) => dispatch({ origin: API, ...options }, handler);
  const settled = () => vi.waitFor(() => expect(seen.at(-1)?.[0]).toMatch(/complete|error/));
  return { sent, seen, send, settled, abortCaller: (reason: Error) => abortCaller(reason) };
}

function signedIn(refresh = async () => ({ accessToken: 'v1', refreshToken: 'r1' })) {
  return createTokenManager({ tokens: { accessToken: 'v0', refreshToken: 'r0' }, refresh, retry: false });
}

describe('tokenRelayInterceptor', () => {
  it.each([
    ['no headers', undefined, { authorization: 'Bearer v0' }],
    ['a record', { accept: 'text/plain' }, { accept: 'text/plain', authorization: 'Bearer v0' }],
    ['a flat list', ['accept', 'text/plain'], ['accept', 'text/plain', 'authorization', 'Bearer v0']],
    ['a Map', new Map([['accept', 'text/plain']]), ['accept', 'text/plain', 'authorization', 'Bearer v0']],
    ['a one-shot iterator', new Map([['accept', 'text/plain']]).entries(), ['accept', 'text/plain', 'authorization', 'Bearer v0']],
  ])('adds the bearer to headers given as %s, in the same shape (an iterable of pairs as a flat list)', async (_shape, headers, expected) => {
    const { sent, send, settled } = setUp(signedIn(), [200]);

    send({ path: '/me', headers });
    await settled();

    expect(sent[0]?.headers).toEqual(expected);
  });

  it('passes requests to other origins, and requests with their own Authorization, as they are', async () => {
    const { sent, send, settled } = setUp(signedIn(), [200, 200]);
    const own = ['Authorization', 'Basic abc'];

    send({ origin: 'https://elsewhere.example.test', path: '/me' });
    await settled();
    send({ path: '/me', headers: own });
    await settled();

    expect(sent.map((options) => options.headers)).toEqual([undefined, own]);
  });

  it('never authorizes a hop dispatched with the handler of a chain that had a hop it passed untouched, as undici redirects, nor refreshes for its 401', async () => {
    const refresh = vi.fn(async () => ({ accessToken: 'v1', refreshToken: 'r1' }));
    // undici's redirect interceptor composed after this one dispatches every hop of a chain with the same handler.
    const { sent, send, seen, settled } = setUp(signedIn(refresh), [307, 307, 401]);

    for (const origin of [API, 'https://elsewhere.example.test', API]) {
      send({ origin, path: '/hop' });
      await settled();
    }

    expect(sent.map((options) => options.headers)).toEqual([{ authorization: 'Bearer v0' }, undefined, undefined]);
    expect(seen.filter(([event]) => event === 'headers')).toEqual([['headers', 307], ['headers', 307], ['headers', 401]]);
    expect(refresh).not.toHaveBeenCalled();
  });

  it('authorizes a request to an allowed origin, written with or without a trailing slash or as a URL, and none to a lookalike', async () => {
    const { sent, send } = setUp(signedIn(), []);
    const origins = [API, `${API}/`, new URL(API), 'https://api.example.test.evil.test', 'https://api.example.test@evil.test', 'https://api.example.test:8443'];

    for (const origin of origins) send({ origin, path: '/me' });
    await vi.waitFor(() => expect(sent).toHaveLength(origins.length));

    expect(sent.map((options) => options.headers)).toEqual([
      { authorization: 'Bearer v0' },
      { authorization: 'Bearer v0' },
      { authorization: 'Bearer v0' },
      undefined,
      undefined,
      undefined,
    ]);
  });

  it('decides a request to an allowed origin without parsing its URL', async () => {
    const { sent, send } = setUp(signedIn(), []);
    const parse = vi.spyOn(globalThis, 'URL');

    try {
      send({ path: '/me?page=2' });
      expect(parse).not.toHaveBeenCalled();
      // A lookalike is not decided by its first characters: it is parsed, and refused.
      send({ origin: 'https://api.example.test.evil.test', path: '/me' });
      expect(parse).toHaveBeenCalled();
    } finally {
      parse.mockRestore();
    }

    expect(sent.map((options) => options.headers)).toEqual([{ authorization: 'Bearer v0' }, undefined]);
  });

  it('hands the caller one response: the replay, never the 401 it replaced', async () => {
    const { sent, seen, send, settled } = setUp(signedIn(), [401, 200]);

    send({ path: '/me', body: 'payload' });
    await settled();

    expect(sent.map((options) => [options.headers, options.body])).toEqual([
      [{ authorization: 'Bearer v0' }, 'payload'],
      [{ authorization: 'Bearer v1' }, 'payload'],
    ]);
    expect(seen).toEqual([['connect'], ['headers', 200], ['data', 'status 200'], ['complete']]);
  });

  it('never sends a stream body twice: the caller gets the 401 with its body after the refresh', async () => {
    const refresh = vi.fn(async () => ({ accessToken: 'v1', refreshToken: 'r1' }));
    const { sent, seen, send, settled } = setUp(signedIn(refresh), [401]);

    send({ path: '/upload', body: Readable.from(['streamed']) });
    await settled();

    expect(sent).toHaveLength(1);
    expect(refresh).toHaveBeenCalledTimes(1);
    expect(seen).toEqual([['connect'], ['headers', 401], ['data', 'status 401'], ['complete']]);
  });

  it('ends a request aborted while it waits for the refresh with the abort reason, and never replays it', async () => {
    let finishRefresh = () => {};
    const manager = signedIn(() => new Promise((resolve) => (finishRefresh = () => resolve({ accessToken: 'v1', refreshToken: 'r1' }))));
    const { sent, seen, send, abortCaller } = setUp(manager, [401]);
    const reason = new Error('gone');

    send({ path: '/me' });
    await vi.waitFor(() => expect(seen).toEqual([['connect']]));
    abortCaller(reason);
    await vi.waitFor(() => expect(seen).toEqual([['connect'], ['error', reason]]));
    finishRefresh();

    expect(await manager.getAccessToken()).toBe('v1');
    expect(sent).toHaveLength(1);
  });

  it('fails a request that waited for its token with the error of a dispatcher that throws, and leaves no unhandled rejection', async () => {
    const manager = createTokenManager({
      tokens: { accessToken: 'v0', refreshToken: 'r0', expiresAt: Date.now() - 1 },
      refresh: async () => ({ accessToken: 'v1', refreshToken: 'r1', expiresAt: Date.now() + 3_600_000 }),
    });
    const broken = new Error('dispatcher closed');
    const dispatch = tokenRelayInterceptor(manager, { origins: [API] })((_options: Sent, _handler: FakeHandler): boolean => {
      throw broken;
    });
    const errors: Error[] = [];
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const handler: FakeHandler = { onConnect() {}, onHeaders: () => true, onData: () => true, onComplete() {}, onError: (error) => void errors.push(error) };
      dispatch({ origin: API, path: '/me' }, handler);
      await vi.waitFor(() => expect(errors).toEqual([broken]));
      await new Promise((resolve) => setTimeout(resolve, 10));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('fails the request with SESSION_EXPIRED when the refresh token is dead', async () => {
    const { seen, send, settled } = setUp(
      signedIn(async () => {
        throw new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'sign in again');
      }),
      [401],
    );

    send({ path: '/me' });
    await settled();

    expect(seen.at(-1)).toEqual(['error', expect.objectContaining({ code: ErrorCode.SESSION_EXPIRED })]);
  });

  it('refuses every request of a DPoP-bound session with a CONFIGURATION_ERROR, and authorizes them again once the session is not', async () => {
    const manager = signedIn();
    const { sent, seen, send } = setUp(manager, []);
    const ends = () => seen.filter(([event]) => event === 'complete' || event === 'error');

    send({ path: '/me' });
    await vi.waitFor(() => expect(ends()).toHaveLength(1));
    await manager.setTokens({ accessToken: 'd1', refreshToken: 'r1', tokenType: 'DPoP' });
    send({ path: '/me' });
    send({ path: '/me' });
    await vi.waitFor(() => expect(ends()).toHaveLength(3));
    await manager.setTokens({ accessToken: 'v2', refreshToken: 'r2', tokenType: 'Bearer' });
    send({ path: '/me' });
    await vi.waitFor(() => expect(ends()).toHaveLength(4));

    expect(sent.map((options) => options.headers)).toEqual([{ authorization: 'Bearer v0' }, { authorization: 'Bearer v2' }]);
    expect(ends()).toEqual([
      ['complete'],
      ['error', expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR, message: expect.stringMatching(/^tokenRelayInterceptor sends no DPoP proofs/) })],
      ['error', expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR })],
      ['complete'],
    ]);
  });

  it('needs origins', () => {
    expect(() => tokenRelayInterceptor(signedIn(), {} as never)).toThrow(expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR }));
  });
});

describe('tokenRelayInterceptor with dpop', () => {
  const nonceChallenge = ['www-authenticate', 'DPoP error="use_dpop_nonce"', 'dpop-nonce', 'n-1'].map((text) => Buffer.from(text));

  /** Answers every request with a nonce challenge, or only the first when `challengeOnce`; a sender that retries once, as createDpop's. */
  function setUpSigned(challengeOnce: boolean) {
    const proofs: unknown[] = [];
    const seen: Seen[] = [];
    const next = (options: Sent, handler: FakeHandler) => {
      proofs.push((options.headers as Record<string, unknown>).dpop);
      const challenge = !challengeOnce || proofs.length === 1;
      queueMicrotask(() => {
        handler.onConnect(() => {});
        handler.onHeaders(challenge ? 401 : 200, challenge ? nonceChallenge : [], () => {}, '');
        handler.onData(Buffer.from(challenge ? 'challenge' : 'ok'));
        handler.onComplete(null);
      });
      return true;
    };
    let signed = 0;
    const dpop: DpopSender = {
      async send<R>(request: DpopRequest<R>): Promise<R> {
        const first = await request.attempt(`proof-${++signed}`);
        const answer = request.answerOf(first);
        if (answer.status !== 401 || answer.header('dpop-nonce') === undefined) return first;
        expect(await answer.text()).toBe('challenge');
        return request.attempt(`proof-${++signed}`);
      },
    };
    const refresh = vi.fn(async () => ({ accessToken: 'v1', refreshToken: 'r1' }));
    const dispatch = tokenRelayInterceptor(signedIn(refresh), { origins: [API], dpop })(next);
    const handler: FakeHandler = {
      onConnect: () => void seen.push(['connect']),
      onHeaders: (status) => (seen.push(['headers', status]), true),
      onData: (chunk) => (seen.push(['data', chunk.toString()]), true),
      onComplete: () => void seen.push(['complete']),
      onError: (error) => void seen.push(['error', error]),
    };
    dispatch({ origin: API, path: '/me', headers: {} }, handler);
    const settled = () => vi.waitFor(() => expect(seen.at(-1)?.[0]).toMatch(/complete|error/));
    return { proofs, seen, settled, refresh };
  }

  it('signs every dispatch anew, and the caller never sees a nonce challenge that a retry answered', async () => {
    const { proofs, seen, settled } = setUpSigned(true);
    await settled();

    expect(proofs).toEqual(['proof-1', 'proof-2']);
    expect(seen).toEqual([['connect'], ['headers', 200], ['data', 'ok'], ['complete']]);
  });

  it('fails a signed request with the error that broke it, once: before its answer through dpop.send, after it straight to the caller', async () => {
    const reset = new Error('socket hang up');
    const dispatchBreaking = (breakAfterHeaders: boolean) => {
      const seen: Seen[] = [];
      const next = (_options: Sent, handler: FakeHandler) => {
        queueMicrotask(() => {
          handler.onConnect(() => {});
          if (breakAfterHeaders) handler.onHeaders(200, [], () => {}, '');
          handler.onError(reset);
        });
        return true;
      };
      const dpop: DpopSender = { send: (request) => request.attempt('proof') };
      tokenRelayInterceptor(signedIn(), { origins: [API], dpop })(next)({ origin: API, path: '/me' }, {
        onConnect: () => void seen.push(['connect']),
        onHeaders: (status) => (seen.push(['headers', status]), true),
        onData: () => true,
        onComplete: () => void seen.push(['complete']),
        onError: (error) => void seen.push(['error', error]),
      });
      return seen;
    };

    const beforeAnswer = dispatchBreaking(false);
    const afterHeaders = dispatchBreaking(true);

    await vi.waitFor(() => expect(beforeAnswer).toEqual([['connect'], ['error', reset]]));
    await vi.waitFor(() => expect(afterHeaders).toEqual([['connect'], ['headers', 200], ['error', reset]]));
    // Nothing more comes once the send settled.
    await new Promise(setImmediate);
    expect([beforeAnswer.length, afterHeaders.length]).toEqual([2, 3]);
  });

  it('hands the caller a nonce challenge that was not retried away, whole, and refreshes nothing for it', async () => {
    const { proofs, seen, settled, refresh } = setUpSigned(false);
    await settled();

    expect(proofs).toEqual(['proof-1', 'proof-2']);
    expect(seen).toEqual([['connect'], ['headers', 401], ['data', 'challenge'], ['complete']]);
    expect(refresh).not.toHaveBeenCalled();
  });
});

/**
 * A dispatcher that answers the first request with a 401 at once and hands back its exchange, so the test plays
 * the rest of it (what undici would send, had it not been aborted); `before` runs before it answers.
 */
function answering401(before: () => Promise<void> = async () => {}) {
  const aborts: (Error | undefined)[] = [];
  let exchange: FakeHandler | undefined;
  const next = (_options: Sent, handler: FakeHandler) => {
    void before().then(() => {
      exchange = handler;
      handler.onConnect((reason) => void aborts.push(reason));
      handler.onHeaders(401, [Buffer.from('www-authenticate'), Buffer.from('Bearer error="insufficient_scope"')], () => {}, '');
    });
    return true;
  };
  return { next, aborts, exchange: () => exchange };
}

describe("tokenRelayInterceptor and a caller's handler that throws", () => {
  /** The caller's handler, throwing `broken` at the headers (and at the error too, when told); records what it saw. */
  function throwingAtHeaders(broken: Error, { atErrorToo = false } = {}) {
    const seen: Seen[] = [];
    const handler: FakeHandler = {
      onConnect: () => void seen.push(['connect']),
      onHeaders: () => {
        seen.push(['headers']);
        throw broken;
      },
      onData: (chunk) => (seen.push(['data', chunk.toString()]), true),
      onComplete: () => void seen.push(['complete']),
      onError: (error) => {
        seen.push(['error', error]);
        if (atErrorToo) throw error;
      },
    };
    return { handler, seen };
  }

  /** Runs `body`, then fails if a promise was rejected with nothing to catch it meanwhile. */
  async function withoutUnhandledRejections(body: () => Promise<void>) {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      await body();
      await new Promise((resolve) => setTimeout(resolve, 10));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  }

  it('aborts the exchange of a delivered answer whose handler threw with that error, reports it once, and hands on nothing after it', async () => {
    const { next, aborts, exchange } = answering401();
    const broken = new Error('handler broke');
    const { handler, seen } = throwingAtHeaders(broken);

    tokenRelayInterceptor(signedIn(), { origins: [API] })(next)({ origin: API, path: '/me' }, handler);
    await vi.waitFor(() => expect(seen).toContainEqual(['error', broken]));
    exchange()?.onData(Buffer.from('the rest'));
    exchange()?.onComplete(null);
    exchange()?.onError(new Error('aborted'));

    expect(aborts).toEqual([broken]);
    expect(seen).toEqual([['connect'], ['headers'], ['error', broken]]);
  });

  it('leaves no unhandled rejection when the handler of an answer handed on after a sign-out meanwhile throws', async () => {
    const manager = signedIn();
    const { next, aborts } = answering401(() => manager.clear());
    const broken = new Error('handler broke');
    const { handler, seen } = throwingAtHeaders(broken);

    await withoutUnhandledRejections(async () => {
      tokenRelayInterceptor(manager, { origins: [API], shouldRefresh: () => true })(next)({ origin: API, path: '/me' }, handler);
      await vi.waitFor(() => expect(seen).toContainEqual(['error', broken]));
    });

    expect(aborts).toEqual([broken]);
    expect(seen).toEqual([['connect'], ['headers'], ['error', broken]]);
  });

  it('leaves no unhandled rejection when the handler throws at the error it is told, too', async () => {
    const { next, aborts } = answering401();
    const broken = new Error('handler broke');
    const { handler, seen } = throwingAtHeaders(broken, { atErrorToo: true });

    await withoutUnhandledRejections(async () => {
      tokenRelayInterceptor(signedIn(), { origins: [API] })(next)({ origin: API, path: '/me' }, handler);
      await vi.waitFor(() => expect(seen).toContainEqual(['error', broken]));
    });

    expect(aborts).toEqual([broken]);
    expect(seen).toEqual([['connect'], ['headers'], ['error', broken]]);
  });
});

describe('tokenRelayInterceptor while a shouldRefresh of your own decides', () => {
  it('gives the held answer up and fails the request with its reason when the caller aborts, though shouldRefresh never settles', async () => {
    const { next, aborts } = answering401();
    const seen: Seen[] = [];
    let abortCaller: (reason?: Error) => void = () => {};
    const handler: FakeHandler = {
      onConnect: (abort) => {
        abortCaller = abort;
        seen.push(['connect']);
      },
      onHeaders: (status) => (seen.push(['headers', status]), true),
      onData: () => true,
      onComplete: () => void seen.push(['complete']),
      onError: (error) => void seen.push(['error', error]),
    };
    const deciding = vi.fn(() => new Promise<boolean>(() => {}));
    const reason = new Error('caller gave up');

    tokenRelayInterceptor(signedIn(), { origins: [API], shouldRefresh: deciding })(next)({ origin: API, path: '/me' }, handler);
    await vi.waitFor(() => expect(deciding).toHaveBeenCalledOnce());
    abortCaller(reason);

    await vi.waitFor(() => expect(seen).toEqual([['connect'], ['error', reason]]));
    expect(aborts[0]).toBe(reason);
  });
});
