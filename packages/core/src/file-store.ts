/*
 * fileStore: the tokens of one session in a JSON file that every process on the machine shares,
 * with the cross-process refresh lock the manager takes around each refresh. Node only. It is
 * three parts: the token file (token-file.ts), the generation lock (file-lock.ts) and change
 * watching (file-watch.ts); this file holds them together and keeps the store contract.
 */
import { resolve } from 'node:path';
import { assertTimerDelay } from './delay.js';
import { configurationError, storeError, TokenRelayError } from './errors.js';
import { generationLock, type GenerationLockHold } from './file-lock.js';
import { watchTokenFile, type FileWatchMode } from './file-watch.js';
import { createWriteOrder } from './write-order.js';
import { notifyListeners } from './notify.js';
import { tokenFile } from './token-file.js';
import type { TokenFileFormat } from './token-file-format.js';
import { parseStoredTokens } from './token-set.js';
import type { StoredTokens, TokenStore, TokenStoreLock, TokenStoreSetOptions } from './types.js';

/** Options of {@link fileStore}. */
export interface FileStoreOptions {
  /**
   * How long the lock stays valid without a heartbeat. The holder renews it every third of this
   * while it holds the lock, so a refresh may take longer; a holder that died (crash, SIGKILL,
   * power loss) is taken over by the next process once this has passed since its last heartbeat.
   * Keep it at least a few seconds: file systems with coarse timestamps round heartbeats down.
   * @default 10_000
   */
  lockLeaseMs?: number;
  /**
   * How long `lock()` (and `set()`/`clear()`, which take the lock) wait for another process's lock
   * before they give up with a `STORE_ERROR`. Longer than one refresh with the manager's default
   * timeout and retries (3 attempts × 10 s plus backoff), so waiters outlast a slow holder.
   * @default 60_000
   */
  lockWaitMs?: number;
  /**
   * How often a waiter checks whether the lock became free, in milliseconds (with ±50 % jitter,
   * so waiters do not move in step).
   * @default 25
   */
  lockPollMs?: number;
  /**
   * How `subscribe()` learns that another process wrote new tokens: `'auto'` watches the file's
   * directory with `fs.watch` and falls back to polling where that is unavailable or fails (some
   * network and container file systems); `'poll'` always polls with `fs.watchFile`; `false` never
   * notifies (other processes' tokens are then picked up under the lock, at the next refresh).
   * @default 'auto'
   */
  watch?: FileWatchMode;
  /**
   * Interval of the polling fallback (and of `watch: 'poll'`), in milliseconds.
   * @default 1_000
   */
  watchPollMs?: number;
  /**
   * The layout of a token file this store creates (the first sign-in, or one after `clear()`, which
   * deletes the file). An existing file is always written back in the layout it has, so this only
   * matters when other tools read the file: `'token-response'` creates the OAuth token response
   * they expect (`access_token`, `refresh_token`, … at the top level, see the fileStore docs).
   * @default 'tokenrelay' (`{ revision, sessionExpired?, tokens }`)
   */
  newFileFormat?: TokenFileFormat;
}

/** A {@link TokenStore} backed by a JSON file, with a cross-process lock and change notifications. */
export interface FileTokenStore extends TokenStore {
  /** The absolute path of the token file. */
  readonly path: string;
  /**
   * Reads the token file; `undefined` when it does not exist.
   * @throws TokenRelayError `STORE_ERROR` when the file is unreadable, empty, not JSON or not stored tokens.
   */
  get(): Promise<StoredTokens | undefined>;
  /**
   * Atomically replaces the token file, under the lock: the one this process holds already (as the
   * manager does around a refresh), or one taken for the write. With `expectedRevision`, the file is
   * re-read under the lock and written only if it holds that revision. Without it, writes (and
   * `clear()`) of this store land in the order they were called: one that a later one overtook
   * while both waited for the lock resolves `true` without writing. A token-response file keeps the
   * fields of its session the new tokens lack, unless they begin another: a write without `expectedRevision`, or one with `newSession`.
   * @throws TokenRelayError `STORE_ERROR` when the lock was lost (nothing is written) or the file cannot be written.
   */
  set(value: StoredTokens, options?: TokenStoreSetOptions): Promise<boolean>;
  /** Deletes the token file, under the lock like {@link FileTokenStore.set}. */
  clear(): Promise<void>;
  /**
   * Takes the cross-process lock: waits at most `lockWaitMs`, then rejects with a `STORE_ERROR`;
   * rejects with `signal.reason` when `signal` aborts. Its `signal` aborts when a heartbeat finds
   * that another process took the lock over (this one was frozen past its lease); its `assertHeld`
   * looks at the lock directory at once, for a holder that resumed before its heartbeat ran.
   */
  lock(options?: { signal?: AbortSignal }): Promise<TokenStoreLock & { readonly signal: AbortSignal; assertHeld(): Promise<void> }>;
  /** Calls `listener` with what the file holds whenever another writer changes it. Returns an unsubscribe function. */
  subscribe(listener: (value: StoredTokens | undefined) => void): () => void;
  /** Stops watching, drops every listener and gives up a lock this store still holds. Idempotent. */
  close(): Promise<void>;
}

