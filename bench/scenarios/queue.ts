import type { Session } from '../contenders/index.js';
import type { RemoteOAuthServer } from '../server/remote.js';
import { noFailedRequests, oneTokenCallPerExpiry } from './goals.js';
import { liveHeapBytes } from './memory.js';
import {
  Tally,
  count,
  failedText,
  duration,
  paths,
  plural,
  resultOf,
  settlesWithin,
  signIn,
  sleep,
  waitFor,
  withServer,
  type Batch,
  type HttpScenario,
  type Sizes,
} from './harness.js';

/** Time for the requests just sent to reach wherever they wait before the heap is sampled. */
const PARK_MS = 50;

/**
 * A request meets a revoked token and starts a refresh that takes long (the token endpoint is
 * slow once). While it runs, thousands of requests arrive. Measured: the live heap while they
 * wait (after a full GC, minus the heap before the refresh started), and the drain time: from
 * the token endpoint's answer to the last request settling.
 */
export const queueBehindSlowRefresh: HttpScenario = {
  id: 'queue-behind-slow-refresh',
  title: (sizes) => `${count(sizes.queued)} requests queued behind one ${duration(sizes.queueRefreshMs)} refresh`,
  goal: '1 token call, 0 failed; heap and drain time reported',
  async run({ host, contender, sizes }) {
    return withServer(host, {}, async (server) => {
      const session = await signIn(contender, server);
      let heapBefore = 0;
      let heapQueued = 0;
      let sampledAt = 0;
      const queued = await sendQueuedBehindSlowRefresh(server, session, sizes, {
        beforeRefresh: () => void (heapBefore = liveHeapBytes()),
        whileQueued: async () => {
          await sleep(PARK_MS);
          heapQueued = liveHeapBytes();
          sampledAt = Date.now();
        },
      });
      const { batch, refreshStarted, refreshAnsweredAt, lastSettledAt, settled, sendLoopMs } = queued;
      const heapDelta = heapQueued - heapBefore;
      return resultOf(server, batch, 1, {
        heapDeltaBytes: heapDelta,
        heapBytesPerRequest: Math.round(heapDelta / sizes.queued),
        sampledDuringRefresh: refreshStarted && refreshAnsweredAt !== undefined && sampledAt < refreshAnsweredAt,
        drainAfterRefreshMs:
          settled && refreshAnsweredAt !== undefined ? Math.max(0, lastSettledAt - refreshAnsweredAt) : sizes.boundMs,
        sendLoopMs: Math.round(sendLoopMs),
      });
    });
  },
  check: (result) => [...oneTokenCallPerExpiry(result), ...noFailedRequests(result)],
  cell: (result) =>
    `${plural(result.tokenCalls, 'token call')} · ${failedText(result)} · heap +${megabytes(
      Number(result.extra.heapDeltaBytes),
    )}${result.extra.sampledDuringRefresh === true ? '' : ' (sampled late)'} · drain ${duration(
      Number(result.extra.drainAfterRefreshMs),
    )}`,
};

function megabytes(bytes: number): string {
  return `${(bytes / 1_048_576).toFixed(1)} MB`;
}

/** How a queue of requests behind one slow refresh went. */
export interface QueuedRequests {
  readonly batch: Batch;
  /** The slow token call had arrived before the queued requests were sent. */
  readonly refreshStarted: boolean;
  /** When the slow token call was answered (epoch ms; the server runs on this machine's clock). */
  readonly refreshAnsweredAt: number | undefined;
  /** When the last request settled (epoch ms). */
  readonly lastSettledAt: number;
  readonly settled: boolean;
  /** How long the loop sending the queued requests took. */
  readonly sendLoopMs: number;
}

/**
 * Makes the next token call slow and the access token dead, sends a request that starts the
 * refresh, then `sizes.queued` requests while it runs, and waits for all of them (within the bound).
 */
export async function sendQueuedBehindSlowRefresh(
  server: RemoteOAuthServer,
  session: Session,
  sizes: Sizes,
  hooks: { beforeRefresh?: () => void; whileQueued?: () => Promise<void> } = {},
): Promise<QueuedRequests> {
  await server.failNextTokenRequests(1, { kind: 'slow', delayMs: sizes.queueRefreshMs });
  await server.revokeAccessTokens();
  hooks.beforeRefresh?.();
  const tally = new Tally();
  const trigger = tally.track(session, '/api/trigger');
  const refreshStarted = await waitFor(async () => (await server.stats()).tokenRequests >= 1, sizes.queueRefreshMs / 2);

  const startedAt = performance.now();
  let lastSettledAt = Date.now();
  const requests = paths('queued', sizes.queued).map((path) =>
    tally.track(session, path).then(() => void (lastSettledAt = Date.now())),
  );
  const sendLoopMs = performance.now() - startedAt;
  await hooks.whileQueued?.();

  const settled = await settlesWithin(Promise.all([trigger, ...requests]), sizes.boundMs);
  const batch = tally.close(settled ? performance.now() - startedAt : sizes.boundMs);
  // The first token call is the slow one: it arrived at tokenIssuedAt[0] and was answered queueRefreshMs later.
  const firstTokenCallAt = (await server.stats()).tokenIssuedAt[0];
  const refreshAnsweredAt = firstTokenCallAt === undefined ? undefined : firstTokenCallAt + sizes.queueRefreshMs;
  return { batch, refreshStarted, refreshAnsweredAt, lastSettledAt, settled, sendLoopMs };
}
