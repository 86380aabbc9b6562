import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fileStore } from './file-store.js';
import type { StoredTokens } from './types.js';

let directory: string;
let tokenPath: string;

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), 'tokenrelay-file-store-order-'));
  tokenPath = join(directory, '_salesforce.json');
});

afterEach(async () => {
  await rm(directory, { recursive: true, force: true });
});

const session = (n: number): StoredTokens => ({ revision: n + 1, tokens: { accessToken: `access-${n}`, refreshToken: `refresh-${n}` } });
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const ROUNDS = 12;

/**
 * Runs `writes` on one store while another handle holds the lock, so every write waits for it
 * (as a sign-in the manager gave up on waits behind another process's slow refresh), then releases.
 */
async function whileAnotherHandleHoldsTheLock(writes: (store: ReturnType<typeof fileStore>) => Promise<unknown>[]) {
  const options = { watch: false, lockPollMs: 5 } as const;
  const holder = await fileStore(tokenPath, options).lock();
  const store = fileStore(tokenPath, options);
  const settled = writes(store);
  // Long enough for every write to be polling for the lock, so they race for it at release.
  await pause(40);
  await holder.release();
  return { store, results: await Promise.all(settled) };
}

describe('fileStore: sign-in and sign-out of one store land in the order they were called', () => {
  it('leaves the file empty when a sign-out follows a sign-in that was still waiting for the lock', async () => {
    for (let round = 1; round <= ROUNDS; round++) {
      const { store, results } = await whileAnotherHandleHoldsTheLock((store) => [store.set(session(round)), store.clear()]);

      expect(await store.get()).toBeUndefined();
      // The sign-in was overtaken, not refused: its caller has nothing to retry.
      expect(results[0]).toBe(true);
    }
  });

  it('keeps the sign-in that follows a sign-out that was still waiting for the lock', async () => {
    for (let round = 1; round <= ROUNDS; round++) {
      const { store } = await whileAnotherHandleHoldsTheLock((store) => [store.clear(), store.set(session(round))]);

      expect(await store.get()).toEqual(session(round));
    }
  });

  it('keeps the last of several sign-ins that were waiting for the lock', async () => {
    for (let round = 1; round <= ROUNDS; round++) {
      const { store } = await whileAnotherHandleHoldsTheLock((store) => [1, 2, 3].map((n) => store.set(session(round * 10 + n))));

      expect(await store.get()).toEqual(session(round * 10 + 3));
    }
  });
});
