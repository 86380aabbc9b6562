/*
 * `pnpm bench`: tokenrelay against axios-auth-refresh, @badgateway/oauth2-client and a naive axios
 * interceptor, on the same workloads, against @tokenrelay/testing's OAuth server on 127.0.0.1.
 *
 *   pnpm bench                          full run (for the README)
 *   pnpm bench:short                    CI: smaller, exit 1 if tokenrelay misses a correctness goal
 *                                       or a size budget (never on timings); timing-only scenarios
 *                                       are left out unless named with --only
 *   pnpm bench --only hot-path,queue-behind-slow-refresh
 *                                       re-measure some parts; the rest of latest.json is kept
 *
 * Prints one markdown table and writes bench/results/latest.json and latest.md.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { contenders, takesPart, type Contender } from './contenders/index.js';
import { failuresOf, renderMarkdown, type BenchResults, type ContenderRun, type Measured, type ScenarioEntry } from './report.js';
import { BUNDLE_SIZE_ID, measureBundleSizes } from './scenarios/bundle-size.js';
import { burstAfterExpiry, burstAfterRevocation } from './scenarios/burst.js';
import { deadRefreshToken } from './scenarios/dead-refresh-token.js';
import { sizesFor, type HttpScenario, type Mode, type ScenarioResult } from './scenarios/harness.js';
import { HOT_PATH_ID, measureHotPath } from './scenarios/hot-path.js';
import { late401 } from './scenarios/late-401.js';
import { outage } from './scenarios/outage.js';
import { collectGarbage } from './scenarios/memory.js';
import { queueBehindSlowRefresh } from './scenarios/queue.js';
import { releaseAfterRefresh } from './scenarios/release.js';
import { rotation } from './scenarios/rotation.js';
import { steady } from './scenarios/steady.js';
import { transient503 } from './scenarios/transient-503.js';
import { zeroStall } from './scenarios/zero-stall.js';
import { ServerHost } from './server/remote.js';

const scenarios: readonly HttpScenario[] = [
  burstAfterExpiry,
  burstAfterRevocation,
  late401,
  rotation,
  steady,
  deadRefreshToken,
  transient503,
  queueBehindSlowRefresh,
  releaseAfterRefresh,
  outage,
  zeroStall,
];
const partIds = [...scenarios.map((scenario) => scenario.id), HOT_PATH_ID, BUNDLE_SIZE_ID];

const resultsDir = fileURLToPath(new URL('./results/', import.meta.url));
const jsonPath = `${resultsDir}latest.json`;
const markdownPath = `${resultsDir}latest.md`;

function parseArgs(argv: readonly string[]): { mode: Mode; only: ReadonlySet<string> | undefined } {
  let mode: Mode = 'full';
  let only: Set<string> | undefined;
  for (let index = 0; index < argv.length; index++) {
    const arg = argv[index] ?? '';
    if (arg === '--short') mode = 'short';
    else if (arg === '--only' || arg.startsWith('--only=')) {
      const list = arg === '--only' ? argv[++index] : arg.slice('--only='.length);
      only = new Set((list ?? '').split(',').filter(Boolean));
      const unknown = [...only].filter((id) => !partIds.includes(id));
      if (unknown.length > 0 || only.size === 0) {
        throw new Error(`--only takes a comma-separated list of: ${partIds.join(', ')}`);
      }
    } else if (arg !== '--') throw new Error(`unknown argument ${arg}; use --short and/or --only <parts>`);
  }
  return { mode, only };
}

const measured = (mode: Mode): Measured => ({ mode, measuredAt: new Date().toISOString(), loadAverage: loadavg()[0] ?? 0 });

/**
 * Runs `body` with the console silenced (libraries warn on every failed refresh) and counts what
 * the libraries wrote and which promise rejections nobody handled.
 */
async function observed<T>(body: () => Promise<T>): Promise<{ value: T; consoleLines: number; unhandledRejections: number }> {
  let consoleLines = 0;
  let unhandledRejections = 0;
  const methods = ['log', 'info', 'warn', 'error', 'debug'] as const;
  const saved = methods.map((method) => console[method]);
  for (const method of methods) console[method] = () => void consoleLines++;
  const onRejection = () => void unhandledRejections++;
  process.on('unhandledRejection', onRejection);
  try {
    return { value: await body(), consoleLines, unhandledRejections };
  } finally {
    methods.forEach((method, index) => (console[method] = saved[index] ?? console[method]));
    process.off('unhandledRejection', onRejection);
  }
}

async function runScenario(host: ServerHost, scenario: HttpScenario, contender: Contender, mode: Mode): Promise<ContenderRun> {
  const startedAt = performance.now();
  process.stderr.write(`  ${scenario.id} · ${contender.name} … `);
  let run: ContenderRun;
  try {
    const { value, consoleLines, unhandledRejections } = await observed(() =>
      scenario.run({ host, contender, sizes: sizesFor[mode] }),
    );
    const problems = scenario.check(value);
    if (unhandledRejections > 0) problems.push(`${unhandledRejections} unhandled promise rejections`);
    run = { ...value, problems, timingMisses: scenario.timingCheck?.(value) ?? [], consoleLines, unhandledRejections };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    run = { error: message, problems: [`the run failed: ${message}`] };
  }
  collectGarbage?.();
  process.stderr.write(`${((performance.now() - startedAt) / 1_000).toFixed(1)} s${run.problems.length ? ' (goal missed)' : ''}\n`);
  return run;
}

