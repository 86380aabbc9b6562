import { isTokenRelayError } from '@tokenrelay/core';
import { isAxiosError, type AxiosResponse } from 'axios';
import type { Outcome } from './types.js';

/**
 * A short, secret-free label for a thrown error: its stable code where it has one, else its name
 * and the code of its cause (fetch's `TypeError` wraps the socket error, e.g. `ECONNRESET`).
 */
export function errorLabel(error: unknown): string {
  if (isTokenRelayError(error)) return error.code;
  if (isAxiosError(error)) return error.response ? `HTTP ${error.response.status}` : (error.code ?? error.name);
  if (error instanceof Error) {
    const causeCode = (error.cause as { code?: unknown } | undefined)?.code;
    return typeof causeCode === 'string' ? `${error.name} (${causeCode})` : error.name;
  }
  return typeof error;
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
    return { ok: false, error: errorLabel(error) };
  }
}
