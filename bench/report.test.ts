import { describe, expect, it } from 'vitest';
import type { Contender } from './contenders/index.js';
import { failuresOf, renderMarkdown, type BenchResults, type ContenderRun } from './report.js';
import type { ScenarioResult } from './scenarios/harness.js';

const contender = (id: string, isTokenRelay: boolean, measuredIn?: readonly string[]): Contender => ({
  id,
  name: id,
  client: 'fetch',
  isTokenRelay,
  ...(measuredIn ? { measuredIn } : {}),
  connect: () => ({ send: () => Promise.resolve({ ok: true }) }),
});
const ours = contender('ours', true);
const peer = contender('peer', false);
const layered = contender('layered', true, ['outage']);
const contenders = [ours, peer, layered];

const result: ScenarioResult = {
  requests: 1,
  succeeded: 1,
  failed: 0,
  hung: 0,
  expiries: 0,
  tokenCalls: 1,
  tokenSuccesses: 1,
  api401: 0,
  familiesRevoked: 0,
  refreshTokenReuses: 0,
  maxConcurrentTokenCalls: 1,
  settleMs: 1,
  errors: {},
  connectionErrors: 0,
  extra: {},
};
const run = (problems: string[], timingMisses: string[] = []): ContenderRun => ({
  ...result,
  problems,
  timingMisses,
  consoleLines: 0,
  unhandledRejections: 0,
});
const measured = { mode: 'short' as const, measuredAt: '2026-01-01T00:00:00.000Z', loadAverage: 0 };

function results(runs: Record<string, ContenderRun>, bundleBytes = { ours: 3_000, peer: 3_800 }): BenchResults {
  return {
    schema: 2,
    environment: { node: 'v20', cpu: 'cpu', cores: 2, loadAverage: 0, fullGc: true },
    scenarios: { outage: { ...measured, title: 'Outage', goal: 'few token calls', results: runs } },
    bundle: {
      ...measured,
      checks: [
        { name: 'ours', bytes: bundleBytes.ours, budgetBytes: 6_000, withinBudget: true },
        { name: 'peer', bytes: bundleBytes.peer },
      ],
      byContender: { ours: 'ours', peer: 'peer' },
      goal: { checks: ['ours'], below: 'peer' },
      withoutGrant: [],
    },
  };
}
const cells = { outage: () => 'cell' };

describe('failuresOf', () => {
  it("fails on tokenrelay's missed correctness goals, including a layered client's, and never on a timing miss", () => {
    const failures = failuresOf(
      results({ ours: run([], ['recovery took 2.0 s']), peer: run(['92 token calls']), layered: run(['9 token calls, alone 3']) }),
      contenders,
    );
    expect(failures).toEqual(['layered — Outage: 9 token calls, alone 3']);
  });
});

describe('renderMarkdown', () => {
  it('marks a timing miss in the cell and lists it as reported, not enforced', () => {
    const markdown = renderMarkdown(results({ ours: run([], ['recovery took 2.0 s']), peer: run([]) }), contenders, cells);
    expect(markdown).toContain('| Outage | few token calls | ❌ cell | ✅ cell | — |');
    expect(markdown).toContain('- ours — Outage: recovery took 2.0 s (timing: reported, not enforced)');
  });

  it('judges tokenrelay bundles against the peer named in the goal and leaves out contenders not measured there', () => {
    const within = renderMarkdown(results({}), contenders, cells);
    expect(within).toContain('| ✅ 3.00 kB · budget 6.00 kB ✅ | 3.80 kB | — |');
    const over = renderMarkdown(results({}, { ours: 3_900, peer: 3_800 }), contenders, cells);
    expect(over).toContain('| ❌ 3.90 kB · budget 6.00 kB ✅ | 3.80 kB | — |');
  });
});
