/*
 * `pnpm test:runtimes`: runs the built @tokenrelay/core and @tokenrelay/fetch on Node, Bun, Deno
 * and Cloudflare's workerd, against @tokenrelay/testing's server started here on 127.0.0.1. In
 * each runtime (scenarios.mjs): a request with an expired token gets one refresh and its replay
 * succeeds; concurrent 401s make one token call. Exit 1 when a runtime breaks. Needs `pnpm build`.
 *
 * The runtimes come from the npm registry through npx, at the versions pinned below (the tested
 * matrix in docs/compatibility.md).
 *   pnpm test:runtimes               every runtime
 *   pnpm test:runtimes bun deno      some of them
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { startOAuthServer, type OAuthServer } from '@tokenrelay/testing';
import { build } from 'esbuild';
import { freeLoopbackPort } from '../helpers/free-port.js';

/** The runtimes and versions CI tests; keep docs/compatibility.md in step. */
const runtimeVersions = { bun: '1.4.5', deno: '2.9.6', workerd: '1.20261117.1' } as const;

const here = fileURLToPath(new URL('.', import.meta.url));
const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const cliEntry = join(here, 'cli-entry.mjs');
const client = { clientId: 'tokenrelay-demo', clientSecret: 'tokenrelay-demo-secret' };
const concurrency = 10;
/** A first run downloads the runtime through npx; a run itself takes a few seconds. */
const runtimeTimeoutMs = 180_000;

interface ScenarioResult {
  expiredToken: { status: number; tokenCalls: number };
  concurrent401s: { statuses: number[]; tokenCalls: number };
}

interface Runtime {
  readonly name: string;
  /** Runs the scenarios with `config` (JSON) and returns their result (JSON). */
  run(config: string): Promise<string>;
}

/** Runs a program to its end within runtimeTimeoutMs; resolves with its stdout, rejects with its output on failure. */
function runProgram(command: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'], timeout: runtimeTimeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString('utf8')).slice(-4_000)));
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (code === 0) resolve(stdout);
      else reject(new Error(`${command} ${args.slice(0, 4).join(' ')} ended with ${signal ?? `exit code ${String(code)}`}:\n${stderr}${stdout}`));
    });
  });
}

const npx = (pkg: string, args: readonly string[], env?: NodeJS.ProcessEnv) => runProgram('npx', ['-y', pkg, ...args], env);

/** Polls until something accepts TCP connections on the loopback port, bounded by `timeoutMs`. */
async function waitForListener(port: number, timeoutMs: number, exited: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !exited()) {
    const accepted = await new Promise<boolean>((resolve) => {
      const socket = createConnection({ host: '127.0.0.1', port });
      socket.setTimeout(1_000, () => socket.destroy());
      socket.once('connect', () => {
        socket.end();
        resolve(true);
      });
      // 'close' follows an 'error' (nothing listening yet): the answer is then false.
      socket.once('error', () => {});
      socket.once('close', () => resolve(false));
    });
    if (accepted) return;
    await sleep(100);
  }
  throw new Error(`nothing listened on 127.0.0.1:${port} within ${timeoutMs} ms`);
}

