import { describe, expect, it } from 'vitest';
import { topSelfTimeFrames, type CpuProfile } from './cpu-profile.js';

const frame = (id: number, functionName: string, url = '') => ({ id, callFrame: { functionName, url, lineNumber: 9 } });

/** Samples every 1,000 µs from t = 0: warm-up on `warm`, then the measured part. */
const profile: CpuProfile = {
  nodes: [
    frame(1, '(idle)'),
    frame(2, 'warm'),
    frame(3, 'mergeConfig', 'file:///repo/node_modules/.pnpm/axios@1.0.0/node_modules/axios/lib/core/mergeConfig.js'),
    frame(4, 'isFresh', new URL('../../packages/core/src/manager.ts', import.meta.url).href),
    frame(5, ''),
  ],
  startTime: 0,
  samples: [2, 2, 3, 3, 3, 4, 1, 1, 5],
  timeDeltas: [1_000, 1_000, 1_000, 1_000, 1_000, 1_000, 1_000, 1_000, 1_000],
};
const measured = { fromMicros: 3_000, toMicros: 9_000 };

describe('topSelfTimeFrames', () => {
  it('counts only the samples inside the window and leaves idle time out of the shares', () => {
    expect(topSelfTimeFrames(profile, measured, 10)).toEqual([
      { frame: 'mergeConfig axios/lib/core/mergeConfig.js:10', selfMs: 3, selfPercent: 60 },
      { frame: 'isFresh packages/core/src/manager.ts', selfMs: 1, selfPercent: 20 },
      { frame: '(anonymous)', selfMs: 1, selfPercent: 20 },
    ]);
  });

  it('keeps the shares of all busy time when only some frames are listed', () => {
    expect(topSelfTimeFrames(profile, measured, 10, (name) => name.includes(' packages/'))).toEqual([
      { frame: 'isFresh packages/core/src/manager.ts', selfMs: 1, selfPercent: 20 },
    ]);
  });

  it('lists at most the requested number of frames, the most expensive first', () => {
    expect(topSelfTimeFrames(profile, { fromMicros: 0, toMicros: 9_000 }, 1)).toEqual([
      { frame: 'mergeConfig axios/lib/core/mergeConfig.js:10', selfMs: 3, selfPercent: 42.9 },
    ]);
  });
});
