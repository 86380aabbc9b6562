import axios, { type AxiosAdapter, type InternalAxiosRequestConfig } from 'axios';
import { noFailedRequests, oneTokenCallPerExpiry } from './goals.js';
import { client, count, duration, failedText, plural, resultOf, withServer, type HttpScenario } from './harness.js';
import { sendQueuedBehindSlowRefresh } from './queue.js';

/** The issue's goal for tokenrelay: the last waiter sent within this time of the token response. */
export const RELEASE_GOAL_MS = 100;

/**
 * How fast the requests that waited for a refresh are let go: the same queue as
 * `queue-behind-slow-refresh`, with the transport (axios's HTTP adapter, the global fetch)
 * recording when each API request is handed to it (and sending it on the next turn of the event
 * loop, so the transport's own work is not counted). Release time: from the token endpoint's answer
 * to the last API request handed to the transport after it. A contender that does not queue
 * sends most requests before the answer (they meet the dead token and are replayed): its cell
 * says so, and its release time is that of the replays.
 */
export const releaseAfterRefresh: HttpScenario = {
  id: 'release-after-refresh',
  timingOnly: true,
  title: (sizes) => `Release: ${count(sizes.queued)} waiters sent after one ${duration(sizes.queueRefreshMs)} refresh`,
  goal: `last waiter sent < ${duration(RELEASE_GOAL_MS)} after the token response (timing); 1 token call, 0 failed`,
  async run({ host, contender, sizes }) {
    return withServer(host, {}, async (server) => {
      const sentAt: number[] = [];
      const isApiRequest = (url: string) => url.startsWith(`${server.url}/api/`);
      const restoreFetch = recordFetch(isApiRequest, sentAt);
      try {
        const session = contender.connect({
          apiOrigin: server.url,
          tokenEndpoint: server.tokenEndpoint,
          ...client,
          tokens: await server.issue(),
          axiosAdapter: recordingAxiosAdapter(isApiRequest, sentAt),
        });
        const { batch, refreshAnsweredAt } = await sendQueuedBehindSlowRefresh(server, session, sizes);
        const answeredAt = refreshAnsweredAt ?? Number.POSITIVE_INFINITY;
        const sentAfter = sentAt.filter((at) => at >= answeredAt);
        const sinceAnswer = (at: number) => Math.round((at - answeredAt) * 10) / 10;
        return resultOf(server, batch, 1, {
          sentBeforeTokenResponse: sentAt.length - sentAfter.length,
          sentAfterTokenResponse: sentAfter.length,
          ...(sentAfter.length === 0
            ? {}
            : { firstSentMs: sinceAnswer(Math.min(...sentAfter)), releaseMs: sinceAnswer(Math.max(...sentAfter)) }),
        });
      } finally {
        restoreFetch();
      }
    });
  },
  check: (result) => [...oneTokenCallPerExpiry(result), ...noFailedRequests(result)],
  timingCheck: (result) => {
    const releaseMs = result.extra.releaseMs;
    if (releaseMs === undefined) return ['no request was sent after the token response'];
    return Number(releaseMs) < RELEASE_GOAL_MS ? [] : [`the last waiter was sent ${duration(Number(releaseMs))} after the token response`];
  },
  cell: (result) => {
    const release =
      result.extra.releaseMs === undefined
        ? 'none sent after the token response'
        : `release ${duration(Number(result.extra.releaseMs))} (first sent after ${duration(Number(result.extra.firstSentMs))})`;
    // The trigger request is sent before the refresh by design; more than that means no queue.
    const before = Number(result.extra.sentBeforeTokenResponse);
    const queue = before > 1 ? `no queue: ${count(before)} sent before the token response, ` : '';
    return `${release} · ${queue}${plural(Number(result.extra.sentAfterTokenResponse), 'request')} sent after · ${plural(
      result.tokenCalls,
      'token call',
    )} · ${failedText(result)}`;
  },
};

/** Epoch ms with sub-millisecond precision, comparable with the server's `Date.now()`. */
const now = () => performance.timeOrigin + performance.now();

/**
 * Records the time when a matching request is handed over, then sends it on the next turn of
 * the event loop: the transport's own synchronous work (axios's HTTP adapter opens its socket
 * synchronously) belongs to sending, not to the library releasing its waiters.
 */
async function recorded<T>(url: string, matches: (url: string) => boolean, sentAt: number[], send: () => Promise<T>): Promise<T> {
  if (!matches(url)) return send();
  sentAt.push(now());
  await new Promise((resolve) => setImmediate(resolve));
  return send();
}

/** Replaces the global fetch with one that records when each matching request is handed to it; returns the undo. */
function recordFetch(matches: (url: string) => boolean, sentAt: number[]): () => void {
  const original = globalThis.fetch;
  globalThis.fetch = ((input, init) =>
    recorded(input instanceof Request ? input.url : String(input), matches, sentAt, () => original(input, init))) as typeof fetch;
  return () => void (globalThis.fetch = original);
}

/**
 * `baseURL` + `url` as axios joins them (buildFullPath). Not `axios.getUri`: it merges the config
 * with the defaults again, as costly as a small request, and that would be counted as release time.
 */
function fullPath(config: InternalAxiosRequestConfig): string {
  const url = config.url ?? '';
  if (!config.baseURL || /^([a-z][a-z\d+\-.]*:)?\/\//i.test(url)) return url;
  return `${config.baseURL.replace(/\/+$/, '')}/${url.replace(/^\/+/, '')}`;
}

/** axios's own HTTP adapter, recording when each matching request is handed to it. */
function recordingAxiosAdapter(matches: (url: string) => boolean, sentAt: number[]): AxiosAdapter {
  const http = axios.getAdapter('http');
  return (config) => recorded(fullPath(config), matches, sentAt, () => http(config));
}
