/*
 * fileStore: the tokens of one session in a JSON file that every process on the machine shares,
 * with the cross-process refresh lock the manager takes around each refresh. Node only.
 *
 * The lock is a directory `<file>.lock/` of generation files named `<n>.<leaseMs>.lock`; the
 * highest generation is the lock. It is held while its mtime (the holder's heartbeat, renewed
 * every lease/3) is younger than its lease; release sets the mtime to the epoch. To take the
 * lock, a process creates generation n+1 with an exclusive create (O_CREAT|O_EXCL) once
 * generation n is released or its lease ran out. Exactly one of any number of racers wins that
 * create, and nothing is deleted to take a lock, so two waiters that both see the same stale
 * lock cannot both take it (the classic unlink-then-create race). Older generations are deleted
 * by the winner; a creator that was frozen for so long that its generation number was already
 * used and cleaned up sees a higher one right after its create and backs off.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, unwatchFile, watch, watchFile, type Stats } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { ErrorCode, TokenRelayError } from './errors.js';
import type { TokenSet, TokenStore, TokenStoreLock } from './types.js';

/** Options of {@link fileStore}. */
export interface FileStoreOptions {
  /**
   * How long the lock stays valid without a heartbeat. The holder renews it every third of this
   * while it holds the lock, so a refresh may take longer; a holder that died (crash, SIGKILL,
   * power loss) is taken over by the next process once this has passed since its last heartbeat.
   * Keep it at least a few seconds: file systems with coarse timestamps round heartbeats down.
   * @default 10_000
   */
  leaseMs?: number;
  /**
   * How long `lock()` (and `set()`/`clear()`, which take the lock) wait for another process's lock
   * before they give up with a `STORE_ERROR`. Longer than one refresh with the manager's default
   * timeout and retries (3 attempts × 10 s plus backoff), so waiters outlast a slow holder.
   * @default 60_000
   */
  lockTimeoutMs?: number;
  /**
   * How often a waiter checks whether the lock became free, in milliseconds (with ±50 % jitter,
   * so waiters do not move in step).
   * @default 25
   */
  lockRetryMs?: number;
  /**
   * How `subscribe()` learns that another process wrote new tokens: `'auto'` watches the file's
   * directory with `fs.watch` and falls back to polling where that is unavailable or fails (some
   * network and container file systems); `'poll'` always polls with `fs.watchFile`; `false` never
   * notifies (other processes' tokens are then picked up under the lock, at the next refresh).
   * @default 'auto'
   */
  watch?: 'auto' | 'poll' | false;
  /**
   * Interval of the polling fallback (and of `watch: 'poll'`), in milliseconds.
   * @default 1_000
   */
  pollIntervalMs?: number;
}

/** A {@link TokenStore} backed by a JSON file, with a cross-process lock and change notifications. */
export interface FileTokenStore extends TokenStore {
  /** The absolute path of the token file. */
  readonly path: string;
  /**
   * Reads the token file; `undefined` when it does not exist.
   * @throws TokenRelayError `STORE_ERROR` when the file is unreadable, empty, not JSON or not a token set.
   */
  get(): Promise<TokenSet | undefined>;
  /**
   * Atomically replaces the token file. Takes the lock for the write unless this process holds it
   * already (as the manager does around a refresh), so an unlocked write never happens.
   */
  set(tokens: TokenSet): Promise<void>;
  /** Deletes the token file, under the lock like {@link FileTokenStore.set}. */
  clear(): Promise<void>;
  /**
   * Takes the cross-process lock: waits at most `lockTimeoutMs`, then rejects with a `STORE_ERROR`;
   * rejects with `signal.reason` when `signal` aborts. Release it with `release()`.
   */
  lock(options?: { signal?: AbortSignal }): Promise<TokenStoreLock>;
  /** Calls `listener` with the new tokens whenever another writer changes the file. Returns an unsubscribe function. */
  subscribe(listener: (tokens: TokenSet | undefined) => void): () => void;
}

/** A held generation of the lock. */
interface FileLock extends TokenStoreLock {
  readonly generation: number;
  /** Runs `work` while this lock is held; `release()` waits for it. */
  borrow<T>(work: () => Promise<T>): Promise<T>;
}

const LOCK_FILE = /^(\d+)\.(\d+)\.lock$/;

interface Generation {
  readonly number: number;
  readonly leaseMs: number;
  readonly name: string;
}

