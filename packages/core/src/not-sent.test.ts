import { describe, expect, it } from 'vitest';
import { certainlyNotSent as inBrowserBuild } from './not-sent.browser.js';
import { certainlyNotSent } from './not-sent.js';

/** How undici reports a refused connection: `TypeError('fetch failed', { cause })` with the code in the cause. */
const refusedByNode = new TypeError('fetch failed', { cause: Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' }) });

describe('certainlyNotSent in the full build and in the browser build', () => {
  it.each([
    ["a browser's opaque network error", new TypeError('Failed to fetch')],
    ['a reset connection', new TypeError('fetch failed', { cause: Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }) })],
    ['something that is not an error', 'offline'],
  ])('takes %s as maybe sent in both', (_name, error) => {
    expect(certainlyNotSent(error)).toBe(false);
    expect(inBrowserBuild(error)).toBe(false);
  });

  it("knows a connection Node reports refused was never sent; the browser build, which never sees Node's codes, stays on the safe side", () => {
    expect(certainlyNotSent(refusedByNode)).toBe(true);
    expect(inBrowserBuild(refusedByNode)).toBe(false);
  });
});
