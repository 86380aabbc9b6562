import { ErrorCode, TokenRelayError, isTokenRelayError } from './errors.js';
import { memoryStore } from './memory-store.js';
import type {
  GetAccessTokenOptions,
  RefreshOptions,
  TokenManager,
  TokenManagerEvents,
  TokenManagerOptions,
  TokenSet,
  TokenStore,
  TokenStoreLock,
} from './types.js';

type Listeners = { [E in keyof TokenManagerEvents]: Set<TokenManagerEvents[E]> };

const configError = (message: string) => new TokenRelayError(ErrorCode.CONFIGURATION_ERROR, message);

function assertNonNegative(name: string, value: number | undefined): void {
  if (value !== undefined && !(Number.isFinite(value) && value >= 0)) {
    throw configError(`createTokenManager: ${name} must be a finite number ≥ 0`);
  }
}

function assertTokenSet(tokens: unknown, where: string): asserts tokens is TokenSet {
  const candidate = tokens as Partial<TokenSet> | null | undefined;
  if (typeof candidate?.accessToken !== 'string' || candidate.accessToken === '') {
    throw configError(`${where}: tokens.accessToken must be a non-empty string`);
  }
  if (candidate.refreshToken !== undefined && typeof candidate.refreshToken !== 'string') {
    throw configError(`${where}: tokens.refreshToken must be a string`);
  }
  if (candidate.expiresAt !== undefined && !Number.isFinite(candidate.expiresAt)) {
    throw configError(`${where}: tokens.expiresAt must be a finite number (epoch milliseconds)`);
  }
}

