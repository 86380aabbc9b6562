import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  sourcemap: true,
  target: 'node20',
  // Dependencies and peers stay external (tsup's default): one copy of @tokenrelay/core is shared by every adapter.
});
