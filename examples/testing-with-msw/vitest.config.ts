import { defineConfig } from 'vitest/config';

// Its own config, so vitest does not pick up the monorepo's (which runs the packages' sources):
// this example runs against the built packages, as an app would.
export default defineConfig({
  test: { include: ['src/**/*.test.ts'] },
});
