/*
 * `pnpm bench:profile`: the hot path (canned transport, valid token: what every request pays)
 * of tokenrelay's axios and fetch adapters, each in its own `node --cpu-prof` process, and the
 * functions with the most self time. The profiles stay in bench/results/ for Chrome DevTools
 * (Performance → Load profile) or speedscope.
 *
 *   pnpm bench:profile                   5 s per adapter, top 15 frames
 *   pnpm bench:profile --seconds 10 --top 25
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { tokenRelayAxios, tokenRelayFetch } from './contenders/index.js';
import { topSelfTimeFrames, type CpuProfile, type Frame, type Window } from './profile/cpu-profile.js';

const resultsDir = fileURLToPath(new URL('./results/', import.meta.url));
const child = fileURLToPath(new URL('./profile/hot-path-child.ts', import.meta.url));
/** The child runs for the requested time plus start-up; past this something is wrong. */
const CHILD_SLACK_MS = 60_000;

function parseArgs(argv: readonly string[]): { seconds: number; top: number } {
  const options = { seconds: 5, top: 15 };
  for (let index = 0; index < argv.length; index++) {
    const arg = argv[index];
    const value = Number(argv[index + 1]);
    if ((arg === '--seconds' || arg === '--top') && Number.isFinite(value) && value > 0) {
      options[arg === '--seconds' ? 'seconds' : 'top'] = value;
      index++;
    } else if (arg !== '--') throw new Error(`unknown argument ${String(arg)}; use --seconds <n> and/or --top <n>`);
  }
  return options;
}

/** Runs the hot path of one contender under `node --cpu-prof`; returns the profile's path, the requests sent and when. */
async function profileOf(contenderId: string, seconds: number): Promise<{ path: string; requests: number } & Window> {
  const name = `hot-path-${contenderId}.cpuprofile`;
  await rm(`${resultsDir}${name}`, { force: true });
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(
      process.execPath,
      ['--cpu-prof', '--cpu-prof-dir', resultsDir, '--cpu-prof-name', name, '--import', 'tsx', child, contenderId, String(seconds * 1_000)],
      { timeout: seconds * 1_000 + CHILD_SLACK_MS },
      (error, out, stderr) => (error ? reject(new Error(`${contenderId}: ${stderr || error.message}`)) : resolve(out)),
    );
  });
  const measured = JSON.parse(stdout) as { requests: number } & Window;
  return { path: `${resultsDir}${name}`, ...measured };
}

function printFrames(title: string, frames: readonly Frame[]): void {
  console.log(`\n${title}:\n\n| self ms | self % | frame |\n| ---: | ---: | --- |`);
  for (const { frame, selfMs, selfPercent } of frames) {
    console.log(`| ${selfMs.toFixed(1)} | ${selfPercent.toFixed(1)} | \`${frame.replaceAll('|', '\\|')}\` |`);
  }
}

async function main(): Promise<void> {
  const { seconds, top } = parseArgs(process.argv.slice(2));
  await mkdir(resultsDir, { recursive: true });
  for (const contender of [tokenRelayAxios, tokenRelayFetch]) {
    process.stderr.write(`profiling the hot path of ${contender.name} for ${seconds} s …\n`);
    const { path, requests, ...window } = await profileOf(contender.id, seconds);
    const profile = JSON.parse(await readFile(path, 'utf8')) as CpuProfile;
    console.log(`\n### ${contender.name}: ${requests.toLocaleString('en-US')} requests in ${seconds} s (profile: ${path})`);
    printFrames('All frames', topSelfTimeFrames(profile, window, top));
    printFrames("tokenrelay's own frames (packages/)", topSelfTimeFrames(profile, window, top, (frame) => frame.includes(' packages/')));
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
