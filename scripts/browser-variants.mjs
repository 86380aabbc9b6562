// An esbuild plugin for browser builds, used by the packages' tsup configs, size-limit and the
// Chromium tests: a relative import of `./name.js` whose source `name.ts` has a sibling
// `name.browser.ts` resolves to that sibling. So code a browser can never run (the fetch
// adapter's redirect following, which needs `redirect: 'manual'` to show each hop) stays out of
// what a browser ships, while Node, Deno, Bun and the tests run the full source.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

/** @type {import('esbuild').Plugin} */
export const browserVariants = {
  name: 'browser-variants',
  setup(build) {
    build.onResolve({ filter: /^\.\.?\/.*\.js$/ }, (args) => {
      const variant = join(args.resolveDir, args.path.replace(/\.js$/, '.browser.ts'));
      return existsSync(variant) ? { path: variant } : undefined;
    });
  },
};
