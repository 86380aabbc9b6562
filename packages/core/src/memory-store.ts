import type { TokenSet, TokenStore } from './types.js';

/**
 * The default {@link TokenStore}: tokens live in this process's memory only. Offers no lock,
 * because the manager's single flight already covers one process.
 */
export function memoryStore(initial?: TokenSet): TokenStore {
  let tokens = initial;
  return {
    get: () => tokens,
    set: (next) => {
      tokens = next;
    },
    clear: () => {
      tokens = undefined;
    },
  };
}
