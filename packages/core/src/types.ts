import type { TokenRelayError } from './errors.js';

/**
 * The tokens of one OAuth 2.0 session.
 *
 * @example
 * ```ts
 * const tokens: TokenSet = { accessToken: 'at', refreshToken: 'rt', expiresAt: Date.now() + 3600_000 }
 * ```
 */
export interface TokenSet {
  /** The access token sent as `Authorization: Bearer …` (`DPoP …` when `tokenType` is DPoP). */
  accessToken: string;
  /** The refresh token. Kept across refreshes unless the server sends a new one (rotation). */
  refreshToken?: string;
  /**
   * When the access token expires, in epoch milliseconds. Unknown (`undefined`) means the
   * manager learns of expiry from a 401 only.
   */
  expiresAt?: number;
  /**
   * `token_type` from the server: `Bearer` (the default when absent) or `DPoP`; adapters send the
   * access token with this scheme.
   */
  tokenType?: string;
  /** Space-separated scopes granted, if the server said. */
  scope?: string;
  /**
   * The other fields of the token response (`id_token`, Salesforce's `instance_url`, …), as
   * sent. `access_token` and `refresh_token` are not repeated here.
   */
  raw?: Readonly<Record<string, unknown>>;
  /**
   * What the app keeps with the session (JSON values), e.g. `@tokenrelay/dpop`'s key the refresh
   * token is bound to: stored with the tokens (encrypted where the store encrypts), carried forward
   * across refreshes, gone on sign-out. tokenrelay never reads it.
   */
  sessionData?: Readonly<Record<string, unknown>>;
}

/** What a refresh handler receives. */
export interface RefreshContext {
  /**
   * The tokens to refresh; `tokens.refreshToken` is the one to present. `undefined` only for a
   * handler with `needsRefreshToken: false` that acquires the first tokens of a session.
   */
  readonly tokens: TokenSet | undefined;
  /**
   * Aborted when the session is replaced (sign-out, new sign-in), or when no answer came within
   * `lateAnswerWaitMs`; pass it to `fetch`. A slow answer is not a reason to abort: see `refreshTimeoutMs`.
   */
  readonly signal: AbortSignal;
}

/**
 * Exchanges the current tokens for new ones. Return a `TokenSet`; leave `refreshToken` out
 * when the server sent none and the manager keeps the old one. Throw a `TokenRelayError`
 * with code `SESSION_EXPIRED` when the refresh token is dead, or one with `transient: true`
 * when a retry may help.
 */
export interface RefreshHandler {
  (context: RefreshContext): Promise<TokenSet>;
  /**
   * The token endpoint this handler calls, if it has one. Adapters never attach the bearer
   * to it and never treat its 401s as a reason to refresh.
   */
  readonly tokenEndpoint?: string;
  /**
   * `false` for grants that get tokens with the client's own credentials (client credentials, JWT
   * bearer): a manager with no tokens then acquires them on the first request instead of failing
   * with `NO_TOKENS`, and there is no refresh token to lose, so a token request that may have reached
   * the server unanswered is asked again (unless the tokens handed to it hold a refresh token).
   * @default true
   */
  readonly needsRefreshToken?: boolean;
}

/** A lock held on a {@link TokenStore} while one refresh runs. */
export interface TokenStoreLock {
  /** Gives the lock up. Called exactly once, after the new tokens are stored (or the refresh failed). */
  release(): void | Promise<void>;
  /**
   * Aborted when the lock is lost while held (its lease ran out while the holder was frozen by a GC
   * pause, SIGSTOP or a closed laptop lid, or the store's connection broke). The manager then never
   * writes or announces the result of its refresh. Stores whose locks cannot be lost leave it out.
   */
  readonly signal?: AbortSignal;
  /**
   * Asks the store whether this lock is still held; rejects (and aborts `signal`) when it is lost.
   * The manager calls it right before each token request under the lock, because `signal` learns of
   * a loss only from a timer: a holder frozen past its lease (SIGSTOP, a closed laptop lid, a long GC
   * pause) resumes with its token request next in line, before any timer runs, and would present a
   * refresh token that the process which took the lock over has already spent — with rotation and
   * reuse detection, revoking the whole session (RFC 9700). A rejection for any reason (the store
   * cannot be reached, too) means no token request: the refresh fails with a transient `STORE_ERROR`
   * and the next one starts over under the lock. Stores whose locks cannot be lost leave it out.
   */
  assertHeld?(): Promise<void>;
}

