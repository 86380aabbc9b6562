import { browserVariants } from '../../scripts/browser-variants.mjs';
import { packageBuild } from '../../tsup.shared.js';

export default [
  packageBuild(),
  // What the `browser` export condition serves: redirects.browser.ts instead of redirects.ts (see there).
  packageBuild({
    entry: { 'index.browser': 'src/index.ts' },
    dts: false,
    clean: false,
    platform: 'browser',
    target: 'es2022',
    esbuildPlugins: [browserVariants],
  }),
];
