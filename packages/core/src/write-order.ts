/**
 * Keeps one store handle's sign-ins and sign-outs (`set` without `expectedRevision`, `clear`) in
 * the order they were called, though each waits for the store's lock on its own: the manager gives
 * up on a slow store call and makes the next, and a sign-in still waiting must not land after a
 * later sign-out. `take()` numbers a call when it is made; under the lock, a call `overtaken` by a
 * later one that already wrote is skipped (as if written and replaced), and `landed` records a
 * write once it succeeded (a later call whose write failed overtakes nothing).
 */
export interface WriteOrder {
  take(): number;
  overtaken(ticket: number): boolean;
  landed(ticket: number): void;
}

/** A {@link WriteOrder} for one store handle. */
export function createWriteOrder(): WriteOrder {
  let issued = 0;
  let newest = 0;
  return {
    take: () => ++issued,
    overtaken: (ticket) => ticket < newest,
    landed: (ticket) => {
      newest = Math.max(newest, ticket);
    },
  };
}
