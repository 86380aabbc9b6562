/*
 * The cross-process lock of fileStore: a directory `<file>.lock/` of generation files named
 * `<n>.<leaseMs>.lock`; the highest generation is the lock. It is held while its mtime (the
 * holder's heartbeat, renewed every lease/3) is younger than its lease; release sets the mtime to
 * the epoch. To take the lock, a process creates generation n+1 with an exclusive create
 * (O_CREAT|O_EXCL) once generation n is released or its lease ran out. Exactly one of any number of
 * racers wins that create, and nothing is deleted to take a lock, so two waiters that both see the
 * same stale lock cannot both take it (the classic unlink-then-create race). Older generations are
 * deleted by the winner; a creator that was frozen for so long that its generation number was
 * already used and cleaned up sees a higher one right after its create and backs off.
 *
 * Every time the lease is judged by is the kernel's, never a process's `Date.now()`: heartbeats are
 * writes, which the kernel stamps, and a waiter reads "now" off a file it creates. Processes on one
 * machine may disagree about the time (libfaketime, a test's fake clock), and a lock that trusted
 * the holder's or the waiter's clock would be taken from a live holder, or not from a dead one.
 * A generation is its file, not its name: the lock directory can be deleted and its numbers reused.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { delay } from './delay.js';
import { storeError } from './errors.js';
import type { TokenStoreLock } from './types.js';

/** Timing of a {@link generationLock}; see `FileStoreOptions` for what each means. */
export interface GenerationLockTiming {
  readonly lockLeaseMs: number;
  readonly lockWaitMs: number;
  readonly lockPollMs: number;
}

/** A held generation of the lock. */
export interface GenerationLockHold extends TokenStoreLock {
  readonly generation: number;
  /** Aborted (with a `STORE_ERROR`) when a heartbeat finds that another process took the lock over, and once released. */
  readonly signal: AbortSignal;
  /** Rejects with a `STORE_ERROR` unless this generation is still the lock: checked right before each commit. */
  assertHeld(): Promise<void>;
}

/** The lock on one token file. */
export interface GenerationLock {
  /** Takes the lock: waits at most `lockWaitMs`, then rejects with a `STORE_ERROR`; rejects with `signal.reason` on abort. */
  acquire(signal?: AbortSignal): Promise<GenerationLockHold>;
}

const LOCK_FILE = /^(\d+)\.(\d+)\.lock$/;

/** What tells two files of one name apart. */
interface FileIdentity {
  readonly ino: number;
  readonly dev: number;
}

interface Generation {
  readonly number: number;
  readonly leaseMs: number;
  readonly name: string;
}

export const errnoCode = (error: unknown) => (error as { code?: unknown } | null)?.code;

