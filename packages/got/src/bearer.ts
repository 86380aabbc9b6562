/*
 * Which `Authorization` on a got request is ours. got's options are the request's and show in its errors
 * (`error.options`, enumerable, in their JSON too); its per-request `context`, which got copies to a retry
 * and a redirect hop, keeps the bearer we sent: the exact header, which tells ours from an `Authorization` of
 * others, and its access token, the stale one a refresh replaces.
 */
import type { NormalizedOptions } from 'got';

/** What of a request's options the tracking reads and changes. */
export type HeadersAndContext = Pick<NormalizedOptions, 'headers' | 'context'>;

/**
 * The bearer we sent. Its fields are private, so logging a got error (JSON or `util.inspect`) shows `{}` or
 * `SentBearer {}`, never the token.
 */
class SentBearer {
  readonly #accessToken: string;
  readonly #authorization: string;
  constructor(accessToken: string, authorization: string) {
    this.#accessToken = accessToken;
    this.#authorization = authorization;
  }
  get accessToken(): string {
    return this.#accessToken;
  }
  get authorization(): string {
    return this.#authorization;
  }
}

/** The bearer of one set of hooks on got's requests: see {@link trackOurBearer}. */
export interface OurBearer {
  /** Puts `authorization`, made of `accessToken`, on the request as ours. */
  put(request: HeadersAndContext, accessToken: string, authorization: string): void;
  /** The access token of the bearer we sent with the request, `undefined` if it carries none of ours. */
  accessTokenSent(request: HeadersAndContext): string | undefined;
  /** Is the request's `Authorization` the very one we put there? */
  isOn(request: HeadersAndContext): boolean;
  /** Does the request carry an `Authorization` of others (the caller's, or a hook's)? */
  othersOn(request: HeadersAndContext): boolean;
  /**
   * Takes our bearer out of the request's headers, and only there: once got has handed them over to create
   * the HTTP request, its options need it no more, and its errors must not show it. The request still counts
   * as sent with it (its 401 refreshes).
   */
  takeOffHeaders(request: HeadersAndContext): void;
  /** Takes our bearer off the request and forgets it: the request does not count as sent with it. */
  forget(request: HeadersAndContext): void;
  /**
   * Forgets our bearer for this hop, which goes where it may not go, and for the rest of the request: as fetch,
   * which never puts back an `Authorization` it dropped, no later redirect hop (nor got's retry of one) gets it
   * back, wherever the server that chose that hop's URL sends it.
   */
  withhold(request: HeadersAndContext): void;
  /** Was our bearer withheld from a hop of this request, or of one it is a redirect hop or retry of? */
  isWithheld(request: HeadersAndContext): boolean;
}

/**
 * Tracks the bearer one set of hooks puts on got's requests, under `context` keys of this set's own, so
 * two sets on one got instance never take each other's bearer for theirs.
 */
export function trackOurBearer(): OurBearer {
  const key = Symbol('tokenRelaySentBearer');
  const withheldKey = Symbol('tokenRelayBearerWithheld');
  const sentWith = (request: HeadersAndContext) => (request.context as { [key]?: SentBearer })[key];
  const isOn = (request: HeadersAndContext) => {
    const sent = sentWith(request);
    return sent !== undefined && request.headers.authorization === sent.authorization;
  };
  const takeOffHeaders = (request: HeadersAndContext) => {
    if (isOn(request)) delete request.headers.authorization;
  };
  const forget = (request: HeadersAndContext) => {
    takeOffHeaders(request);
    delete (request.context as { [key]?: SentBearer })[key];
  };
  return {
    put(request, accessToken, authorization) {
      request.headers.authorization = authorization;
      (request.context as { [key]?: SentBearer })[key] = new SentBearer(accessToken, authorization);
    },
    accessTokenSent: (request) => sentWith(request)?.accessToken,
    isOn,
    othersOn: (request) => request.headers.authorization !== undefined && !isOn(request),
    takeOffHeaders,
    forget,
    withhold(request) {
      forget(request);
      (request.context as { [withheldKey]?: true })[withheldKey] = true;
    },
    isWithheld: (request) => (request.context as { [withheldKey]?: true })[withheldKey] === true,
  };
}
