import { configurationError } from './errors.js';

/**
 * The longest wait a timer keeps, in milliseconds (2^31 − 1, about 24.8 days): `setTimeout` and
 * `setInterval` fire after 1 ms for a longer delay, so an option that sets a timer is refused above it.
 */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * Refuses, with a `CONFIGURATION_ERROR` naming `who` and `name`, a delay option a timer cannot keep:
 * not a finite number, below `minimum` (or equal to it, when `minimumExcluded`), or above
 * {@link MAX_TIMER_MS}. `undefined` (the default applies) passes.
 */
export function assertTimerDelay(who: string, name: string, value: number | undefined, minimum: number, minimumExcluded = false): void {
  if (value === undefined) return;
  const aboveMinimum = minimumExcluded ? value > minimum : value >= minimum;
  if (!(Number.isFinite(value) && aboveMinimum && value <= MAX_TIMER_MS)) {
    throw configurationError(`${who}: ${name} must be a number ${minimumExcluded ? '>' : '≥'} ${minimum} and ≤ ${MAX_TIMER_MS}`);
  }
}

/**
 * Resolves after `ms` milliseconds, or rejects with `signal.reason` as soon as `signal` aborts.
 * Its abort listener is removed either way, so a loop that waits on one long-lived signal many
 * times does not pile listeners up on it.
 *
 * @example
 * ```ts
 * await delay(25, signal) // a polling loop's pause that ends when the caller gives up
 * ```
 */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Waits for `promise`, but rejects with `signal.reason` as soon as `signal` aborts (the promise
 * goes on; its rejection is then handled). The abort listener is removed either way.
 */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      promise.catch(() => undefined);
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}
