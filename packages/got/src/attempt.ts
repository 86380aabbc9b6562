/*
 * The got door's last step on each HTTP request got sends for a request (its first, got's retries of it,
 * its redirect hops, its replay): a `beforeRequest` hook appended to the request's own hooks, which got
 * runs in order (one appended meanwhile included) and copies to a retry and a redirect hop, so it runs
 * after every other hook, where the URL and the headers are final; and the request function it gives the
 * attempt, which got calls once, after the hooks, to create the HTTP request.
 */
import type { BeforeRequestHook, NormalizedOptions, RequestFunction } from 'got';

type RequestResult = ReturnType<RequestFunction>;

/** Appends `step` to the request's own `beforeRequest` hooks, once: got runs it after every other hook, on this attempt and on every retry and redirect hop of it. */
export function runLast(options: NormalizedOptions, step: BeforeRequestHook): void {
  const hooks = options.hooks.beforeRequest;
  if (!hooks.includes(step)) hooks.push(step);
}

/** The `request` function an attempt's own replaced, and the attempt (its options) it was made for. */
const replacedRequest = Symbol('tokenRelayReplacedRequest');

type AttemptRequestFunction = RequestFunction & { [replacedRequest]: { request: RequestFunction | undefined; madeFor: NormalizedOptions } };

/** When an attempt's HTTP request is created: calls `create()`, which makes it, later (when a queue has room), and answers what it answers. */
export type CreationSchedule = (create: () => RequestResult) => RequestResult;

/**
 * Gives this attempt of `options` a `request` function of ours. When got calls it, the HTTP request is
 * created with the headers as they are at that moment, `handedOver()` is called (got's options may lose
 * what is on its way now), then `schedule` has it created (at once if none). The function the hooks left
 * (the caller's own, or got's when none) creates it, or got's fallback when that answers `undefined`.
 */
export function takeOverCreation(options: NormalizedOptions, handedOver: () => void, schedule?: CreationSchedule): void {
  const replaced = attemptsOwnRequest(options);
  const ours: AttemptRequestFunction = Object.assign(
    (url: Parameters<RequestFunction>[0], nativeOptions: Parameters<RequestFunction>[1], callback?: Parameters<RequestFunction>[2]) => {
      options.request = replaced;
      // got hands over its options' own headers object (no copy): the request gets the headers as they are now.
      const sentOptions = nativeOptions?.headers === options.headers ? { ...nativeOptions, headers: { ...nativeOptions.headers } } : nativeOptions;
      handedOver();
      const create = () => orFallback(options.getRequestFunction()?.(url, sentOptions, callback), () => options.getFallbackRequestFunction()?.(url, sentOptions, callback));
      return schedule ? schedule(create) : create();
    },
    { [replacedRequest]: { request: replaced, madeFor: options } },
  );
  options.request = ours;
}

/**
 * The `request` function this attempt's hooks left. One of ours made for another attempt is one got never
 * called (something after the hooks threw, and got retries with a copy of the options): the function it replaced is.
 */
function attemptsOwnRequest(options: NormalizedOptions): RequestFunction | undefined {
  let request = options.request as RequestFunction | Partial<AttemptRequestFunction> | undefined;
  while (request !== undefined && replacedRequest in request && request[replacedRequest]?.madeFor !== options) request = request[replacedRequest]?.request;
  return request as RequestFunction | undefined;
}

/** What got does with a `request` function's answer: `undefined` (now or awaited) means its fallback creates the request. */
function orFallback(result: RequestResult, fallback: () => RequestResult): RequestResult {
  if (result instanceof Promise) return result.then((created) => created ?? fallback());
  return result ?? fallback();
}
