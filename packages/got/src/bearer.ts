/*
 * Which `Authorization` on a got request is ours. got's options are the request's and show in its errors
 * (`error.options`, enumerable, in their JSON too); its per-request `context`, which got copies to a retry
 * and a redirect hop, keeps the bearer we sent: the exact header, which tells ours from an `Authorization` of
 * others, and its access token, the stale one a refresh replaces. got lower-cases the header names of the
 * options it is given, not those a hook writes: an `Authorization` of others may have any spelling, and Node
 * sends the last of several. Every set of hooks on a got instance, of any copy of this package, keeps its bearer
 * there under a key of its own, so each tells the bearer of another set from an `Authorization` of others (the
 * caller's, a hook's) by the shared key through which a kept bearer names its header.
 */
import type { NormalizedOptions } from 'got';
import { contextSlot } from './context.js';

/** What of a request's options the tracking reads and changes. */
type HeadersAndContext = Pick<NormalizedOptions, 'headers' | 'context'>;

/** The key, one for every set of hooks and every copy of this package, under which a kept bearer names the `Authorization` its set put on the request. */
const authorizationPut = Symbol.for('@tokenrelay/got:authorizationPut');

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
  get [authorizationPut](): string {
    return this.#authorization;
  }
}

/** The `Authorization` values the sets of hooks on the request (this one too) put there, by the bearers they keep in its `context`. */
function authorizationsOfSets(request: HeadersAndContext): string[] {
  const context = request.context as Record<symbol, unknown>;
  return Object.getOwnPropertySymbols(context).flatMap((key) => {
    const kept = context[key];
    const authorization = typeof kept === 'object' && kept !== null ? (kept as { [authorizationPut]?: unknown })[authorizationPut] : undefined;
    return typeof authorization === 'string' ? [authorization] : [];
  });
}

/** The bearer of one set of hooks on got's requests: see {@link trackOurBearer}. */
export interface OurBearer {
  /** Puts `authorization`, made of `accessToken`, on the request as ours. */
  put(request: HeadersAndContext, accessToken: string, authorization: string): void;
  /** The access token of the bearer we sent with the request, `undefined` if it carries none of ours. */
  accessTokenSent(request: HeadersAndContext): string | undefined;
  /** Is the request's only `Authorization`, in any spelling, the very one we put there? */
  isOn(request: HeadersAndContext): boolean;
  /**
   * Does the request carry an `Authorization`, in any spelling, of others: the caller's, or a hook's, one that no
   * set of `tokenRelayHooks` put there?
   */
  othersOn(request: HeadersAndContext): boolean;
  /** Does the request carry the bearer another set of `tokenRelayHooks` on the got instance put there (then ours stays off this hop)? */
  anotherSetsOn(request: HeadersAndContext): boolean;
  /**
   * Takes our bearer out of the request's headers, and only there: once got has handed them over to create
   * the HTTP request, its options need it no more, and its errors must not show it. The request still counts
   * as sent with it (its 401 refreshes).
   */
  takeOffHeaders(request: HeadersAndContext): void;
  /** Takes our bearer off the request and forgets it: the request does not count as sent with it. */
  forget(request: HeadersAndContext): void;
  /**
   * Forgets our bearer for this hop, which goes where it may not go or with an `Authorization` of others (not
   * another set's bearer), and
   * for the rest of the request: as fetch, which never puts back an `Authorization` it dropped, no later
   * redirect hop (nor got's retry of one) gets it, wherever the server that chose that hop's URL sends it and
   * whichever `Authorization` got dropped on the way.
   */
  withhold(request: HeadersAndContext): void;
  /** Was our bearer withheld from a hop of this request, or of one it is a redirect hop or retry of? */
  isWithheld(request: HeadersAndContext): boolean;
}

/** The names, in any spelling, under which the request's headers hold an `Authorization`. */
function authorizationNames(request: HeadersAndContext): string[] {
  return Object.keys(request.headers).filter((name) => name.toLowerCase() === 'authorization' && request.headers[name] !== undefined);
}

/**
 * Tracks the bearer one set of hooks puts on got's requests, under `context` keys of this set's own, so
 * two sets on one got instance never take each other's bearer for theirs.
 */
export function trackOurBearer(): OurBearer {
  const sent = contextSlot<SentBearer>('tokenRelaySentBearer');
  const withheld = contextSlot<true>('tokenRelayBearerWithheld');
  /** Is ours in the headers, under got's lowercase name (others may be there too)? */
  const isAmongHeaders = (request: HeadersAndContext) => {
    const bearer = sent.get(request);
    return bearer !== undefined && request.headers.authorization === bearer[authorizationPut];
  };
  /** Is another set's bearer in the headers, under got's lowercase name, and not ours? */
  const anotherSetsOn = (request: HeadersAndContext) => {
    const { authorization } = request.headers;
    return typeof authorization === 'string' && !isAmongHeaders(request) && authorizationsOfSets(request).includes(authorization);
  };
  const takeOffHeaders = (request: HeadersAndContext) => {
    if (isAmongHeaders(request)) delete request.headers.authorization;
  };
  const forget = (request: HeadersAndContext) => {
    takeOffHeaders(request);
    sent.delete(request);
  };
  return {
    put(request, accessToken, authorization) {
      request.headers.authorization = authorization;
      sent.set(request, new SentBearer(accessToken, authorization));
    },
    accessTokenSent: (request) => sent.get(request)?.accessToken,
    isOn: (request) => isAmongHeaders(request) && authorizationNames(request).length === 1,
    othersOn: (request) =>
      authorizationNames(request).some((name) => name !== 'authorization' || !(isAmongHeaders(request) || anotherSetsOn(request))),
    anotherSetsOn,
    takeOffHeaders,
    forget,
    withhold(request) {
      forget(request);
      withheld.set(request, true);
    },
    isWithheld: (request) => withheld.get(request) === true,
  };
}
