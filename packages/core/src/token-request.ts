/*
 * The one token-endpoint client: every grant and revokeToken post their form through here, so the
 * endpoint rule (https or loopback), client authentication, redirect refusal, body limit, failure
 * classification (in doubt or not) and the redaction of what was sent live once.
 */
import { isSecureOrLoopback, unwrappedFetch } from './adapter-kit.js';
import type { ClientAuthenticator } from './client-auth.js';
import { ErrorCode, TokenRelayError, configurationError, redactSecrets } from './errors.js';
import { certainlyNotSent } from './not-sent.js';
import { isRecord } from './token-set.js';
import { parseTokenResponse } from './token-response.js';
import type { Clock, TokenSet } from './types.js';
import { readBody } from './read-body.js';

/** The transport options every grant (and `revokeToken`) takes. */
export interface TokenRequestOptions {
  /**
   * The fetch used for the token call.
   * @default globalThis.fetch at call time, with any tokenrelay wrapper removed, so the token call never
   * goes through our own interceptor
   */
  fetch?: typeof fetch;
  /**
   * The largest response body read, in bytes; a larger one is an `INVALID_TOKEN_RESPONSE`
   * (or `TOKEN_ENDPOINT_ERROR` for an error status).
   * @default 262_144
   */
  maxResponseBytes?: number;
  /**
   * Clock for turning `expires_in` into `expiresAt` and for the times in signed assertions. The
   * time taken is the one just before the request is sent, so network latency shortens the
   * lifetime rather than lengthening it.
   * @default Date
   */
  clock?: Clock;
}

/** What the endpoint answered: the parsed body and what is needed to judge it. */
export interface TokenEndpointAnswer {
  readonly status: number;
  readonly ok: boolean;
  /** The body, or `undefined` when it was larger than the limit. */
  readonly text: string | undefined;
  /** The body parsed as JSON, or `undefined` when it is not JSON. */
  readonly json: unknown;
  readonly contentType: string;
  readonly retryAfterMs: number | undefined;
  /** The clock just before the request was sent. */
  readonly startedAt: number;
  /** Every secret the request carried, in the form it was given (absent ones as `undefined`); redact these from anything shown. */
  readonly secrets: ReadonlyArray<string | undefined>;
}

/** How a grant reads the OAuth errors that mean something particular for it: the code, and what the user should do. */
export type OAuthErrorMeaning = Readonly<Record<string, { code: ErrorCode; advice: string }>>;

/** A refused client credential: what `invalid_client` and `unauthorized_client` mean for every grant. */
export const credentialsRejected = { code: ErrorCode.CREDENTIALS_REJECTED, advice: 'check the client id, secret or key' };

/** What `invalid_client` and `unauthorized_client` mean for every grant. */
const clientErrors: OAuthErrorMeaning = { invalid_client: credentialsRejected, unauthorized_client: credentialsRejected };

/** Parses an endpoint option: absolute, no credentials, https (or http on loopback). Checked before anything is sent. */
export function parseEndpoint(value: string | URL, who: string, name = 'tokenEndpoint'): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw configurationError(`${who}: ${name} is not an absolute URL`);
  }
  if (url.username || url.password) throw configurationError(`${who}: ${name} has credentials`);
  if (!isSecureOrLoopback(url)) throw configurationError(`${who}: ${name} must be https (http on loopback only): ${url.origin}`);
  return url;
}

function resolveFetch(explicit: typeof fetch | undefined, who: string): typeof fetch {
  let candidate = explicit ?? globalThis.fetch;
  // Unwrap our own wrappers (bounded: wrappers nest only as deep as someone installed them).
  for (let depth = 0; depth < 16 && candidate && unwrappedFetch in candidate; depth++) {
    candidate = (candidate as typeof fetch & { [unwrappedFetch]: typeof fetch })[unwrappedFetch];
  }
  if (typeof candidate !== 'function') throw configurationError(`${who}: no fetch; pass options.fetch`);
  return candidate;
}

