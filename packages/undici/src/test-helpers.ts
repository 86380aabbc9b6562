/*
 * Types for this package's own tests (not exported): what a fake next dispatcher is handed, and the
 * caller's handler the tests give the interceptor.
 */

/** What a fake next dispatcher is handed. */
export interface Sent {
  origin: string | URL;
  path: string;
  headers?: unknown;
  body?: unknown;
}

/** The caller's handler, as the tests write it. */
export interface FakeHandler {
  onConnect(abort: (reason?: Error) => void): void;
  onHeaders(status: number, headers: Buffer[], resume: () => void, statusText: string): boolean;
  onData(chunk: Buffer): boolean;
  onComplete(trailers: null): void;
  onError(error: Error): void;
  onUpgrade?(status: number, headers: Buffer[], socket: unknown): void;
}
