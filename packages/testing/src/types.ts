import type { TokenSet } from '@tokenrelay/core';

/** How a client proves its identity to the token endpoint (RFC 6749 §2.3, RFC 7523 §2.2). */
export type ClientAuthenticationMethod = 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt' | 'none';

/** An OAuth client the server knows. */
export interface OAuthClient {
  /** The client id. */
  clientId: string;
  /** The client secret. Required for `client_secret_basic` and `client_secret_post`; absent for `none`. */
  clientSecret?: string;
  /**
   * How the client must authenticate. In standard mode the server accepts exactly this method
   * and answers `invalid_client` to any other; in Salesforce mode a client with a secret may use
   * Basic or the body, and a `none` client sends `client_id` alone.
   */
  authMethod: ClientAuthenticationMethod;
  /**
   * The client's public key: PEM (SPKI `PUBLIC KEY` or a certificate, as uploaded to a Salesforce
   * app) or a JWK. Verifies its `private_key_jwt` client assertions and its JWT bearer grant
   * assertions (RS256, ES256, PS256). Required for `private_key_jwt`.
   */
  publicKey?: string | JsonWebKey;
}

/**
 * The response shapes the server speaks: `standard` is RFC 6749 at `/oauth/token`; `salesforce`
 * mimics a Salesforce org (`/services/oauth2/token`, no `expires_in`, signed responses, REST API).
 */
export type OAuthServerMode = 'standard' | 'salesforce';

/** Options of {@link startOAuthServer}. Every field is optional. */
export interface OAuthServerOptions {
  /**
   * Lifetime of access tokens, in seconds; fractions are allowed for fast tests. Ignored in
   * Salesforce mode (see `salesforceSessionTimeoutSeconds`).
   * @default 3600
   * @example 0.5
   */
  accessTokenTtlSeconds?: number;
  /**
   * Lifetime of each refresh token from the moment it is issued, in seconds. A presented expired
   * refresh token answers `invalid_grant`.
   * @default undefined (refresh tokens never expire)
   */
  refreshTokenTtlSeconds?: number;
  /**
   * Issue a new refresh token on every refresh (ForgeRock, Auth0, Okta). The old one becomes
   * "rotated": presenting it again is a reuse (see `reuseDetection`). Without rotation the same
   * refresh token stays valid and token responses carry no `refresh_token` (Google, Salesforce).
   * @default false
   */
  rotateRefreshTokens?: boolean;
  /**
   * On reuse of an already-rotated refresh token, revoke the whole grant family (all its access
   * and refresh tokens), as RFC 9700 §4.14.2 recommends. Either way the reuse answers
   * `invalid_grant`.
   * @default true
   */
  reuseDetection?: boolean;
  /**
   * Delay added to every token endpoint response, in milliseconds, so that concurrent refreshes
   * overlap and single flight can be proven.
   * @default 0
   */
  tokenEndpointLatencyMs?: number;
  /**
   * The clients the server knows. The first one is the default of {@link OAuthServer.issue}.
   * @default [defaultClient] (`tokenrelay-demo` / `tokenrelay-demo-secret`, `client_secret_basic`)
   */
  clients?: readonly OAuthClient[];
  /**
   * Which provider to imitate.
   * @default 'standard'
   */
  mode?: OAuthServerMode;
  /**
   * Salesforce mode only: the session timeout, i.e. the access token lifetime, in seconds.
   * @default 7200
   */
  salesforceSessionTimeoutSeconds?: number;
  /**
   * TCP port on 127.0.0.1. The host is always 127.0.0.1: the server never listens elsewhere.
   * @default 0 (an ephemeral port; read it from `server.url`)
   */
  port?: number;
  /**
   * How many entries each request log in {@link OAuthServerStats} keeps; older ones are dropped.
   * @default 10_000
   */
  requestLogLimit?: number;
  /**
   * DPoP mode (RFC 9449): the token endpoint verifies `DPoP` proofs and issues sender-constrained
   * tokens (`token_type: "DPoP"`, bound to the proof key's thumbprint, `cnf.jkt`); a public client's
   * refresh tokens are bound to that key too. The API then wants `Authorization: DPoP <token>` with a
   * proof carrying `ath`. `true` is `{}`: proofs required, nonces on. Not available in Salesforce mode.
   * @default undefined (no DPoP: `Bearer` tokens, `DPoP` headers ignored)
   * @example { nonce: { rotateEveryMs: 60_000 } }
   */
  dpop?: boolean | DpopServerOptions;
}