/**
 * What a {@link TokenStore} holds for one session: the tokens and the bookkeeping that lets every
 * holder of the store agree on them.
 */
export interface StoredTokens {
  /** The session's tokens. */
  readonly tokens: TokenSet;
  /**
   * Grows with every write (a refresh writes the revision it read + 1; a sign-in writes one higher
   * than any it has seen). A holder whose memory is ahead of the store knows the store missed its
   * write; one whose memory is behind knows someone else refreshed. Always ≥ 1.
   */
  readonly revision: number;
  /**
   * The refresh token was refused (`invalid_grant`): every holder of the store fails with
   * `SESSION_EXPIRED` without presenting it again, until a sign-in writes a new session. A signed-out
   * session is not this: it is an empty store (`NO_TOKENS`).
   */
  readonly sessionExpired?: boolean;
}

/** Options of {@link TokenStore.set}. */
export interface TokenStoreSetOptions {
  /**
   * Compare-and-set: write only if the store holds exactly this revision (`0`: only if it is empty),
   * atomically with respect to every other user of the store; otherwise write nothing and resolve
   * `false`. The manager fences every refresh's write with the revision it refreshed from, so a
   * sign-out or sign-in that happened meanwhile, here or in another process, always wins.
   * Left out, the write is unconditional (a sign-in; see `newSession`).
   */
  readonly expectedRevision?: number;
  /**
   * `true` when `value` is a new session (a sign-in), not a refresh of the one the store holds: a store
   * that keeps fields of the stored session the new tokens lack (fileStore's token-response layout)
   * keeps none of them then. The manager sets it for `setTokens()`, and for a sign-in the store missed
   * that the next refresh writes first (under `expectedRevision`). Other stores may ignore it.
   * @default true without `expectedRevision` (a sign-in), false with it
   */
  readonly newSession?: boolean;
}

/**
 * Where the manager keeps its tokens. The default keeps them in memory. A store shared by
 * several processes or tabs should also offer `lock` (and ideally `subscribe`): the manager
 * then takes the lock around each refresh, re-reads the store, and skips the token call when
 * another holder of the store already refreshed.
 *
 * The contract every store keeps (the conformance suite of `@tokenrelay/testing` checks it):
 * - `get` returns what the last successful `set` wrote (tokens, revision, `sessionExpired`), with
 *   every field of the token set, unknown `raw` fields included; `undefined` after `clear`.
 * - `set` with `expectedRevision` is an atomic compare-and-set; `clear` always wins. A handle's `set`
 *   without `expectedRevision` and `clear` calls land in the order they were made (the manager may give
 *   up on a slow one and make the next).
 * - `lock` is exclusive across every user of the store, gives up when its `signal` aborts, and
 *   aborts the lock's own `signal` when the lock is lost; a lock that can be lost also offers
 *   `assertHeld`, which asks the store itself and rejects once another user took the lock over.
 * - `subscribe` tells every other user of the store about each write and clear.
 */
export interface TokenStore {
  /** Reads what the store holds, or `undefined` when it is empty (signed out). */
  get(): StoredTokens | undefined | Promise<StoredTokens | undefined>;
  /**
   * Stores a session's tokens. Resolves `true` when written, `false` when `expectedRevision` did
   * not match (nothing was written). The manager awaits this before it releases queued requests.
   */
  set(value: StoredTokens, options?: TokenStoreSetOptions): boolean | Promise<boolean>;
  /** Removes the stored tokens (sign-out), unconditionally. */
  clear(): void | Promise<void>;
  /**
   * Takes an exclusive lock for one refresh, shared with every other user of the same store.
   * Must give up (reject) when `signal` aborts.
   */
  lock?(options: { signal: AbortSignal }): Promise<TokenStoreLock>;
  /**
   * Calls `listener` when another holder of the store writes or clears it. Returns an
   * unsubscribe function.
   */
  subscribe?(listener: (value: StoredTokens | undefined) => void): () => void;
  /** Frees what the store holds (connections, watchers, timers). Idempotent; the process can exit afterwards. */
  close?(): void | Promise<void>;
}

