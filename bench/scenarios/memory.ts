import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';

/**
 * A full garbage collection, so heap figures count live objects only: `global.gc` under
 * `--expose-gc`, else the same function fetched by turning the flag on at run time. Undefined
 * when neither works; heap figures then include garbage and are noisier.
 */
export const collectGarbage: (() => void) | undefined = (() => {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (typeof exposed === 'function') return exposed;
  try {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    return typeof gc === 'function' ? (gc as () => void) : undefined;
  } catch {
    return undefined;
  }
})();

/** Bytes of live heap now (after a full collection when one is available). */
export function liveHeapBytes(): number {
  collectGarbage?.();
  collectGarbage?.();
  return process.memoryUsage().heapUsed;
}
