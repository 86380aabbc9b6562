import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const source = (name: string) => fileURLToPath(new URL(`./packages/${name}/src/index.ts`, import.meta.url));

export default defineConfig({
  resolve: {
    // Tests run against the TypeScript sources; the built output is checked by publint/attw and the examples.
    alias: {
      '@tokenrelay/core/node': fileURLToPath(new URL('./packages/core/src/node.ts', import.meta.url)),
      '@tokenrelay/core/kit': fileURLToPath(new URL('./packages/core/src/kit.ts', import.meta.url)),
      '@tokenrelay/core': source('core'),
      '@tokenrelay/axios': source('axios'),
      '@tokenrelay/fetch': source('fetch'),
      '@tokenrelay/testing': source('testing'),
      '@tokenrelay/salesforce': source('salesforce'),
      '@tokenrelay/redis': source('redis'),
      '@tokenrelay/browser': source('browser'),
    },
  },
  test: {
    include: ['packages/*/src/**/*.test.ts', 'test/**/*.test.ts', 'bench/**/*.test.ts'],
    testTimeout: 15_000,
    hookTimeout: 15_000,
  },
});
