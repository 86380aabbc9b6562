import type { StoredTokens, TokenStore } from './types.js';

/**
 * The default {@link TokenStore}: tokens live in this process's memory only. Offers no lock,
 * because the manager's single flight already covers one process.
 */
export function memoryStore(initial?: StoredTokens): TokenStore {
  let value = initial;
  return {
    get: () => value,
    set: (next, { expectedRevision } = {}) => {
      if (expectedRevision !== undefined && expectedRevision !== (value?.revision ?? 0)) return false;
      value = next;
      return true;
    },
    clear: () => {
      value = undefined;
    },
  };
}
