/*
 * What the loopback scenarios share: a fresh OAuth server per (scenario, contender), requests
 * fired and counted with a bound on how long anything may take, and one result shape.
 */
import type { TokenSet } from '@tokenrelay/core';
import type { OAuthServerOptions } from '@tokenrelay/testing';
import { defaultClient } from '@tokenrelay/testing';
import type { Contender, Outcome, Session } from '../contenders/index.js';
import type { RemoteOAuthServer, ServerHost } from '../server/remote.js';

export type Mode = 'full' | 'short';

/** How big each scenario is: `full` for the README, `short` for CI (smaller; the outage keeps its 3 s, which its goal is about). */
export interface Sizes {
  /** Requests in each burst. */
  readonly burst: number;
  /** Slow requests whose 401 lands after the refresh. */
  readonly lateRequests: number;
  /** How long the slow requests wait at the server before their token is checked. */
  readonly lateDelayMs: number;
  readonly rotationRounds: number;
  readonly rotationBurst: number;
  readonly steadyMs: number;
  readonly steadyClients: number;
  /** Requests in each of the two waves after the refresh token died. */
  readonly deadWave: number;
  readonly transientBurst: number;
  /** Requests queued behind one slow refresh. */
  readonly queued: number;
  /** How long that refresh takes. */
  readonly queueRefreshMs: number;
  /** Workers sending steady traffic through the token endpoint's outage. */
  readonly outageWorkers: number;
  /** Steady traffic before the outage starts, and after it ends. */
  readonly outageLeadMs: number;
  readonly outageTailMs: number;
  /** Workers and duration of the traffic across proactive refreshes against a slow token endpoint. */
  readonly zeroStallWorkers: number;
  readonly zeroStallMs: number;
  /** No request may take longer than this; one that does counts as hung. */
  readonly boundMs: number;
}

export const sizesFor: Record<Mode, Sizes> = {
  full: {
    burst: 1_000,
    lateRequests: 20,
    lateDelayMs: 1_500,
    rotationRounds: 20,
    rotationBurst: 50,
    steadyMs: 6_000,
    steadyClients: 10,
    deadWave: 200,
    transientBurst: 200,
    queued: 10_000,
    queueRefreshMs: 3_000,
    outageWorkers: 10,
    outageLeadMs: 1_500,
    outageTailMs: 2_000,
    zeroStallWorkers: 10,
    zeroStallMs: 9_000,
    boundMs: 20_000,
  },
  short: {
    burst: 300,
    lateRequests: 10,
    lateDelayMs: 1_500,
    rotationRounds: 5,
    rotationBurst: 20,
    steadyMs: 2_500,
    steadyClients: 5,
    deadWave: 100,
    transientBurst: 100,
    queued: 1_000,
    queueRefreshMs: 1_500,
    outageWorkers: 10,
    outageLeadMs: 1_000,
    outageTailMs: 1_500,
    zeroStallWorkers: 5,
    zeroStallMs: 5_000,
    boundMs: 10_000,
  },
};

export interface RunContext {
  readonly host: ServerHost;
  readonly contender: Contender;
  readonly sizes: Sizes;
}

/** What one contender did in one scenario. */
export interface ScenarioResult {
  readonly requests: number;
  readonly succeeded: number;
  readonly failed: number;
  /** Requests that had not settled when the bound ran out. */
  readonly hung: number;
  /** How many times the access token stopped being valid (each needs exactly one token call). */
  readonly expiries: number;
  /** Every token endpoint call, failed ones included. */
  readonly tokenCalls: number;
  readonly tokenSuccesses: number;
  /** 401 answers of the API (round trips wasted on a dead token). */
  readonly api401: number;
  readonly familiesRevoked: number;
  readonly refreshTokenReuses: number;
  readonly maxConcurrentTokenCalls: number;
  /** From the first request sent until the last one settled (or the bound ran out). */
  readonly settleMs: number;
  /** Failures by label (`HTTP 401`, `SESSION_EXPIRED`, `ERR_CANCELED`, …). */
  readonly errors: Readonly<Record<string, number>>;
  /** Failed requests whose connection broke (reset, refused, closed): the load, not a token decision. */
  readonly connectionErrors: number;
  /** Scenario-specific measurements. */
  readonly extra: Readonly<Record<string, number | string | boolean>>;
}

