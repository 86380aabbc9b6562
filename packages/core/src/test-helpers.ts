/* Pieces the core's tests share. */

/**
 * Resolves with how `promise` settled within `ms`, so a test can assert that it is still waiting
 * (timed by timers, never by `Date.now()`).
 */
export async function settledWithin(promise: Promise<unknown>, ms: number): Promise<'resolved' | 'rejected' | 'pending'> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<'pending'>((resolve) => {
    timer = setTimeout(() => resolve('pending'), ms);
  });
  const outcome = await Promise.race([promise.then(() => 'resolved' as const, () => 'rejected' as const), timeout]);
  clearTimeout(timer);
  return outcome;
}
