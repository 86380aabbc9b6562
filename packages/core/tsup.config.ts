import { packageBuild } from '../../tsup.shared.js';

export default packageBuild({
  entry: ['src/index.ts', 'src/node.ts', 'src/kit.ts'],
  // One shared chunk, so the CJS builds of ./node and ./kit use the same TokenRelayError class as the main entry.
  splitting: true,
});
