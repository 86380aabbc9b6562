/*
 * The got door's `queue`: a request released by a refresh takes its place in the queue only when got
 * creates its HTTP request (after every `beforeRequest` hook), through a per-attempt `request` function,
 * and gives it back at the request's `'close'`, which Node emits however the exchange ends (answered,
 * failed, reset, aborted, destroyed by got's cancel or retry). An attempt got never sends (a later hook
 * threw or answered from a cache) never takes a place, so none can be left held.
 */
import type { NormalizedOptions, RequestFunction } from 'got';
import type { RequestQueue } from '@tokenrelay/core';
import { queuePlace } from '@tokenrelay/core/kit';

/** The `request` function a queued attempt replaced, kept on the one that replaced it. */
const replacedRequest = Symbol('tokenRelayReplacedRequest');

type QueuedRequestFunction = RequestFunction & { [replacedRequest]?: RequestFunction | undefined };

/**
 * Makes got send this attempt of `options` through `queue`: its HTTP request is created when the queue
 * has room, and holds that place until the request closes. Once only: got copies `options` to a
 * redirect or a retry, and those are sent as they are unless {@link sendThroughQueue} is called for them.
 */
export function sendThroughQueue(options: NormalizedOptions, queue: RequestQueue): void {
  const replaced = options.request;
  const queued: QueuedRequestFunction = (url, nativeOptions, callback) => {
    options.request = replaced;
    return sendWhenQueueHasRoom(options, queue, () => options.getRequestFunction()?.(url, nativeOptions, callback), () =>
      options.getFallbackRequestFunction()?.(url, nativeOptions, callback),
    );
  };
  queued[replacedRequest] = replaced;
  options.request = queued;
}

/**
 * Puts back the `request` function of an attempt that was to be queued but never created its request
 * (a later hook threw and got retries with a copy of its options): a retry is queued only if it waits anew.
 */
export function withoutQueue(options: NormalizedOptions): void {
  const request = options.request as QueuedRequestFunction | undefined;
  if (request !== undefined && replacedRequest in request) options.request = request[replacedRequest];
}

type RequestResult = ReturnType<RequestFunction>;
type Sent = NonNullable<Awaited<RequestResult>>;

async function sendWhenQueueHasRoom(
  options: NormalizedOptions,
  queue: RequestQueue,
  create: () => RequestResult,
  fallback: () => RequestResult,
): Promise<Sent> {
  const { signal } = options;
  const free = await queuePlace(queue, signal);
  try {
    // Aborted as its turn came: got has ended the request already.
    signal?.throwIfAborted();
    // A `request` function of the caller's may answer `undefined` for got's own: created here, so its close is seen.
    const result = (await create()) ?? (await fallback());
    // As got's own call would fail: no request function for this URL.
    if (result === undefined) throw new TypeError(`got has no request function for ${String(options.url)}`);
    if (isRequest(result)) result.once('close', free);
    // No request (a response from the caller's own `request` function): nothing of ours is in flight.
    else free();
    return result;
  } catch (error) {
    free();
    throw error;
  }
}

/** What got itself takes for an HTTP request (not a response): a stream still open for writing. */
function isRequest(result: Sent): result is Extract<Sent, { writable: boolean }> {
  return 'writable' in result && result.writable && !result.writableEnded;
}
