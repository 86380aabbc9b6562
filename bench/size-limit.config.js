// size-limit checks for `pnpm bench` (run from the repository root: `npx size-limit --config bench/size-limit.config.js`).
// tokenrelay is bundled from its TypeScript sources (esbuild strips the types exactly as tsup does), so
// no `pnpm build` is needed first; sizes are minified + gzip (not brotli), like bundlephobia reports.
import { fileURLToPath } from 'node:url';

const source = (name) => fileURLToPath(new URL(`../packages/${name}/src/index.ts`, import.meta.url));
const kit = fileURLToPath(new URL('../packages/core/src/kit.ts', import.meta.url));
// The adapters take their shared pieces from @tokenrelay/core/kit: an alias of the main entry alone would remap it to index.ts/kit.
const fromSource = (config) => ({
  ...config,
  alias: { ...config.alias, '@tokenrelay/core/kit': kit, '@tokenrelay/core': source('core') },
});
const check = (name, imports, extra = {}) => ({
  name,
  import: imports,
  gzip: true,
  modifyEsbuildConfig: fromSource,
  ...extra,
});

export default [
  check(
    'tokenrelay core+fetch',
    {
      '../packages/core/src/index.ts': '{ createTokenManager, refreshTokenGrant }',
      '../packages/fetch/src/index.ts': '{ withTokenRelay }',
    },
    { limit: '12100 B' },
  ),
  check(
    'tokenrelay core+axios',
    {
      '../packages/core/src/index.ts': '{ createTokenManager, refreshTokenGrant }',
      '../packages/axios/src/index.ts': '{ attachTokenRelay }',
    },
    { limit: '12500 B', ignore: ['axios'] },
  ),
  check(
    'tokenrelay dpop (createDpop, browserDpopKey)',
    { '../packages/dpop/src/index.ts': '{ createDpop, browserDpopKey }' },
    { limit: '3200 B' },
  ),
  check('tokenrelay createTokenManager', { '../packages/core/src/index.ts': '{ createTokenManager }' }),
  check('tokenrelay refreshTokenGrant', { '../packages/core/src/index.ts': '{ refreshTokenGrant }' }),
  check('tokenrelay withTokenRelay only', { '../packages/fetch/src/index.ts': '{ withTokenRelay }' }, { ignore: ['@tokenrelay/core'] }),
  check('tokenrelay attachTokenRelay only', { '../packages/axios/src/index.ts': '{ attachTokenRelay }' }, { ignore: ['@tokenrelay/core', 'axios'] }),
  check('axios-auth-refresh', { '../node_modules/axios-auth-refresh/dist/index.esm.js': '{ createAuthRefresh }' }, { ignore: ['axios'] }),
  check(
    '@badgateway/oauth2-client',
    { '../node_modules/@badgateway/oauth2-client/dist/index.js': '{ OAuth2Client, OAuth2Fetch }' },
    // A Node-only fallback behind a dynamic import; browsers use Web Crypto.
    { ignore: ['crypto'] },
  ),
];
