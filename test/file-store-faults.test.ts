/*
 * fileStore under the faults an outside tester stages across processes: processes whose clocks
 * disagree (one process's Date.now() shifted, as libfaketime or a test's fake clock does), the
 * lock's directory removed while the lock is held, and a sign-out in a process whose lock was lost
 * while it was frozen. Real processes (node + tsx) and real files in a temp directory.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCode } from '@tokenrelay/core';
import { fileStore } from '@tokenrelay/core/node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startScriptProcess } from './helpers/script-process.js';

const fileStoreSource = fileURLToPath(new URL('../packages/core/src/node.ts', import.meta.url));
/** A clock difference far beyond any lease used here. */
const SKEW_MS = 60_000;
const LEASE_MS = 1_500;

let directory: string;
let tokenPath: string;
const cleanups: (() => unknown)[] = [];

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), 'tokenrelay-file-faults-'));
  tokenPath = join(directory, 'tokens', 'session.json');
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await rm(directory, { recursive: true, force: true });
});

const tokens = (name: string) => ({ accessToken: `access-${name}`, refreshToken: `refresh-${name}` });

/**
 * Another Node process running `code` (an ES module; `fileStore` and `path` are in scope), its
 * `Date.now()` shifted by `clockOffsetMs`. Lines it prints can be awaited; killed after the test.
 */
function startProcess(code: string, clockOffsetMs = 0) {
  const script =
    `import { fileStore } from ${JSON.stringify(fileStoreSource)};\n` +
    `const path = ${JSON.stringify(tokenPath)};\n` +
    `const realNow = Date.now; Date.now = () => realNow() + ${clockOffsetMs};\n${code}`;
  return startScriptProcess(script, cleanups);
}

/** A process that takes the lock, says so, and holds it (renewing it) until killed. */
const holdLock = (clockOffsetMs: number) =>
  startProcess(
    `await fileStore(path, { watch: false, lockLeaseMs: ${LEASE_MS} }).lock();
     console.log('locked');
     setInterval(() => {}, 1_000);`,
    clockOffsetMs,
  );

const outcomes = ['took it', 'gave up'];

/** A process that waits up to `lockWaitMs` for the lock and prints `took it` or `gave up: <code>`. */
const tryLock = (clockOffsetMs: number, lockWaitMs: number) =>
  startProcess(
    `console.log('waiting');
     try {
       const lock = await fileStore(path, { watch: false, lockLeaseMs: ${LEASE_MS}, lockWaitMs: ${lockWaitMs} }).lock();
       console.log('took it');
       await lock.release();
     } catch (error) {
       console.log('gave up: ' + error.code);
     }`,
    clockOffsetMs,
  );

describe('fileStore across processes whose clocks disagree', () => {
  it.each([
    { holder: 'behind', offset: -SKEW_MS },
    { holder: 'ahead', offset: SKEW_MS },
  ])('keeps a live holder\'s lock when the holder\'s clock is $holder: a process with the right clock waits for it', async ({ offset }) => {
    const holder = holdLock(offset);
    await holder.printed(['locked']);

    const waiter = fileStore(tokenPath, { watch: false, lockLeaseMs: LEASE_MS, lockWaitMs: 2 * LEASE_MS });
    // Two whole leases: the holder's heartbeats, not its clock, say that it is alive.
    await expect(waiter.lock()).rejects.toMatchObject({ code: ErrorCode.STORE_ERROR, message: expect.stringMatching(/Gave up waiting/) });
  }, 30_000);

  it('never lets a process whose clock is ahead take over a live holder\'s lock', async () => {
    const lock = await fileStore(tokenPath, { watch: false, lockLeaseMs: LEASE_MS }).lock();
    const waiter = tryLock(SKEW_MS, 2 * LEASE_MS);

    expect(await waiter.printed(outcomes, 20_000)).toBe(`gave up: ${ErrorCode.STORE_ERROR}`);
    await lock.release();
  }, 30_000);

  it.each([
    { clock: 'is behind', holderOffset: 0, waiterOffset: -SKEW_MS },
    { clock: 'was ahead', holderOffset: SKEW_MS, waiterOffset: 0 },
  ])('takes over a killed holder\'s lock after its lease when the waiter\'s clock $clock', async ({ holderOffset, waiterOffset }) => {
    const holder = holdLock(holderOffset);
    await holder.printed(['locked']);
    holder.child.kill('SIGKILL');
    await holder.exited;

    // Long enough for the lease, far too short for the clock difference.
    const waiter = tryLock(waiterOffset, 8_000);
    expect(await waiter.printed(outcomes, 20_000)).toBe('took it');
  }, 30_000);
});

describe('fileStore when the lock\'s directory is removed while the lock is held', () => {
  it('refuses the old holder\'s refresh write and aborts its lock\'s signal once a new holder took the lock under the same number', async () => {
    const holder = fileStore(tokenPath, { watch: false });
    // The first lock ever taken on this file: generation 1.
    const lock = await holder.lock();
    // A cleanup job (systemd-tmpfiles, rm -rf) removes the lock directory; numbering starts again.
    await rm(`${tokenPath}.lock`, { recursive: true, force: true });
    const other = fileStore(tokenPath, { watch: false });
    // The new holder is in the middle of its own refresh.
    const otherLock = await other.lock();

    await expect(holder.set({ revision: 1, tokens: tokens('late') }, { expectedRevision: 0 })).rejects.toMatchObject({
      code: ErrorCode.STORE_ERROR,
      message: expect.stringMatching(/Lost the lock/),
    });
    expect(lock.signal.aborted).toBe(true);
    expect(await other.get()).toBeUndefined();
    await other.set({ revision: 1, tokens: tokens('other') }, { expectedRevision: 0 });
    await otherLock.release();
    await lock.release();
    await Promise.all([holder.close(), other.close()]);
  });
});

describe('fileStore signing out in a process whose lock was lost while it was frozen', () => {
  it('deletes the token file: a sign-out wins even before the holder noticed that its lock is gone', async () => {
    const store = fileStore(tokenPath, { watch: false, lockLeaseMs: 400 });
    await store.set({ revision: 1, tokens: tokens('signed-in') });
    const lock = await store.lock();
    const other = startProcess(
      `const store = fileStore(path, { watch: false });
       console.log('waiting');
       const lock = await store.lock();
       await store.set({ revision: 2, tokens: { accessToken: 'access-other', refreshToken: 'refresh-other' } }, { expectedRevision: 1 });
       await lock.release();
       console.log('refreshed');`,
    );
    await other.printed(['waiting']);
    // Freeze this process (a long synchronous task, a SIGSTOP): no heartbeat gets out, the other takes over.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 3_000);
    // The user signs out before any timer of this process ran again.
    const signingOut = store.clear();
    await other.printed(['refreshed']);

    await expect(signingOut).resolves.toBeUndefined();
    expect(await store.get()).toBeUndefined();
    await lock.release();
    await store.close();
  }, 30_000);
});
