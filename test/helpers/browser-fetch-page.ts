/*
 * The script of the page test/browser-fetch.test.ts opens in Chromium: withTokenRelay (the browser
 * build, bundled from the sources) over the page's own fetch, for the page's origin, as
 * `window.relayFetch`. Its manager holds `page-token`, which never needs a refresh.
 */
import { createTokenManager } from '@tokenrelay/core';
import { withTokenRelay } from '@tokenrelay/fetch';

const manager = createTokenManager({
  tokens: { accessToken: 'page-token', refreshToken: 'page-refresh' },
  refresh: async () => {
    throw new Error('the page never refreshes');
  },
});

(globalThis as { relayFetch?: typeof fetch }).relayFetch = withTokenRelay(fetch, manager);
