import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';

/** Added to every response, so browser tests can call the server from another origin. */
export const corsHeaders: OutgoingHttpHeaders = {
  'access-control-allow-origin': '*',
  'access-control-expose-headers': 'www-authenticate, dpop-nonce, retry-after',
};

/** The answer to a CORS preflight (`OPTIONS`) on any path. */
export const preflightHeaders: OutgoingHttpHeaders = {
  ...corsHeaders,
  'access-control-allow-methods': 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS',
  'access-control-allow-headers': 'authorization, content-type, dpop',
  'access-control-max-age': '600',
};

export const JSON_TYPE = 'application/json; charset=utf-8';

export function send(res: ServerResponse, status: number, headers: OutgoingHttpHeaders, body: string | Buffer = ''): void {
  res.writeHead(status, { ...corsHeaders, 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

export function sendJson(res: ServerResponse, status: number, value: unknown, headers: OutgoingHttpHeaders = {}): void {
  send(res, status, { 'content-type': JSON_TYPE, ...headers }, JSON.stringify(value));
}

/** The request body exceeded the limit; answered 413. */
export class BodyTooLargeError extends Error {
  override readonly name = 'BodyTooLargeError';
}

/** The client went away before its request body was complete; nothing can be answered. */
export class RequestAbortedError extends Error {
  override readonly name = 'RequestAbortedError';
}

/** Reads the whole request body, refusing more than `limit` bytes. */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (Number(req.headers['content-length']) > limit) {
      reject(new BodyTooLargeError(`The request body is larger than ${limit} bytes`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.off('data', onData);
        reject(new BodyTooLargeError(`The request body is larger than ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks)));
    // 'close' also follows a normal 'end'; by then the promise is settled and this is a no-op.
    req.once('close', () => reject(new RequestAbortedError('The client closed the request')));
    req.once('error', () => reject(new RequestAbortedError('The request failed')));
  });
}

/** The media type of a Content-Type header, lower-cased, without parameters. */
export function mediaType(header: string | undefined): string | undefined {
  return header?.split(';')[0]?.trim().toLowerCase();
}