/** workerd: the scenarios bundled into one Worker module, served on a loopback port, run by one GET. */
async function runInWorkerd(config: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'tokenrelay-workerd-'));
  try {
    await build({
      entryPoints: [join(here, 'worker-entry.mjs')],
      outfile: join(dir, 'worker.js'),
      bundle: true,
      format: 'esm',
      platform: 'browser',
      conditions: ['workerd', 'worker'],
      logLevel: 'silent',
    });
    const port = await freeLoopbackPort();
    await writeFile(
      join(dir, 'config.capnp'),
      `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "smoke", worker = .smokeWorker),
    # Outbound requests may reach loopback only: the OAuth server of this run.
    (name = "loopback", network = (allow = ["local"])),
  ],
  sockets = [(name = "http", address = "127.0.0.1:${port}", http = (), service = "smoke")],
);
const smokeWorker :Workerd.Worker = (
  modules = [(name = "worker.js", esModule = embed "worker.js")],
  compatibilityDate = "2026-11-01",
  bindings = [(name = "CONFIG", fromEnvironment = "TOKENRELAY_RUNTIME_CONFIG")],
  globalOutbound = "loopback",
);
`,
    );
    let exited = false;
    let output = '';
    const child = spawn('npx', ['-y', `workerd@${runtimeVersions.workerd}`, 'serve', join(dir, 'config.capnp')], {
      cwd: dir,
      env: { ...process.env, TOKENRELAY_RUNTIME_CONFIG: config },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group, so stopping it stops workerd and not only npx.
      detached: true,
    });
    const collect = (chunk: Buffer) => (output = (output + chunk.toString('utf8')).slice(-4_000));
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.once('exit', () => (exited = true));
    try {
      await waitForListener(port, runtimeTimeoutMs, () => exited);
      const response = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(60_000) });
      const body = await response.text();
      if (response.status !== 200) throw new Error(`the Worker answered ${response.status}: ${body}`);
      return body;
    } catch (error) {
      throw new Error(`workerd: ${(error as Error).message}\n${output}`);
    } finally {
      if (!exited && child.pid !== undefined) process.kill(-child.pid, 'SIGTERM');
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const runtimes: readonly Runtime[] = [
  { name: `node ${process.version}`, run: (config) => runProgram(process.execPath, [cliEntry, config]) },
  { name: `bun ${runtimeVersions.bun}`, run: (config) => npx(`bun@${runtimeVersions.bun}`, [cliEntry, config]) },
  {
    name: `deno ${runtimeVersions.deno}`,
    run: (config) =>
      npx(`deno@${runtimeVersions.deno}`, ['run', '--allow-net=127.0.0.1', `--allow-read=${repoRoot}`, cliEntry, config]),
  },
  { name: `workerd ${runtimeVersions.workerd}`, run: runInWorkerd },
];

/** What went wrong in one runtime's run, judged from its report and the server's counters. */
function problemsOf(result: ScenarioResult, server: OAuthServer): string[] {
  const problems: string[] = [];
  const { expiredToken, concurrent401s } = result;
  if (expiredToken.status !== 200) problems.push(`the request with an expired token ended with ${expiredToken.status}, not 200`);
  if (expiredToken.tokenCalls !== 1) problems.push(`the expired token took ${expiredToken.tokenCalls} token calls, not 1`);
  const failed = concurrent401s.statuses.filter((status) => status !== 200);
  if (concurrent401s.statuses.length !== concurrency || failed.length > 0) {
    problems.push(`concurrent requests ended with ${concurrent401s.statuses.join(', ')}, not ${concurrency} × 200`);
  }
  if (concurrent401s.tokenCalls !== 1) problems.push(`${concurrency} concurrent 401s took ${concurrent401s.tokenCalls} token calls, not 1`);
  const stats = server.stats();
  if (stats.tokenRequests !== 2) problems.push(`the server saw ${stats.tokenRequests} token requests, not 2`);
  if (stats.refreshTokenReuses !== 0) problems.push(`the server saw ${stats.refreshTokenReuses} refresh-token reuses`);
  return problems;
}

async function main(): Promise<number> {
  for (const dist of ['core', 'fetch']) {
    if (!existsSync(join(repoRoot, 'packages', dist, 'dist', 'index.js'))) {
      console.error(`packages/${dist}/dist is missing: run \`npx -y pnpm@10.34.8 build\` first.`);
      return 1;
    }
  }
  const only = process.argv.slice(2);
  const selected = runtimes.filter((runtime) => only.length === 0 || only.includes(runtime.name.split(' ')[0] ?? ''));
  const server = await startOAuthServer({ rotateRefreshTokens: true });
  let failures = 0;
  try {
    for (const runtime of selected) {
      const expiredSession = server.issue();
      const concurrentSession = server.issue();
      // The server refuses these access tokens now, while their expiresAt still lies ahead: the 401 path.
      server.revokeAccessTokens();
      server.resetStats();
      const config = JSON.stringify({
        apiUrl: `${server.url}/api`,
        tokenEndpoint: server.tokenEndpoint,
        ...client,
        expiredSession,
        concurrentSession,
        concurrency,
      });
      const startedAt = Date.now();
      let problems: string[];
      try {
        problems = problemsOf(JSON.parse(await runtime.run(config)) as ScenarioResult, server);
      } catch (error) {
        problems = [(error as Error).message];
      }
      const seconds = ((Date.now() - startedAt) / 1000).toFixed(1);
      if (problems.length === 0) {
        console.log(`ok   ${runtime.name} (${seconds} s): expired token → 1 refresh → replay 200; ${concurrency} concurrent 401s → 1 token call`);
      } else {
        failures++;
        console.error(`FAIL ${runtime.name} (${seconds} s):\n  ${problems.join('\n  ')}`);
      }
    }
  } finally {
    await server.close();
  }
  return failures === 0 ? 0 : 1;
}

process.exitCode = await main();
