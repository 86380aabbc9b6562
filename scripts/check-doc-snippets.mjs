#!/usr/bin/env node
/*
 * Type-checks every ```ts / ```tsx block of README.md and docs/**\/*.md with tsc --strict, as
 * oauth4webapi does for its docs: a snippet a reader copies must compile.
 *
 * Each block becomes one module under .tmp/doc-snippets/ (inside the repo, so bare imports resolve
 * from its node_modules) and is compiled with the repo's tsconfig.json, whose `paths` map
 * @tokenrelay/* to the package sources. Errors are reported at the Markdown file and line.
 *
 * A block may opt out, always saying why, after the language:
 *   ```ts no-check <reason>         never checked (e.g. a signature shown for reading, not running)
 *   ```ts pending-api <names>       uses APIs that are not released yet; listed here, switched on when they land
 * Framework modules the repo does not install (next, @nestjs/*) are typed by
 * scripts/doc-snippets/frameworks.d.ts, which declares only what the docs use.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outDir = join(root, '.tmp', 'doc-snippets');
const checkedLanguages = new Set(['ts', 'tsx', 'typescript']);

function markdownFiles() {
  const files = [join(root, 'README.md')];
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.md')) files.push(path);
    }
  };
  try {
    walk(join(root, 'docs'));
  } catch (error) {
    if (error.code !== 'ENOENT') throw error;
  }
  return files;
}

/** The fenced code blocks of one Markdown file, with the 1-based line of their first code line. */
function codeBlocks(markdown) {
  const blocks = [];
  const lines = markdown.split('\n');
  let open;
  lines.forEach((line, index) => {
    const fence = /^\s*(`{3,}|~{3,})(.*)$/.exec(line);
    if (!open) {
      if (fence) open = { fence: fence[1], info: fence[2].trim(), firstLine: index + 2, code: [] };
      return;
    }
    if (fence && fence[1].startsWith(open.fence) && fence[2].trim() === '') {
      blocks.push({ info: open.info, firstLine: open.firstLine, code: open.code.join('\n') });
      open = undefined;
      return;
    }
    open.code.push(line);
  });
  return blocks;
}

const problems = [];
const pending = [];
const unchecked = [];
const snippets = new Map(); // snippet file name → { source, firstLine }

rmSync(outDir, { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });

for (const file of markdownFiles()) {
  const source = relative(root, file);
  for (const block of codeBlocks(readFileSync(file, 'utf8'))) {
    const [language = '', flag, ...rest] = block.info.split(/\s+/);
    if (!checkedLanguages.has(language)) continue;
    const where = `${source}:${block.firstLine - 1}`;
    const reason = rest.join(' ');
    if (flag === 'no-check' || flag === 'pending-api') {
      if (!reason) problems.push(`${where}: \`${language} ${flag}\` needs a reason (what it is waiting for, or why it cannot compile)`);
      (flag === 'pending-api' ? pending : unchecked).push(`${where} (${reason})`);
      continue;
    }
    if (flag !== undefined) {
      problems.push(`${where}: unknown flag "${flag}" (use \`no-check <reason>\` or \`pending-api <names>\`)`);
      continue;
    }
    const name = `${source.replace(/[^\w.-]+/g, '_')}_L${block.firstLine}.${language === 'tsx' ? 'tsx' : 'ts'}`;
    // `export {}` makes every block a module of its own, so two blocks may declare the same names.
    writeFileSync(join(outDir, name), `${block.code}\nexport {};\n`);
    snippets.set(name, { source, firstLine: block.firstLine });
  }
}

writeFileSync(
  join(outDir, 'tsconfig.json'),
  JSON.stringify(
    {
      extends: relative(outDir, join(root, 'tsconfig.json')),
      compilerOptions: {
        strict: true,
        noEmit: true,
        jsx: 'react-jsx',
        // NestJS's decorators are the legacy kind.
        experimentalDecorators: true,
      },
      include: ['*.ts', '*.tsx', relative(outDir, join(root, 'scripts', 'doc-snippets', 'frameworks.d.ts'))],
    },
    null,
    2,
  ),
);

let output = '';
if (snippets.size > 0) {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  try {
    execFileSync(process.execPath, [tsc, '-p', join(outDir, 'tsconfig.json'), '--pretty', 'false'], {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (error) {
    output = `${error.stdout ?? ''}${error.stderr ?? ''}`;
  }
}

let elsewhere = 0;
for (const line of output.split('\n')) {
  const diagnostic = /^(.*?)\((\d+),(\d+)\): (error .*)$/.exec(line);
  if (!diagnostic) {
    // An error without a location (a broken tsconfig, a missing lib) fails the check too.
    if (/^error TS/.test(line)) problems.push(line);
    continue;
  }
  const [, path, lineNumber, column, message] = diagnostic;
  const snippet = snippets.get(relative(outDir, join(root, path)));
  // Errors inside the package sources are `pnpm typecheck`'s to report, not this script's.
  if (!snippet) {
    elsewhere++;
    continue;
  }
  problems.push(`${snippet.source}:${snippet.firstLine + Number(lineNumber) - 1}:${column}: ${message}`);
}

console.log(`Type-checked ${snippets.size} code blocks of README.md and docs/ (strict).`);
if (pending.length > 0) console.log(`Waiting for APIs (pending-api), not checked:\n  ${pending.join('\n  ')}`);
if (unchecked.length > 0) console.log(`Not checked (no-check):\n  ${unchecked.join('\n  ')}`);
if (elsewhere > 0) console.log(`(${elsewhere} diagnostics outside the snippets ignored: pnpm typecheck reports those.)`);
if (problems.length > 0) {
  console.error(`\n${problems.length} problem(s) in documentation code blocks:\n${problems.join('\n')}`);
  process.exit(1);
}