/** A source of the current time, injectable for tests. */
export interface Clock {
  /** Milliseconds since the epoch, like `Date.now()`. */
  now(): number;
}

/** How transient refresh failures (network error, timeout, 5xx, 429) are retried. */
export interface RetryPolicy {
  /**
   * How many times a failed refresh is retried after the first attempt.
   * @default 2
   */
  retries?: number;
  /**
   * Delay before the first retry, doubled for each further one; full jitter is applied.
   * @default 200
   */
  minDelayMs?: number;
  /**
   * Upper bound for one delay, also for a server's `Retry-After`.
   * @default 5000
   */
  maxDelayMs?: number;
  /**
   * After a refresh failed (retries included), the next refresh waits about this long — doubled
   * after each further failure, up to `maxPauseAfterFailureMs`, less up to 10 % of jitter — and
   * makes one attempt (no retries) until one succeeds. Requests in the pause get the current token
   * while it is still valid, and otherwise fail at once with the last error, so an outage of the
   * token endpoint is not turned into a storm of token calls by traffic or by HTTP clients that
   * retry on their own (ky's and ofetch's default retries fall inside the first pause).
   * @default 1_000
   */
  pauseAfterFailureMs?: number;
  /**
   * The longest pause between two failed refreshes, so traffic recovers soon after the token
   * endpoint does. A server's `Retry-After` (up to `maxDelayMs`) is honoured when longer.
   * @default 1_000
   */
  maxPauseAfterFailureMs?: number;
  /**
   * Decides whether an error is worth another attempt. A token request that may have reached the
   * server without an answer (`inDoubt`, a timeout) is never repeated within one refresh, whatever
   * this says: a rotating server may have spent the refresh token. A handler with
   * `needsRefreshToken: false` (client credentials, JWT bearer) spends nothing, so its requests are
   * repeated — unless the tokens it is handed hold a refresh token (a handler of your own may present it).
   * @default (error) => isTokenRelayError(error) && error.transient
   */
  shouldRetry?: (error: unknown) => boolean;
}

/** Options of {@link createTokenManager}. */
export interface TokenManagerOptions {
  /**
   * Gets new tokens: `refreshTokenGrant({...})` for a standard token endpoint, or your own function.
   * @example
   * ```ts
   * refresh: refreshTokenGrant({ tokenEndpoint: 'https://auth.example.com/oauth/token', clientId: 'app' })
   * ```
   */
  refresh: RefreshHandler;
  /**
   * The tokens to start with. When a `store` is given and already holds tokens, the stored ones
   * win (they may carry a newer, rotated refresh token); otherwise these are written to it.
   */
  tokens?: TokenSet;
  /**
   * Where tokens live.
   * @default an in-memory store
   */
  store?: TokenStore;
  /**
   * Refresh this long before `expiresAt`, so requests never carry an expiring token. For
   * short-lived tokens the margin shrinks to a quarter of the token's lifetime, so a 1 s token
   * is refreshed 250 ms before expiry, not on every request.
   * @default 30_000
   */
  refreshMarginMs?: number;
  /**
   * How long requests wait for a token request before they fail with `REFRESH_TIMEOUT` (or, for a
   * proactive refresh, go out with the still-valid token). The token request itself is not
   * abandoned: it may already have spent a rotating refresh token at the server, so its answer is
   * still awaited (see `lateAnswerWaitMs`) and adopted when it comes, and later requests join it
   * instead of presenting the same refresh token again. The same bound holds while a refresh waits
   * for the store or its lock, and a store call (get, set, clear, a lock's release) that has not
   * settled within it (never less than 5 s) fails with `STORE_ERROR`, so a hung store never hangs a
   * request, sign-in or sign-out. The bound is per phase: each token request, the wait for the store
   * or its lock; a retry's back-off is bounded by `retry.maxDelayMs`.
   * @default 10_000
   */
  refreshTimeoutMs?: number;
  /**
   * How long a token request that outlived `refreshTimeoutMs` is still awaited before it is
   * aborted; only then may the same refresh token be presented again. At least `refreshTimeoutMs`.
   * Also the longest wait for the store's lock: a holder that keeps it longer is taken as frozen,
   * and the refresh fails with `STORE_ERROR`.
   * @default 60_000
   */
  lateAnswerWaitMs?: number;
  /** How transient refresh failures are retried; `false` disables retries. */
  retry?: RetryPolicy | false;
  /**
   * The clock used for expiry decisions.
   * @default Date
   */
  clock?: Clock;
}

