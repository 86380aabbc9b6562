/*
 * Starts a throwaway redis-server on 127.0.0.1 for the Redis store tests: a free port, a temp
 * dir, no persistence unless asked. Tests never skip when Redis is missing: they fail with a
 * message that says what to install (TOKENRELAY_REDIS_SERVER gives a path outside the PATH).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freeLoopbackPort } from './free-port.js';
import { redisServer, requireTestService } from './test-services.js';

/** Options of {@link startRedisServer}. */
export interface RedisServerOptions {
  /**
   * Keeps the data across `shutDown()` and `startAgain()`: an append-only file, synced on every
   * write, in the server's temp dir (keys with a TTL keep their absolute expiry).
   * @default false
   */
  persistent?: boolean;
  /** More redis-server arguments, e.g. `['--cluster-enabled', 'yes']`. */
  extraArgs?: readonly string[];
}

/** A running redis-server on loopback. */
export interface RedisServer {
  /** The TCP port on 127.0.0.1. */
  readonly port: number;
  /** `redis://127.0.0.1:PORT`. */
  readonly url: string;
  /** Ends the redis-server process (SIGTERM: a persistent one syncs its file first), keeping its port and dir for `startAgain()`. */
  shutDown(): Promise<void>;
  /** Starts redis-server again on the same port and dir, and resolves once it answers PING. */
  startAgain(): Promise<void>;
  /** Stops the server (SIGTERM, then SIGKILL after 5 s) and removes its temp dir. Safe to call twice. */
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
/** A free port can be taken by someone else before redis binds it; a few attempts cover that. */
const START_ATTEMPTS = 3;

/** One PING over a raw socket: true when the server answers +PONG. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    let answer = '';
    const finish = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => finish(false));
    socket.once('error', () => finish(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      answer += chunk.toString('latin1');
      if (answer.includes('\r\n')) finish(answer.startsWith('+PONG'));
    });
  });
}

const hasExited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null;

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (hasExited(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function terminate(child: ChildProcess): Promise<void> {
  child.kill('SIGTERM');
  if (!(await waitForExit(child, STOP_TIMEOUT_MS))) {
    child.kill('SIGKILL');
    await waitForExit(child, STOP_TIMEOUT_MS);
  }
}

/**
 * Spawns redis-server on `port` and resolves with the process once it answers PING, or
 * `undefined` when someone else holds the port (the caller may try another one).
 */
async function launch(program: string, port: number, args: readonly string[]): Promise<ChildProcess | undefined> {
  const child = spawn(program, ['--port', String(port), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-4_000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);

  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (hasExited(child)) {
      if (output.includes('Address already in use')) return undefined;
      throw new Error(`redis-server exited during start-up (code ${String(child.exitCode)}):\n${output}`);
    }
    if (await ping(port)) return child;
    await sleep(50);
  }
  child.kill('SIGKILL');
  await waitForExit(child, STOP_TIMEOUT_MS);
  throw new Error(`redis-server did not answer PING within ${READY_TIMEOUT_MS} ms:\n${output}`);
}

/**
 * Starts `redis-server` on a free 127.0.0.1 port in a temp dir, without persistence unless
 * `persistent`, and resolves once it answers PING. Call `stop()` in afterAll/afterEach.
 *
 * @throws Error with the install commands when redis-server is not installed (see test-services.ts).
 */
export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServer> {
  const program = requireTestService(redisServer);
  const dir = await mkdtemp(join(tmpdir(), 'tokenrelay-redis-'));
  const persistence = options.persistent ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
  const args = ['--bind', '127.0.0.1', '--save', '', ...persistence, '--dir', dir, '--daemonize', 'no', ...(options.extraArgs ?? [])];
  try {
    for (let attempt = 0; attempt < START_ATTEMPTS; attempt++) {
      const port = await freeLoopbackPort();
      const started = await launch(program, port, args);
      if (!started) continue;
      let child: ChildProcess = started;
      let stopped: Promise<void> | undefined;
      return {
        port,
        url: `redis://127.0.0.1:${port}`,
        shutDown: () => terminate(child),
        async startAgain() {
          if (!hasExited(child)) throw new Error('startAgain(): redis-server is still running; shutDown() first');
          const restarted = await launch(program, port, args);
          if (!restarted) throw new Error(`redis-server could not bind port ${port} again: another program took it`);
          child = restarted;
        },
        stop: () =>
          (stopped ??= (async () => {
            await terminate(child);
            await rm(dir, { recursive: true, force: true });
          })()),
      };
    }
    throw new Error(`redis-server could not bind a free loopback port in ${START_ATTEMPTS} attempts`);
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}
