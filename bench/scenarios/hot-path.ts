/*
 * Hot-path overhead: what a library adds to a request when the token is valid and nothing needs
 * refreshing — the cost every request pays. The network is taken out: axios gets a custom adapter
 * that answers a canned 200, fetch is replaced by a function that returns a canned Response. Each
 * contender is compared with the bare client underneath it, through the same Session plumbing.
 *
 * Method: each round runs one batch of sequential requests per contender (bare clients included),
 * starting with a different contender each round so none always runs first; warm-up rounds are
 * discarded. Reported: the median ns per request, and the median over rounds of the ratio to the
 * bare client's batch in the same round (pairing cancels slow phases of a busy machine).
 */
import type { AxiosAdapter } from 'axios';
import { bareAxios, bareFetch, type Contender, type ContenderSetup, type Session } from '../contenders/index.js';
import type { Mode } from './harness.js';

/** The hot path's id in `--only` and `Contender.measuredIn`. */
export const HOT_PATH_ID = 'hot-path';

export interface HotPathResult {
  /** The bare client this contender is compared with. */
  readonly baseline: string;
  readonly nsPerRequest: number;
  readonly baselineNsPerRequest: number;
  /** Median over rounds of (this contender's ns per request) / (the bare client's), same round. */
  readonly ratio: number;
  /** Median ns per request minus the bare client's. */
  readonly overheadNs: number;
  /**
   * The same ratio in process CPU time instead of wall-clock time: time the process spent
   * descheduled on a busy machine does not count, so it is steadier there.
   */
  readonly cpuRatio: number;
}

export interface HotPathReport {
  readonly rounds: number;
  readonly warmUpRounds: number;
  readonly requestsPerBatch: number;
  readonly results: Readonly<Record<string, HotPathResult>>;
}

/** Small batches and many rounds: a pair of batches runs close together in time, so they see the same machine. */
const plan: Record<Mode, { rounds: number; warmUpRounds: number; requestsPerBatch: number }> = {
  full: { rounds: 150, warmUpRounds: 10, requestsPerBatch: 250 },
  short: { rounds: 30, warmUpRounds: 5, requestsPerBatch: 100 },
};

const ORIGIN = 'http://127.0.0.1:9';
const ACCESS_TOKEN = 'hot-path-access-token';
const PATH = '/api/items';

const cannedAxiosAdapter: AxiosAdapter = async (config) => ({
  data: { ok: true },
  status: 200,
  statusText: 'OK',
  headers: { 'content-type': 'application/json' },
  config,
  request: {},
});

const cannedFetch = (async () =>
  new Response('{"ok":true}', { status: 200, headers: { 'content-type': 'application/json' } })) as typeof fetch;

function setup(axiosAdapter: AxiosAdapter): ContenderSetup {
  return {
    apiOrigin: ORIGIN,
    // Never called: the token stays valid for an hour.
    tokenEndpoint: `${ORIGIN}/oauth/token`,
    clientId: 'hot-path',
    clientSecret: 'hot-path-secret',
    tokens: { accessToken: ACCESS_TOKEN, refreshToken: 'hot-path-refresh-token', expiresAt: Date.now() + 3_600_000 },
    axiosAdapter,
  };
}

/** The bearer a canned transport saw on one request, or undefined. */
async function bearerSentBy(contender: Contender): Promise<string | undefined> {
  let seen: string | undefined;
  const adapter: AxiosAdapter = (config) => {
    seen = config.headers.get('Authorization')?.toString();
    return cannedAxiosAdapter(config);
  };
  const original = globalThis.fetch;
  globalThis.fetch = (async (input, init) => {
    seen = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined)).get('authorization') ?? undefined;
    return cannedFetch(input, init);
  }) as typeof fetch;
  try {
    const outcome = await contender.connect(setup(adapter)).send(PATH);
    if (!outcome.ok) throw new Error(`${contender.name}: the canned request failed (${outcome.error ?? outcome.status})`);
    return seen;
  } finally {
    globalThis.fetch = original;
  }
}