/** Identifies a stored state for change detection. */
const stateKey = (value: StoredTokens | undefined) =>
  value ? `${value.revision}\n${value.sessionExpired ? 1 : 0}\n${value.tokens.accessToken}` : '';

/**
 * A {@link TokenStore} that keeps the tokens in a JSON file shared by every process on this
 * machine (the `tokens/_salesforce.json` habit, made safe), for Node cluster workers, CLI tools,
 * cron jobs and dev servers that share one session. Import it from `@tokenrelay/core/node`.
 *
 * - The file holds `{ revision, sessionExpired?, tokens }` as JSON, is created with mode `0600`
 *   (its directory, when created, `0700`), and is replaced atomically (write a temporary file,
 *   fsync, rename, fsync the directory).
 * - A file that holds an OAuth token response (`access_token` at its top level, as Salesforce
 *   samples save it) is read as well, and written back as one: new `access_token`, the refresh
 *   token the manager keeps, `raw` fields from the same response, every other field of the old file,
 *   the expiry as `expires_at` (epoch seconds), the revision as `tokenrelay_revision` and the
 *   tokens' `sessionData` as `tokenrelay_session_data`.
 * - `lock()` is a cross-process lock with a lease renewed while held, so a refresh may take as
 *   long as it needs, while a holder that died is taken over after `lockLeaseMs`. With it the
 *   manager makes one token call per expiry across all processes, which rotating refresh tokens require.
 * - Every write happens under the lock and is checked against it right before the rename: a
 *   process that lost its lock (frozen past its lease) writes nothing.
 * - `subscribe()` watches the directory, so other processes take new tokens at once.
 * - A corrupt, empty or half-written file is a `STORE_ERROR`, never "no tokens".
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
  if (typeof path !== 'string' || path === '') throw configurationError('fileStore: path must be a non-empty string');
  assertTimerDelay('fileStore', 'lockLeaseMs', options.lockLeaseMs, 0, true);
  assertTimerDelay('fileStore', 'lockWaitMs', options.lockWaitMs, 0, true);
  assertTimerDelay('fileStore', 'lockPollMs', options.lockPollMs, 0, true);
  assertTimerDelay('fileStore', 'watchPollMs', options.watchPollMs, 0, true);
  if (options.watch !== undefined && options.watch !== 'auto' && options.watch !== 'poll' && options.watch !== false) {
    throw configurationError("fileStore: watch must be 'auto', 'poll' or false");
  }
  const { newFileFormat = 'tokenrelay' } = options;
  if (newFileFormat !== 'tokenrelay' && newFileFormat !== 'token-response') {
    throw configurationError("fileStore: newFileFormat must be 'tokenrelay' or 'token-response'");
  }
  const filePath = resolve(path);
  const file = tokenFile(filePath, newFileFormat);
  const locker = generationLock(filePath, `${filePath}.lock`, {
    lockLeaseMs: options.lockLeaseMs ?? 10_000,
    lockWaitMs: options.lockWaitMs ?? 60_000,
    lockPollMs: options.lockPollMs ?? 25,
  });

  /** The lock this store holds, if any: writes inside it need no second lock (taking it again would deadlock). */
  let held: GenerationLockHold | undefined;
  /** This store's reads-then-writes, one at a time, so a clear() cannot slip between a set()'s re-read and its rename. */
  let queue: Promise<unknown> = Promise.resolve();
  /** Bumped by every get/set/clear, so a change notification read before one of them is dropped as stale. */
  let operations = 0;
  /** Sign-ins and sign-outs land in call order, though each waits for the lock on its own. */
  const writeOrder = createWriteOrder();
  /** The state last read or written here; notifications only report a different one. */
  let lastKey: string | undefined;
  let closed = false;

  function exclusive<T>(work: () => Promise<T>): Promise<T> {
    const running = queue.then(work);
    queue = running.catch(() => undefined);
    return running;
  }

  async function takeLock(signal?: AbortSignal): Promise<GenerationLockHold> {
    const lock = await locker.acquire(signal);
    held = lock;
    let released: Promise<void> | undefined;
    return {
      ...lock,
      release() {
        released ??= (async () => {
          if (held === lock) held = undefined;
          // Writes that borrowed this lock finish before it goes.
          await queue;
          await lock.release();
        })();
        return released;
      },
    };
  }

  /**
   * Runs `work` under the lock (this store's, or one taken just for it), one at a time. An
   * `unconditional` write (sign-in, sign-out) always wins, so it never fails for a lock that is lost.
   */
  async function underLock<T>(work: (lock: GenerationLockHold) => Promise<T>, { unconditional }: { unconditional: boolean }): Promise<T> {
    const current = held;
    // A lost lock is not borrowed: an unconditional write takes a fresh one.
    if (current && !current.signal.aborted) {
      try {
        return await exclusive(() => work(current));
      } catch (error) {
        // The lock may be lost before its signal knows (after a freeze, the heartbeat has not run yet):
        // the commit's check found out, nothing was written, and an unconditional write tries again under a fresh lock.
        if (!unconditional || !current.signal.aborted) throw error;
      }
    }
    const lock = await takeLock();
    try {
      return await exclusive(() => work(lock));
    } finally {
      await lock.release();
    }
  }

  const wrap = (error: unknown, what: string) =>
    error instanceof TokenRelayError ? error : storeError(`Cannot ${what} the token file ${filePath}`, error);

  // ---- change notifications ----

  const listeners = new Set<(value: StoredTokens | undefined) => void>();
  let stopWatching: (() => void) | undefined;
  let checking: Promise<void> = Promise.resolve();

  async function check(): Promise<void> {
    // A write of this store under way finishes first: the file may already hold its state (the rename
    // is done) while `lastKey` does not know it yet, and our own write is no news.
    await queue;
    const startedAt = operations;
    let value: StoredTokens | undefined;
    try {
      value = await file.read();
    } catch {
      return; // A corrupt file is reported by the next get(); a notification has nobody to report it to.
    }
    // A get/set/clear of this store since the read started knows a state at least as new.
    if (closed || startedAt !== operations || stateKey(value) === lastKey) return;
    lastKey = stateKey(value);
    notifyListeners(listeners, value);
  }

  return {
    path: filePath,

    async get() {
      operations++;
      const value = await file.read();
      lastKey = stateKey(value);
      return value;
    },

    async set(value, { expectedRevision, newSession } = {}) {
      const stored = parseStoredTokens(value, (problem) => storeError(`Refusing to write invalid tokens to ${filePath}: ${problem}`));
      // A refresh's write under a lock this process lost is refused: another process may hold newer tokens.
      if (expectedRevision !== undefined && held?.signal.aborted) throw held.signal.reason;
      const unconditional = expectedRevision === undefined;
      const ticket = unconditional ? writeOrder.take() : 0;
      operations++;
      try {
        return await underLock(async (lock) => {
          if (unconditional) {
            // A later sign-in or sign-out landed first: this one is overtaken, as if written and replaced.
            if (writeOrder.overtaken(ticket)) return true;
          } else if (((await file.read())?.revision ?? 0) !== expectedRevision) return false;
          operations++;
          // A refresh continues the session the file holds; a new session (a sign-in: an unconditional
          // write, unless told otherwise) keeps nothing of the one it replaces (its id, signature, issued_at).
          await file.write(stored, () => lock.assertHeld(), !(newSession ?? unconditional));
          if (unconditional) writeOrder.landed(ticket);
          lastKey = stateKey(stored);
          return true;
        }, { unconditional });
      } catch (error) {
        throw wrap(error, 'write');
      }
    },

    async clear() {
      const ticket = writeOrder.take();
      operations++;
      try {
        await underLock(async (lock) => {
          if (writeOrder.overtaken(ticket)) return;
          operations++;
          await file.write(undefined, () => lock.assertHeld());
          writeOrder.landed(ticket);
          lastKey = stateKey(undefined);
        }, { unconditional: true });
      } catch (error) {
        throw wrap(error, 'delete');
      }
    },

    lock({ signal } = {}) {
      return takeLock(signal);
    },

    subscribe(listener) {
      if (closed) return () => undefined;
      listeners.add(listener);
      stopWatching ??= watchTokenFile(filePath, { mode: options.watch ?? 'auto', pollIntervalMs: options.watchPollMs ?? 1_000 }, () => {
        // Never two reads at once; the last change is always looked at.
        checking = checking.then(check);
      });
      return () => {
        listeners.delete(listener);
        if (listeners.size === 0) {
          stopWatching?.();
          stopWatching = undefined;
        }
      };
    },

    async close() {
      if (closed) return;
      closed = true;
      listeners.clear();
      stopWatching?.();
      stopWatching = undefined;
      await held?.release();
    },
  };
}
