/** Pieces the adapters' queue tests share: a refresh that waits for a gate, and an in-flight counter. */
import { createTokenManager, type TokenSet } from '@tokenrelay/core';

/** A manager whose token is `initial`; its refresh answers `v2` once `release()` is called. */
export function gatedManager(initial: TokenSet) {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let refreshes = 0;
  const manager = createTokenManager({
    tokens: initial,
    refresh: async () => {
      refreshes++;
      await gate;
      return { accessToken: 'v2', refreshToken: 'r2', expiresAt: Date.now() + 3_600_000 };
    },
  });
  return { manager, release, refreshes: () => refreshes };
}

/** Counts the requests a fake transport has in flight, and the peak since the last `resetPeak()`. */
export function inFlightCounter() {
  let inFlight = 0;
  let maxInFlight = 0;
  return {
    /** Holds one request in flight for a few milliseconds, as a transport answering quickly does. */
    async hold(): Promise<void> {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await new Promise((resolve) => setTimeout(resolve, 5));
      inFlight--;
    },
    maxInFlight: () => maxInFlight,
    /** Starts measuring the peak again (from what is in flight now). */
    resetPeak: () => {
      maxInFlight = inFlight;
    },
  };
}