function parseRetryAfter(header: string | null, now: number): number | undefined {
  if (!header) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

function networkError(where: string, error: unknown, inDoubt: boolean): TokenRelayError {
  return new TokenRelayError(
    ErrorCode.NETWORK_ERROR,
    inDoubt ? `Connection to ${where} broke after the request may have been sent` : `Could not reach ${where}`,
    { cause: error, transient: true, inDoubt },
  );
}

/** A client for one endpoint: posts a form with the client's authentication and judges the answer. */
export interface TokenEndpointClient {
  /** The endpoint, parsed and checked. */
  readonly endpoint: URL;
  /** Posts `params` (client authentication added); `secrets` are the grant's own, for redaction. */
  post(params: URLSearchParams, context: { signal: AbortSignal; secrets: ReadonlyArray<string | undefined> }): Promise<TokenEndpointAnswer>;
  /** The error for an answer that is an error response (any status), or `undefined` for a success. */
  errorOf(answer: TokenEndpointAnswer, meanings?: OAuthErrorMeaning): TokenRelayError | undefined;
  /** Posts a token request and returns its tokens (RFC 6749 §5.1), or throws the classified error. */
  requestTokens(
    params: URLSearchParams,
    context: { signal: AbortSignal; secrets: ReadonlyArray<string | undefined>; meanings?: OAuthErrorMeaning },
  ): Promise<TokenSet>;
}

/** Builds the client; every option is checked synchronously (`CONFIGURATION_ERROR` naming `who`). */
export function tokenEndpointClient(
  endpoint: URL,
  authenticate: ClientAuthenticator,
  options: TokenRequestOptions & { who: string },
): TokenEndpointClient {
  const { who, clock = Date, maxResponseBytes = 262_144 } = options;
  if (!(maxResponseBytes > 0)) throw configurationError(`${who}: maxResponseBytes must be > 0`);
  const where = endpoint.origin + endpoint.pathname;

  const post: TokenEndpointClient['post'] = async (params, { signal, secrets }) => {
    const headers: Record<string, string> = {
      'content-type': 'application/x-www-form-urlencoded;charset=UTF-8',
      accept: 'application/json',
    };
    const sent = [...secrets, ...(await authenticate({ endpoint: endpoint.href, params, headers, clock }))];
    const fetchImpl = resolveFetch(options.fetch, who);
    const startedAt = clock.now();
    let response: Response;
    try {
      // Redirects are refused: the credentials and the refresh token must never follow one to another host.
      response = await fetchImpl(endpoint, { method: 'POST', headers, body: params, signal, redirect: 'manual' });
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      throw networkError(where, error, !certainlyNotSent(error));
    }
    if (response.type === 'opaqueredirect' || (response.status >= 300 && response.status < 400)) {
      response.body?.cancel().catch(() => undefined);
      // A complete answer: the server did not take the request, so it is not in doubt.
      throw new TokenRelayError(ErrorCode.NETWORK_ERROR, `${where} answered with a redirect, never followed`, { status: response.status });
    }
    let text: string | undefined;
    try {
      text = await readBody(response, maxResponseBytes);
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      throw networkError(where, error, true);
    }
    let json: unknown;
    try {
      json = text === undefined ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    return {
      status: response.status,
      ok: response.ok,
      text,
      json,
      contentType: response.headers.get('content-type') ?? 'no content-type',
      retryAfterMs: parseRetryAfter(response.headers.get('retry-after'), clock.now()),
      startedAt,
      secrets: sent,
    };
  };

  const errorOf: TokenEndpointClient['errorOf'] = (answer, meanings = {}) => {
    const { status, json, text } = answer;
    if (answer.ok && !(isRecord(json) && json.error !== undefined)) return undefined;
    const sent = isRecord(json) && typeof json.error === 'string' ? json.error : undefined;
    // Redacted before it is cut or kept: a server may echo a secret as its `error` too.
    const oauthError = sent && redactSecrets(sent, answer.secrets).slice(0, 100);
    // Redacted before it is cut, so a cut never leaves part of a secret behind.
    const description =
      isRecord(json) && typeof json.error_description === 'string'
        ? `: ${redactSecrets(json.error_description, answer.secrets).slice(0, 300)}`
        : '';
    const what = oauthError
      ? oauthError + description
      : text === undefined
        ? `body over ${maxResponseBytes} bytes`
        : `${answer.contentType}, not an OAuth error`;
    // The constructor leaves out the details that are undefined.
    const details = { status, oauthError };
    // Own entries only: an `error` named "toString" or "__proto__" means nothing of ours.
    const meaning = [meanings, clientErrors].find((table) => Object.hasOwn(table, sent as string))?.[sent as string];
    const answered = `Token endpoint answered HTTP ${status} ${what}`;
    if (meaning) return new TokenRelayError(meaning.code, `${answered}; ${meaning.advice}`, details);
    return new TokenRelayError(ErrorCode.TOKEN_ENDPOINT_ERROR, answered, {
      ...details,
      transient: status >= 500 || status === 429,
      retryAfterMs: answer.retryAfterMs,
    });
  };

  const requestTokens: TokenEndpointClient['requestTokens'] = async (params, { meanings, ...context }) => {
    const answer = await post(params, context);
    const error = errorOf(answer, meanings);
    if (error) throw error;
    // The problem may quote a field of the answer (token_type, expires_in): one that echoes a secret is redacted.
    const invalid = (problem: string) =>
      new TokenRelayError(ErrorCode.INVALID_TOKEN_RESPONSE, `Token endpoint answered HTTP ${answer.status}: ${redactSecrets(problem, answer.secrets)}`, {
        status: answer.status,
      });
    if (answer.text === undefined) throw invalid(`body over ${maxResponseBytes} bytes`);
    if (!isRecord(answer.json)) throw invalid(`not a JSON object (${answer.contentType})`);
    return parseTokenResponse(answer.json, answer.startedAt, invalid);
  };

  return { endpoint, post, errorOf, requestTokens };
}
