import { packageBuild } from '../../tsup.shared.js';

export default packageBuild({
  entry: ['src/index.ts', 'src/node.ts', 'src/kit.ts', 'src/grants.ts'],
  // One shared chunk, so the CJS builds of ./node, ./kit and ./grants use the same TokenRelayError class as the main entry.
  splitting: true,
});
