/*
 * What the axios door reads of a response and a request body: the answer as core's
 * `FailedResponse` (for shouldRefresh and for DPoP's nonce challenges), and bodies sent only once.
 */
import type { FailedResponse } from '@tokenrelay/core';
import type { AxiosResponse } from 'axios';

export function failedResponse(response: AxiosResponse, url: string): FailedResponse {
  const { data } = response;
  return {
    status: response.status,
    url,
    header(name) {
      const wanted = name.toLowerCase();
      // Covers AxiosHeaders (own properties keyed by header name) and plain objects alike.
      const entry = Object.entries(response.headers).find(([key]) => key.toLowerCase() === wanted);
      const value: unknown = entry?.[1];
      if (value === undefined || value === null || value === false) return undefined;
      return Array.isArray(value) ? value.join(', ') : String(value);
    },
    async text() {
      if (typeof data === 'string') return data;
      if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) return new TextDecoder().decode(data);
      if (data instanceof Blob) return data.text();
      // A stream (responseType 'stream') is the caller's to read; reading it here would consume it.
      if (data === undefined || data === null || isOneShotBody(data)) return '';
      return JSON.stringify(data) ?? '';
    },
  };
}

/** A Node stream or a web ReadableStream can be sent only once. */
export function isOneShotBody(data: unknown): boolean {
  return (
    (typeof data === 'object' && data !== null && typeof (data as { pipe?: unknown }).pipe === 'function') ||
    (typeof ReadableStream !== 'undefined' && data instanceof ReadableStream)
  );
}
