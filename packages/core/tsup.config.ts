import { browserVariants } from '../../scripts/browser-variants.mjs';
import { packageBuild } from '../../tsup.shared.js';

export default [
  packageBuild({
    entry: ['src/index.ts', 'src/node.ts', 'src/kit.ts', 'src/grants.ts'],
    // One shared chunk, so the CJS builds of ./node, ./kit and ./grants use the same TokenRelayError class as the main entry.
    splitting: true,
  }),
  // What the `browser` export condition serves: the *.browser.ts variants (see not-sent.browser.ts), one shared chunk.
  packageBuild({
    entry: { 'browser/index': 'src/index.ts', 'browser/kit': 'src/kit.ts', 'browser/grants': 'src/grants.ts' },
    splitting: true,
    dts: false,
    clean: false,
    platform: 'browser',
    target: 'es2022',
    esbuildPlugins: [browserVariants],
    esbuildOptions(options) {
      options.chunkNames = 'browser/[name]-[hash]';
    },
  }),
];