/** Adds to each layered contender's problems where it did worse than the contender it is layered on. */
function compareLayered(scenario: HttpScenario, results: Record<string, ContenderRun>): void {
  for (const contender of contenders) {
    const run = results[contender.id];
    const base = contender.layeredOn === undefined ? undefined : results[contender.layeredOn];
    if (!scenario.compareWithBase || !run || 'error' in run || !base || 'error' in base) continue;
    results[contender.id] = { ...run, problems: [...run.problems, ...scenario.compareWithBase(run, base)] };
  }
}

async function previousResults(): Promise<BenchResults | undefined> {
  try {
    const parsed = JSON.parse(await readFile(jsonPath, 'utf8')) as BenchResults;
    return parsed.schema === 2 ? parsed : undefined;
  } catch {
    return undefined;
  }
}

async function main(): Promise<number> {
  const { mode, only } = parseArgs(process.argv.slice(2));
  const wanted = (id: string) => only === undefined || only.has(id);
  const previous = only ? await previousResults() : undefined;
  const processors = cpus();
  const environment = {
    node: process.version,
    cpu: processors[0]?.model.trim() ?? 'unknown CPU',
    cores: processors.length,
    loadAverage: loadavg()[0] ?? 0,
    fullGc: collectGarbage !== undefined,
  };
  process.stderr.write(`tokenrelay bench (${mode}), load average ${environment.loadAverage.toFixed(1)} on ${environment.cores} cores\n`);

  const scenarioEntries: Record<string, ScenarioEntry> = {};
  // CI never judges timings: a scenario that measures only timings runs in short mode when named.
  const selected = scenarios.filter(
    (scenario) => wanted(scenario.id) && (mode === 'full' || !scenario.timingOnly || only?.has(scenario.id) === true),
  );
  if (selected.length > 0) {
    const host = await ServerHost.start();
    try {
      for (const scenario of selected) {
        const results: Record<string, ContenderRun> = {};
        const at = measured(mode);
        for (const contender of contenders.filter((candidate) => takesPart(candidate, scenario.id))) {
          results[contender.id] = await runScenario(host, scenario, contender, mode);
        }
        compareLayered(scenario, results);
        scenarioEntries[scenario.id] = { ...at, title: scenario.title(sizesFor[mode]), goal: scenario.goal, results };
      }
    } finally {
      await host.close();
    }
  }
  // Keep the table's order: every scenario in its place, re-measured or carried over.
  const orderedScenarios: Record<string, ScenarioEntry> = {};
  for (const scenario of scenarios) {
    const entry = scenarioEntries[scenario.id] ?? previous?.scenarios[scenario.id];
    if (entry) orderedScenarios[scenario.id] = entry;
  }

  let hotPath = previous?.hotPath;
  if (wanted(HOT_PATH_ID)) {
    process.stderr.write('  hot path (no I/O) … ');
    const at = measured(mode);
    hotPath = { ...at, ...(await measureHotPath(contenders.filter((contender) => takesPart(contender, HOT_PATH_ID)), mode)) };
    process.stderr.write('done\n');
  }
  let bundle = previous?.bundle;
  if (wanted(BUNDLE_SIZE_ID)) {
    process.stderr.write('  bundle size (size-limit) … ');
    const at = measured(mode);
    bundle = { ...at, ...(await measureBundleSizes()) };
    process.stderr.write('done\n');
  }

  const results: BenchResults = {
    schema: 2,
    environment,
    scenarios: orderedScenarios,
    ...(hotPath ? { hotPath } : {}),
    ...(bundle ? { bundle } : {}),
  };
  const cells = Object.fromEntries(scenarios.map((scenario) => [scenario.id, scenario.cell])) as Record<
    string,
    (result: ScenarioResult) => string
  >;
  const markdown = renderMarkdown(results, contenders, cells);
  await mkdir(resultsDir, { recursive: true });
  await writeFile(jsonPath, `${JSON.stringify(results, null, 2)}\n`);
  await writeFile(markdownPath, markdown);
  console.log(`\n${markdown}`);
  console.log(`Written: bench/results/latest.json, bench/results/latest.md`);

  const failures = failuresOf(results, contenders);
  if (failures.length > 0) {
    console.error(`\nFAIL: tokenrelay missed ${failures.length} goal(s):\n${failures.map((failure) => `- ${failure}`).join('\n')}`);
    return 1;
  }
  return 0;
}

main().then(
  // Exit explicitly: @badgateway/oauth2-client schedules refresh timers that no API can cancel.
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
