/*
 * undici's dispatch handler (its interface of version 6, which 7 still accepts and offers) and the one
 * wrapper the interceptor builds on it: a handler that holds an answer back, when its status and headers
 * say so, until whoever held it decides to hand it on or to give it up.
 */

/** The part of a dispatch handler this interceptor calls: undici's handler interface of version 6, which 7 still accepts and offers. */
export interface DispatchHandler {
  onConnect?(abort: (reason?: Error) => void, context?: unknown): void;
  onError?(error: Error): void;
  onUpgrade?(statusCode: number, headers: unknown, socket: unknown): void;
  onResponseStarted?(): void;
  onHeaders?(statusCode: number, headers: RawHeaders, resume: () => void, statusText: string): boolean;
  onData?(chunk: Buffer): boolean;
  onComplete?(trailers: RawHeaders | null): void;
  onBodySent?(chunkSize: number, totalBytesSent: number): void;
}

/** Headers as undici hands them to a handler: a flat `[name, value, …]` list. */
export type RawHeaders = ReadonlyArray<Buffer | string | ReadonlyArray<Buffer | string>>;

/**
 * An answer held back from its headers on, its body still coming, until it is handed on or given up:
 * one of the two is called once the holder has decided (whatever the body does meanwhile).
 */
export interface HeldResponse {
  readonly status: number;
  readonly headers: RawHeaders;
  /** The body as text once it has come whole; rejects when the exchange fails first, or the answer is delivered or discarded first. */
  text(): Promise<string>;
  /** Hands the answer on to `upstream`: what has come of it at once, the rest as it comes. */
  deliver(): void;
  /** Gives the answer up unseen: the exchange is aborted, so the rest of its body is neither read nor waited for. */
  discard(): void;
}

/** What {@link holdingHandler} holds, and what it does with a held answer and with connects and errors. */
export interface HoldingOptions {
  /** Is the answer with this status and these headers held back (else it flows on as it comes)? */
  holds(status: number, headers: RawHeaders): boolean;
  /** A held answer, at its headers: the caller of {@link holdingHandler} delivers or discards it. */
  onHeld(held: HeldResponse): void;
  /** An answer that is not held, at its headers, just before they flow on. */
  onPassing?(status: number, headers: RawHeaders): void;
  /** Replaces passing the connect on to `upstream`. */
  onConnect?(abort: (reason?: Error) => void, context?: unknown): void;
  /** Replaces passing an error on to `upstream` (one of a held answer goes where the answer goes). */
  onError?(error: Error): void;
}

/**
 * How much of a held body is read before the exchange waits for the decision: a huge or endless one costs
 * no more memory, and a replay never waits for it. Asking for its text reads it all. The chunk that reaches
 * it is kept whole, so up to one chunk more is held: about 64 KiB.
 */
const HELD_BODY_BYTES = 64 * 1024;

/** How an exchange ended: with its trailers, or an error. */
type Ending = { trailers: RawHeaders | null } | { error: Error };

/**
 * A handler for one dispatch that passes everything on to `upstream`, except an answer `holds` picks:
 * that one is handed to `onHeld` at its headers and waits there, its body read up to a bound, until it is
 * delivered or discarded.
 */
export function holdingHandler(upstream: DispatchHandler, options: HoldingOptions): DispatchHandler {
  const onError = options.onError ?? ((error: Error) => upstream.onError?.(error));
  const endUpstream = (ending: Ending) => ('error' in ending ? onError(ending.error) : upstream.onComplete?.(ending.trailers));
  let abortExchange: (reason?: Error) => void = () => {};
  // Set at the headers of an answer `holds` picks; then its body and end are its own.
  let state: 'held' | 'delivered' | 'discarded' | undefined;
  let chunks: Buffer[] = [];
  let bytes = 0;
  let readAll = false;
  let paused = false;
  let ended: Ending | undefined;
  // Why the text of the held answer cannot be had whole: it was discarded, or delivered, before its end.
  let textLost: Error | undefined;
  const textWaiters: Array<(ending: Ending) => void> = [];
  const settleText = (ending: Ending) => {
    for (const settle of textWaiters.splice(0)) settle(ending);
  };
  let resumeExchange = () => {};

  const resumeIfPaused = () => {
    if (!paused) return;
    paused = false;
    resumeExchange();
  };

  // The abort comes back as an error, which nobody sees now.
  const discardWith = (reason: Error) => {
    state = 'discarded';
    chunks = [];
    if (ended) return;
    loseText(reason);
    abortExchange(reason);
  };
  const loseText = (reason: Error) => {
    textLost = reason;
    settleText({ error: reason });
  };

  const hold = (status: number, headers: RawHeaders, resume: () => void, statusText: string): HeldResponse => {
    state = 'held';
    resumeExchange = resume;
    return {
      status,
      headers,
      text() {
        if (textLost) return Promise.reject(textLost);
        readAll = true;
        resumeIfPaused();
        return new Promise((resolve, reject) => {
          const settle = (ending: Ending) => ('error' in ending ? reject(ending.error) : resolve(Buffer.concat(chunks).toString('utf8')));
          if (ended) settle(ended);
          else textWaiters.push(settle);
        });
      },
      deliver() {
        if (state !== 'held') return;
        state = 'delivered';
        // From here its body is upstream's, not gathered: a text asked for cannot be had whole.
        if (!ended) loseText(new Error('answer handed on before its body ended'));
        try {
          let wantsMore = upstream.onHeaders?.(status, headers, resume, statusText) ?? true;
          if (chunks.length > 0) wantsMore = (upstream.onData?.(Buffer.concat(chunks)) ?? true) && wantsMore;
          chunks = [];
          if (ended) endUpstream(ended);
          // Paused at the bound: the rest flows once upstream wants it (when it said no, it resumes itself).
          else if (wantsMore) resumeIfPaused();
        } catch (error) {
          // As undici's own request does with a handler that throws: the exchange ends with that error, told once.
          discardWith(asError(error));
          onError(asError(error));
        }
      },
      discard() {
        if (state === 'held') discardWith(new Error('answer discarded'));
      },
    };
  };

  return {
    onConnect(abort, context) {
      abortExchange = abort;
      if (options.onConnect) options.onConnect(abort, context);
      else upstream.onConnect?.(abort, context);
    },
    onResponseStarted: () => upstream.onResponseStarted?.(),
    onBodySent: (size, total) => upstream.onBodySent?.(size, total),
    onUpgrade: (status, headers, socket) => upstream.onUpgrade?.(status, headers, socket),
    onHeaders(status, headers, resume, statusText) {
      if (options.holds(status, headers)) {
        options.onHeld(hold(status, headers, resume, statusText));
        return true;
      }
      options.onPassing?.(status, headers);
      return upstream.onHeaders?.(status, headers, resume, statusText) ?? true;
    },
    onData(chunk) {
      if (state === undefined || state === 'delivered') return upstream.onData?.(chunk) ?? true;
      if (state === 'discarded') return true;
      chunks.push(chunk);
      bytes += chunk.byteLength;
      // Over the bound undici stops reading, until a decision or a wish to read it all resumes it.
      paused = !readAll && bytes >= HELD_BODY_BYTES;
      return !paused;
    },
    onComplete: (trailers) => end({ trailers }),
    onError: (error) => end({ error }),
  };

  function end(ending: Ending): void {
    if (state === undefined || state === 'delivered') return void endUpstream(ending);
    if (state === 'discarded') return;
    ended = ending;
    settleText(ending);
  }
}

/** What a handler's onError takes: the error itself, or one that says what was thrown. */
export const asError = (error: unknown) => (error instanceof Error ? error : new Error(String(error)));