const storeError = (message: string, cause?: unknown) =>
  new TokenRelayError(ErrorCode.STORE_ERROR, message, cause === undefined ? {} : { cause });

const errnoCode = (error: unknown) => (error as { code?: unknown } | null)?.code;

function assertPositive(name: string, value: number | undefined): void {
  if (value !== undefined && !(Number.isFinite(value) && value > 0)) {
    throw new TokenRelayError(ErrorCode.CONFIGURATION_ERROR, `fileStore: ${name} must be a finite number > 0`);
  }
}

/** Why `value` is not a token set, or `undefined` when it is one. */
function tokenSetProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'it is not a JSON object';
  const fields = value as Record<string, unknown>;
  if (typeof fields.accessToken !== 'string' || fields.accessToken === '') return '"accessToken" is not a non-empty string';
  for (const key of ['refreshToken', 'tokenType', 'scope']) {
    if (fields[key] !== undefined && typeof fields[key] !== 'string') return `"${key}" is not a string`;
  }
  if (fields.expiresAt !== undefined && !(typeof fields.expiresAt === 'number' && Number.isFinite(fields.expiresAt))) {
    return '"expiresAt" is not a number (epoch milliseconds)';
  }
  const raw = fields.raw;
  if (raw !== undefined && (typeof raw !== 'object' || raw === null || Array.isArray(raw))) return '"raw" is not an object';
  return undefined;
}

/** The known fields of a valid token set, in a stable order. */
function pickTokenSet(value: TokenSet): TokenSet {
  const tokens: TokenSet = { accessToken: value.accessToken };
  if (value.refreshToken !== undefined) tokens.refreshToken = value.refreshToken;
  if (value.expiresAt !== undefined) tokens.expiresAt = value.expiresAt;
  if (value.tokenType !== undefined) tokens.tokenType = value.tokenType;
  if (value.scope !== undefined) tokens.scope = value.scope;
  if (value.raw !== undefined) tokens.raw = value.raw;
  return tokens;
}

