import { packageBuild } from '../../tsup.shared.js';

export default packageBuild({
  entry: ['src/index.ts', 'src/node.ts'],
  // One shared chunk, so the CJS build of ./node uses the same TokenRelayError class as the main entry.
  splitting: true,
});
