/*
 * withTokenRelay's browser build in real Chromium, where the browser follows redirects and sets the
 * Referer itself: what the wrapper hands the page's fetch must keep what the caller's Request says.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleScript, launchChromium } from './helpers/chromium.js';

interface Seen {
  referer: string | null;
  authorization: string | null;
}

/** The page (`/`), its script, and `/api/seen`, which answers with the Referer and Authorization it was sent. */
let server: Server;
let pageUrl: string;
let browser: Browser;

beforeAll(async () => {
  const script = await bundleScript(fileURLToPath(new URL('./helpers/browser-fetch-page.ts', import.meta.url)));
  server = createServer((request, response) => {
    const path = new URL(request.url ?? '/', 'http://127.0.0.1').pathname;
    if (path === '/') return response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end('<!doctype html><script src="/page.js"></script>');
    if (path === '/page.js') return response.writeHead(200, { 'content-type': 'text/javascript' }).end(script);
    const seen: Seen = { referer: request.headers.referer ?? null, authorization: request.headers.authorization ?? null };
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(seen));
  });
  await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
  pageUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  browser = await launchChromium();
}, 60_000);

afterAll(async () => {
  await browser?.close();
  server?.closeAllConnections();
  await new Promise<void>((closed) => server?.close(() => closed()));
});

describe('withTokenRelay in Chromium', () => {
  it("sends a Request without an init with its own referrer and referrer policy, as the page's fetch does", async () => {
    const page = await browser.newPage();
    try {
      await page.goto(pageUrl);
      const seen = await page.evaluate(async () => {
        const relayFetch = (globalThis as { relayFetch?: typeof fetch }).relayFetch;
        if (!relayFetch) throw new Error('the page script did not load');
        const requests = () => [
          new Request('/api/seen', { referrerPolicy: 'no-referrer' }),
          new Request('/api/seen', { referrer: '/from/here', referrerPolicy: 'unsafe-url' }),
          new Request('/api/seen', { referrer: '' }),
        ];
        const answers = (sent: Promise<Response>[]) => Promise.all(sent.map(async (response) => (await response).json()));
        return { byFetch: await answers(requests().map((request) => fetch(request))), byWrapper: await answers(requests().map((request) => relayFetch(request))) };
      });

      expect(seen.byWrapper.map(({ referer }: Seen) => referer)).toEqual(seen.byFetch.map(({ referer }: Seen) => referer));
      expect(seen.byWrapper).toEqual([
        { referer: null, authorization: 'Bearer page-token' },
        { referer: `${pageUrl}from/here`, authorization: 'Bearer page-token' },
        { referer: null, authorization: 'Bearer page-token' },
      ]);
    } finally {
      await page.close();
    }
  });
});
