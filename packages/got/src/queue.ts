/*
 * The got door's `queue`: each HTTP request of a request released by a refresh (its first, got's
 * retries of it, its redirect hops, its replay) takes its place in the queue only when got creates it
 * (after every `beforeRequest` hook), through the attempt's `request` function (see attempt.ts), and
 * gives it back at the request's `'close'`, which Node emits however the exchange ends (answered,
 * failed, reset, aborted, destroyed by got's cancel, retry or redirect). An attempt got never sends (a
 * later hook threw or returned an answer, or got answered from its cache) never takes a place, so none can be left held.
 */
import type { NormalizedOptions, Request as GotRequest, RequestFunction } from 'got';
import type { RequestQueue } from '@tokenrelay/core';
import { queuePlace } from '@tokenrelay/core/kit';

type RequestResult = ReturnType<RequestFunction>;
type Sent = NonNullable<Awaited<RequestResult>>;

/** Why a redirect hop is not sent: got ended the request it belongs to (cancelled, destroyed) while the hop waited `for`. */
export const hopOfEndedRequest = (waitedFor: string) => new Error(`got ended the request while its redirect waited ${waitedFor}`);

/** The place each queued HTTP request holds, by the request: given back at its `'close'`, or earlier by {@link leaveQueue}. */
const placeOf = new WeakMap<object, () => void>();

/**
 * Gives back the place of an HTTP request got has moved on from: at a redirect, got sends the hop at once
 * while the 3xx's body may still be arriving (one that never ends would hold the place for good, and
 * the hop would wait behind it forever). A request that holds no place is ignored.
 */
export function leaveQueue(request: object | undefined): void {
  if (request !== undefined) placeOf.get(request)?.();
}

/**
 * Creates an attempt's HTTP request with `create` when `queue` has room for it; it holds that place until
 * it closes. `hopOf` names got's request a redirect hop belongs to: cancelled or destroyed while the hop
 * waits, it takes the hop out of the queue at once, unsent (got does not check again before it sends a hop).
 */
export async function sendWhenQueueHasRoom(
  options: NormalizedOptions,
  queue: RequestQueue,
  hopOf: GotRequest | undefined,
  create: () => RequestResult,
): Promise<Sent> {
  const ending = endOfWait(options.signal, hopOf);
  try {
    const free = await queuePlace(queue, ending.signal);
    try {
      // Aborted as its turn came, or its request cancelled a moment before (got's 'close' comes a tick
      // after): got has ended the request already, and does not look again before it sends a hop.
      ending.signal?.throwIfAborted();
      if (hopOf?.destroyed) throw hopOfEndedRequest('in the queue');
      const result = await create();
      // As got's own call would fail: no request function for this URL.
      if (result === undefined) throw new TypeError(`got has no request function for ${String(options.url)}`);
      if (isRequest(result)) {
        result.once('close', free);
        placeOf.set(result, free);
      }
      // No request (a response from the caller's own `request` function): nothing of ours is in flight.
      else free();
      return result;
    } catch (error) {
      free();
      throw error;
    }
  } finally {
    ending.stop();
  }
}

/**
 * What ends an attempt's wait in the queue: its `signal`, and for a redirect hop got's request too,
 * closed by got's cancel or a destroyed stream. `stop` stops listening.
 */
function endOfWait(signal: AbortSignal | undefined, hopOf: GotRequest | undefined): { signal: AbortSignal | undefined; stop(): void } {
  if (hopOf === undefined) return { signal, stop: () => {} };
  const ended = new AbortController();
  const end = () => ended.abort(signal?.aborted ? signal.reason : hopOfEndedRequest('in the queue'));
  if (signal?.aborted || hopOf.destroyed) end();
  signal?.addEventListener('abort', end);
  hopOf.once('close', end);
  return {
    signal: ended.signal,
    stop: () => {
      signal?.removeEventListener('abort', end);
      hopOf.off('close', end);
    },
  };
}

/** What got itself takes for an HTTP request (not a response): a stream still open for writing. */
function isRequest(result: Sent): result is Extract<Sent, { writable: boolean }> {
  return 'writable' in result && result.writable && !result.writableEnded;
}
