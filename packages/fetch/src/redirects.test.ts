import { createTokenManager } from '@tokenrelay/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { withTokenRelay } from './index.js';
import { sendFollowingRedirects as sendInBrowserBuild } from './redirects.browser.js';
import { sendFollowingRedirects, type AfterResponse } from './redirects.js';

const accessToken = 'access-1';
const bearer = `Bearer ${accessToken}`;

/** A fetch that answers every request with a redirect, and records what it was given. */
function redirectingFetch() {
  const calls: { input: unknown; init: RequestInit | undefined }[] = [];
  const send = (input: RequestInfo | URL, init?: RequestInit) => {
    calls.push({ input, init });
    return Promise.resolve(new Response(null, { status: 302, headers: { location: 'https://elsewhere.example/next' } }));
  };
  return {
    calls,
    context: {
      send,
      mayCarryBearer: (url: string) => url.startsWith('https://api.example/'),
      bearerOf: (token: string) => `Bearer ${token}`,
      afterResponse: undefined,
    },
  };
}

describe('redirects in the browser build and in the full build', () => {
  afterEach(() => {
    vi.unstubAllGlobals();
  });

  it('sends the request once, as given with the bearer, and leaves a redirect to the browser in both builds', async () => {
    vi.stubGlobal('location', { origin: 'https://app.example', href: 'https://app.example/' });
    const init = { method: 'POST', body: 'payload' };
    const headers = { authorization: bearer };
    const full = redirectingFetch();
    const browser = redirectingFetch();

    const fromFull = await sendFollowingRedirects(full.context, 'https://api.example/items', init, accessToken, undefined);
    const fromBrowser = await sendInBrowserBuild(browser.context, 'https://api.example/items', init, accessToken, undefined);

    expect(browser.calls).toEqual([{ input: 'https://api.example/items', init: { ...init, headers } }]);
    expect(full.calls).toEqual(browser.calls);
    expect([fromFull.status, fromBrowser.status]).toEqual([302, 302]);
  });

  it('follows a redirect itself outside a browser, without the bearer on a hop to another origin', async () => {
    const { calls, context } = redirectingFetch();
    let answered = 0;
    const send = (input: RequestInfo | URL, init?: RequestInit) =>
      answered++ === 0 ? context.send(input, init) : (calls.push({ input, init }), Promise.resolve(new Response('done')));

    const response = await sendFollowingRedirects({ ...context, send }, 'https://api.example/items', undefined, accessToken, undefined);

    expect(await response.text()).toBe('done');
    expect(calls.map(({ input }) => String(input))).toEqual(['https://api.example/items', 'https://elsewhere.example/next']);
    expect(new Headers(calls[1]?.init?.headers).has('authorization')).toBe(false);
  });

  it.each([
    ['without an init: all of them', undefined, {}],
    ["with an init: init's members in their place, and the referrer fetch resets for it", { credentials: 'include' as const, cache: undefined }, { credentials: 'include', referrer: 'about:client', referrerPolicy: '' }],
    ['with an init without members: all of them', {}, {}],
    ['with an init whose members are all undefined, empty to fetch too: all of them', { signal: undefined, cache: undefined }, {}],
  ])("gives every hop of a Request the members fetch keeps on a redirect, sent %s", async (_, init, changed) => {
    const { calls, context } = redirectingFetch();
    let answered = 0;
    const send = (input: RequestInfo | URL, sent?: RequestInit) =>
      answered++ < 2 ? context.send(input, sent) : (calls.push({ input, init: sent }), Promise.resolve(new Response('done')));
    const manager = createTokenManager({ tokens: { accessToken, refreshToken: 'refresh-1' }, refresh: async () => ({ accessToken: 'access-2' }) });
    const caller = new AbortController();
    const request = new Request('https://api.example/items', {
      cache: 'no-store',
      credentials: 'omit',
      keepalive: true,
      mode: 'no-cors',
      referrer: 'https://api.example/page',
      referrerPolicy: 'origin',
      signal: caller.signal,
    });
    const members = ({ cache, credentials, keepalive, mode, referrer, referrerPolicy }: Request) => ({ cache, credentials, keepalive, mode, referrer, referrerPolicy });

    await withTokenRelay(send, manager, { origins: ['https://api.example'] })(request, init);

    const sent = calls.map(({ input, init: sentInit }) => new Request(input as Request | string, sentInit));
    expect(sent.map(members)).toEqual(Array(3).fill({ ...members(request), ...changed }));
    caller.abort();
    expect(sent.map(({ signal }) => signal.aborted)).toEqual([true, true, true]);
  });

  it('frees the connection of a redirect it refuses to follow', async () => {
    let cancelled = false;
    const body = new ReadableStream({ cancel: () => void (cancelled = true) });
    const send = () => Promise.resolve(new Response(body, { status: 302, headers: { location: 'ftp://api.example/file' } }));
    const { context } = redirectingFetch();

    await expect(sendFollowingRedirects({ ...context, send }, 'https://api.example/items', undefined, accessToken, undefined)).rejects.toThrow(TypeError);
    expect(cancelled).toBe(true);
  });

  it('leaves out of every hop a Request member the runtime does not have (workerd has no credentials or mode)', async () => {
    const { calls, context } = redirectingFetch();
    let answered = 0;
    const send = (input: RequestInfo | URL, sent?: RequestInit) =>
      answered++ < 1 ? context.send(input, sent) : (calls.push({ input, init: sent }), Promise.resolve(new Response('done')));
    const request = new Request('https://api.example/items');
    for (const member of ['credentials', 'mode']) Object.defineProperty(request, member, { value: undefined });

    await sendFollowingRedirects({ ...context, send, mayCarryBearer: () => true }, request, undefined, accessToken, undefined);

    expect(calls).toHaveLength(2);
    expect(Object.keys(calls[1]?.init ?? {})).not.toContain('credentials');
    expect(Object.keys(calls[1]?.init ?? {})).not.toContain('mode');
  });

  it("hands a first send's final response to afterResponse with what its replay needs, in both builds, and a replay's to none", async () => {
    const url = 'https://api.example/items';
    const handed: unknown[][] = [];
    const afterResponse: AfterResponse = (response, ...request) => (handed.push([response.status, ...request]), response);
    const own = { accept: 'text/plain' };
    const init = { headers: own };
    const full = redirectingFetch();
    let answered = 0;
    const send = (input: RequestInfo | URL, sent?: RequestInit) =>
      answered++ === 0 ? full.context.send(input, sent) : Promise.resolve(new Response('done', { status: 401 }));
    const browser = redirectingFetch().context;

    await sendFollowingRedirects({ ...full.context, send, afterResponse }, url, init, accessToken, undefined);
    vi.stubGlobal('location', { origin: 'https://app.example', href: 'https://app.example/' });
    await sendInBrowserBuild({ ...browser, afterResponse }, url, init, accessToken, undefined);
    await sendInBrowserBuild(browser, url, init, accessToken, undefined);

    expect(handed).toEqual([
      [401, url, init, accessToken, undefined],
      [302, url, init, accessToken, undefined],
    ]);
  });
});
