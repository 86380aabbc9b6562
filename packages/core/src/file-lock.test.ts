import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { fileStore } from './file-store.js';
import { settledWithin } from './test-helpers.js';

let directory: string;
let tokenPath: string;

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), 'tokenrelay-file-lock-'));
  tokenPath = join(directory, '_salesforce.json');
});

afterEach(async () => {
  vi.restoreAllMocks();
  await rm(directory, { recursive: true, force: true });
});

/** Makes this process's `Date.now()` run `rate` times as fast as real time from now on, as libfaketime with a rate does. */
function runClockAt(rate: number): void {
  const realNow = Date.now.bind(Date);
  const from = realNow();
  vi.spyOn(Date, 'now').mockImplementation(() => from + (realNow() - from) * rate);
}

describe('fileStore: the lock judged by the kernel\'s clock', () => {
  it('does not take a live holder\'s lock while this process\'s clock runs ten times as fast as the kernel\'s', async () => {
    const holder = await fileStore(tokenPath, { watch: false, lockLeaseMs: 3_000 }).lock();
    runClockAt(10);
    // lockWaitMs is read off the fast clock too: 60 s of it are 6 s of real waiting.
    const waiter = fileStore(tokenPath, { watch: false, lockLeaseMs: 3_000, lockWaitMs: 60_000 }).lock();

    // The holder renews its lease every second; a waiter trusting the offset it measured first would
    // see the lease run out after about a fifth of a second.
    expect(await settledWithin(waiter, 1_500)).toBe('pending');
    await holder.release();
    await (await waiter).release();
  });
});
