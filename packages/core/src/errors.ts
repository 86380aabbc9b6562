/**
 * Every failure tokenrelay reports is a {@link TokenRelayError} with one of these stable codes.
 * Branch on `error.code`, never on the message.
 */
export const ErrorCode = {
  /** Options are missing or invalid (no `origins`, a non-HTTPS token endpoint, …). Thrown synchronously. */
  CONFIGURATION_ERROR: 'CONFIGURATION_ERROR',
  /** The manager holds no tokens: none were given, the store is empty, or `clear()` was called. */
  NO_TOKENS: 'NO_TOKENS',
  /**
   * The refresh token is dead (`invalid_grant`, or there is none): the user must sign in again.
   * The manager stops calling the token endpoint until `setTokens()` gives it a new session.
   */
  SESSION_EXPIRED: 'SESSION_EXPIRED',
  /** The token endpoint answered an OAuth error or an HTTP error status (see `status`, `oauthError`). */
  TOKEN_ENDPOINT_ERROR: 'TOKEN_ENDPOINT_ERROR',
  /**
   * The token endpoint refused the client's own credentials: `invalid_client` (unknown client, wrong
   * secret, a refused client assertion) or `unauthorized_client`, for any grant; and, for the grants
   * that get tokens with the client's credentials alone (client credentials, JWT bearer), a refused
   * grant (`invalid_grant`: an assertion with a bad signature, audience or subject, a user not
   * pre-authorized). Not transient: no retry helps until the configuration is fixed. The message
   * never holds a secret, a key or an assertion.
   */
  CREDENTIALS_REJECTED: 'CREDENTIALS_REJECTED',
  /** The token endpoint answered 2xx with something that is not a usable token response. */
  INVALID_TOKEN_RESPONSE: 'INVALID_TOKEN_RESPONSE',
  /**
   * The token endpoint could not be reached, or its answer was cut off (DNS, connection refused or
   * reset, redirect refused, …). `inDoubt` is true when the request may have reached the server.
   */
  NETWORK_ERROR: 'NETWORK_ERROR',
  /** One refresh attempt took longer than `refreshTimeoutMs`. */
  REFRESH_TIMEOUT: 'REFRESH_TIMEOUT',
  /**
   * The refresh failed for a reason that retrying could not cure in time (transient failures
   * exhausted the retry policy) or the refresh handler threw something that is not a
   * `TokenRelayError`. `cause` holds the last underlying error.
   */
  REFRESH_FAILED: 'REFRESH_FAILED',
  /** The token store failed to read or write. New tokens are still kept in memory. */
  STORE_ERROR: 'STORE_ERROR',
} as const;

/** A stable error code; see {@link ErrorCode} for what each means. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Extra facts an error may carry. None of them ever holds a token or a secret. */
export interface TokenRelayErrorDetails {
  /** The underlying error, if any. Not enumerable, so logging the error does not dump it. */
  cause?: unknown;
  /** HTTP status of the token endpoint response, when there was one. */
  status?: number;
  /** The RFC 6749 §5.2 `error` value the token endpoint sent (`invalid_grant`, `invalid_client`, …). */
  oauthError?: string;
  /** True when retrying the same refresh later may succeed (network error, timeout, 5xx, 429). */
  transient?: boolean;
  /** How long the server asked us to wait (`Retry-After`), in milliseconds. */
  retryAfterMs?: number;
  /**
   * True when a token request may have reached the server although no complete answer came back
   * (the connection broke after the request was sent): a rotating server may have spent the refresh
   * token, so the manager never presents it again within the same refresh.
   */
  inDoubt?: boolean;
}

// Symbol.for so that two installed copies of @tokenrelay/core (or two realms) recognise each other's errors.
const errorMarker = Symbol.for('tokenrelay.error');

/** Where every code is explained; each message ends with the link to its code's section. */
const errorsPage = 'https://github.com/tokenrelay/tokenrelay/blob/main/docs/errors.md#';

/**
 * The one error class of tokenrelay. `code` is stable; `message` is for humans (short, ending with
 * a link to the code's section of docs/errors.md) and never contains an access token, a refresh
 * token or a client secret.
 *
 * @example
 * ```ts
 * try { await api.get('/me') } catch (error) {
 *   if (isTokenRelayError(error) && error.code === 'SESSION_EXPIRED') redirectToLogin()
 * }
 * ```
 */
