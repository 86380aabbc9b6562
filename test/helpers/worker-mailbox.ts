/*
 * The messages a forked worker process sends over IPC, kept until a test reads them: shared by
 * the multi-process proofs of the file store and the Redis store.
 */
import type { ChildProcess } from 'node:child_process';

export interface WorkerMailbox<Message> {
  /** Removes and returns the first message received so far that `matches`, if any. */
  take<T extends Message>(matches: (message: Message) => message is T): T | undefined;
  /**
   * Resolves with the first message (received before or after the call) that `matches`; rejects
   * after `timeoutMs`, or at once when the worker exits first.
   */
  waitFor<T extends Message>(matches: (message: Message) => message is T, timeoutMs: number, expected: string): Promise<T>;
}

/** Collects `child`'s messages; `detail()` is appended to error messages (e.g. the worker's stderr). */
export function workerMailbox<Message>(child: ChildProcess, detail: () => string = () => ''): WorkerMailbox<Message> {
  const inbox: Message[] = [];
  const waiters = new Set<() => void>();
  child.on('message', (message: Message) => {
    inbox.push(message);
    for (const wake of waiters) wake();
  });
  child.once('exit', () => {
    for (const wake of waiters) wake();
  });

  function take<T extends Message>(matches: (message: Message) => message is T): T | undefined {
    const index = inbox.findIndex(matches);
    return index < 0 ? undefined : (inbox.splice(index, 1)[0] as T);
  }

  return {
    take,
    waitFor(matches, timeoutMs, expected) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const message = take(matches);
          if (message) {
            finish();
            resolve(message);
          } else if (child.exitCode !== null || child.signalCode !== null) {
            finish();
            reject(new Error(`worker ${child.pid} exited (${child.exitCode ?? child.signalCode}) before sending ${expected}${detail()}`));
          }
        };
        const timer = setTimeout(() => {
          finish();
          reject(new Error(`worker ${child.pid} sent no ${expected} within ${timeoutMs} ms${detail()}`));
        }, timeoutMs);
        const finish = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
  };
}