/** The events a {@link TokenManager} emits, with their payloads. */
export interface TokenManagerEvents {
  /** New tokens were obtained and stored. */
  refresh: (tokens: TokenSet) => void;
  /** A refresh failed (after retries). Waiting requests reject with this error. */
  refreshError: (error: TokenRelayError) => void;
  /** The refresh token is dead; fires once per session. */
  sessionExpired: (error: TokenRelayError) => void;
}

/** Options of `TokenManager.getAccessToken`. */
export interface GetAccessTokenOptions {
  /** Stops waiting (for a refresh in flight) when aborted; rejects with `signal.reason`. */
  signal?: AbortSignal;
}

/** Options of `TokenManager.refresh`. */
export interface RefreshOptions {
  /**
   * The access token a failed request was sent with. If the manager already holds a different
   * token (a refresh finished meanwhile), no refresh is made and the current tokens are returned.
   */
  staleAccessToken?: string;
  /** Stops waiting when aborted; the refresh itself goes on for the others. */
  signal?: AbortSignal;
}

/** Keeps one session's tokens fresh, with one refresh at a time. */
export interface TokenManager {
  /**
   * The access token to send now. If it is expired or within the refresh margin, or a refresh
   * is in flight, this waits for the (single) refresh first.
   */
  getAccessToken(options?: GetAccessTokenOptions): Promise<string>;
  /**
   * The access token to send now without waiting, or `undefined` when a request has to wait for
   * {@link TokenManager.getAccessToken} (tokens not loaded yet, none held, a refresh it must wait
   * for). Synchronous, so adapters skip a promise on the hot path; it starts a refresh that is
   * due in the background, exactly as `getAccessToken` would.
   */
  currentAccessToken(): string | undefined;
  /**
   * Refreshes the tokens: single-flight, so concurrent callers share one token-endpoint call. When
   * that refresh ends with tokens that have already expired (another holder's sign-in, made during
   * it, whose token expired meanwhile), they are refreshed once more, and that answer is returned.
   */
  refresh(options?: RefreshOptions): Promise<TokenSet>;
  /** The tokens held now, without refreshing. `undefined` before any are loaded or set. */
  getTokens(): Promise<TokenSet | undefined>;
  /** Replaces the session (after a sign-in): stores the tokens and ends a `SESSION_EXPIRED` state. */
  setTokens(tokens: TokenSet): Promise<void>;
  /** Forgets the session (sign-out): clears the store; requests then fail with `NO_TOKENS`. */
  clear(): Promise<void>;
  /** Subscribes to an event; returns a function that unsubscribes. */
  on<E extends keyof TokenManagerEvents>(event: E, listener: TokenManagerEvents[E]): () => void;
  /** The token endpoint of the refresh handler, if it declared one. */
  readonly tokenEndpoint: string | undefined;
  /**
   * The `tokenType` of the tokens held now (`undefined`: Bearer), read synchronously by adapters to
   * pick the `Authorization` scheme.
   */
  readonly tokenType?: string | undefined;
}
