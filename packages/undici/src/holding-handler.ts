/*
 * undici's dispatch handler (its interface of version 6, which 7 still accepts and offers) and the one
 * wrapper the interceptor builds on it: a handler that holds an answer back whole, when its status and
 * headers say so, until whoever held it decides to deliver or replace it.
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

/** An answer held back whole: what the server said, to be delivered or replaced. */
export interface HeldResponse {
  readonly status: number;
  readonly headers: RawHeaders;
  readonly statusText: string;
  readonly chunks: readonly Buffer[];
  readonly trailers: RawHeaders | null;
}

/** What {@link holdingHandler} holds, and what it does at a held answer's end and with connects and errors. */
export interface HoldingOptions {
  /** Is the answer with this status and these headers held back whole (else it flows on as it comes)? */
  holds(status: number, headers: RawHeaders): boolean;
  /** A held answer, complete: the caller of {@link holdingHandler} delivers it ({@link deliver}) or replaces it. */
  onHeld(held: HeldResponse): void;
  /** An answer that is not held, at its headers, just before they flow on. */
  onPassing?(status: number, headers: RawHeaders): void;
  /** Replaces passing the connect on to `upstream`. */
  onConnect?(abort: (reason?: Error) => void, context?: unknown): void;
  /** Replaces passing an error on to `upstream`. */
  onError?(error: Error): void;
}

/**
 * A handler for one dispatch that passes everything on to `upstream`, except an answer `holds`
 * picks: that one's status, headers and body are kept, and handed whole to `onHeld` at its end.
 */
export function holdingHandler(upstream: DispatchHandler, options: HoldingOptions): DispatchHandler {
  let held: { status: number; headers: RawHeaders; statusText: string; chunks: Buffer[] } | undefined;
  return {
    onConnect: options.onConnect ?? ((abort, context) => upstream.onConnect?.(abort, context)),
    onResponseStarted: () => upstream.onResponseStarted?.(),
    onBodySent: (size, total) => upstream.onBodySent?.(size, total),
    onUpgrade: (status, headers, socket) => upstream.onUpgrade?.(status, headers, socket),
    onHeaders(status, headers, resume, statusText) {
      if (options.holds(status, headers)) {
        held = { status, headers, statusText, chunks: [] };
        return true;
      }
      options.onPassing?.(status, headers);
      return upstream.onHeaders?.(status, headers, resume, statusText) ?? true;
    },
    onData(chunk) {
      if (!held) return upstream.onData?.(chunk) ?? true;
      held.chunks.push(chunk);
      return true;
    },
    onComplete(trailers) {
      if (held) options.onHeld({ ...held, trailers });
      else upstream.onComplete?.(trailers);
    },
    onError: options.onError ?? ((error) => upstream.onError?.(error)),
  };
}

/** Gives `handler` an answer that was held back, whole. */
export function deliver(handler: DispatchHandler, held: HeldResponse): void {
  handler.onHeaders?.(held.status, held.headers, () => {}, held.statusText);
  if (held.chunks.length > 0) handler.onData?.(Buffer.concat(held.chunks));
  handler.onComplete?.(held.trailers);
}

/** The body of a held answer as text. */
export function heldText(held: Pick<HeldResponse, 'chunks'>): string {
  return Buffer.concat(held.chunks).toString('utf8');
}