const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
};

/** Median over rounds of sample / baseline sample of the same round, to three decimals. */
const pairedRatio = (samples: readonly number[], baseline: readonly number[]) =>
  Number(median(samples.map((sample, round) => sample / (baseline[round] || sample))).toFixed(3));

/** Measures every contender against its bare client. */
export async function measureHotPath(contenders: readonly Contender[], mode: Mode): Promise<HotPathReport> {
  const { rounds, warmUpRounds, requestsPerBatch } = plan[mode];
  // First prove each contender really sends the bearer through the canned transport: we must time the real path.
  for (const contender of contenders) {
    const bearer = await bearerSentBy(contender);
    if (bearer !== `Bearer ${ACCESS_TOKEN}`) throw new Error(`${contender.name} did not send the bearer token on the hot path`);
  }

  const original = globalThis.fetch;
  globalThis.fetch = cannedFetch;
  try {
    const measured: { contender: Contender; session: Session; samples: number[]; cpuSamples: number[] }[] = [
      bareAxios,
      bareFetch,
      ...contenders,
    ].map((contender) => ({ contender, session: contender.connect(setup(cannedAxiosAdapter)), samples: [], cpuSamples: [] }));
    for (let round = 0; round < warmUpRounds + rounds; round++) {
      for (let offset = 0; offset < measured.length; offset++) {
        const entry = measured[(round + offset) % measured.length];
        if (!entry) continue;
        const cpuAtStart = process.cpuUsage();
        const startedAt = process.hrtime.bigint();
        for (let request = 0; request < requestsPerBatch; request++) {
          const outcome = await entry.session.send(PATH);
          if (!outcome.ok) throw new Error(`${entry.contender.name}: a canned request failed on the hot path`);
        }
        const nsPerRequest = Number(process.hrtime.bigint() - startedAt) / requestsPerBatch;
        const cpu = process.cpuUsage(cpuAtStart);
        if (round >= warmUpRounds) {
          entry.samples.push(nsPerRequest);
          entry.cpuSamples.push(((cpu.user + cpu.system) * 1_000) / requestsPerBatch);
        }
      }
    }

    const results: Record<string, HotPathResult> = {};
    for (const entry of measured) {
      const baseline = entry.contender.client === 'axios' ? bareAxios : bareFetch;
      const bare = measured.find((candidate) => candidate.contender === baseline) ?? entry;
      const ns = median(entry.samples);
      const baselineNs = median(bare.samples);
      results[entry.contender.id] = {
        baseline: baseline.name,
        nsPerRequest: Math.round(ns),
        baselineNsPerRequest: Math.round(baselineNs),
        ratio: pairedRatio(entry.samples, bare.samples),
        overheadNs: Math.round(ns - baselineNs),
        cpuRatio: pairedRatio(entry.cpuSamples, bare.cpuSamples),
      };
    }
    return { rounds, warmUpRounds, requestsPerBatch, results };
  } finally {
    globalThis.fetch = original;
  }
}

/**
 * Sends hot-path requests through `contender` (canned transport, valid token) for `ms`: the
 * workload `pnpm bench:profile` runs under `node --cpu-prof`. Returns how many it sent.
 */
export async function runHotPath(contender: Contender, ms: number): Promise<number> {
  const original = globalThis.fetch;
  globalThis.fetch = cannedFetch;
  try {
    const session = contender.connect(setup(cannedAxiosAdapter));
    const stopAt = performance.now() + ms;
    let requests = 0;
    while (performance.now() < stopAt) {
      const outcome = await session.send(PATH);
      if (!outcome.ok) throw new Error(`${contender.name}: a canned request failed on the hot path`);
      requests++;
    }
    return requests;
  } finally {
    globalThis.fetch = original;
  }
}
