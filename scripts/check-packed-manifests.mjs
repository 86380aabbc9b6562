// Packs every package with pnpm, as publishing does, and checks what a user would download:
// no `workspace:` specifier left in package.json, a LICENSE and a README in the tarball, and the
// repository/homepage/bugs links.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('../', import.meta.url).pathname;
const readManifest = (dir) => JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));

const run = (command, args, cwd) => {
  const result = spawnSync(command, args, { cwd, encoding: 'utf8', timeout: 300_000 });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed in ${cwd}:\n${result.stderr}${result.stdout}`);
  return result.stdout;
};

const work = mkdtempSync(join(tmpdir(), 'tokenrelay-packed-'));
const problems = [];
try {
  // The pnpm that publishes: the root manifest's packageManager (pnpm@x.y.z).
  const { packageManager } = readManifest(root);
  run('npx', ['-y', packageManager, '-r', '--filter', './packages/**', 'pack', '--pack-destination', work], root);

  for (const dir of readdirSync(join(root, 'packages'))) {
    const source = readManifest(join(root, 'packages', dir));
    const tarball = join(work, `${source.name.replace(/^@/, '').replace('/', '-')}-${source.version}.tgz`);
    const extracted = join(work, dir);
    mkdirSync(extracted);
    const files = run('tar', ['-tzf', tarball], work).split('\n');
    run('tar', ['-xzf', tarball, '-C', extracted], work);
    const text = readFileSync(join(extracted, 'package', 'package.json'), 'utf8');
    const manifest = JSON.parse(text);
    const found = [];

    if (text.includes('workspace:')) found.push('the packed package.json still has a "workspace:" specifier');
    for (const required of ['LICENSE', 'README.md']) {
      if (!files.includes(`package/${required}`)) found.push(`the tarball has no ${required}`);
    }
    if (!manifest.repository?.url || manifest.repository.directory !== `packages/${dir}`) {
      found.push(`repository needs a url and "directory": "packages/${dir}"`);
    }
    if (!manifest.homepage) found.push('no homepage');
    if (!manifest.bugs?.url) found.push('no bugs.url');

    if (found.length === 0) console.log(`${source.name}: packed manifest ok`);
    problems.push(...found.map((problem) => `${source.name}: ${problem}`));
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
for (const problem of problems) console.error(problem);
process.exit(problems.length === 0 ? 0 : 1);
