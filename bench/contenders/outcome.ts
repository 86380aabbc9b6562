import { isTokenRelayError } from '@tokenrelay/core';
import { isAxiosError, type AxiosResponse } from 'axios';
import type { Outcome } from './types.js';

/**
 * A short, secret-free label for a thrown error: its stable code where it has one, the status of
 * the response it carries (ky's `HTTPError`, ofetch's `FetchError`), else its name and the code of
 * its cause (fetch's `TypeError` wraps the socket error, e.g. `ECONNRESET`; ofetch's `FetchError`
 * wraps a `TokenRelayError`).
 */
export function errorLabel(error: unknown): string {
  if (isTokenRelayError(error)) return error.code;
  if (isAxiosError(error)) return error.response ? `HTTP ${error.response.status}` : (error.code ?? error.name);
  const status = statusOf(error);
  if (status !== undefined) return `HTTP ${status}`;
  if (error instanceof Error) {
    const causeCode = (error.cause as { code?: unknown } | undefined)?.code;
    return typeof causeCode === 'string' ? `${error.name} (${causeCode})` : error.name;
  }
  return typeof error;
}

/** The status of the HTTP response a thrown error carries, if it carries one. */
export function statusOf(error: unknown): number | undefined {
  const response: unknown = (error as { response?: unknown } | null)?.response;
  return response instanceof Response ? response.status : undefined;
}

/** The outcome of an axios request (axios rejects every status ≥ 400 by default). */
export async function axiosOutcome(request: Promise<AxiosResponse>): Promise<Outcome> {
  try {
    const { status } = await request;
    return { ok: status < 300, status };
  } catch (error) {
    const status = isAxiosError(error) ? error.response?.status : undefined;
    return { ok: false, error: errorLabel(error), ...(status === undefined ? {} : { status }) };
  }
}

/** The outcome of a fetch; the body is read, as a caller would, which also frees the connection. */
export async function fetchOutcome(request: Promise<Response>): Promise<Outcome> {
  try {
    const response = await request;
    await response.arrayBuffer();
    return response.ok ? { ok: true, status: response.status } : { ok: false, status: response.status, error: `HTTP ${response.status}` };
  } catch (error) {
    return failureOutcome(error);
  }
}

/** The outcome of a request that threw `error` (with the status of the response it carries, if any). */
export function failureOutcome(error: unknown): Outcome {
  const status = statusOf(error);
  return { ok: false, error: errorLabel(error), ...(status === undefined ? {} : { status }) };
}
