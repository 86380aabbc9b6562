import { packageBuild } from '../../tsup.shared.js';

// Browser code: modern syntax every browser with Web Locks and BroadcastChannel understands.
export default packageBuild({ target: 'es2022' });
