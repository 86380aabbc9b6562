import { defineConfig, type Options } from 'tsup';

/**
 * The build every package shares: ESM and CJS, each with its own declarations (.d.ts/.d.cts).
 * Dependencies and peers stay external (tsup's default), so every adapter shares one copy of
 * @tokenrelay/core — two copies of a single-flight engine would be two flights.
 */
export function packageBuild(overrides: Options = {}) {
  return defineConfig({
    entry: ['src/index.ts'],
    format: ['esm', 'cjs'],
    dts: true,
    clean: true,
    sourcemap: true,
    target: 'node20',
    ...overrides,
  });
}
