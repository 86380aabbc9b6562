/*
 * The process `pnpm bench:profile` starts under `node --cpu-prof`: the hot path of one contender
 * (canned transport, valid token) for a while, then exit so Node writes the profile. Prints the
 * request count and when the measured part started and ended.
 *
 *   node --cpu-prof --import tsx bench/profile/hot-path-child.ts <contender id> <milliseconds>
 */
import { contenders } from '../contenders/index.js';
import { runHotPath } from '../scenarios/hot-path.js';

/** Long enough for the optimizing compiler to settle before most samples are taken. */
const WARM_UP_MS = 500;

const [id = '', msArgument = ''] = process.argv.slice(2);
const contender = contenders.find((candidate) => candidate.id === id);
const ms = Number(msArgument);
if (!contender || !(ms > 0)) throw new Error(`usage: hot-path-child.ts <${contenders.map((candidate) => candidate.id).join('|')}> <ms>`);
await runHotPath(contender, WARM_UP_MS);
// Microseconds on the monotonic clock V8 stamps its samples with: the parent keeps the samples
// taken in between, leaving out start-up (the TypeScript loader) and the warm-up.
const fromMicros = Number(process.hrtime.bigint() / 1_000n);
const requests = await runHotPath(contender, ms);
const toMicros = Number(process.hrtime.bigint() / 1_000n);
process.stdout.write(`${JSON.stringify({ requests, fromMicros, toMicros })}\n`);