/** The lock of the token file `filePath`, kept in the directory `lockDirectory`. */
export function generationLock(filePath: string, lockDirectory: string, timing: GenerationLockTiming): GenerationLock {
  // Whole milliseconds, because the lease is part of the lock file's name.
  const leaseMs = Math.ceil(timing.lockLeaseMs);
  const { lockWaitMs, lockPollMs } = timing;

  async function listGenerations(): Promise<Generation[]> {
    const generations: Generation[] = [];
    for (const name of await readdir(lockDirectory)) {
      const match = LOCK_FILE.exec(name);
      if (match) generations.push({ number: Number(match[1]), leaseMs: Number(match[2]), name });
    }
    return generations;
  }

  const highest = (generations: readonly Generation[]) =>
    generations.reduce<Generation | undefined>((top, next) => (top && top.number > next.number ? top : next), undefined);

  const lostLock = () =>
    storeError(
      `Lost the lock on ${filePath}: this process did not renew it within ${leaseMs} ms (was the event loop blocked?) ` +
        'and another process took over; the tokens were not written, so as not to overwrite newer ones',
    );

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
  async function tryTake(number: number): Promise<GenerationLockHold | undefined> {
    const name = `${number}.${leaseMs}.lock`;
    const lockPath = join(lockDirectory, name);
    let handle: FileHandle;
    try {
      handle = await open(lockPath, 'wx', 0o600);
    } catch (error) {
      if (errnoCode(error) === 'EEXIST') return undefined;
      throw error;
    }
    const owner = Buffer.from(JSON.stringify({ pid: process.pid, hostname: hostname(), acquiredAt: new Date().toISOString() }));
    let generations: Generation[];
    let identity: FileIdentity;
    try {
      // The write is the first heartbeat: the kernel stamps its mtime.
      await handle.write(owner, 0, owner.length, 0);
      identity = await handle.stat();
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
    return hold(number, lockPath, handle, identity, owner);
  }

  function hold(generation: number, lockPath: string, handle: FileHandle, identity: FileIdentity, owner: Buffer): GenerationLockHold {
    let released = false;
    const lost = new AbortController();
    let heartbeat: Promise<unknown> = Promise.resolve();
    const isOurs = async () => {
      let onDisk: FileIdentity;
      try {
        onDisk = await stat(lockPath);
      } catch (error) {
        // Our file was deleted (the lock directory removed by hand): the lock is anyone's now.
        if (errnoCode(error) === 'ENOENT') return false;
        throw error;
      }
      // The same name can be a new file: after the directory was removed, numbering starts again at 1.
      if (onDisk.ino !== identity.ino || onDisk.dev !== identity.dev) return false;
      return highest(await listGenerations())?.number === generation;
    };
    const loseLock = () => {
      clearInterval(renew);
      if (!lost.signal.aborted) lost.abort(lostLock());
    };
    // The heartbeat goes through the open handle, so it only ever touches this generation's file, and
    // it writes rather than sets the mtime, so the kernel's clock dates it, not this process's.
    // It also looks at the directory: a process that took over means this lock is lost.
    const beat = () => handle.write(owner, 0, owner.length, 0).catch(() => undefined);
    const renew = setInterval(() => {
      heartbeat = heartbeat.then(async () => {
        if (released || lost.signal.aborted) return;
        const ours = await isOurs().catch(() => true);
        if (!ours) return loseLock();
        await beat();
      });
    }, leaseMs / 3);
    // Renewal alone must never keep a process alive.
    renew.unref();
    return {
      generation,
      signal: lost.signal,
      async assertHeld() {
        // A heartbeat first: a holder resumed after a freeze, its lease stale but not yet taken over, keeps it
        // for a whole lease from now rather than from its last heartbeat. The lock's signal learns a loss here
        // too: no later step of the holder needs to find it out again.
        if (!lost.signal.aborted) {
          // In the heartbeats' chain, which release() waits for.
          heartbeat = heartbeat.then(beat);
          await heartbeat;
          if (!(await isOurs())) loseLock();
        }
        if (lost.signal.aborted) throw lost.signal.reason;
      },
      async release() {
        if (released) return;
        released = true;
        clearInterval(renew);
        // No longer held: whoever kept it (a manager, for a write it gave up on) goes on under it no more.
        if (!lost.signal.aborted) lost.abort(storeError(`Released the lock on ${filePath}`));
        // Wait for a heartbeat in flight, or it could revive the released lock for a whole lease.
        await heartbeat;
        try {
          await handle.utimes(0, 0);
        } finally {
          await handle.close().catch(() => undefined);
        }
      },
    };
  }

  /**
   * The kernel's time now, read off a file created for the purpose: the clock that stamps every
   * heartbeat. Only its difference from `Date.now()` is kept, between the passes of one acquire().
   */
  async function fileSystemClockOffset(): Promise<number> {
    const probe = join(lockDirectory, `.clock-${process.pid}-${randomBytes(4).toString('hex')}`);
    const handle = await open(probe, 'wx', 0o600);
    try {
      return (await handle.stat()).mtimeMs - Date.now();
    } finally {
      await handle.close().catch(() => undefined);
      await unlink(probe).catch(() => undefined);
    }
  }

  async function acquire(signal?: AbortSignal): Promise<GenerationLockHold> {
    const deadline = Date.now() + lockWaitMs;
    let clockOffset: number | undefined;
    try {
      await mkdir(lockDirectory, { recursive: true, mode: 0o700 });
    } catch (error) {
      throw storeError(`Cannot create the lock directory ${lockDirectory}`, error);
    }
    // Bounded by the deadline: every pass takes the lock, gives up, or sleeps.
    for (;;) {
      signal?.throwIfAborted();
      let top: Generation | undefined;
      let busy: boolean;
      try {
        top = highest(await listGenerations());
        const heartbeatAt = top === undefined ? 0 : (await stat(join(lockDirectory, top.name))).mtimeMs;
        const leaseEndsAt = heartbeatAt + (top?.leaseMs ?? 0);
        const expired = (offset: number) => leaseEndsAt <= Date.now() + offset;
        // Released (mtime 0) or never held: free, with no need to ask the kernel the time. The offset
        // kept from an earlier pass may only say "busy": a process clock running at another rate
        // (libfaketime) makes it stale, so "expired" is confirmed by a fresh one before a takeover.
        busy = heartbeatAt > 0;
        if (busy && (clockOffset === undefined || expired(clockOffset))) {
          clockOffset = await fileSystemClockOffset();
          busy = !expired(clockOffset);
        }
      } catch (error) {
        if (errnoCode(error) !== 'ENOENT') throw storeError(`Cannot read the lock ${lockDirectory}`, error);
        // The lock directory or its top file was removed by hand: recreate it and look again after a pause.
        await mkdir(lockDirectory, { recursive: true, mode: 0o700 }).catch(() => undefined);
        busy = true;
      }
      if (!busy) {
        let lock: GenerationLockHold | undefined;
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
        throw storeError(`Gave up waiting for the lock on the token file ${filePath} after ${lockWaitMs} ms: ${holder}`);
      }
      await delay(Math.min(remaining, lockPollMs * (0.5 + Math.random())), signal);
    }
  }

  return { acquire };
}
