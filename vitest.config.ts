import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const source = (name: string) => fileURLToPath(new URL(`./packages/${name}/src/index.ts`, import.meta.url));

/**
 * Package tests that need a service or a child process: they run in the integration project.
 * Every other `packages/*\/src` test, and the benchmark's own tests, are unit tests (in-process,
 * loopback at most, seconds).
 */
const packageTestsWithServices = [
  'packages/redis/src/**/*.test.ts', // a real redis-server
  'packages/core/src/file-store.test.ts', // child processes sharing a token file
];

/**
 * What oidc-provider says about the interop tests' throwaway OpenID Provider, not about tokenrelay:
 * it supports Node 22+ (tokenrelay supports 20, and CI runs the tests on 22 and 24 too, where this
 * one is silent), and the provider is a development one on purpose: in-memory, built-in login pages.
 */
const expectedOidcProviderNotices = [
  'oidc-provider WARNING: Unsupported runtime.',
  'oidc-provider WARNING: a quick start development-only in-memory adapter is used',
  'oidc-provider WARNING: a quick start development-only feature devInteractions is enabled',
];
const isExpectedOidcProviderNotice = (log: string) =>
  log
    .split('\n')
    .filter((line) => line.trim() !== '')
    .every((line) => expectedOidcProviderNotices.some((notice) => line.startsWith(notice)));

export default defineConfig({
  resolve: {
    // Tests run against the TypeScript sources; the built output is checked by publint/attw and the examples.
    alias: {
      '@tokenrelay/core/node': fileURLToPath(new URL('./packages/core/src/node.ts', import.meta.url)),
      '@tokenrelay/core/kit': fileURLToPath(new URL('./packages/core/src/kit.ts', import.meta.url)),
      '@tokenrelay/core/grants': fileURLToPath(new URL('./packages/core/src/grants.ts', import.meta.url)),
      '@tokenrelay/core': source('core'),
      '@tokenrelay/axios': source('axios'),
      '@tokenrelay/fetch': source('fetch'),
      '@tokenrelay/undici': source('undici'),
      '@tokenrelay/got': source('got'),
      '@tokenrelay/dpop': source('dpop'),
      '@tokenrelay/testing': source('testing'),
      '@tokenrelay/salesforce': source('salesforce'),
      '@tokenrelay/redis': source('redis'),
      '@tokenrelay/browser': source('browser'),
    },
  },
  test: {
    testTimeout: 15_000,
    hookTimeout: 15_000,
    onConsoleLog: (log) => !isExpectedOidcProviderNotice(log),
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['packages/*/src/**/*.test.ts', 'bench/**/*.test.ts'],
          exclude: packageTestsWithServices,
        },
      },
      {
        // The axios door against the oldest axios its peer range takes (^1.6.0), not only the newest:
        // axios's config merging changed in between (1.6 to 1.14 drop symbol-keyed config fields).
        extends: true,
        resolve: { alias: [{ find: /^axios$/, replacement: 'axios16' }] },
        test: {
          name: 'axios 1.6',
          include: ['packages/axios/src/**/*.test.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: [...packageTestsWithServices, 'test/**/*.test.ts'],
          // Finds redis-server, redis-cli and Chromium, installing Debian's packages when they are missing and it can.
          globalSetup: ['test/helpers/test-services-setup.ts'],
        },
      },
    ],
  },
});
