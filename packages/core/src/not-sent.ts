/*
 * Was a failed token request certainly never sent? Node (undici) tells, with an error code in the
 * `cause` chain. A browser never does: its fetch rejects with an opaque `TypeError` whatever
 * happened, so the browser build uses not-sent.browser.ts, which leaves these codes out.
 */
import { isRecord } from './token-set.js';

/**
 * Error codes (Node's, and undici's in `cause.code`) of failures that happen before a single byte of
 * the request can reach the server: no name resolution, no route, no connection, no TLS session.
 */
const notSentCodes = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EAI_FAIL',
  'EAI_NONAME',
  'ENETUNREACH',
  'ENETDOWN',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'EADDRNOTAVAIL',
  'UND_ERR_CONNECT_TIMEOUT',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_TLS_HANDSHAKE_TIMEOUT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
]);

/**
 * True only when `error` (fetch's rejection) certainly left before the request was sent. Anything
 * else (a reset or closed socket, an unknown cause, a browser's opaque `TypeError`) may have
 * reached the server. Walks the `cause` chain and an `AggregateError`'s `errors` (Node tries
 * several addresses), boundedly.
 */
export function certainlyNotSent(error: unknown, depth = 0): boolean {
  if (depth > 4 || !isRecord(error) && !(error instanceof Error)) return false;
  const { code, errors, cause } = error as { code?: unknown; errors?: unknown; cause?: unknown };
  if (typeof code === 'string' && (notSentCodes.has(code) || code.startsWith('ERR_SSL_'))) return true;
  if (Array.isArray(errors) && errors.length > 0) return errors.every((inner) => certainlyNotSent(inner, depth + 1));
  return cause !== undefined && certainlyNotSent(cause, depth + 1);
}