/** Waits for `promise`, but rejects with the signal's reason as soon as `signal` aborts. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Two token sets are the same session state when both tokens match. */
const sameTokens = (a: TokenSet, b: TokenSet) => a.accessToken === b.accessToken && a.refreshToken === b.refreshToken;

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
    throw configError('createTokenManager: options.refresh must be a function, e.g. refreshTokenGrant({...})');
  }
  assertNonNegative('refreshMarginMs', options.refreshMarginMs);
  assertNonNegative('refreshTimeoutMs', options.refreshTimeoutMs);
  if (options.tokens !== undefined) assertTokenSet(options.tokens, 'createTokenManager');
  const retry = options.retry === false ? undefined : options.retry;
  assertNonNegative('retry.retries', retry?.retries);
  assertNonNegative('retry.minDelayMs', retry?.minDelayMs);
  assertNonNegative('retry.maxDelayMs', retry?.maxDelayMs);

  const refreshHandler = options.refresh;
  const clock = options.clock ?? Date;
  const refreshMarginMs = options.refreshMarginMs ?? 30_000;
  const refreshTimeoutMs = options.refreshTimeoutMs ?? 10_000;
  const retries = options.retry === false ? 0 : (retry?.retries ?? 2);
  const minDelayMs = retry?.minDelayMs ?? 200;
  const maxDelayMs = retry?.maxDelayMs ?? 5_000;
  const shouldRetry = retry?.shouldRetry ?? ((error: unknown) => isTokenRelayError(error) && error.transient);
  const store = options.store ?? memoryStore();

  let current: TokenSet | undefined;
  /** When `current` was obtained; with `expiresAt` it gives the token's lifetime. */
  let obtainedAt = 0;
  /** Without a custom store the initial tokens are known at once, and the hot path never awaits a load. */
  let loaded = options.store === undefined;
  let loading: Promise<void> | undefined;
  let flight: Promise<TokenSet> | undefined;
  let flightController: AbortController | undefined;
  /** Set when the refresh token died; every request fails fast with it until setTokens(). */
  let sessionExpiredError: TokenRelayError | undefined;
  /** Bumped by setTokens/clear, so that a refresh of a replaced session cannot overwrite the new one. */
  let generation = 0;
  const listeners: Listeners = { refresh: new Set(), refreshError: new Set(), sessionExpired: new Set() };

  const adopt = (tokens: TokenSet | undefined) => {
    current = tokens && Object.freeze({ ...tokens });
    obtainedAt = clock.now();
  };
  if (loaded) adopt(options.tokens);

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

  const storeError = (action: string, cause: unknown) =>
    new TokenRelayError(ErrorCode.STORE_ERROR, `The token store failed to ${action} tokens`, { cause });

  /** Writes the initial tokens to an empty store; under its lock, so a late starter never overwrites rotated tokens. */
  async function seedStore(seed: TokenSet): Promise<TokenSet> {
    const lock = await store.lock?.({ signal: new AbortController().signal });
    try {
      const stored = lock ? await store.get() : undefined;
      if (stored) return stored;
      await store.set(seed);
      return seed;
    } finally {
      await lock?.release();
    }
  }

  function ensureLoaded(): Promise<void> {
    loading ??= (async () => {
      const startedGeneration = generation;
      let tokens: TokenSet | undefined;
      try {
        tokens = await store.get();
        if (startedGeneration !== generation) return;
        if (!tokens && options.tokens) tokens = await seedStore(options.tokens);
      } catch (error) {
        loading = undefined;
        throw storeError('read', error);
      }
      if (startedGeneration !== generation) return;
      adopt(tokens);
      loaded = true;
    })();
    return loading;
  }

  /** A refresh waiting for the store's lock: news of other tokens ends the wait (see runRefresh). */
  let lockWait: { base: TokenSet; controller: AbortController } | undefined;
  const tokensAnnounced = new Error('Another holder of the store announced new tokens');

  store.subscribe?.((tokens) => {
    // Another process or tab wrote the store: take its tokens (a new session also ends an expired one).
    if (tokens && current && sameTokens(tokens, current)) return;
    adopt(tokens);
    loaded = true;
    if (tokens) sessionExpiredError = undefined;
    if (tokens && lockWait && !sameTokens(tokens, lockWait.base) && isFresh(tokens)) {
      lockWait.controller.abort(tokensAnnounced);
    }
  });

  /**
   * Takes the store's lock for a refresh of `base`. Resolves `undefined` instead when, while
   * waiting, the store announced tokens other than `base`: someone else refreshed, so the
   * waiter can use those at once instead of queueing for the lock only to find them there.
   */
  async function lockOrAnnouncement(base: TokenSet, signal: AbortSignal): Promise<TokenStoreLock | undefined> {
    const controller = new AbortController();
    const onFlightAbort = () => controller.abort(signal.reason);
    signal.addEventListener('abort', onFlightAbort, { once: true });
    lockWait = { base, controller };
    try {
      return await (store.lock as NonNullable<TokenStore['lock']>)({ signal: controller.signal });
    } catch (error) {
      if (controller.signal.reason === tokensAnnounced && !signal.aborted) return undefined;
      throw error;
    } finally {
      lockWait = undefined;
      signal.removeEventListener('abort', onFlightAbort);
    }
  }

  /** Fresh = not within the refresh margin of its expiry. The margin is at most a quarter of the lifetime. */
  function isFresh(tokens: TokenSet): boolean {
    if (tokens.expiresAt === undefined) return true;
    const lifetime = Math.max(0, tokens.expiresAt - obtainedAt);
    return clock.now() < tokens.expiresAt - Math.min(refreshMarginMs, lifetime / 4);
  }

  function failFast(): TokenRelayError {
    if (sessionExpiredError) {
      return new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'The session has expired; the user must sign in again', {
        cause: sessionExpiredError,
      });
    }
    return new TokenRelayError(ErrorCode.NO_TOKENS, 'The token manager holds no tokens; call setTokens() after sign-in');
  }

  /** One attempt of the refresh handler, bounded by the refresh timeout even if the handler ignores its signal. */
  async function attempt(tokens: TokenSet, flightSignal: AbortSignal): Promise<TokenSet> {
    const controller = new AbortController();
    const onFlightAbort = () => controller.abort(flightSignal.reason);
    flightSignal.addEventListener('abort', onFlightAbort, { once: true });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new TokenRelayError(
          ErrorCode.REFRESH_TIMEOUT,
          `The refresh took longer than ${refreshTimeoutMs} ms and was aborted`,
          { transient: true },
        );
        controller.abort(error);
        reject(error);
      }, refreshTimeoutMs);
    });
    try {
      const result = await Promise.race([refreshHandler({ tokens, signal: controller.signal }), timeout]);
      if (!result || typeof result.accessToken !== 'string' || result.accessToken === '') {
        throw new TokenRelayError(ErrorCode.INVALID_TOKEN_RESPONSE, 'The refresh handler returned no accessToken');
      }
      return result;
    } finally {
      clearTimeout(timer);
      flightSignal.removeEventListener('abort', onFlightAbort);
    }
  }

  /** Runs attempts under the retry policy; turns exhausted or foreign failures into REFRESH_FAILED. */
  async function refreshWithRetries(tokens: TokenSet, flightSignal: AbortSignal): Promise<TokenSet> {
    for (let attemptIndex = 0; ; attemptIndex++) {
      try {
        return await attempt(tokens, flightSignal);
      } catch (error) {
        if (flightSignal.aborted) throw error;
        const retryable = shouldRetry(error);
        if (retryable && attemptIndex < retries) {
          const backoff = Math.random() * Math.min(maxDelayMs, minDelayMs * 2 ** attemptIndex);
          const serverDelay = isTokenRelayError(error) ? error.retryAfterMs : undefined;
          await sleep(Math.min(maxDelayMs, Math.max(backoff, serverDelay ?? 0)), flightSignal);
          continue;
        }
        if (isTokenRelayError(error) && !retryable) throw error;
        const attempts = attemptIndex + 1;
        throw new TokenRelayError(
          ErrorCode.REFRESH_FAILED,
          isTokenRelayError(error)
            ? `The refresh failed after ${attempts} attempt${attempts === 1 ? '' : 's'}: ${error.message}`
            : 'The refresh handler threw an error (see cause)',
          {
            cause: error,
            ...(isTokenRelayError(error) && error.status !== undefined ? { status: error.status } : {}),
            ...(isTokenRelayError(error) && error.oauthError !== undefined ? { oauthError: error.oauthError } : {}),
          },
        );
      }
    }
  }

  async function runRefresh(refreshing: TokenSet, startedGeneration: number, signal: AbortSignal): Promise<TokenSet> {
    let base = refreshing;
    let lock: TokenStoreLock | undefined;
    try {
      if (store.lock) {
        // Several processes share this store: under its lock, re-read it, and skip the token call
        // if another holder already refreshed (rotating refresh tokens allow one use only).
        lock = await lockOrAnnouncement(base, signal);
        const latest = lock ? await store.get() : current;
        if (!latest) {
          // Signed out elsewhere while we waited: never resurrect the session with our old tokens.
          adopt(undefined);
          throw failFast();
        }
        if (!sameTokens(latest, base)) {
          if (startedGeneration !== generation) return settledAfterReplacement();
          adopt(latest);
          // An announcement is only acted on when fresh (see subscribe), so without a lock `latest` is fresh.
          if (!lock || isFresh(latest)) {
            emit('refresh', current as TokenSet);
            return current as TokenSet;
          }
          // Another holder refreshed, but its tokens are no longer fresh: refresh from them, under the lock we hold.
          base = current as TokenSet;
        }
      }
      const fresh = await refreshWithRetries(base, signal);
      if (startedGeneration !== generation) return settledAfterReplacement();
      const merged: TokenSet = { ...fresh };
      // No new refresh token in the response (Salesforce, Google) means: keep the one we have.
      if (merged.refreshToken === undefined && base.refreshToken !== undefined) merged.refreshToken = base.refreshToken;
      if (merged.scope === undefined && base.scope !== undefined) merged.scope = base.scope;
      // Memory first: with rotation the old refresh token is already dead, so the new one must never be lost.
      adopt(merged);
      try {
        await store.set(merged);
      } catch (error) {
        throw storeError('write', error);
      }
      emit('refresh', current as TokenSet);
      return current as TokenSet;
    } catch (error) {
      if (startedGeneration !== generation) return settledAfterReplacement();
      const failure = isTokenRelayError(error)
        ? error
        : new TokenRelayError(ErrorCode.REFRESH_FAILED, 'The refresh failed (see cause)', { cause: error });
      if (failure.code === ErrorCode.SESSION_EXPIRED) {
        sessionExpiredError = failure;
        emit('sessionExpired', failure);
      }
      emit('refreshError', failure);
      throw failure;
    } finally {
      if (lock) {
        // A failed release is the lock's problem, not the refresh's: its lease expires on its own.
        await Promise.resolve()
          .then(() => lock?.release())
          .catch(() => undefined);
      }
    }
  }

  /** What waiters of a refresh get when setTokens()/clear() replaced the session meanwhile. */
  function settledAfterReplacement(): TokenSet {
    if (current && !sessionExpiredError) return current;
    throw failFast();
  }

  function startRefresh(base: TokenSet): Promise<TokenSet> {
    const controller = new AbortController();
    const promise = runRefresh(base, generation, controller.signal);
    flight = promise;
    flightController = controller;
    const settle = () => {
      if (flight === promise) {
        flight = undefined;
        flightController = undefined;
      }
    };
    // Handles the rejection too, so a refresh whose waiters all aborted is not an unhandled rejection.
    promise.then(settle, settle);
    return promise;
  }

  function replaceSession(tokens: TokenSet | undefined): void {
    generation++;
    flightController?.abort(new TokenRelayError(ErrorCode.REFRESH_FAILED, 'The session was replaced during the refresh'));
    sessionExpiredError = undefined;
    adopt(tokens);
    loaded = true;
  }

  const manager: TokenManager = {
    get tokenEndpoint() {
      return refreshHandler.tokenEndpoint;
    },

    async getAccessToken({ signal }: GetAccessTokenOptions = {}) {
      signal?.throwIfAborted();
      if (!loaded) await abortable(ensureLoaded(), signal);
      if (flight) return (await abortable(flight, signal)).accessToken;
      if (sessionExpiredError || !current) throw failFast();
      if (isFresh(current)) return current.accessToken;
      const before = current;
      try {
        return (await abortable(startRefresh(before), signal)).accessToken;
      } catch (error) {
        // A proactive refresh that failed need not fail a request the current token still covers — if it
        // still covers it now: the failed attempts may have outlasted it.
        const stillValid =
          before === current && before.expiresAt !== undefined && clock.now() < before.expiresAt && !sessionExpiredError;
        if (stillValid && !(signal?.aborted ?? false)) return before.accessToken;
        throw error;
      }
    },

    async refresh({ staleAccessToken, signal }: RefreshOptions = {}) {
      signal?.throwIfAborted();
      if (!loaded) await abortable(ensureLoaded(), signal);
      if (flight) return abortable(flight, signal);
      if (sessionExpiredError || !current) throw failFast();
      // The failed request used an older token and a refresh already replaced it: no second refresh —
      // unless the replacement is itself no longer fresh.
      if (staleAccessToken !== undefined && staleAccessToken !== current.accessToken && isFresh(current)) return current;
      return abortable(startRefresh(current), signal);
    },

    async getTokens() {
      if (!loaded) await ensureLoaded();
      return current;
    },

    async setTokens(tokens: TokenSet) {
      assertTokenSet(tokens, 'setTokens');
      replaceSession(tokens);
      try {
        await store.set(current as TokenSet);
      } catch (error) {
        throw storeError('write', error);
      }
    },

    async clear() {
      replaceSession(undefined);
      try {
        await store.clear();
      } catch (error) {
        throw storeError('clear', error);
      }
    },

    on(event, listener) {
      const set = listeners[event] as Set<typeof listener>;
      set.add(listener);
      return () => {
        set.delete(listener);
      };
    },
  };
  return manager;
}
