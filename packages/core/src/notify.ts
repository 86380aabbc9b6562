/**
 * Calls every listener with `args`. A listener that throws does not keep the others from being
 * called, nor breaks the caller: its error is rethrown in a microtask, where uncaught errors go.
 * The listeners are copied first, so one that unsubscribes (or subscribes) while being called
 * changes nothing for this round.
 *
 * @example
 * ```ts
 * notifyListeners(listeners, storedTokens)
 * ```
 */
export function notifyListeners<Args extends unknown[]>(listeners: Iterable<(...args: Args) => void>, ...args: Args): void {
  for (const listener of [...listeners]) {
    try {
      listener(...args);
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
  }
}