/** Options of the DPoP mode: {@link OAuthServerOptions.dpop}. */
export interface DpopServerOptions {
  /**
   * Every token request must carry a proof and the API accepts DPoP-bound tokens only. With `false`
   * a token request without a proof gets an unbound `Bearer` token, which the API accepts as before.
   * @default true
   */
  required?: boolean;
  /**
   * Server nonces (RFC 9449 §8, §9). A proof without the current nonce is answered 400
   * `use_dpop_nonce` by the token endpoint (the refresh token untouched) and 401
   * `WWW-Authenticate: DPoP error="use_dpop_nonce"` by the API, each with the nonce in `DPoP-Nonce`;
   * every other DPoP-mode response carries it too. `false` turns nonces off.
   * @default {} (nonces on; the nonce changes only on {@link OAuthServer.rotateDpopNonce})
   */
  nonce?: DpopNonceOptions | false;
  /**
   * How far a proof's `iat` may be from the server's clock, either way, in seconds.
   * @default 60
   */
  maxProofAgeSeconds?: number;
  /**
   * Reproduces a buggy server: on a refresh whose proof has a missing or stale nonce, the refresh
   * token is marked used *before* the `use_dpop_nonce` answer, so the client's retry with the nonce
   * fails with `invalid_grant` (a reuse). A client that learns the nonce before presenting a
   * rotating refresh token never hits it.
   * @default false
   */
  spendRefreshTokenBeforeNonceCheck?: boolean;
}

/** The DPoP nonce policy: {@link DpopServerOptions.nonce}. */
export interface DpopNonceOptions {
  /**
   * A new nonce once the current one is this old, in milliseconds; only the current one is accepted.
   * @default undefined (only {@link OAuthServer.rotateDpopNonce} changes it)
   */
  rotateEveryMs?: number;
}

/** Options of {@link OAuthServer.issue}. */
export interface IssueOptions {
  /**
   * The client the grant belongs to; only this client may refresh it.
   * @default the first of `options.clients`
   */
  clientId?: string;
  /**
   * Space-separated scope of the grant. Refreshes may ask for less, never more.
   * @default 'read write' ('api refresh_token' in Salesforce mode)
   */
  scope?: string;
  /**
   * DPoP mode: the JWK SHA-256 thumbprint (RFC 7638) of the client's proof key, as if the sign-in's
   * code exchange had carried a proof: the access token is bound to it (`token_type: "DPoP"`), and so
   * is a public client's refresh token. Without it the access token is an unbound `Bearer` one and a
   * public client's refresh token binds to the key of its first refresh's proof.
   * @default undefined
   */
  dpopJkt?: string;
}

/** The kinds of token endpoint failure {@link OAuthServer.failNextTokenRequests} can inject. */
export type TokenEndpointFailureKind =
  /** 503 with an HTML body, like a load balancer with no backend. */
  | 'unavailable'
  /** 429 JSON `temporarily_unavailable` with `Retry-After` (1 s unless given). */
  | 'rate_limited'
  /** 400 JSON `invalid_grant` (Salesforce mode: "expired access/refresh token"). */
  | 'invalid_grant'
  /** 403 JSON `invalid_grant`, as Auth0 answers an unknown refresh token. */
  | 'invalid_grant_403'
  /** 401 JSON `invalid_client` with `WWW-Authenticate: Basic`. */
  | 'invalid_client'
  /** 200 `text/html`: a login page where JSON was expected. */
  | 'html'
  /** 200 `application/json` whose body is not JSON. */
  | 'not_json'
  /** 200 `application/json` whose JSON stops half way (the HTTP message itself is complete). */
  | 'truncated_json'
  /** 200 JSON without `access_token`. */
  | 'missing_access_token'
  /** 200 JSON with `expires_in` as a string (`"3600"`). */
  | 'expires_in_string'
  /** 200 JSON `{"error":"server_error"}`. */
  | 'error_in_200'
  /** 200 JSON of 5 MB (unless `bytes` is given): valid JSON, but more than any client should read. */
  | 'huge_body'
  /** No answer at all until the server closes. */
  | 'hang'
  /** The TCP connection is reset (RST) instead of answering. */
  | 'reset'
  /** Waits `delayMs`, then answers normally. */
  | 'slow';

