/*
 * Real-Chromium helpers for the cross-tab tests: launch an installed Chromium (Debian's
 * `chromium`) through playwright-core (no browser download), and serve a test page bundled from
 * the package sources on 127.0.0.1.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll } from 'vitest';
import { browserVariants } from '../../scripts/browser-variants.mjs';
import { chromium as chromiumService, requireTestService } from './test-services.js';

/**
 * Launches headless Chromium (found on the PATH, or at TOKENRELAY_CHROMIUM) with a fresh, empty profile.
 * @throws Error with the install commands when Chromium is missing: the test fails, it never skips.
 */
export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: requireTestService(chromiumService),
    timeout: 30_000,
    args: [
      '--headless=new',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

const source = (path: string) => fileURLToPath(new URL(`../../packages/${path}`, import.meta.url));

/**
 * Bundles a browser script from the TypeScript sources, with every @tokenrelay package resolved to
 * one copy, and the browser variants the `browser` export condition serves (what a browser ships).
 */
export async function bundleScript(entry: string): Promise<string> {
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    write: false,
    format: 'iife',
    platform: 'browser',
    target: 'chrome110',
    logLevel: 'silent',
    plugins: [browserVariants],
    alias: {
      '@tokenrelay/core/kit': source('core/src/kit.ts'),
      '@tokenrelay/core': source('core/src/index.ts'),
      '@tokenrelay/fetch': source('fetch/src/index.ts'),
      '@tokenrelay/browser': source('browser/src/index.ts'),
      '@tokenrelay/dpop': source('dpop/src/index.ts'),
    },
  });
  const [output] = result.outputFiles;
  if (!output) throw new Error(`esbuild produced no output for ${entry}`);
  return output.text;
}

/** A page server on 127.0.0.1. */
export interface PageServer {
  /** The page's URL, `http://127.0.0.1:PORT/`: a secure context, so Web Locks are available. */
  readonly url: string;
  close(): Promise<void>;
}

/** Serves an HTML page that loads `script` on 127.0.0.1 (an ephemeral port). */
export async function servePage(script: string): Promise<PageServer> {
  const html = '<!doctype html><meta charset="utf-8"><title>tokenrelay tab</title><script src="/tab.js"></script>';
  const server = createServer((request, response) => {
    const path = new URL(request.url ?? '/', 'http://127.0.0.1').pathname;
    if (path === '/') response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(html);
    else if (path === '/tab.js') response.writeHead(200, { 'content-type': 'text/javascript' }).end(script);
    else response.writeHead(404).end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Chromium and a page serving one bundled script, for one test file. */
export interface ChromiumFixture {
  /** The browser, launched before the file's tests. */
  browser(): Browser;
  /** Where the page with the script is served (127.0.0.1). */
  pageUrl(): string;
}

/**
 * Bundles `pageScript`, serves it on 127.0.0.1 and launches Chromium before the calling test file's
 * tests (its own `beforeAll` hooks, registered after this call, run after), and closes both after them.
 */
export function useChromium(pageScript: URL): ChromiumFixture {
  let browser: Browser | undefined;
  let server: PageServer | undefined;
  beforeAll(async () => {
    server = await servePage(await bundleScript(fileURLToPath(pageScript)));
    browser = await launchChromium();
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });
  const ready = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('useChromium: Chromium or the page server did not start');
    return value;
  };
  return { browser: () => ready(browser), pageUrl: () => ready(server).url };
}
