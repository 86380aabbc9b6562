import type { StoredTokens } from '@tokenrelay/core';
import { describe, expect, it } from 'vitest';
import { memoryStorage, neverAborted, openStore, uniqueKey } from './test-helpers.js';

// The manager gives up on a store call after refreshTimeoutMs and makes the next one, while the
// store's call may still be waiting for the lock: calls of one store can then be waiting at once.

const session: StoredTokens = { revision: 1, tokens: { accessToken: 'access-1', refreshToken: 'refresh-1' } };

describe('browserStore writes that wait for the lock together', () => {
  it('never lets a sign-in land after a sign-out called later, whichever gets the lock first', async () => {
    // Which waiting call polls the lease first is chance: ten rounds make a wrong order all but certain to show.
    for (let round = 0; round < 10; round++) {
      const key = uniqueKey();
      const storage = memoryStorage();
      const other = openStore({ key, storage, lock: 'lease', lockPollMs: 5 });
      const tab = openStore({ key, storage, lock: 'lease', lockPollMs: 5 });
      const otherLock = await other.lock({ signal: neverAborted() });

      const signIn = tab.set(session);
      const signOut = tab.clear();
      await otherLock.release();

      expect(await signIn).toBe(true);
      await signOut;
      expect(tab.get()).toBeUndefined();
      expect(other.get()).toBeUndefined();
    }
  });
});