/**
 * One injected token endpoint failure: a kind, or an object where the kind needs a number.
 * Any access token in a malformed 200 response is random and never valid at the API, and no
 * injected failure changes any token state.
 *
 * @example
 * ```ts
 * server.failNextTokenRequests(2, 'unavailable')
 * server.failNextTokenRequests(1, { kind: 'rate_limited', retryAfterSeconds: 2 })
 * server.failNextTokenRequests(1, { kind: 'slow', delayMs: 500 })
 * ```
 */
export type TokenEndpointFailure =
  | Exclude<TokenEndpointFailureKind, 'slow'>
  | {
      kind: 'rate_limited';
      /**
       * The `Retry-After` value, in whole seconds.
       * @default 1
       */
      retryAfterSeconds?: number;
    }
  | {
      kind: 'huge_body';
      /**
       * Size of the body, in bytes.
       * @default 5_242_880
       */
      bytes?: number;
    }
  | {
      kind: 'slow';
      /** How long to wait before the normal answer, in milliseconds. */
      delayMs: number;
    };

/** One request the token endpoint received, as recorded in {@link OAuthServerStats.tokenRequestLog}. */
export interface TokenRequestRecord {
  /** When it arrived, in epoch milliseconds. */
  readonly at: number;
  /** The HTTP method. */
  readonly method: string;
  /**
   * The client authentication the request used: `client_secret_basic` (an `Authorization: Basic`
   * header), `client_secret_post` (`client_secret` in the body), `none` (`client_id` alone), or
   * `undefined` when it identified no client.
   */
  readonly clientAuthentication: ClientAuthenticationMethod | undefined;
  /** The client id the request presented, if any. */
  readonly clientId: string | undefined;
  /** The access token the request carried (`Authorization: Bearer …` or `DPoP …`), if any: one here is a leak. */
  readonly accessToken: string | undefined;
  /** DPoP mode: the thumbprint of the key of the request's accepted proof, if any. */
  readonly dpopJkt: string | undefined;
  /** The form parameters, without `client_secret`. The refresh token is kept: tests check which one was sent. */
  readonly params: Readonly<Record<string, string>>;
  /** The status answered; `undefined` while pending and for `hang` and `reset`. */
  readonly status: number | undefined;
  /** The OAuth `error` code answered, if any. */
  readonly error: string | undefined;
  /** The injected failure this request consumed, if any. */
  readonly injected: TokenEndpointFailureKind | undefined;
}

/** One request to the protected API, as recorded in {@link OAuthServerStats.apiRequestLog}. */
export interface ApiRequestRecord {
  /** When it arrived, in epoch milliseconds. */
  readonly at: number;
  /** The HTTP method. */
  readonly method: string;
  /** The path, without the query string. */
  readonly path: string;
  /** The access token the request carried (Bearer or DPoP), if any: tests check that a replay used the new one. */
  readonly accessToken: string | undefined;
  /** DPoP mode: the thumbprint of the key of the request's accepted proof, if any. */
  readonly dpopJkt: string | undefined;
  /** The status answered; `undefined` while pending. */
  readonly status: number | undefined;
}

