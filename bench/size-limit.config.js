// size-limit checks for `pnpm bench` (run from the repository root: `npx size-limit --config bench/size-limit.config.js`).
// tokenrelay is bundled from its TypeScript sources (esbuild strips the types exactly as tsup does), so
// no `pnpm build` is needed first; sizes are minified + gzip (not brotli), like bundlephobia reports.
// Every check is bundled for a browser (esbuild platform browser) with the browser variants the
// `browser` export condition serves (the fetch adapter without redirect following: browsers follow
// redirects themselves).
import { fileURLToPath } from 'node:url';
import { browserVariants } from '../scripts/browser-variants.mjs';

const source = (name) => fileURLToPath(new URL(`../packages/${name}/src/index.ts`, import.meta.url));
const coreEntry = (name) => fileURLToPath(new URL(`../packages/core/src/${name}.ts`, import.meta.url));
// The adapters take their shared pieces from @tokenrelay/core/kit (and Salesforce its grants from
// @tokenrelay/core/grants): an alias of the main entry alone would remap them to index.ts/kit.
const fromSource = (config) => ({
  ...config,
  platform: 'browser',
  plugins: [...(config.plugins ?? []), browserVariants],
  alias: {
    ...config.alias,
    '@tokenrelay/core/kit': coreEntry('kit'),
    '@tokenrelay/core/grants': coreEntry('grants'),
    '@tokenrelay/core': source('core'),
  },
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
    { limit: '10571 B' },
  ),
  check(
    'tokenrelay core+axios',
    {
      '../packages/core/src/index.ts': '{ createTokenManager, refreshTokenGrant }',
      '../packages/axios/src/index.ts': '{ attachTokenRelay }',
    },
    { limit: '11520 B', ignore: ['axios'] },
  ),
  check(
    'tokenrelay dpop (createDpop, browserDpopKey)',
    { '../packages/dpop/src/index.ts': '{ createDpop, browserDpopKey }' },
    { limit: '3377 B' },
  ),
  check('tokenrelay createTokenManager', { '../packages/core/src/index.ts': '{ createTokenManager }' }),
  check('tokenrelay refreshTokenGrant', { '../packages/core/src/index.ts': '{ refreshTokenGrant }' }),
  // @tokenrelay/core/grants: what only some apps add (here all of it, with the shared token client it needs).
  check('tokenrelay core/grants (all)', {
    '../packages/core/src/grants.ts': '{ clientCredentialsGrant, jwtBearerGrant, privateKeyJwt, revokeToken }',
  }),
  check('tokenrelay privateKeyJwt + refreshTokenGrant', {
    '../packages/core/src/index.ts': '{ refreshTokenGrant }',
    '../packages/core/src/grants.ts': '{ privateKeyJwt }',
  }),
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