/** Identifies a session state for change detection, as the manager does: both tokens. */
const stateKey = (tokens: TokenSet | undefined) => (tokens ? `${tokens.accessToken}\n${tokens.refreshToken ?? ''}` : '');

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** fsync a directory so a rename in it survives power loss; not every platform can (Windows), and that is fine. */
async function syncDirectory(path: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(path, 'r');
    await handle.sync();
  } catch {
    // The rename itself is atomic either way; only its durability across power loss is weaker.
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

/**
 * A {@link TokenStore} that keeps the tokens in a JSON file shared by every process on this
 * machine (the `tokens/_salesforce.json` habit, made safe), for Node cluster workers, CLI tools,
 * cron jobs and dev servers that share one session. Import it from `@tokenrelay/core/node`.
 *
 * - The file holds the {@link TokenSet} as JSON, is created with mode `0600` (its directory,
 *   when created, `0700`), and is replaced atomically: a temporary file in the same directory is
 *   written and fsynced, renamed over the file, and the directory is fsynced.
 * - `lock()` is a cross-process lock with a lease renewed while held, so a refresh may take as
 *   long as it needs, while a holder that died is taken over after `leaseMs`. With it the manager
 *   makes one token call per expiry across all processes, which rotating refresh tokens require.
 * - `subscribe()` watches the directory, so other processes take new tokens at once.
 * - A corrupt, empty or half-written file is a `STORE_ERROR`, never "no tokens", and is never
 *   overwritten without the lock: `set()` (e.g. `setTokens()` after a new sign-in) takes it.
 *
 * For one machine: the lease compares file timestamps with this machine's clock, so do not share
 * the file across hosts over a network file system (use `@tokenrelay/redis` for a fleet).
 *
 * @example
 * ```ts
 * import { createTokenManager, refreshTokenGrant } from '@tokenrelay/core'
 * import { fileStore } from '@tokenrelay/core/node'
 *
 * const manager = createTokenManager({
 *   store: fileStore('tokens/_salesforce.json'),
 *   refresh: refreshTokenGrant({ tokenEndpoint, clientId }),
 * })
 * ```
 */
export function fileStore(path: string, options: FileStoreOptions = {}): FileTokenStore {
  if (typeof path !== 'string' || path === '') {
    throw new TokenRelayError(ErrorCode.CONFIGURATION_ERROR, 'fileStore: path must be a non-empty string');
  }
  assertPositive('leaseMs', options.leaseMs);
  assertPositive('lockTimeoutMs', options.lockTimeoutMs);
  assertPositive('lockRetryMs', options.lockRetryMs);
  assertPositive('pollIntervalMs', options.pollIntervalMs);
  if (options.watch !== undefined && options.watch !== 'auto' && options.watch !== 'poll' && options.watch !== false) {
    throw new TokenRelayError(ErrorCode.CONFIGURATION_ERROR, "fileStore: watch must be 'auto', 'poll' or false");
  }
  // Whole milliseconds, because the lease is part of the lock file's name.
  const leaseMs = Math.ceil(options.leaseMs ?? 10_000);
  const lockTimeoutMs = options.lockTimeoutMs ?? 60_000;
  const lockRetryMs = options.lockRetryMs ?? 25;
  const watchMode = options.watch ?? 'auto';
  const pollIntervalMs = options.pollIntervalMs ?? 1_000;

  const filePath = resolve(path);
  const directory = dirname(filePath);
  const fileName = basename(filePath);
  const lockDirectory = `${filePath}.lock`;

  /** The lock this process holds on this store, if any: writes inside it need no second lock. */
  let held: FileLock | undefined;
  /** Bumped by every get/set/clear, so a change notification read before one of them is dropped as stale. */
  let operations = 0;
  /** Writes of this store in progress: a notification read meanwhile may be of its own write. */
  let writing = 0;
  /** The state last read or written here; notifications only report a different one. */
  let lastKey: string | undefined;

  // ---- reading and writing the token file ----

  async function readTokens(): Promise<TokenSet | undefined> {
    let text: string;
    try {
      text = await readFile(filePath, 'utf8');
    } catch (error) {
      if (errnoCode(error) === 'ENOENT') return undefined;
      throw storeError(`Cannot read the token file ${filePath}`, error);
    }
    const corrupt = (what: string) =>
      storeError(
        `The token file ${filePath} ${what}. It was left as it is: fix or delete it, or sign in again (setTokens() replaces it under the lock)`,
      );
    if (text.trim() === '') throw corrupt('is empty (half-written?)');
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      // The parser's own message quotes the file, which holds tokens: it is not kept as the cause.
      throw corrupt('is not valid JSON (corrupt or half-written)');
    }
    const problem = tokenSetProblem(value);
    if (problem) throw corrupt(`does not hold a token set: ${problem}`);
    return pickTokenSet(value as TokenSet);
  }

  /** Replaces the file atomically (or deletes it); `lock` must be held, and is checked just before the commit. */
  async function replaceFile(json: string | undefined, lock: FileLock): Promise<void> {
    if (json === undefined) {
      await assertStillHeld(lock);
      await unlink(filePath).catch((error: unknown) => {
        if (errnoCode(error) !== 'ENOENT') throw error;
      });
      await syncDirectory(directory);
      return;
    }
    await mkdir(directory, { recursive: true, mode: 0o700 });
    // A dot name in the same directory: rename is atomic only within one file system, and watchers ignore it.
    const temporary = join(directory, `.${fileName}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      const handle = await open(temporary, 'wx', 0o600);
      try {
        await handle.writeFile(json, 'utf8');
        await handle.sync();
      } finally {
        await handle.close();
      }
      await assertStillHeld(lock);
      await rename(temporary, filePath);
    } catch (error) {
      await unlink(temporary).catch(() => undefined);
      throw error;
    }
    await syncDirectory(directory);
  }

  // ---- the lock ----

  async function listGenerations(): Promise<Generation[]> {
    const names = await readdir(lockDirectory);
    const generations: Generation[] = [];
    for (const name of names) {
      const match = LOCK_FILE.exec(name);
      if (match) generations.push({ number: Number(match[1]), leaseMs: Number(match[2]), name });
    }
    return generations;
  }

  const highest = (generations: readonly Generation[]) =>
    generations.reduce<Generation | undefined>((top, next) => (top && top.number > next.number ? top : next), undefined);

  /** Refuses a write when another process took over the lock (this one was frozen past its lease): it may hold newer tokens. */
  async function assertStillHeld(lock: FileLock): Promise<void> {
    const top = highest(await listGenerations());
    if (!top || top.number !== lock.generation) {
      throw storeError(
        `Lost the lock on ${filePath}: this process did not renew it within ${leaseMs} ms (was the event loop blocked?) ` +
          'and another process took over; the tokens were not written, so as not to overwrite newer ones',
      );
    }
  }

  /** Who holds the lock, for the timeout message. Best effort: the lock file may be gone or changing. */
  async function describeHolder(generation: Generation): Promise<string> {
    try {
      const owner = JSON.parse(await readFile(join(lockDirectory, generation.name), 'utf8')) as { pid?: unknown; hostname?: unknown };
      return `process ${String(owner.pid)} on ${String(owner.hostname)} holds it`;
    } catch {
      return 'another process holds it';
    }
  }

  /** Creates generation `number`; `undefined` when another process created it (or a later one) first. */
  async function tryTake(number: number): Promise<FileLock | undefined> {
    const name = `${number}.${leaseMs}.lock`;
    const lockPath = join(lockDirectory, name);
    let handle: FileHandle;
    try {
      handle = await open(lockPath, 'wx', 0o600);
    } catch (error) {
      if (errnoCode(error) === 'EEXIST') return undefined;
      throw error;
    }
    let generations: Generation[];
    try {
      await handle.writeFile(JSON.stringify({ pid: process.pid, hostname: hostname(), acquiredAt: new Date().toISOString() }));
      const now = Date.now() / 1000;
      await handle.utimes(now, now);
      generations = await listGenerations();
    } catch (error) {
      await handle.close().catch(() => undefined);
      await unlink(lockPath).catch(() => undefined);
      throw error;
    }
    if (generations.some((generation) => generation.number > number)) {
      // This process was frozen between reading the lock and creating the next generation, which
      // meanwhile was taken, released and cleaned up: a later generation is the lock, not ours.
      await handle.close().catch(() => undefined);
      await unlink(lockPath).catch(() => undefined);
      return undefined;
    }
    // Older generations are released or expired (that is how this one could be created): tidy up.
    await Promise.all(
      generations
        .filter((generation) => generation.number < number)
        .map((generation) => unlink(join(lockDirectory, generation.name)).catch(() => undefined)),
    );
    return holdLock(number, handle);
  }

  function holdLock(generation: number, handle: FileHandle): FileLock {
    let released = false;
    let heartbeat: Promise<unknown> = Promise.resolve();
    const borrowed = new Set<Promise<unknown>>();
    // The heartbeat goes through the open handle, so it only ever touches this generation's file.
    const renew = setInterval(() => {
      heartbeat = heartbeat.then(() => {
        const now = Date.now() / 1000;
        return released ? undefined : handle.utimes(now, now).catch(() => undefined);
      });
    }, leaseMs / 3);
    // Renewal alone must never keep a process alive.
    renew.unref();
    const lock: FileLock = {
      generation,
      borrow(work) {
        const running = work();
        borrowed.add(running);
        const settle = () => borrowed.delete(running);
        running.then(settle, settle);
        return running;
      },
      async release() {
        if (released) return;
        released = true;
        clearInterval(renew);
        if (held === lock) held = undefined;
        await Promise.allSettled([...borrowed]);
        // Wait for a heartbeat in flight, or it could revive the released lock for a whole lease.
        await heartbeat;
        try {
          await handle.utimes(0, 0);
        } finally {
          await handle.close().catch(() => undefined);
        }
      },
    };
    held = lock;
    return lock;
  }

  async function acquire(signal: AbortSignal | undefined): Promise<FileLock> {
    const deadline = Date.now() + lockTimeoutMs;
    try {
      await mkdir(lockDirectory, { recursive: true, mode: 0o700 });
    } catch (error) {
      throw storeError(`Cannot create the lock directory ${lockDirectory}`, error);
    }
    for (;;) {
      signal?.throwIfAborted();
      let top: Generation | undefined;
      let busy: boolean;
      try {
        top = highest(await listGenerations());
        busy = top !== undefined && (await stat(join(lockDirectory, top.name))).mtimeMs + top.leaseMs > Date.now();
      } catch (error) {
        if (errnoCode(error) !== 'ENOENT') throw storeError(`Cannot read the lock ${lockDirectory}`, error);
        // The lock directory or its top file was removed by hand: recreate it and look again after a pause.
        await mkdir(lockDirectory, { recursive: true, mode: 0o700 }).catch(() => undefined);
        busy = true;
      }
      if (!busy) {
        let lock: FileLock | undefined;
        try {
          lock = await tryTake((top?.number ?? 0) + 1);
        } catch (error) {
          throw storeError(`Cannot create a lock file in ${lockDirectory}`, error);
        }
        if (lock) return lock;
        continue; // Another process won this generation: its lock is fresh, so the next round waits.
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        const holder = top ? await describeHolder(top) : 'another process holds it';
        throw storeError(`Gave up waiting for the lock on the token file ${filePath} after ${lockTimeoutMs} ms: ${holder}`);
      }
      await sleep(Math.min(remaining, lockRetryMs * (0.5 + Math.random())), signal);
    }
  }

  /** Runs `work` under the lock: the one this process holds, or one taken just for it. */
  async function underLock(work: (lock: FileLock) => Promise<void>): Promise<void> {
    // Inside the manager's refresh this process holds the lock already: taking it again would deadlock.
    const current = held;
    if (current) return current.borrow(() => work(current));
    const lock = await acquire(undefined);
    try {
      await work(lock);
    } finally {
      await lock.release();
    }
  }

  // ---- change notifications ----

  const listeners = new Set<(tokens: TokenSet | undefined) => void>();
  let stopWatching: (() => void) | undefined;

  function startWatching(): () => void {
    if (watchMode === false) return () => undefined;
    let stopped = false;
    let pending: ReturnType<typeof setTimeout> | undefined;
    let checking: Promise<void> | undefined;

    const check = async () => {
      const startedAt = operations;
      let tokens: TokenSet | undefined;
      try {
        tokens = await readTokens();
      } catch {
        return; // A corrupt file is reported by the next get(); a notification has nobody to report it to.
      }
      // A get/set/clear of this store since the read started (or a write still running) knows a state at least as new.
      if (stopped || startedAt !== operations || writing > 0 || stateKey(tokens) === lastKey) return;
      lastKey = stateKey(tokens);
      for (const listener of listeners) {
        try {
          listener(tokens);
        } catch (error) {
          queueMicrotask(() => {
            throw error;
          });
        }
      }
    };
    // A rename raises several events; coalesce them, and never run two checks at once.
    const schedule = () => {
      if (stopped || pending) return;
      pending = setTimeout(() => {
        pending = undefined;
        const previous = checking ?? Promise.resolve();
        checking = previous.then(check).finally(() => {
          checking = undefined;
        });
      }, 5);
      pending.unref();
    };

    let stopCurrent: () => void;
    const poll = () => {
      const onChange = (current: Stats, previous: Stats) => {
        if (current.mtimeMs !== previous.mtimeMs || current.ino !== previous.ino) schedule();
      };
      watchFile(filePath, { persistent: false, interval: pollIntervalMs }, onChange);
      stopCurrent = () => unwatchFile(filePath, onChange);
    };

    if (watchMode === 'poll') poll();
    else {
      try {
        mkdirSync(directory, { recursive: true, mode: 0o700 });
        // The directory, not the file: an atomic replace gives the file a new inode, which a file watch would miss.
        const watcher = watch(directory, { persistent: false }, (_event, changed) => {
          if (changed === null || changed === fileName) schedule();
        });
        watcher.on('error', () => {
          watcher.close();
          if (!stopped) poll();
        });
        stopCurrent = () => watcher.close();
      } catch {
        poll();
      }
    }
    return () => {
      stopped = true;
      clearTimeout(pending);
      stopCurrent();
    };
  }

  return {
    path: filePath,

    async get() {
      operations++;
      const tokens = await readTokens();
      lastKey = stateKey(tokens);
      return tokens;
    },

    async set(tokens: TokenSet) {
      const problem = tokenSetProblem(tokens);
      if (problem) throw storeError(`Refusing to write an invalid token set to ${filePath}: ${problem}`);
      const picked = pickTokenSet(tokens);
      operations++;
      writing++;
      try {
        await underLock((lock) => replaceFile(`${JSON.stringify(picked, null, 2)}\n`, lock));
        lastKey = stateKey(picked);
      } catch (error) {
        throw error instanceof TokenRelayError ? error : storeError(`Cannot write the token file ${filePath}`, error);
      } finally {
        writing--;
      }
    },

    async clear() {
      operations++;
      writing++;
      try {
        await underLock((lock) => replaceFile(undefined, lock));
        lastKey = stateKey(undefined);
      } catch (error) {
        throw error instanceof TokenRelayError ? error : storeError(`Cannot delete the token file ${filePath}`, error);
      } finally {
        writing--;
      }
    },

    lock({ signal } = {}) {
      return acquire(signal);
    },

    subscribe(listener) {
      listeners.add(listener);
      stopWatching ??= startWatching();
      return () => {
        listeners.delete(listener);
        if (listeners.size === 0) {
          stopWatching?.();
          stopWatching = undefined;
        }
      };
    },
  };
}
