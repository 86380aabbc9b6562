// Loads every built package the way users will — `import` and `require` — and checks that both
// formats expose the same names. Catches a broken CJS build that type checks cannot see.
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const require = createRequire(import.meta.url);
const root = new URL('../packages/', import.meta.url).pathname;
let failures = 0;

for (const dir of readdirSync(root)) {
  const manifest = JSON.parse(readFileSync(join(root, dir, 'package.json'), 'utf8'));
  for (const [subpath, target] of Object.entries(manifest.exports)) {
    if (typeof target === 'string') continue; // ./package.json
    const esm = await import(pathToFileURL(join(root, dir, target.import.default)).href);
    const cjs = require(join(root, dir, target.require.default));
    const esmNames = Object.keys(esm).filter((name) => name !== 'default').sort().join(', ');
    const cjsNames = Object.keys(cjs).sort().join(', ');
    const name = `${manifest.name}${subpath.slice(1)}`;
    if (esmNames !== cjsNames || esmNames === '') {
      failures++;
      console.error(`${name}: ESM exports [${esmNames}] differ from CJS exports [${cjsNames}]`);
    } else {
      console.log(`${name}: ESM and CJS both export ${esmNames}`);
    }
  }
}
process.exit(failures === 0 ? 0 : 1);