/** A scenario over real HTTP to the loopback OAuth server, the same for every contender. */
export interface HttpScenario {
  readonly id: string;
  /** Row title, e.g. "Burst: 1,000 concurrent requests after expiry". */
  title(sizes: Sizes): string;
  /** The goal, in words, as in the issue. */
  readonly goal: string;
  /**
   * Its goals are timings, and its correctness checks repeat other scenarios': short mode (CI,
   * which never judges timings) leaves it out unless `--only` names it.
   */
  readonly timingOnly?: boolean;
  run(context: RunContext): Promise<ScenarioResult>;
  /** Where `result` misses the goal; empty when it meets it. Fails the run for tokenrelay. */
  check(result: ScenarioResult): string[];
  /** Where `result` misses a timing goal: marked and listed, never failing the run. */
  timingCheck?(result: ScenarioResult): string[];
  /**
   * For a contender layered on another (`Contender.layeredOn`): where its result is worse than
   * that contender's in the same run. Counts as part of `check`.
   */
  compareWithBase?(result: ScenarioResult, base: ScenarioResult): string[];
  /** The table cell: the few numbers that tell the story. */
  cell(result: ScenarioResult): string;
}

/** The client every scenario uses (`client_secret_basic`, the testing server's default). */
export const client = { clientId: defaultClient.clientId, clientSecret: defaultClient.clientSecret ?? '' };

/** Runs `body` against a fresh OAuth server, closed afterwards whatever happens. */
export async function withServer<T>(
  host: ServerHost,
  options: OAuthServerOptions,
  body: (server: RemoteOAuthServer) => Promise<T>,
): Promise<T> {
  const server = await host.startServer(options);
  try {
    return await body(server);
  } finally {
    await server.close();
  }
}

/** Signs in at `server` and connects the contender with that session (tokens adjusted by `edit`). */
export async function signIn(
  contender: Contender,
  server: RemoteOAuthServer,
  edit: (tokens: TokenSet) => TokenSet = (tokens) => tokens,
): Promise<Session> {
  const tokens = edit(await server.issue());
  return contender.connect({ apiOrigin: server.url, tokenEndpoint: server.tokenEndpoint, ...client, tokens });
}

/** Outcomes of a group of requests. */
export interface Batch {
  readonly requests: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly hung: number;
  readonly settleMs: number;
  readonly errors: Readonly<Record<string, number>>;
}

/** Counts outcomes until it is closed; an outcome that arrives later is a hung request. */
export class Tally {
  requests = 0;
  succeeded = 0;
  failed = 0;
  readonly errors: Record<string, number> = {};
  #closed = false;

  /** Sends through `session` and counts the outcome (if it arrives before close). */
  track(session: Session, path: string): Promise<void> {
    this.requests++;
    return session.send(path).then(
      (outcome) => this.#add(outcome),
      (error: unknown) => this.#add({ ok: false, error: `rejected: ${error instanceof Error ? error.name : typeof error}` }),
    );
  }

  #add(outcome: Outcome): void {
    if (this.#closed) return;
    if (outcome.ok) {
      this.succeeded++;
      return;
    }
    this.failed++;
    const label = outcome.error ?? `HTTP ${outcome.status ?? '?'}`;
    this.errors[label] = (this.errors[label] ?? 0) + 1;
  }

  /** Stops counting; what has not settled by now is hung. */
  close(settleMs: number): Batch {
    this.#closed = true;
    const hung = this.requests - this.succeeded - this.failed;
    return { requests: this.requests, succeeded: this.succeeded, failed: this.failed, hung, settleMs, errors: { ...this.errors } };
  }
}

/** When a request started and settled (`performance.now()`), and how it ended. */
export interface TimedOutcome {
  readonly outcome: Outcome;
  readonly startedAt: number;
  readonly settledAt: number;
}

/** The same session, reporting every outcome with its timing to `observe`. */
export function timedSession(session: Session, observe: (timed: TimedOutcome) => void): Session {
  return {
    async send(path) {
      const startedAt = performance.now();
      const outcome = await session.send(path);
      observe({ outcome, startedAt, settledAt: performance.now() });
      return outcome;
    },
  };
}

/**
 * Steady traffic: `workers` loops each send a request, wait `pauseMs`, and again, until `stopAt`
 * (`performance.now()` time). A request that outlives `boundMs` stops its worker; the tally
 * counts it as hung.
 */
