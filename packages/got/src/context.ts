/*
 * A value one set of hooks keeps on a got request, in its per-request `context`: got copies the context to a
 * retry, a redirect hop and a replay (`retryWithMergedOptions`), so the value follows the request. Under a
 * key of the set's own (a `Symbol`), two sets on one got instance never read each other's, and JSON never
 * shows it.
 */
import type { NormalizedOptions } from 'got';

/** One value of one set of hooks in got's per-request `context`: see {@link contextSlot}. */
export interface ContextSlot<Value> {
  /** The key, for a context got merges in (`retryWithMergedOptions({ context: { [slot.key]: value } })`). */
  readonly key: symbol;
  get(request: Pick<NormalizedOptions, 'context'>): Value | undefined;
  set(request: Pick<NormalizedOptions, 'context'>, value: Value): void;
  delete(request: Pick<NormalizedOptions, 'context'>): void;
}

/** A slot of its own in got's per-request `context`, named `description` (for debugging only). */
export function contextSlot<Value>(description: string): ContextSlot<Value> {
  const key = Symbol(description);
  const valuesOf = (request: Pick<NormalizedOptions, 'context'>) => request.context as { [key]?: Value };
  return {
    key,
    get: (request) => valuesOf(request)[key],
    set(request, value) {
      valuesOf(request)[key] = value;
    },
    delete(request) {
      delete valuesOf(request)[key];
    },
  };
}