/** Counters and request logs: a read-only snapshot taken by {@link OAuthServer.stats}. */
export interface OAuthServerStats {
  /** Every request to the token endpoint (CORS preflights excepted), injected failures included. */
  readonly tokenRequests: number;
  /** Token requests that issued a new access token. */
  readonly tokenSuccesses: number;
  /** OAuth error responses of the token endpoint by `error` code, e.g. `{ invalid_grant: 2 }`. */
  readonly tokenErrors: Readonly<Record<string, number>>;
  /** Injected failures consumed, by kind. */
  readonly injectedFailures: Readonly<Partial<Record<TokenEndpointFailureKind, number>>>;
  /** Presentations of an already-rotated refresh token. */
  readonly refreshTokenReuses: number;
  /** Grant families revoked by reuse detection or {@link OAuthServer.revokeRefreshTokens}. */
  readonly familiesRevoked: number;
  /**
   * Salesforce mode: grant families revoked because a new one for the same user and app made more
   * than 5 live ones (Salesforce's limit of 5 token pairs per user and app; also counted in
   * `familiesRevoked`). A family is live while one of its tokens can still be used: a session whose
   * access tokens expired (or were revoked) and that has no usable refresh token holds no place.
   */
  readonly tokenPairsEvicted: number;
  /** Requests to the revocation endpoint answered 200. */
  readonly revocations: number;
  /** The largest number of token requests being processed at the same time: 1 proves single flight. */
  readonly maxInFlightTokenRequests: number;
  /** Requests to the protected API (CORS preflights excepted). */
  readonly apiRequests: number;
  /** Protected API requests answered 200. */
  readonly apiOk: number;
  /** Protected API requests answered 401. */
  readonly api401: number;
  /** DPoP mode: requests to the token endpoint or the API that carried a `DPoP` proof. */
  readonly dpopProofs: number;
  /** DPoP mode: `use_dpop_nonce` answers (token endpoint and API): proofs with a missing or stale nonce. */
  readonly dpopNonceChallenges: number;
  /** DPoP mode: proofs refused because their `jti` was seen before. */
  readonly dpopReplaysRefused: number;
  /** DPoP mode: `invalid_dpop_proof` answers (token endpoint and API), replays included. */
  readonly dpopProofsRefused: number;
  /** The most recent token requests, oldest first (bounded by `requestLogLimit`). */
  readonly tokenRequestLog: readonly TokenRequestRecord[];
  /** The most recent protected API requests, oldest first (bounded by `requestLogLimit`). */
  readonly apiRequestLog: readonly ApiRequestRecord[];
}

/** A running authorization server and protected API on 127.0.0.1. */
export interface OAuthServer {
  /** The server's origin, `http://127.0.0.1:PORT`. The protected API lives under `${url}/api/`. */
  readonly url: string;
  /** The token endpoint: `${url}/oauth/token`, or `${url}/services/oauth2/token` in Salesforce mode. */
  readonly tokenEndpoint: string;
  /**
   * The revocation endpoint (RFC 7009): `${url}/oauth/revoke`, or `${url}/services/oauth2/revoke` in
   * Salesforce mode. A refresh token revokes its grant family, an access token itself; unknown
   * tokens answer 200 too. Standard mode authenticates the client as the token endpoint does;
   * Salesforce mode needs `token` only.
   */
  readonly revocationEndpoint: string;
  /** The mode the server runs in. */
  readonly mode: OAuthServerMode;
  /**
   * Simulates a sign-in: starts a new grant family with a fresh access token and refresh token,
   * returned in the shape `@tokenrelay/core` uses. In Salesforce mode `raw` carries
   * `instance_url`, `id`, `issued_at` and `signature`, and `expiresAt` is absent, because a
   * Salesforce token response does not tell the lifetime.
   *
   * @throws Error for a `clientId` the server does not know.
   * @example
   * ```ts
   * const manager = createTokenManager({ tokens: server.issue(), refresh: refreshTokenGrant({ ... }) })
   * ```
   */
  issue(options?: IssueOptions): TokenSet;
  /** Makes every access token issued so far invalid: the API answers 401 `invalid_token` to them. */
  revokeAccessTokens(): void;
  /**
   * Revokes every grant family issued so far (the user signed out everywhere): their refresh
   * tokens answer `invalid_grant` and their access tokens 401.
   */
  revokeRefreshTokens(): void;
  /**
   * Makes the next `count` token requests fail with `failure`. Queued failures are consumed in
   * order, one per request, and change no token state.
   *
   * @throws RangeError for a negative or fractional count, TypeError for an unknown failure.
   */
  failNextTokenRequests(count: number, failure: TokenEndpointFailure): void;
  /**
   * DPoP mode with nonces: replaces the server's nonce, so every nonce a client holds is stale
   * (a nonce rotated mid-session).
   *
   * @throws Error when the server runs without DPoP nonces.
   */
  rotateDpopNonce(): void;
  /** Drops the injected failures not yet consumed. */
  clearFailures(): void;
  /** A snapshot of the counters and request logs. */
  stats(): OAuthServerStats;
  /** Zeroes the counters and empties the request logs. Token state is kept. */
  resetStats(): void;
  /**
   * Stops the server and destroys every open connection, hung ones included, so nothing
   * waits. Safe to call more than once.
   */
  close(): Promise<void>;
}
