import { MAX_TIMER_MS, abortable, delay } from './delay.js';
import { ErrorCode, TokenRelayError, configurationError, isTokenRelayError, storeError } from './errors.js';
import { memoryStore } from './memory-store.js';
import { expiresAtProblem, parseStoredTokens, parseTokenSet } from './token-set.js';
import type {
  GetAccessTokenOptions,
  RefreshOptions,
  StoredTokens,
  TokenManager,
  TokenManagerEvents,
  TokenManagerOptions,
  TokenSet,
  TokenStore,
  TokenStoreLock,
  TokenStoreSetOptions,
} from './types.js';

type Listeners = { [E in keyof TokenManagerEvents]: Set<TokenManagerEvents[E]> };

/** `max` bounds the options a timer waits for: a timer fires at once for a longer delay. */
function assertNonNegative(name: string, value: number | undefined, max = Infinity): void {
  if (value !== undefined && !(Number.isFinite(value) && value >= 0 && value <= max)) {
    throw configurationError(`${name} must be a number ≥ 0${Number.isFinite(max) ? ` and ≤ ${max}` : ''}`);
  }
}

/** A promise with its settle functions; its rejection is always handled, even when nobody waits on it. */
interface Deferred<T> {
  readonly promise: Promise<T>;
  readonly resolve: (value: T) => void;
  readonly reject: (error: unknown) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

const accessTokenOf = (tokens: TokenSet) => tokens.accessToken;

/**
 * The most time a request is given to reach the server with a token that is being refreshed: a token
 * with more left is sent at once while the refresh runs (with the default 30 s margin, a slow token
 * endpoint stalls no request until the last 5 s).
 */
const SEND_WINDOW_MS = 5_000;

/** The least time a store call is given before it is given up on, whatever `refreshTimeoutMs` is. */
const STORE_CALL_MIN_LIMIT_MS = 5_000;

/** Two token sets are the same session state when both tokens match. */
const sameTokens = (a: TokenSet, b: TokenSet) => a.accessToken === b.accessToken && a.refreshToken === b.refreshToken;

/** Two store states are the same: both empty, or the same tokens at the same revision. */
const sameStored = (a: StoredTokens | undefined, b: StoredTokens | undefined) =>
  a === undefined || b === undefined ? a === b : a.revision === b.revision && sameTokens(a.tokens, b.tokens);

/**
 * One refresh: take the store lock, re-read the store, call the token endpoint (with retries),
 * persist, release. Requests wait on its current cohort; when a token request stays open past
 * `refreshTimeoutMs` the cohort is released with `REFRESH_TIMEOUT`, but the request goes on and
 * later callers join the same refresh, so a refresh token is never presented while an earlier
 * presentation of it may still be answered.
 */
interface Refresh {
  readonly generation: number;
  /** Aborted when the session is replaced (setTokens, clear): the refresh's result is then worthless. */
  readonly controller: AbortController;
  cohort: Deferred<TokenSet>;
  /** Releases the current cohort with REFRESH_TIMEOUT (see watch). */
  watchdog: ReturnType<typeof setTimeout> | undefined;
  requestOpen: boolean;
}

/**
 * Creates the refresh engine for one OAuth session. Adapters (`@tokenrelay/axios`,
 * `@tokenrelay/fetch`) ask it for the access token before each request and for a refresh when a
 * response says the token is no longer valid; it guarantees one token-endpoint call at a time.
 *
 * @throws TokenRelayError `CONFIGURATION_ERROR` (synchronously) for invalid options.
 * @example
 * ```ts
 * const manager = createTokenManager({
 *   tokens: { accessToken, refreshToken, expiresAt },
 *   refresh: refreshTokenGrant({ tokenEndpoint: 'https://auth.example.com/oauth/token', clientId: 'app' }),
 * })
 * manager.on('sessionExpired', () => showLogin())
 * ```
 */
export function createTokenManager(options: TokenManagerOptions): TokenManager {
  if (typeof options?.refresh !== 'function') {
    throw configurationError('refresh must be a function, e.g. refreshTokenGrant()');
  }
  assertNonNegative('refreshMarginMs', options.refreshMarginMs);
  assertNonNegative('refreshTimeoutMs', options.refreshTimeoutMs, MAX_TIMER_MS);
  assertNonNegative('lateAnswerWaitMs', options.lateAnswerWaitMs, MAX_TIMER_MS);
  const clock = options.clock ?? Date;
  /** The one check of tokens a caller gives: the shared parser, plus expiry units against the clock. */
  const parseGivenTokens = (tokens: unknown, refuse: (problem: string) => Error): TokenSet => {
    const parsed = parseTokenSet(tokens, refuse);
    const problem = expiresAtProblem(parsed, clock.now());
    if (problem !== undefined) throw refuse(problem);
    return parsed;
  };
  const initialTokens =
    options.tokens === undefined
      ? undefined
      : parseGivenTokens(options.tokens, (problem) => configurationError(`tokens: ${problem}`));
  const retry = options.retry === false ? undefined : options.retry;
  assertNonNegative('retry.retries', retry?.retries);
  assertNonNegative('retry.minDelayMs', retry?.minDelayMs);
  assertNonNegative('retry.maxDelayMs', retry?.maxDelayMs, MAX_TIMER_MS);
  assertNonNegative('retry.pauseAfterFailureMs', retry?.pauseAfterFailureMs);
  assertNonNegative('retry.maxPauseAfterFailureMs', retry?.maxPauseAfterFailureMs);

  const refreshHandler = options.refresh;
  const acquires = refreshHandler.needsRefreshToken === false;
  const refreshMarginMs = options.refreshMarginMs ?? 30_000;
  const refreshTimeoutMs = options.refreshTimeoutMs ?? 10_000;
  // A small refreshTimeoutMs (even 0: never hold a request) must not fail a healthy store's calls.
  const storeCallLimitMs = Math.max(refreshTimeoutMs, STORE_CALL_MIN_LIMIT_MS);
  const lateAnswerWaitMs = Math.max(options.lateAnswerWaitMs ?? 60_000, refreshTimeoutMs);
  const retries = options.retry === false ? 0 : (retry?.retries ?? 2);
  const minDelayMs = retry?.minDelayMs ?? 200;
  const maxDelayMs = retry?.maxDelayMs ?? 5_000;
  const pauseAfterFailureMs = retry?.pauseAfterFailureMs ?? 1_000;
  const maxPauseAfterFailureMs = Math.max(retry?.maxPauseAfterFailureMs ?? 1_000, pauseAfterFailureMs);
  const shouldRetry = retry?.shouldRetry ?? ((error: unknown) => isTokenRelayError(error) && error.transient);
  const store: TokenStore = options.store ?? memoryStore(initialTokens && { tokens: initialTokens, revision: 1 });

  let current: TokenSet | undefined;
  /** The last session setTokens() began, as `current` held it: while the store misses it, rewritten as a new session. */
  let signedIn: TokenSet | undefined;
  /** The revision of `current`: the stored one, or one more when memory is ahead of a store that missed a write. */
  let currentRevision = 0;
  /** What this manager last knew the store to hold (read, written or announced). */
  let persisted: StoredTokens | undefined;
  let highestRevision = 0;
  /** When `current` was obtained; with `expiresAt` it gives the token's lifetime. */
  let obtainedAt = 0;
  /** The server refused this access token (a 401 led to refresh()): never fall back to it. */
  let refusedAccessToken: string | undefined;
  /** Without a custom store the initial tokens are known at once, and the hot path never awaits a load. */
  let loaded = options.store === undefined;
  let loading: Promise<void> | undefined;
  let running: Refresh | undefined;
  /** Set when the refresh token died; every request fails fast with it until a new session. */
  let sessionExpiredError: TokenRelayError | undefined;
  /** After a failed refresh, the next one waits until `until`; requests meanwhile fail fast with `error`. */
  let pause: { error: TokenRelayError; until: number } | undefined;
  let consecutiveFailures = 0;
  /** Bumped by setTokens/clear, so that a refresh of a replaced session cannot overwrite the new one. */
  let generation = 0;
  /** This manager's store writes run one after another, so a sign-out always lands after a refresh's write. */
  let writes: Promise<unknown> = Promise.resolve();
  /** Local sign-ins and sign-outs whose store writes are still under way. */
  let replacing = 0;
  let confirming: Promise<void> | undefined;
  const listeners: Listeners = { refresh: new Set(), refreshError: new Set(), sessionExpired: new Set() };

  function adopt(tokens: TokenSet | undefined, revision: number): void {
    if (tokens !== current) {
      current = tokens && Object.freeze({ ...tokens });
      obtainedAt = clock.now();
    }
    currentRevision = revision;
    highestRevision = Math.max(highestRevision, revision);
  }

  function noteStored(value: StoredTokens | undefined): void {
    persisted = value;
    if (value) highestRevision = Math.max(highestRevision, value.revision);
  }

  if (loaded) {
    adopt(initialTokens, initialTokens ? 1 : 0);
    noteStored(initialTokens && { tokens: initialTokens, revision: 1 });
  }

  function emit<E extends keyof TokenManagerEvents>(event: E, ...args: Parameters<TokenManagerEvents[E]>): void {
    for (const listener of listeners[event]) {
      try {
        (listener as (...values: Parameters<TokenManagerEvents[E]>) => void)(...args);
      } catch (error) {
        // A listener's bug must not break the refresh; surface it where uncaught errors go.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  /** A store's failure to `action`, as a STORE_ERROR (one the store threw itself is kept as it is). */
  const storeFailed = (action: string, cause: unknown) =>
    isTokenRelayError(cause) && cause.code === ErrorCode.STORE_ERROR ? cause : storeError(`Store ${action} failed`, cause);

  const refuseStored = (problem: string) => storeError(`Store holds no session: ${problem}`);

  /**
   * One store call, given up as a STORE_ERROR when it has not settled within `refreshTimeoutMs`: a
   * hung store (a stalled network file system, a Redis that never answers) must not hang the
   * requests, sign-ins and sign-outs queued behind it. A call given up on may still land later: the
   * revisions of later writes and reads take that into account, a store keeps its calls in the order
   * they were made (docs/stores.md), and a refresh keeps its lock until its write settles (runRefresh).
   * `givenUp` is told of a call given up on, with the promise of its settling.
   */
  function storeCall<T>(action: string, call: () => T | Promise<T>, givenUp?: (settling: Promise<unknown>) => void): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const settling = Promise.resolve().then(call);
    const hung = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        givenUp?.(settling.catch(() => undefined));
        reject(storeError(`Store ${action} did not settle within ${storeCallLimitMs} ms`));
      }, storeCallLimitMs);
    });
    return Promise.race([settling, hung]).finally(() => clearTimeout(timer));
  }

  async function readStore(): Promise<StoredTokens | undefined> {
    let value: unknown;
    try {
      value = await storeCall('read', () => store.get());
    } catch (error) {
      throw storeFailed('read', error);
    }
    return value === undefined ? undefined : parseStoredTokens(value, refuseStored);
  }

  /** Runs a store write after every earlier write of this manager has settled. */
  function enqueueWrite<T>(write: () => Promise<T>): Promise<T> {
    const result = writes.then(write);
    writes = result.catch(() => undefined);
    return result;
  }

  /**
   * A write of a refresh or a load, in the queue of this manager's writes, and only if no sign-in or
   * sign-out here came since `sinceGeneration` (that one wins): resolves `false` when skipped or refused.
   */
  function writeUnlessReplaced(
    sinceGeneration: number,
    value: StoredTokens,
    options: TokenStoreSetOptions & { readonly expectedRevision: number },
    givenUp?: (settling: Promise<unknown>) => void,
  ): Promise<boolean> {
    return enqueueWrite(async () => sinceGeneration === generation && (await writeStore(value, options, givenUp)));
  }

  /** What the store holds, or `undefined` when it cannot be read now (which is not an empty store). */
  const readIfReadable = () => readStore().then((stored) => ({ stored }), () => undefined);

  async function writeStore(
    value: StoredTokens,
    options: TokenStoreSetOptions,
    givenUp?: (settling: Promise<unknown>) => void,
  ): Promise<boolean> {
    let written: boolean;
    try {
      written = (await storeCall('write', () => store.set(value, options), givenUp)) !== false;
    } catch (error) {
      throw storeFailed('write', error);
    }
    if (written) noteStored(value);
    return written;
  }

  /** Takes over what the store holds: tokens, a signed-out (empty) store, or a dead session. */
  function adoptStored(value: StoredTokens | undefined): void {
    noteStored(value);
    adopt(value?.tokens, value?.revision ?? 0);
    pause = undefined;
    consecutiveFailures = 0;
    if (value?.sessionExpired) {
      expireSession(new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'Refresh token dead (found by another store holder); sign in again'));
    } else {
      sessionExpiredError = undefined;
    }
  }

  function expireSession(error: TokenRelayError): void {
    if (sessionExpiredError) return;
    sessionExpiredError = error;
    emit('sessionExpired', error);
  }

  /** Writes the initial tokens to an empty store; under its lock, so a late starter never overwrites rotated tokens. */
  async function seedStore(seed: TokenSet, startedGeneration: number): Promise<StoredTokens | undefined> {
    const lock = store.lock ? await takeLock() : undefined;
    try {
      const stored = lock ? await readStore() : undefined;
      if (stored) return stored;
      const value: StoredTokens = { tokens: seed, revision: 1 };
      // In the queue of this manager's writes, and never after a sign-in or sign-out here: a clear()
      // during the load must not be followed by the seed landing in the store.
      const written = await writeUnlessReplaced(startedGeneration, value, { expectedRevision: 0 });
      if (written) return value;
      // Signed in or out here meanwhile: the load's result is not used.
      return startedGeneration === generation ? await readStore() : undefined;
    } finally {
      if (lock) await releaseLock(lock);
    }
  }

  function ensureLoaded(): Promise<void> {
    if (loading) return loading;
    loading = (async () => {
      const startedGeneration = generation;
      let value: StoredTokens | undefined;
      try {
        value = await readStore();
        if (startedGeneration !== generation) return;
        if (!value && initialTokens) value = await seedStore(initialTokens, startedGeneration);
      } catch (error) {
        loading = undefined;
        throw storeFailed('read', error);
      }
      if (startedGeneration !== generation) return;
      adoptStored(value);
      loaded = true;
    })();
    // The load may seed the store under its lock: a refresh waits for it as for an earlier refresh.
    chainRun(loading);
    return loading;
  }

  /** A refresh waiting for the store's lock: news of other tokens ends the wait (see runRefresh). */
  let lockWait: { base: TokenSet | undefined; controller: AbortController } | undefined;
  /**
   * The store lock a refresh kept after it ended, for a write of its own that was given up on but may
   * still land (see runRefresh); `settled` settles when that write can land no more. The next refresh
   * takes it over rather than ask the store for a lock this manager already holds (which would wait
   * for itself).
   */
  let keptLock: { lock: TokenStoreLock; settled: Promise<unknown>; takenOver?: boolean } | undefined;
  /**
   * Settles when every refresh (and the first load, which may seed the store under its lock) has
   * ended, its store lock released or kept. A refresh of a replaced session may still hold the lock, in
   * a store call not yet given up on: the next refresh waits for it rather than ask the store for a
   * lock this manager holds. Every earlier one, not just the last: a refresh replaced in turn ends
   * while the one it waited for may still hold the lock.
   */
  let lastRun: Promise<unknown> = Promise.resolve();
  const chainRun = (run: Promise<unknown>) => {
    lastRun = lastRun.then(() => run).catch(() => undefined);
  };
  const tokensAnnounced = new Error('tokens announced');

  store.subscribe?.((announced) => {
    let value: StoredTokens | undefined;
    try {
      value = announced === undefined ? undefined : parseStoredTokens(announced, refuseStored);
    } catch {
      return; // Unreadable news is no news: the next refresh re-reads the store under its lock.
    }
    // Another process or tab wrote the store. News that comes while our own sign-in or sign-out is
    // being written is older than it; ignore that, our own write, and news older than what we know.
    if (replacing > 0) return;
    if (value && current && sameTokens(value.tokens, current) && !value.sessionExpired === !sessionExpiredError) return;
    if (value && persisted && value.revision < persisted.revision) return;
    adoptStored(value);
    loaded = true;
    if (value && !value.sessionExpired && lockWait && !(lockWait.base && sameTokens(value.tokens, lockWait.base)) && isFresh(value.tokens)) {
      lockWait.controller.abort(tokensAnnounced);
    }
    confirmAnnouncement();
  });

  /**
   * News can arrive late (a file watcher, a pub/sub hop): after acting on it, read the store once
   * to make sure nothing newer — a sign-out, say — has replaced it meanwhile.
   */
  function confirmAnnouncement(): void {
    confirming ??= (async () => {
      const startedGeneration = generation;
      try {
        const value = await readStore();
        if (startedGeneration !== generation || replacing > 0 || running || sameStored(value, persisted)) return;
        // Only news newer than the news: a sign-out, or a higher revision. A read that lags behind the
        // announcement (a tab's copy of localStorage, a replica) must never roll the session back.
        if (value && value.revision <= (persisted?.revision ?? 0)) return;
        adoptStored(value);
      } catch {
        // A store that cannot be read now is re-read under the lock by the next refresh.
      } finally {
        confirming = undefined;
      }
    })();
  }

  /**
   * Takes the store's lock, giving up with a STORE_ERROR after `lateAnswerWaitMs`: a holder's token
   * request is awaited no longer than that, so a lock held longer belongs to a frozen holder (or a
   * store that hangs). Also when the store ignores the abort; a lock granted after that is given back.
   * `controller` is the wait's own: aborting it gives up the wait (the time limit aborts it too).
   */
  async function takeLock(controller = new AbortController()): Promise<TokenStoreLock> {
    controller.signal.throwIfAborted();
    const timer = setTimeout(() => {
      controller.abort(storeError(`Store lock not obtained within ${lateAnswerWaitMs} ms`));
    }, lateAnswerWaitMs);
    const taking = Promise.resolve().then(() => (store.lock as NonNullable<TokenStore['lock']>)({ signal: controller.signal }));
    try {
      return await abortable(taking, controller.signal);
    } catch (error) {
      taking.then(releaseLock, () => undefined);
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** A failed or hung release is the lock's problem, not the refresh's: its lease expires on its own. */
  async function releaseLock(lock: TokenStoreLock): Promise<void> {
    await storeCall('lock release', () => lock.release()).catch(() => undefined);
  }

  /**
   * Takes the store's lock for a refresh of `base`. Resolves `undefined` instead when, while
   * waiting, the store announced tokens other than `base`: someone else refreshed, so the
   * waiter can use those at once instead of queueing for the lock only to find them there.
   */
  async function lockOrAnnouncement(base: TokenSet | undefined, signal: AbortSignal): Promise<TokenStoreLock | undefined> {
    signal.throwIfAborted();
    const controller = new AbortController();
    const onRefreshAbort = () => controller.abort(signal.reason);
    signal.addEventListener('abort', onRefreshAbort, { once: true });
    lockWait = { base, controller };
    try {
      return await takeLock(controller);
    } catch (error) {
      if (controller.signal.reason === tokensAnnounced && !signal.aborted) return undefined;
      throw isTokenRelayError(error) || signal.aborted ? error : storeFailed('lock', error);
    } finally {
      lockWait = undefined;
      signal.removeEventListener('abort', onRefreshAbort);
    }
  }

  /** Fresh = not within the refresh margin of its expiry. The margin is at most a quarter of the lifetime. */
  function isFresh(tokens: TokenSet): boolean {
    return tokens.expiresAt === undefined || clock.now() < tokens.expiresAt - marginOf(tokens.expiresAt);
  }

  /** The refresh margin of the current token, which expires at `expiresAt`: at most a quarter of its lifetime. */
  function marginOf(expiresAt: number): number {
    return Math.min(refreshMarginMs, Math.max(0, expiresAt - obtainedAt) / 4);
  }

  /**
   * Good to send without waiting for the refresh that is due: not refused, and farther from its
   * expiry than the time a request takes to reach the server — half the refresh margin, at most
   * {@link SEND_WINDOW_MS} — so it cannot expire on its way.
   */
  function isSendable(tokens: TokenSet): boolean {
    if (tokens.expiresAt === undefined || tokens.accessToken === refusedAccessToken || sessionExpiredError) return false;
    return clock.now() < tokens.expiresAt - Math.min(marginOf(tokens.expiresAt) / 2, SEND_WINDOW_MS);
  }

  /** Expired by its clock (a token without an expiry never is). */
  function isExpired(tokens: TokenSet): boolean {
    return tokens.expiresAt !== undefined && clock.now() >= tokens.expiresAt;
  }

  /** The current token may still be sent: not expired by its clock, and not refused by the server. */
  function isUsable(tokens: TokenSet): boolean {
    return tokens.expiresAt !== undefined && !isExpired(tokens) && tokens.accessToken !== refusedAccessToken && !sessionExpiredError;
  }

  function failFast(): TokenRelayError {
    if (sessionExpiredError) {
      return new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'Session expired; sign in again', { cause: sessionExpiredError });
    }
    return new TokenRelayError(ErrorCode.NO_TOKENS, 'No tokens; call setTokens() after sign-in');
  }

  const lockLost = (cause?: unknown) =>
    new TokenRelayError(ErrorCode.STORE_ERROR, 'Store lock lost during the refresh', { transient: true, cause });

  /** A token request open longer than `ms`: the first cohort's wait, or (in doubt) the whole request. */
  const timedOut = (ms: number, inDoubt?: true) =>
    new TokenRelayError(ErrorCode.REFRESH_TIMEOUT, `No answer from the token endpoint within ${ms} ms`, { transient: true, inDoubt });

  /**
   * Arms the timeout of the current cohort: while a token request is open, and from the moment a
   * caller joins, whatever the refresh waits for (the store's lock held by a frozen holder, a slow
   * store), so no caller waits longer than `refreshTimeoutMs` for one token request or for the store.
   * (A retry's back-off between attempts is bounded by `maxDelayMs`.)
   */
  function watch(refresh: Refresh): void {
    if (refresh.watchdog !== undefined) return;
    refresh.watchdog = setTimeout(() => {
      refresh.watchdog = undefined;
      // The refresh goes on (an open request's answer is kept when it comes); later callers join it.
      const error = refresh.requestOpen
        ? timedOut(refreshTimeoutMs)
        : new TokenRelayError(ErrorCode.REFRESH_TIMEOUT, `No refresh within ${refreshTimeoutMs} ms: the store or its lock is slow`, {
            transient: true,
          });
      const released = refresh.cohort;
      refresh.cohort = deferred();
      released.reject(error);
      emit('refreshError', error);
    }, refreshTimeoutMs);
  }

  function unwatch(refresh: Refresh): void {
    clearTimeout(refresh.watchdog);
    refresh.watchdog = undefined;
  }

  /**
   * One token request. It is never abandoned because it is slow: the cohort's watchdog releases
   * the waiters, and the request is aborted only when the session is replaced or after
   * `lateAnswerWaitMs`, when its answer can no longer be expected.
   */
  async function tokenRequest(refresh: Refresh, from: TokenSet | undefined): Promise<TokenSet> {
    const controller = new AbortController();
    const onReplaced = () => controller.abort(refresh.controller.signal.reason);
    refresh.controller.signal.addEventListener('abort', onReplaced, { once: true });
    const lateLimit = setTimeout(() => {
      controller.abort(timedOut(lateAnswerWaitMs, true));
    }, lateAnswerWaitMs);
    const aborted = new Promise<never>((_, reject) => {
      controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true });
    });
    aborted.catch(() => undefined);
    refresh.requestOpen = true;
    watch(refresh);
    try {
      const result = await Promise.race([
        refreshHandler({ tokens: from as TokenSet, signal: controller.signal }),
        aborted,
      ]);
      return parseGivenTokens(
        result,
        (problem) =>
          new TokenRelayError(ErrorCode.INVALID_TOKEN_RESPONSE, `refresh returned unusable tokens: ${problem}`),
      );
    } finally {
      // The bound is per phase: a retry's back-off is bounded by maxDelayMs, the store write by its own limit.
      refresh.requestOpen = false;
      unwatch(refresh);
      clearTimeout(lateLimit);
      refresh.controller.signal.removeEventListener('abort', onReplaced);
    }
  }

  /**
   * A presentation of the refresh token that the server may have consumed must never be repeated. A grant
   * that presents none (client credentials, JWT bearer: a fresh assertion each time) may just ask again —
   * unless the tokens it is handed hold a refresh token, which a handler of its own may present.
   */
  const mayRetry = (error: unknown, from: TokenSet | undefined) =>
    ((acquires && from?.refreshToken === undefined) ||
      !(isTokenRelayError(error) && (error.inDoubt || error.code === ErrorCode.REFRESH_TIMEOUT))) &&
    shouldRetry(error);

  /**
   * Token requests under the retry policy; turns exhausted or foreign failures into REFRESH_FAILED.
   * After a failed refresh the next one is a single probe: the pause between refreshes is the back-off.
   */
  async function requestWithRetries(
    refresh: Refresh,
    from: TokenSet | undefined,
    lock: TokenStoreLock | undefined,
    untouched: () => boolean,
  ): Promise<TokenSet> {
    const attemptsAllowed = consecutiveFailures > 0 ? 0 : retries;
    for (let attemptIndex = 0; ; attemptIndex++) {
      if (lock) await assertLockHeld(lock, refresh);
      try {
        return await tokenRequest(refresh, from);
      } catch (error) {
        if (refresh.controller.signal.aborted) throw error;
        const retryable = attemptIndex < attemptsAllowed && mayRetry(error, from) && untouched();
        if (retryable) {
          const backoff = Math.random() * Math.min(maxDelayMs, minDelayMs * 2 ** attemptIndex);
          const serverDelay = isTokenRelayError(error) ? error.retryAfterMs : undefined;
          await delay(Math.min(maxDelayMs, Math.max(backoff, serverDelay ?? 0)), refresh.controller.signal);
          if (untouched()) continue;
          throw error;
        }
        if (isTokenRelayError(error) && (!shouldRetry(error) || error.code === ErrorCode.REFRESH_TIMEOUT)) throw error;
        const known = isTokenRelayError(error) ? error : undefined;
        // The constructor leaves out the details that are undefined.
        throw new TokenRelayError(
          ErrorCode.REFRESH_FAILED,
          known ? `Refresh failed after ${attemptIndex + 1} attempt(s): ${known.message}` : 'refresh threw (see cause)',
          { cause: error, transient: known?.transient, status: known?.status, oauthError: known?.oauthError, retryAfterMs: known?.retryAfterMs },
        );
      }
    }
  }

  /**
   * Right before a token request under the store's lock: is the lock still ours? Its signal learns of
   * a loss only from a timer, and a holder frozen past its lease resumes before any timer runs, so the
   * store is asked (see `TokenStoreLock.assertHeld`). Any failure of the check means no token request.
   */
  async function assertLockHeld(lock: TokenStoreLock, refresh: Refresh): Promise<void> {
    if (lock.signal?.aborted) throw lockLost(lock.signal.reason);
    const { assertHeld } = lock;
    if (!assertHeld) return;
    try {
      await storeCall('lock check', () => assertHeld.call(lock));
    } catch (error) {
      throw lockLost(error);
    }
    // A sign-in or sign-out here during the check: the refresh is over (see runRefresh).
    refresh.controller.signal.throwIfAborted();
    if (lock.signal?.aborted) throw lockLost(lock.signal.reason);
  }

  /**
   * Under the store lock, decides what to refresh from. Returns the tokens to use at once (another
   * holder refreshed), or `{ from }` to make a token request from.
   */
  async function reconcileWithStore(
    base: TokenSet | undefined,
    refresh: Refresh,
    lock: TokenStoreLock,
    keepLockFor: (settling: Promise<unknown>) => void,
  ): Promise<TokenSet | { from: TokenSet | undefined }> {
    const replaced = () => refresh.generation !== generation;
    const stored = await readStore();
    // Replaced here (setTokens, clear) or no longer ours to write (a lost lock): stop.
    if (replaced()) return settledAfterReplacement();
    if (lock.signal?.aborted) throw lockLost();
    // Memory ahead of the store: it holds what we replaced, or (when we could not read it before our
    // write) tokens at a lower revision than ours, which a sign-in here outranks. An empty store is never
    // taken for behind: a sign-out elsewhere leaves no revision to compare with.
    const storeMissedOurWrite =
      current !== undefined &&
      currentRevision > (persisted?.revision ?? 0) &&
      (sameStored(stored, persisted) || (stored !== undefined && currentRevision > stored.revision));
    if (storeMissedOurWrite) {
      // Our last write failed (or was withheld after a lost lock): the store holds what we replaced
      // (maybe tokens we already spent). Put ours there before anything else.
      const ours = current as TokenSet;
      const value: StoredTokens = { tokens: ours, revision: (stored?.revision ?? 0) + 1 };
      // In the queue of this manager's writes, and never after a sign-in or sign-out here, which then wins.
      // The sign-in itself, never written: a new session to the store, not a refresh of what it holds.
      const options = { expectedRevision: stored?.revision ?? 0, ...(ours === signedIn && { newSession: true }) };
      const written = await writeUnlessReplaced(refresh.generation, value, options, keepLockFor);
      if (replaced()) return settledAfterReplacement();
      // Refused, or news of another session came while writing: look again.
      if (!written || current !== ours) return reconcileWithStore(base, refresh, lock, keepLockFor);
      adopt(ours, value.revision);
      return { from: ours };
    }
    if (!stored) {
      if (acquires) return { from: undefined };
      // Signed out elsewhere while we waited: never resurrect the session with our old tokens.
      adoptStored(undefined);
      throw failFast();
    }
    if (stored.sessionExpired) {
      adoptStored(stored);
      throw failFast();
    }
    if (base && sameTokens(stored.tokens, base)) {
      noteStored(stored);
      return { from: base };
    }
    // Another holder refreshed (or signed in) meanwhile.
    adoptStored(stored);
    return isFresh(stored.tokens) ? (current as TokenSet) : { from: current };
  }

  async function runRefresh(refresh: Refresh, base: TokenSet | undefined): Promise<TokenSet> {
    const replaced = () => refresh.generation !== generation;
    let lock: TokenStoreLock | undefined;
    /** Writes of ours under the lock, given up on but maybe still landing: the lock is kept until they settle. */
    let unsettledWrite: Promise<unknown> | undefined;
    const keepLockFor = (settling: Promise<unknown>) => {
      unsettledWrite = Promise.all([unsettledWrite, settling]);
    };
    let from = base;
    const previousRun = lastRun;
    try {
      // This manager's own writes (a sign-in's, say) settle first, so it knows what the store holds.
      await writes;
      if (replaced()) return settledAfterReplacement();
      if (store.lock) {
        // Several processes share this store: under its lock, re-read it, and skip the token call
        // if another holder already refreshed (rotating refresh tokens allow one use only).
        // (Bounded: a replaced refresh's token request is aborted, and its store calls are limited.)
        await abortable(previousRun, refresh.controller.signal);
        if (replaced()) return settledAfterReplacement();
        const kept = keptLock;
        keptLock = undefined;
        if (kept) kept.takenOver = true;
        if (kept && !kept.lock.signal?.aborted) {
          // Still ours, kept for a write that may land: go on under it, and keep it as long as that write may.
          lock = kept.lock;
          keepLockFor(kept.settled);
          // Nothing is read or presented before that write settles (within a store call's limit): a store whose
          // compare-and-set is "re-read, then write" under the lock would let it land after ours and roll back to it.
          await abortable(storeCall('write', () => kept.settled), refresh.controller.signal);
        } else {
          // A kept lock that was lost guards nothing more: given back at once (it may hold a file or a connection).
          if (kept) void releaseLock(kept.lock);
          lock = await lockOrAnnouncement(base, refresh.controller.signal);
        }
        if (!lock) {
          // An announcement is only acted on when fresh (see subscribe).
          emit('refresh', current as TokenSet);
          return current as TokenSet;
        }
        if (replaced()) return settledAfterReplacement();
        const decision = await reconcileWithStore(base, refresh, lock, keepLockFor);
        if (replaced()) return settledAfterReplacement();
        if (!('from' in decision)) {
          emit('refresh', decision);
          return decision;
        }
        from = decision.from;
      }
      // The revision refreshed from: the write is fenced with it, so a session replaced meanwhile wins.
      // (Memory may be a revision ahead, after a failed write: the new tokens replace both.)
      const baseRevision = persisted?.revision ?? 0;
      const newRevision = Math.max(currentRevision, baseRevision) + 1;
      const refreshed = from;
      // Still the session we refresh, not one another holder announced meanwhile (a sign-in or sign-out).
      const untouched = () =>
        refreshed === undefined ? current === undefined : current !== undefined && sameTokens(current, refreshed);
      let fresh: TokenSet;
      try {
        fresh = await requestWithRetries(refresh, from, lock, untouched);
      } catch (error) {
        if (!replaced() && !untouched()) {
          // Replaced elsewhere meanwhile: its failure is no longer ours; the waiters get the new session.
          if (!current || sessionExpiredError) throw failFast();
          return current;
        }
        if (!replaced() && isTokenRelayError(error) && error.code === ErrorCode.SESSION_EXPIRED && !acquires) {
          return await refreshTokenRefused(error, from, baseRevision, lock, replaced);
        }
        throw error;
      }
      if (replaced()) return settledAfterReplacement();
      const merged: TokenSet = { ...fresh };
      // No new refresh token in the response (Salesforce, Google) means: keep the one we have; so for
      // the scope and the app's session data.
      for (const name of ['refreshToken', 'scope', 'sessionData'] as const) {
        if (from?.[name] !== undefined) (merged as unknown as Record<string, unknown>)[name] ??= from[name];
      }
      const keepInMemory = () => {
        adopt(merged, newRevision);
        refusedAccessToken = undefined;
        return current as TokenSet;
      };
      // A lost lock may mean another holder took over: write nothing, announce nothing, keep the
      // tokens in memory. The next refresh, under the lock again, finds the store behind memory and
      // writes these first.
      if (lock?.signal?.aborted) {
        // ...unless the session was replaced meanwhile.
        if (untouched()) return keepInMemory();
        if (!current || sessionExpiredError) throw failFast();
        return current;
      }
      let written: boolean;
      try {
        written = await writeUnlessReplaced(refresh.generation, { tokens: merged, revision: newRevision }, { expectedRevision: baseRevision }, keepLockFor);
      } catch (error) {
        // With rotation the old refresh token is already dead: the new one must never be lost.
        if (!replaced() && untouched()) keepInMemory();
        throw error;
      }
      if (replaced()) return settledAfterReplacement();
      if (!written) {
        // The session was replaced by another holder of the store (a sign-out or a new sign-in): it wins.
        const stored = await readStore();
        // ...unless a sign-in or sign-out here came during the read: that one is newer still.
        if (replaced()) return settledAfterReplacement();
        adoptStored(stored);
        if (!current || sessionExpiredError) throw failFast();
        return current;
      }
      emit('refresh', keepInMemory());
      return current as TokenSet;
    } finally {
      if (lock && unsettledWrite) {
        // Our write may still land: keep the lock until it settles (at most lateAnswerWaitMs), so that no
        // holder reads the tokens it replaces and presents their spent refresh token. The waiters go on.
        let timer: ReturnType<typeof setTimeout> | undefined;
        const late = new Promise<void>((given) => {
          timer = setTimeout(given, lateAnswerWaitMs);
          // Waiting for a write must never keep a process alive.
          (timer as { unref?: () => void }).unref?.();
        });
        const kept: NonNullable<typeof keptLock> = { lock, settled: Promise.race([unsettledWrite, late]).finally(() => clearTimeout(timer)) };
        keptLock = kept;
        // Released then, unless the next refresh took it over (and with it, this duty).
        void kept.settled.then(() => {
          if (kept.takenOver) return;
          keptLock = undefined;
          return releaseLock(kept.lock);
        });
      } else if (lock) {
        // Not awaited: the tokens are stored, and the waiters need not wait for a store round trip more.
        void releaseLock(lock);
      }
    }
  }

  /**
   * The token endpoint refused the refresh token. Under a lock, another holder may have rotated it
   * a moment ago: adopt theirs. Otherwise the session is dead: tell every holder of the store, so
   * none presents the dead token again.
   */
  async function refreshTokenRefused(
    error: TokenRelayError,
    from: TokenSet | undefined,
    baseRevision: number,
    lock: TokenStoreLock | undefined,
    replaced: () => boolean,
  ): Promise<TokenSet> {
    // A store that cannot be read now tells nothing (it is not an empty one): the refusal stands.
    const read = store.lock || store.subscribe ? await readIfReadable() : undefined;
    // A sign-in or sign-out here during the read: the refused token is no longer this session's.
    if (replaced()) return settledAfterReplacement();
    if (read) {
      const { stored } = read;
      if (!stored) {
        adoptStored(undefined);
        throw failFast();
      }
      if (stored.revision !== baseRevision && !stored.sessionExpired) {
        // The store moved on meanwhile (a holder rotated the token, or a new sign-in): this session lives.
        adoptStored(stored);
        return stored.tokens;
      }
    }
    // Tell this process's listeners at once; the other holders learn it from the store.
    expireSession(error);
    // After losing the lock, write nothing: the next holder learns of the dead token from the server.
    if (from && !lock?.signal?.aborted) {
      const mark: StoredTokens = { tokens: from, revision: baseRevision + 1, sessionExpired: true };
      await enqueueWrite(() => writeStore(mark, { expectedRevision: baseRevision })).catch(() => false);
    }
    throw error;
  }

  /** What waiters of a refresh get when setTokens()/clear() replaced the session meanwhile. */
  function settledAfterReplacement(): TokenSet {
    if (current && !sessionExpiredError) return current;
    throw failFast();
  }

  function startRefresh(base: TokenSet | undefined): Refresh {
    const refresh: Refresh = {
      generation,
      controller: new AbortController(),
      cohort: deferred(),
      watchdog: undefined,
      requestOpen: false,
    };
    running = refresh;
    const run = runRefresh(refresh, base).then(
      (tokens) => {
        if (running === refresh) running = undefined;
        if (refresh.generation === generation) {
          pause = undefined;
          consecutiveFailures = 0;
        }
        unwatch(refresh);
        refresh.cohort.resolve(tokens);
      },
      (error: unknown) => {
        if (running === refresh) running = undefined;
        unwatch(refresh);
        if (refresh.generation !== generation) {
          // Replaced meanwhile: its waiters were already released by replaceSession.
          return;
        }
        const failure = isTokenRelayError(error)
          ? error
          : new TokenRelayError(ErrorCode.REFRESH_FAILED, 'refresh threw (see cause)', { cause: error });
        if (failure.code === ErrorCode.SESSION_EXPIRED && !acquires) {
          expireSession(failure);
        } else if (failure.code !== ErrorCode.NO_TOKENS && failure.code !== ErrorCode.STORE_ERROR) {
          // Back off across refreshes too: the next one waits, and requests meanwhile fail fast. (A store
          // failure costs the token endpoint nothing: the next refresh re-reads and re-writes first.)
          consecutiveFailures++;
          const step = Math.min(maxPauseAfterFailureMs, pauseAfterFailureMs * 2 ** (consecutiveFailures - 1));
          // A little jitter spreads processes apart; the pause stays long enough to cover an HTTP client's own retries.
          const jittered = step * (0.9 + Math.random() * 0.1);
          const serverDelay = Math.min(maxDelayMs, failure.retryAfterMs ?? 0);
          pause = { error: failure, until: clock.now() + Math.max(jittered, serverDelay) };
        }
        emit('refreshError', failure);
        refresh.cohort.reject(failure);
      },
    );
    chainRun(run);
    return refresh;
  }

  /** Waits for `refresh` as one of its current cohort. */
  function join(refresh: Refresh, signal: AbortSignal | undefined): Promise<TokenSet> {
    watch(refresh);
    return abortable(refresh.cohort.promise, signal);
  }

  function pausedError(): TokenRelayError | undefined {
    if (pause && clock.now() < pause.until) return pause.error;
    pause = undefined;
    return undefined;
  }

  function replaceSession(tokens: TokenSet | undefined, revision: number): void {
    generation++;
    const replaced = running;
    running = undefined;
    sessionExpiredError = undefined;
    pause = undefined;
    consecutiveFailures = 0;
    refusedAccessToken = undefined;
    adopt(tokens, revision);
    loaded = true;
    if (replaced) {
      replaced.controller.abort(new TokenRelayError(ErrorCode.REFRESH_FAILED, 'Session replaced during the refresh'));
      unwatch(replaced);
      try {
        replaced.cohort.resolve(settledAfterReplacement());
      } catch (error) {
        replaced.cohort.reject(error);
      }
    }
  }

  const manager: TokenManager = {
    get tokenEndpoint() {
      return refreshHandler.tokenEndpoint;
    },

    get tokenType() {
      return current?.tokenType;
    },

    currentAccessToken() {
      if (!loaded || sessionExpiredError || !current) return undefined;
      return sendableNow(current);
    },

    getAccessToken({ signal }: GetAccessTokenOptions = {}) {
      return accessTokenToSend(signal, true);
    },

    async refresh({ staleAccessToken, signal }: RefreshOptions = {}) {
      const tokens = await refreshOnce(staleAccessToken, signal);
      // As for getAccessToken: a session another holder signed in meanwhile may have expired by then;
      // it is refreshed once more, and that answer returned even if it has expired too.
      return isExpired(tokens) ? refreshOnce(tokens.accessToken, signal) : tokens;
    },

    async getTokens() {
      if (!loaded) await ensureLoaded();
      return current;
    },

    async setTokens(tokens: TokenSet) {
      const parsed = parseGivenTokens(tokens, (problem) => configurationError(`setTokens: ${problem}`));
      replaceSession(parsed, highestRevision + 1);
      signedIn = current;
      const startedGeneration = generation;
      replacing++;
      await enqueueWrite(async () => {
        if (startedGeneration !== generation) return;
        // One higher than any revision seen, so that no holder mistakes the new session for an old one.
        // A store that cannot be read now is not an empty one: `read` is undefined then.
        const read = await readIfReadable();
        // Revisions keep growing across sign-outs, also in processes that saw fewer writes: the clock is
        // the floor, so a refresh of an old session can never find its expected revision again.
        const revision = Math.max(highestRevision + 1, (read?.stored?.revision ?? 0) + 1, Math.floor(clock.now()));
        if (startedGeneration === generation) {
          // What the store held before this sign-in: if the write fails, the next refresh sees the store
          // missed it and writes the new session first, instead of taking the old one for news. (Unread,
          // it is what was last known: taking it for empty would fence that write out.)
          if (read) noteStored(read.stored);
          adopt(current, revision);
        }
        await writeStore({ tokens: parsed, revision }, { newSession: true });
      }).finally(() => {
        replacing--;
      });
    },

    async clear() {
      replaceSession(undefined, 0);
      const startedGeneration = generation;
      replacing++;
      await enqueueWrite(async () => {
        try {
          await storeCall('clear', () => store.clear());
        } catch (error) {
          throw storeFailed('clear', error);
        }
        if (startedGeneration === generation) noteStored(undefined);
      }).finally(() => {
        replacing--;
      });
    },

    on(event, listener) {
      const set = listeners[event] as Set<typeof listener>;
      set.add(listener);
      return () => {
        set.delete(listener);
      };
    },
  };

  /**
   * The token to send without waiting, if there is one: fresh; or good to send while a proactive
   * refresh runs in the background (starting it when it is due); or still valid in the pause after
   * a failed refresh. `undefined` when the request has to wait (or fail).
   */
  function sendableNow(tokens: TokenSet): string | undefined {
    if (running) return isSendable(tokens) ? tokens.accessToken : undefined;
    if (isFresh(tokens) && tokens.accessToken !== refusedAccessToken) return tokens.accessToken;
    if (pausedError()) return isUsable(tokens) ? tokens.accessToken : undefined;
    if (!isSendable(tokens)) return undefined;
    // Stale-while-revalidate: the refresh runs in the background, and nobody waits for it.
    startRefresh(tokens);
    return tokens.accessToken;
  }

  /**
   * The token to send now, after the single refresh when one is due. Not an async function: a
   * request released by a refresh is one promise step behind it, not three (10,000 waiters are then
   * sent in a third of the microtasks). Every throw still rejects. `askAgain`: a refresh may end with
   * the session another holder signed in meanwhile, whose token can have expired by then: that
   * session is refreshed once more, and that answer is sent even if it has expired too (a token
   * endpoint whose answers arrive expired costs two token calls per wave, never a loop).
   */
  function accessTokenToSend(signal: AbortSignal | undefined, askAgain: boolean): Promise<string> {
    try {
      signal?.throwIfAborted();
      if (!loaded) return abortable(ensureLoaded(), signal).then(() => accessTokenToSend(signal, askAgain));
      if (sessionExpiredError) throw failFast();
      const before = current;
      if (!before) {
        if (!acquires) throw failFast();
        if (running) return join(running, signal).then(accessTokenOf);
        const paused = pausedError();
        if (paused) throw paused;
        return join(startRefresh(undefined), signal).then(accessTokenOf);
      }
      const now = sendableNow(before);
      if (now !== undefined) return Promise.resolve(now);
      if (running) return waitWithFallback(join(running, signal), before, signal, askAgain);
      const paused = pausedError();
      if (paused) throw paused;
      return waitWithFallback(join(startRefresh(before), signal), before, signal, askAgain);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** One refresh, or the one running: `manager.refresh` without its second look at an expired answer. */
  async function refreshOnce(staleAccessToken: string | undefined, signal: AbortSignal | undefined): Promise<TokenSet> {
    signal?.throwIfAborted();
    if (!loaded) await abortable(ensureLoaded(), signal);
    // Refused also while a proactive refresh runs: no request may go out with it meanwhile.
    if (current && staleAccessToken === current.accessToken) refusedAccessToken = current.accessToken;
    if (running) return join(running, signal);
    if (sessionExpiredError) throw failFast();
    if (!current && !acquires) throw failFast();
    // The failed request used an older token and a refresh already replaced it: no second refresh —
    // unless the replacement is itself no longer fresh.
    if (current && staleAccessToken !== undefined && staleAccessToken !== current.accessToken && isFresh(current)) {
      return current;
    }
    const paused = pausedError();
    if (paused) throw paused;
    return join(startRefresh(current), signal);
  }

  /**
   * Waits for a refresh; if it fails, a request that the token it started with still covers (not
   * expired, not refused by the server) is sent with that token instead of failing.
   */
  function waitWithFallback(
    waiting: Promise<TokenSet>,
    before: TokenSet | undefined,
    signal: AbortSignal | undefined,
    askAgain: boolean,
  ): Promise<string> {
    return waiting.then((tokens) => (askAgain && isExpired(tokens) ? accessTokenToSend(signal, false) : tokens.accessToken), (error: unknown) => {
      if (before && before === current && isUsable(before) && !(signal?.aborted ?? false)) return before.accessToken;
      throw error;
    });
  }

  return manager;
}
