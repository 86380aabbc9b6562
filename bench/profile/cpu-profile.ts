/*
 * Reading a V8 `.cpuprofile` (what `node --cpu-prof` writes): self time per function, the
 * frames to look at first when the hot path is too slow.
 */
import { fileURLToPath } from 'node:url';

/** The parts of the `.cpuprofile` format (Chrome DevTools protocol `Profiler.Profile`) used here. */
export interface CpuProfile {
  readonly nodes: readonly {
    readonly id: number;
    readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  }[];
  /** When sampling started, in microseconds on the monotonic clock (`process.hrtime`). */
  readonly startTime: number;
  /** The node sampled at each tick. */
  readonly samples: readonly number[];
  /** Microseconds since the previous sample, one per sample. */
  readonly timeDeltas: readonly number[];
}

/** One function's share of the samples. */
export interface Frame {
  /** `functionName file:line` (no line for our TypeScript), files relative to the repository, dependencies by package. */
  readonly frame: string;
  readonly selfMs: number;
  /** Share of the profile's busy time (idle excluded), in percent. */
  readonly selfPercent: number;
}

const root = fileURLToPath(new URL('../../', import.meta.url));

/** `file:///…/node_modules/.pnpm/axios@1.x/node_modules/axios/lib/core/Axios.js` → `axios/lib/core/Axios.js`. */
function shortUrl(url: string): string {
  const path = url.startsWith('file://') ? fileURLToPath(url) : url;
  const dependency = path.lastIndexOf('/node_modules/');
  if (dependency >= 0) return path.slice(dependency + '/node_modules/'.length);
  return path.startsWith(root) ? path.slice(root.length) : path;
}

/** A span of the monotonic clock, in microseconds: the part of the profile to read. */
export interface Window {
  readonly fromMicros: number;
  readonly toMicros: number;
}

/**
 * The `count` functions with the most self time within `window`, idle time left out; with `only`,
 * among the frames it accepts (percentages stay shares of all busy time).
 */
export function topSelfTimeFrames(profile: CpuProfile, window: Window, count: number, only: (frame: string) => boolean = () => true): Frame[] {
  const frameOf = new Map<number, string>();
  for (const { id, callFrame } of profile.nodes) {
    const file = callFrame.url ? shortUrl(callFrame.url) : '';
    // tsx runs our TypeScript compiled, so its line numbers are not the source's: name the file only.
    const where = file === '' ? '' : file.endsWith('.ts') ? ` ${file}` : ` ${file}:${callFrame.lineNumber + 1}`;
    frameOf.set(id, `${callFrame.functionName || '(anonymous)'}${where}`);
  }
  const selfMicros = new Map<string, number>();
  let busyMicros = 0;
  let sampledAt = profile.startTime;
  profile.samples.forEach((node, index) => {
    const micros = profile.timeDeltas[index] ?? 0;
    sampledAt += micros;
    const frame = frameOf.get(node) ?? '(unknown)';
    if (frame === '(idle)' || sampledAt < window.fromMicros || sampledAt > window.toMicros) return;
    busyMicros += micros;
    selfMicros.set(frame, (selfMicros.get(frame) ?? 0) + micros);
  });
  return [...selfMicros.entries()]
    .filter(([frame]) => only(frame))
    .sort(([, a], [, b]) => b - a)
    .slice(0, count)
    .map(([frame, micros]) => ({
      frame,
      selfMs: Math.round(micros / 100) / 10,
      selfPercent: busyMicros === 0 ? 0 : Math.round((micros / busyMicros) * 1_000) / 10,
    }));
}
