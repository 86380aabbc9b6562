/*
 * A Node process running a script of the test's own (an ES module run with tsx from the repository
 * root), for the multi-process tests that stage faults on one process: a clock shifted, a SIGSTOP.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { vi } from 'vitest';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

/** A process started by {@link startScriptProcess}. */
export interface ScriptProcess {
  readonly child: ChildProcess;
  /** Settles when the process has exited. */
  readonly exited: Promise<void>;
  /** Waits until the process printed a line starting with `prefix` (one of them), and returns that line. */
  printed(prefix: string | readonly string[], timeoutMs?: number): Promise<string>;
}

/**
 * Starts `script`; the cleanup it adds to `cleanups` kills the process (resumed first, were it
 * stopped) and waits for its exit.
 */
export function startScriptProcess(script: string, cleanups: (() => unknown)[]): ScriptProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
    }
    await exited;
  });
  let output = '';
  let errors = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (errors += chunk.toString()));
  return {
    child,
    exited,
    printed: (prefix, timeoutMs = 20_000) => {
      const prefixes = typeof prefix === 'string' ? [prefix] : prefix;
      return vi.waitFor(
        () => {
          const line = output.split('\n').find((candidate) => prefixes.some((start) => candidate.startsWith(start)));
          if (line === undefined) throw new Error(`the process has not printed ${prefixes.join(' or ')} yet; stdout: ${output}; stderr: ${errors}`);
          return line;
        },
        { timeout: timeoutMs, interval: 20 },
      );
    },
  };
}
