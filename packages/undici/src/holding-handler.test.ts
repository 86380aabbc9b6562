import { describe, expect, it, vi } from 'vitest';
import { holdingHandler, type DispatchHandler, type HeldResponse } from './holding-handler.js';

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

  it('holds an answer it picks from its headers on; deliver hands on what came of it, then the rest as it comes', () => {
    const { seen, upstream } = recorder();
    let held: HeldResponse | undefined;
    const handler = holdingHandler(upstream, { holds: (status, headers) => status === 401 && headers[1] === '401', onHeld: (answer) => (held = answer) });

    handler.onConnect?.(() => {}, 'ctx');
    handler.onHeaders?.(401, ['x-status', '401'], () => {}, 'Status');
    handler.onData?.(Buffer.from('one '));
    expect(held).toMatchObject({ status: 401, headers: ['x-status', '401'] });
    expect(seen).toEqual([['connect', 'ctx']]);

    held?.deliver();
    handler.onData?.(Buffer.from('two'));
    handler.onComplete?.(['x-trailer', 'end']);

    expect(seen.slice(1)).toEqual([['headers', 401, 'Status'], ['data', 'one '], ['data', 'two'], ['complete', ['x-trailer', 'end']]]);
  });

  it('gives a held answer whole to deliver once it has ended, and its text', async () => {
    const { seen, upstream } = recorder();
    let held: HeldResponse | undefined;

    answer(holdingHandler(upstream, { holds: () => true, onHeld: (answer) => (held = answer) }), 401);
    expect(await held?.text()).toBe('one two');
    held?.deliver();

    expect(seen.slice(3)).toEqual([['headers', 401, 'Status'], ['data', 'one two'], ['complete', ['x-trailer', 'end']]]);
  });

  it('discards a held answer by aborting its exchange, and nobody sees its end', () => {
    const { seen, upstream } = recorder();
    const abort = vi.fn();
    let held: HeldResponse | undefined;
    const handler = holdingHandler(upstream, { holds: () => true, onHeld: (answer) => (held = answer) });

    handler.onConnect?.(abort, 'ctx');
    handler.onHeaders?.(401, [], () => {}, 'Status');
    held?.discard();
    handler.onData?.(Buffer.from('late'));
    handler.onError?.(new Error('aborted'));

    expect(abort).toHaveBeenCalledOnce();
    expect(seen).toEqual([['connect', 'ctx']]);
  });

  it.each(['onHeaders', 'onData'] as const)(
    'when upstream throws at %s of a delivered answer, aborts the exchange with that error, tells it once, and passes nothing after it',
    (throwing) => {
      const { seen, upstream } = recorder();
      const broken = new Error('handler broke');
      upstream[throwing] = () => {
        seen.push([throwing]);
        throw broken;
      };
      const abort = vi.fn();
      let held: HeldResponse | undefined;
      const handler = holdingHandler(upstream, { holds: () => true, onHeld: (answer) => (held = answer) });

      handler.onConnect?.(abort, 'ctx');
      handler.onHeaders?.(401, [], () => {}, 'Status');
      handler.onData?.(Buffer.from('one '));
      held?.deliver();
      handler.onData?.(Buffer.from('two'));
      handler.onComplete?.(null);
      handler.onError?.(new Error('aborted'));

      expect(abort.mock.calls).toEqual([[broken]]);
      expect(seen.at(-2)).toEqual([throwing]);
      expect(seen.at(-1)).toEqual(['error', 'handler broke']);
      expect(seen.filter(([event]) => event === 'error' || event === 'complete')).toHaveLength(1);
    },
  );

  it('rejects the text of a held answer given up, or handed on, before its body has come whole, asked before or after', async () => {
    const outcomes: string[] = [];
    const settledSoon = (text: Promise<string> | undefined) =>
      Promise.race([text?.then(() => 'resolved', (error: Error) => `rejected: ${error.message}`), new Promise((pending) => setImmediate(() => pending('pending')))]);

    for (const decide of ['discard', 'deliver'] as const) {
      let held: HeldResponse | undefined;
      const handler = holdingHandler(recorder().upstream, { holds: () => true, onHeld: (answer) => (held = answer) });
      handler.onConnect?.(() => {}, 'ctx');
      handler.onHeaders?.(401, [], () => {}, 'Status');
      handler.onData?.(Buffer.from('one '));

      const askedBefore = held?.text();
      held?.[decide]();
      outcomes.push(String(await settledSoon(askedBefore)), String(await settledSoon(held?.text())));
    }

    expect(outcomes).toEqual([
      'rejected: answer discarded',
      'rejected: answer discarded',
      'rejected: answer handed on before its body ended',
      'rejected: answer handed on before its body ended',
    ]);
  });

  it('stops reading a held body at 64 KiB until it is delivered, or its text is asked for', () => {
    const resume = vi.fn();
    const held: HeldResponse[] = [];
    const handler = () => holdingHandler(recorder().upstream, { holds: () => true, onHeld: (answer) => held.push(answer) });
    const kilobytes = (count: number) => Buffer.alloc(count * 1024);

    for (const [index, decide] of [(answer: HeldResponse) => answer.deliver(), (answer: HeldResponse) => void answer.text()].entries()) {
      const exchange = handler();
      exchange.onHeaders?.(401, [], resume, 'Status');
      expect(exchange.onData?.(kilobytes(63))).toBe(true);
      expect(exchange.onData?.(kilobytes(1))).toBe(false);
      expect(resume).toHaveBeenCalledTimes(index);
      decide(held[index] as HeldResponse);
      expect(resume).toHaveBeenCalledTimes(index + 1);
      expect(exchange.onData?.(kilobytes(64))).toBe(true);
    }
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
