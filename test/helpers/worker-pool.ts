/*
 * Parent side of the multi-process tests: starts Node processes running token-worker.ts, and
 * talks to them over IPC. The worker is bundled once with esbuild from the TypeScript sources (as
 * the tests use them): a plain .mjs starts several times faster than tsx, which matters when eight
 * processes start at once on a small machine.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TokenSet } from '@tokenrelay/core';
import { build } from 'esbuild';
import { workerMailbox } from './worker-mailbox.js';

/** How a worker builds its session. */
export interface WorkerConfig {
  /** Origin of the embedded server: requests go to `${apiUrl}/api/…`. */
  apiUrl: string;
  tokenEndpoint: string;
  clientId: string;
  clientSecret: string;
  /**
   * Salesforce mode (`apiUrl` is the org's login URL): acquire with the JWT bearer grant as this
   * user, signed with this PEM PKCS#8 key, instead of refreshing with `clientSecret`.
   */
  salesforceJwt?: { username: string; privateKey: string };
  /**
   * A shared file or Redis store, or (for the control experiment) a memory store of the worker's
   * own, signed in with `tokens` or, for a grant that needs no refresh token, empty.
   */
  store:
    | { kind: 'file'; path: string; lockLeaseMs?: number; lockWaitMs?: number }
    | { kind: 'redis'; port: number; key: string }
    | { kind: 'memory'; tokens?: TokenSet };
  /**
   * When true, every refresh reports `refreshing` and then waits for the parent's `proceed` before
   * it calls the token endpoint, so the parent can kill a lock holder before its token request.
   */
  gateRefreshes?: boolean;
  /**
   * A DPoP session of a public client (`clientSecret` unused): requests and refreshes go through
   * createDpop with sessionDpopKey, so every worker signs with the key stored with the session.
   */
  dpop?: boolean;
}

/** Messages from the parent to a worker. */
export type ParentMessage =
  | { type: 'init'; config: WorkerConfig }
  | { type: 'burst'; round: number; requests: number }
  | { type: 'proceed' }
  | { type: 'exit' };

/** Messages from a worker to the parent. */
export type WorkerMessage =
  | { type: 'ready' }
  /** Sent from inside the refresh handler, i.e. while the worker holds the store's lock. */
  | { type: 'refreshing'; at: number }
  /** One outcome per request: the HTTP status, or the error code it rejected with. */
  | { type: 'burst-done'; round: number; outcomes: string[] };

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
let bundle: Promise<{ directory: string; script: string }> | undefined;

/** Bundles token-worker.ts (and the package sources it imports, through tsconfig paths) into one .mjs. */
function workerScript(): Promise<string> {
  bundle ??= (async () => {
    const directory = await mkdtemp(join(tmpdir(), 'tokenrelay-worker-'));
    const script = join(directory, 'token-worker.mjs');
    await build({
      entryPoints: [fileURLToPath(new URL('./token-worker.ts', import.meta.url))],
      outfile: script,
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      tsconfig: join(repoRoot, 'tsconfig.json'),
      logLevel: 'error',
      // ioredis is CommonJS: its require() of Node built-ins needs a real require in an ES module.
      banner: { js: "import { createRequire as bannerCreateRequire } from 'node:module'; const require = bannerCreateRequire(import.meta.url);" },
    });
    return { directory, script };
  })();
  return bundle.then(({ script }) => script);
}

/** One worker process. */
export interface TokenWorker {
  readonly pid: number;
  readonly child: ChildProcess;
  send(message: ParentMessage): void;
  /** Removes and returns the first message received so far that `matches`, if any. */
  take<T extends WorkerMessage>(matches: (message: WorkerMessage) => message is T): T | undefined;
  /** Resolves with the first message (received before or after the call) that `matches`; rejects after `timeoutMs`. */
  waitFor<T extends WorkerMessage>(matches: (message: WorkerMessage) => message is T, timeoutMs: number): Promise<T>;
  /** SIGKILL: the process dies at once, whatever it was doing. */
  kill(): Promise<void>;
}

const running = new Set<ChildProcess>();

function startWorker(script: string): TokenWorker {
  const child = fork(script, [], { cwd: repoRoot, execArgv: [], stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  running.add(child);
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      running.delete(child);
      resolve();
    }),
  );
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4_000);
  });
  const mailbox = workerMailbox<WorkerMessage>(child, () => `; stderr: ${stderr}`);

  const worker: TokenWorker = {
    pid: child.pid ?? -1,
    child,
    send(message) {
      child.send(message);
    },
    take: mailbox.take,
    waitFor: (matches, timeoutMs) => mailbox.waitFor(matches, timeoutMs, 'the expected message'),
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
  };
  return worker;
}

export const isReady = (message: WorkerMessage): message is { type: 'ready' } => message.type === 'ready';
export const isRefreshing = (message: WorkerMessage): message is Extract<WorkerMessage, { type: 'refreshing' }> =>
  message.type === 'refreshing';
const isBurstDone =
  (round: number) =>
  (message: WorkerMessage): message is Extract<WorkerMessage, { type: 'burst-done' }> =>
    message.type === 'burst-done' && message.round === round;

/** Starts `count` workers with `config` and waits until each has built its session. */
export async function startWorkers(count: number, config: WorkerConfig): Promise<TokenWorker[]> {
  const script = await workerScript();
  const workers = Array.from({ length: count }, () => startWorker(script));
  for (const worker of workers) worker.send({ type: 'init', config });
  // Generous: eight start-ups at once on a busy 2-core machine take a while.
  await Promise.all(workers.map((worker) => worker.waitFor(isReady, 60_000)));
  return workers;
}

/**
 * Makes each worker fire `requests` concurrent requests; returns, per worker, a promise of their
 * outcomes (it rejects if that worker dies or takes longer than `timeoutMs`).
 */
export function startBurst(workers: readonly TokenWorker[], round: number, requests: number, timeoutMs = 30_000): Promise<string[]>[] {
  const done = workers.map((worker) => worker.waitFor(isBurstDone(round), timeoutMs).then((message) => message.outcomes));
  for (const worker of workers) worker.send({ type: 'burst', round, requests });
  return done;
}

/** {@link startBurst}, waiting for every worker's outcomes. */
export function burst(workers: readonly TokenWorker[], round: number, requests: number): Promise<string[][]> {
  return Promise.all(startBurst(workers, round, requests));
}

/** Ends every worker still running: politely first, then SIGKILL. */
export async function stopWorkers(): Promise<void> {
  await Promise.all(
    [...running].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          const timer = setTimeout(() => child.kill('SIGKILL'), 2_000);
          child.once('exit', () => {
            clearTimeout(timer);
            resolve();
          });
          if (child.connected) child.send({ type: 'exit' } satisfies ParentMessage);
          else child.kill('SIGKILL');
        }),
    ),
  );
}

/** Stops every worker and deletes the bundle. */
export async function disposeWorkers(): Promise<void> {
  await stopWorkers();
  const built = await bundle?.catch(() => undefined);
  bundle = undefined;
  if (built) await rm(built.directory, { recursive: true, force: true });
}