export async function steadyTraffic(
  tally: Tally,
  session: Session,
  { workers, stopAt, pauseMs, boundMs, path }: { workers: number; stopAt: number; pauseMs: number; boundMs: number; path: string },
): Promise<void> {
  const worker = async () => {
    while (performance.now() < stopAt) {
      if (!(await settlesWithin(tally.track(session, path), boundMs))) return;
      await sleep(pauseMs);
    }
  };
  await Promise.all(Array.from({ length: workers }, worker));
}

/** Resolves true when `promise` settles within `ms`, false when the time runs out first. */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Sends every path at once and waits until all settled or `boundMs` ran out. */
export async function sendAll(session: Session, paths: readonly string[], boundMs: number): Promise<Batch> {
  const tally = new Tally();
  const startedAt = performance.now();
  let lastSettledAt = startedAt;
  const requests = paths.map((path) => tally.track(session, path).then(() => void (lastSettledAt = performance.now())));
  const settled = await settlesWithin(Promise.all(requests), boundMs);
  return tally.close(settled ? lastSettledAt - startedAt : boundMs);
}

/** Adds batches up: counts and times are summed. */
export function combine(batches: readonly Batch[]): Batch {
  const errors: Record<string, number> = {};
  for (const batch of batches) {
    for (const [label, count] of Object.entries(batch.errors)) errors[label] = (errors[label] ?? 0) + count;
  }
  const sum = (pick: (batch: Batch) => number) => batches.reduce((total, batch) => total + pick(batch), 0);
  return {
    requests: sum((batch) => batch.requests),
    succeeded: sum((batch) => batch.succeeded),
    failed: sum((batch) => batch.failed),
    hung: sum((batch) => batch.hung),
    settleMs: sum((batch) => batch.settleMs),
    errors,
  };
}

/** Builds the result from what the client saw and what the server counted. */
export async function resultOf(
  server: RemoteOAuthServer,
  batch: Batch,
  expiries: number,
  extra: Record<string, number | string | boolean> = {},
): Promise<ScenarioResult> {
  const stats = await server.stats();
  return {
    requests: batch.requests,
    succeeded: batch.succeeded,
    failed: batch.failed,
    hung: batch.hung,
    expiries,
    tokenCalls: stats.tokenRequests,
    tokenSuccesses: stats.tokenSuccesses,
    api401: stats.api401,
    familiesRevoked: stats.familiesRevoked,
    refreshTokenReuses: stats.refreshTokenReuses,
    maxConcurrentTokenCalls: stats.maxInFlightTokenRequests,
    settleMs: Math.round(batch.settleMs),
    errors: batch.errors,
    connectionErrors: Object.entries(batch.errors)
      .filter(([label]) => isConnectionError(label))
      .reduce((total, [, value]) => total + value, 0),
    extra,
  };
}

/**
 * A failure label that says the connection broke (axios's `ECONNRESET`, fetch's
 * `TypeError (UND_ERR_SOCKET)`, …): on one small machine at thousands of concurrent requests the
 * loopback server sheds some, whatever the client library.
 */
export const isConnectionError = (label: string) =>
  /\b(ECONNRESET|ECONNREFUSED|EPIPE|UND_ERR_SOCKET|UND_ERR_CLOSED|ERR_SOCKET_CONNECTION_TIMEOUT)\b/.test(label);

/** "0 failed", "3 failed", or "0 failed (+1 connection error)" when connections broke. */
export function failedText(result: ScenarioResult, of?: number): string {
  const failed = `${count(result.failed - result.connectionErrors)} failed${of === undefined ? '' : ` of ${count(of)}`}`;
  return result.connectionErrors === 0 ? failed : `${failed} (+${plural(result.connectionErrors, 'connection error')})`;
}

/** Waits until `condition` holds, polling every 10 ms, for at most `ms`; returns whether it held. */
export async function waitFor(condition: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    if (await condition()) return true;
    await sleep(10);
  }
  return condition();
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Paths `/api/<name>/0` … so each request is distinct in the server's log. */
export const paths = (name: string, count: number, query = '') =>
  Array.from({ length: count }, (_, index) => `/api/${name}/${index}${query}`);

/** "1,000" */
export const count = (value: number) => value.toLocaleString('en-US');

/** "340 ms" or "2.4 s" */
export function duration(ms: number): string {
  return ms < 1_000 ? `${Math.round(ms)} ms` : `${(ms / 1_000).toFixed(1)} s`;
}

/** "1 call" / "3 calls" */
export const plural = (value: number, word: string) => `${count(value)} ${word}${value === 1 ? '' : 's'}`;