export class TokenRelayError extends Error {
  override name = 'TokenRelayError' as const;
  readonly code: ErrorCode;
  readonly status?: number;
  readonly oauthError?: string;
  readonly transient: boolean;
  readonly retryAfterMs?: number;
  readonly inDoubt?: boolean;

  constructor(code: ErrorCode, message: string, details: TokenRelayErrorDetails = {}) {
    super(`${message} (${errorsPage}${code.toLowerCase()})`, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    this.transient = details.transient ?? false;
    if (details.status !== undefined) this.status = details.status;
    if (details.oauthError !== undefined) this.oauthError = details.oauthError;
    if (details.retryAfterMs !== undefined) this.retryAfterMs = details.retryAfterMs;
    if (details.inDoubt) this.inDoubt = true;
  }
}
Object.defineProperty(TokenRelayError.prototype, errorMarker, { value: true });

/** True for any {@link TokenRelayError}, also one thrown by another installed copy of tokenrelay. */
export function isTokenRelayError(value: unknown): value is TokenRelayError {
  return (
    value instanceof TokenRelayError ||
    (typeof value === 'object' &&
      value !== null &&
      (value as Record<symbol, unknown>)[errorMarker] === true &&
      typeof (value as { code?: unknown }).code === 'string')
  );
}

/** How deep {@link findTokenRelayError} looks through `cause`: HTTP clients wrap once or twice. */
const MAX_CAUSE_DEPTH = 8;

/**
 * The {@link TokenRelayError} in `error` or in its chain of `cause`s, or `undefined`. HTTP clients
 * wrap what their fetch throws: Node's fetch rejects with `TypeError('fetch failed', { cause })`,
 * ofetch with its `FetchError`, ky passes ours through. A guard cannot say "this TypeError is a
 * TokenRelayError", so this returns the typed error itself. Looks at most 8 levels deep; a cycle ends the search.
 *
 * @example
 * ```ts
 * try { await ofetch('https://api.example.com/me') } catch (error) {
 *   if (findTokenRelayError(error)?.code === 'SESSION_EXPIRED') redirectToLogin()
 * }
 * ```
 */
export function findTokenRelayError(error: unknown): TokenRelayError | undefined {
  let current = error;
  for (let depth = 0; depth <= MAX_CAUSE_DEPTH && typeof current === 'object' && current !== null; depth++) {
    if (isTokenRelayError(current)) return current;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

const utf8 = new TextEncoder();

function base64Of(text: string): string {
  let binary = '';
  for (const byte of utf8.encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/**
 * Every form in which a secret we sent can come back: as is, form-urlencoded (how it went in a
 * body), percent-encoded, base64 (how it went in a Basic header) and base64url, padded or not.
 */
function secretForms(secret: string): string[] {
  const base64 = base64Of(secret);
  const unpadded = base64.replace(/=+$/, '');
  return [
    secret,
    new URLSearchParams([['', secret]]).toString().slice(1),
    encodeURIComponent(secret),
    base64,
    unpadded,
    unpadded.replace(/\+/g, '-').replace(/\//g, '_'),
  ];
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Replaces every occurrence of the given secrets in `text` with `[redacted]`, in every form in
 * which they were sent (see `secretForms`), ignoring case (percent-encoding may come back in
 * either case; redacting a little too much is harmless). A server that echoes a token or the
 * client's credentials back in `error_description` cannot leak them into our messages.
 */
export function redactSecrets(text: string, secrets: ReadonlyArray<string | undefined>): string {
  const forms = [...new Set(secrets.filter((secret): secret is string => !!secret).flatMap(secretForms))]
    // Longest first, so a longer form is not broken up by a shorter one inside it.
    .sort((a, b) => b.length - a.length);
  if (forms.length === 0) return text;
  return text.replace(new RegExp(forms.map(escapeRegExp).join('|'), 'gi'), '[redacted]');
}

/** A `CONFIGURATION_ERROR` for an invalid option, keeping `cause` when there is one. */
export function configurationError(message: string, cause?: unknown): TokenRelayError {
  return new TokenRelayError(ErrorCode.CONFIGURATION_ERROR, message, { cause });
}

/** A `STORE_ERROR` for a store that failed to read, write or lock, keeping `cause` when there is one. */
export function storeError(message: string, cause?: unknown): TokenRelayError {
  return new TokenRelayError(ErrorCode.STORE_ERROR, message, { cause });
}
