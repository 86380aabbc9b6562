/*
 * The parent side of the Redis multi-process test: spawns redis-worker.ts processes and talks to
 * them over IPC. Every wait is bounded; stopFleet() SIGKILLs whatever did not leave by itself.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { RedisEndpoint } from './redis-connection.js';
import { workerMailbox } from './worker-mailbox.js';

/** What every worker is told at start (in the TOKENRELAY_REDIS_WORKER environment variable). */
export interface RedisWorkerConfig {
  /** The Redis server or cluster the workers share. */
  redis: RedisEndpoint;
  key: string;
  tokenEndpoint: string;
  apiOrigin: string;
  clientId: string;
  clientSecret: string;
  lockLeaseMs: number;
  lockWaitMs: number;
  lockPollMs: number;
}

/** Where a worker stops for good while holding the lock (the parent then kills it). */
export type WorkerCrash = 'before-token-request' | 'after-store';

/** The outcome of one worker's burst of concurrent requests. */
export interface BurstResult {
  ok: number;
  /** One entry per failed request: `status N` or the TokenRelayError code. */
  failures: string[];
}

/** Messages from a worker. */
export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'refreshing' }
  | { type: 'stored' }
  | ({ type: 'burst-done' } & BurstResult);

/** A running worker process. */
export interface RedisWorker {
  readonly process: ChildProcess;
  /** Resolves with the next message of `type` (earlier unread ones first); rejects after `timeoutMs` or if the worker exits. */
  next<T extends WorkerMessage['type']>(type: T, timeoutMs: number): Promise<Extract<WorkerMessage, { type: T }>>;
  /** Starts a burst; read its result with `next('burst-done', …)`. */
  burst(requests: number, crash?: WorkerCrash): void;
  /** Resolves with the exit code and signal; rejects after `timeoutMs`. */
  exited(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const workerPath = fileURLToPath(new URL('./redis-worker.ts', import.meta.url));
const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

function startWorker(config: RedisWorkerConfig): RedisWorker {
  // tsx resolves @tokenrelay/* to the TypeScript sources through the root tsconfig's paths.
  const child = fork(workerPath, [], {
    cwd: repoRoot,
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, TOKENRELAY_REDIS_WORKER: JSON.stringify(config) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const mailbox = workerMailbox<WorkerMessage>(child);
  const hasExited = () => child.exitCode !== null || child.signalCode !== null;

  return {
    process: child,
    next(type, timeoutMs) {
      const ofType = (message: WorkerMessage): message is Extract<WorkerMessage, { type: typeof type }> => message.type === type;
      return mailbox.waitFor(ofType, timeoutMs, `"${type}"`);
    },
    burst(requests, crash) {
      child.send({ type: 'burst', requests, ...(crash ? { crash } : {}) });
    },
    exited(timeoutMs) {
      const result = () => ({ code: child.exitCode, signal: child.signalCode });
      if (hasExited()) return Promise.resolve(result());
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`worker ${child.pid} did not exit within ${timeoutMs} ms`)), timeoutMs);
        child.once('exit', () => {
          clearTimeout(timer);
          resolve(result());
        });
      });
    },
  };
}

/** Starts `count` workers and waits (bounded) until each has loaded the session from Redis. */
export async function startFleet(count: number, config: RedisWorkerConfig, readyTimeoutMs = 60_000): Promise<RedisWorker[]> {
  const workers = Array.from({ length: count }, () => startWorker(config));
  try {
    await Promise.all(workers.map((worker) => worker.next('ready', readyTimeoutMs)));
  } catch (error) {
    await stopFleet(workers);
    throw error;
  }
  return workers;
}

/**
 * Asks every live worker to quit its Redis client and returns their exit results; a worker that
 * has not left within `timeoutMs` is SIGKILLed and reported as `{ code: null, signal: 'SIGKILL' }`.
 */
export async function stopFleet(workers: readonly RedisWorker[], timeoutMs = 10_000) {
  return Promise.all(
    workers.map(async (worker) => {
      const child = worker.process;
      if (child.exitCode === null && child.signalCode === null && child.connected) child.send({ type: 'exit' });
      try {
        return await worker.exited(timeoutMs);
      } catch {
        child.kill('SIGKILL');
        await worker.exited(5_000).catch(() => undefined);
        return { code: null, signal: 'SIGKILL' as const };
      }
    }),
  );
}
