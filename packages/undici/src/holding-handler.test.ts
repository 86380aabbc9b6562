import { describe, expect, it, vi } from 'vitest';
import { deliver, heldText, holdingHandler, type DispatchHandler, type HeldResponse } from './holding-handler.js';

/** Records every call the handler under test passes on. */
function recorder() {
  const seen: unknown[][] = [];
  const upstream: Required<DispatchHandler> = {
    onConnect: (_abort, context) => void seen.push(['connect', context]),
    onError: (error) => void seen.push(['error', error.message]),
    onUpgrade: (status) => void seen.push(['upgrade', status]),
    onResponseStarted: () => void seen.push(['started']),
    onHeaders: (status, _headers, _resume, statusText) => (seen.push(['headers', status, statusText]), true),
    onData: (chunk) => (seen.push(['data', chunk.toString()]), true),
    onComplete: (trailers) => void seen.push(['complete', trailers]),
    onBodySent: (size, total) => void seen.push(['body sent', size, total]),
  };
  return { seen, upstream };
}

/** Plays one exchange answering `status` with a body of two chunks on `handler`. */
function answer(handler: DispatchHandler, status: number) {
  handler.onConnect?.(() => {}, 'ctx');
  handler.onBodySent?.(3, 3);
  handler.onResponseStarted?.();
  handler.onHeaders?.(status, ['x-status', String(status)], () => {}, 'Status');
  handler.onData?.(Buffer.from('one '));
  handler.onData?.(Buffer.from('two'));
  handler.onComplete?.(['x-trailer', 'end']);
}

describe('holdingHandler', () => {
  it('passes an answer it does not hold on to upstream as it comes, after telling onPassing', () => {
    const { seen, upstream } = recorder();
    const onPassing = vi.fn((status: number) => void seen.push(['passing', status]));
    const onHeld = vi.fn();

    answer(holdingHandler(upstream, { holds: (status) => status === 401, onHeld, onPassing }), 200);

    expect(seen).toEqual([
      ['connect', 'ctx'],
      ['body sent', 3, 3],
      ['started'],
      ['passing', 200],
      ['headers', 200, 'Status'],
      ['data', 'one '],
      ['data', 'two'],
      ['complete', ['x-trailer', 'end']],
    ]);
    expect(onHeld).not.toHaveBeenCalled();
  });

  it('holds an answer it picks, hands it whole to onHeld at its end, and deliver gives it to a handler in one piece', () => {
    const { seen, upstream } = recorder();
    let held: HeldResponse | undefined;

    answer(holdingHandler(upstream, { holds: (status, headers) => status === 401 && headers[1] === '401', onHeld: (whole) => (held = whole) }), 401);

    expect(seen).toEqual([['connect', 'ctx'], ['body sent', 3, 3], ['started']]);
    expect(held).toMatchObject({ status: 401, headers: ['x-status', '401'], statusText: 'Status', trailers: ['x-trailer', 'end'] });
    expect(heldText(held as HeldResponse)).toBe('one two');

    deliver(upstream, held as HeldResponse);

    expect(seen.slice(3)).toEqual([['headers', 401, 'Status'], ['data', 'one two'], ['complete', ['x-trailer', 'end']]]);
  });

  it('gives connects and errors to the onConnect and onError it is given instead of upstream', () => {
    const { seen, upstream } = recorder();
    const onConnect = vi.fn();
    const onError = vi.fn();
    const handler = holdingHandler(upstream, { holds: () => false, onHeld: () => {}, onConnect, onError });

    handler.onConnect?.(() => {}, 'ctx');
    handler.onError?.(new Error('reset'));

    expect(seen).toEqual([]);
    expect(onConnect).toHaveBeenCalledWith(expect.any(Function), 'ctx');
    expect(onError).toHaveBeenCalledWith(new Error('reset'));
  });

  it('passes connects and errors on to upstream when not told otherwise', () => {
    const { seen, upstream } = recorder();
    const handler = holdingHandler(upstream, { holds: () => false, onHeld: () => {} });

    handler.onConnect?.(() => {}, 'ctx');
    handler.onUpgrade?.(101, [], undefined);
    handler.onError?.(new Error('reset'));

    expect(seen).toEqual([['connect', 'ctx'], ['upgrade', 101], ['error', 'reset']]);
  });
});
