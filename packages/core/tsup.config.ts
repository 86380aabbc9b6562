import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts', 'src/node.ts'],
  // One shared chunk, so the CJS build of ./node uses the same TokenRelayError class as the main entry.
  splitting: true,
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  sourcemap: true,
  target: 'node20',
  // Dependencies and peers stay external (tsup's default): one copy of @tokenrelay/core is shared by every adapter.
});
