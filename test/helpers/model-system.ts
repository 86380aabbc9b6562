/*
 * The system under test of the model-based tests (test/model.test.ts): the REAL createTokenManager
 * and withTokenRelay, wired to a scripted authorization server (the refresh handler), a scripted
 * resource server (the fetch) and a scripted token store, all of which hold every call until a
 * command answers it. Time is vitest's fake clock, so timeouts and retry backoff fire only when a
 * command advances it.
 *
 * In "shared store" runs the store has a lock and announces writes, and a second process (played
 * by commands) takes the lock, refreshes, signs in or out through the same store, announcing it
 * or not: the store protocol of core's runRefresh is then under test as well.
 *
 * The system is also its own model: it keeps what an outside observer knows (the newest tokens
 * issued, what this manager has been told, which tokens the server refused, whether the session
 * is dead) and checks every call the manager makes against it, collecting violations.
 */
import {
  ErrorCode,
  TokenRelayError,
  createTokenManager,
  isTokenRelayError,
  type RefreshHandler,
  type StoredTokens,
  type TokenManager,
  type TokenSet,
  type TokenStore,
  type TokenStoreLock,
} from '@tokenrelay/core';
import { withTokenRelay } from '@tokenrelay/fetch';
import { vi } from 'vitest';

/** Manager settings of every run; small numbers so that commands reach timeouts and backoff quickly. */
export const modelSettings = {
  refreshMarginMs: 30_000,
  refreshTimeoutMs: 5_000,
  lateAnswerWaitMs: 20_000,
  retry: { retries: 1, minDelayMs: 100, maxDelayMs: 100, pauseAfterFailureMs: 500, maxPauseAfterFailureMs: 1_000 },
} as const;

/** The shortest pause the manager may take after a failed refresh (the jitter takes off at most a tenth). */
const shortestPauseMs = modelSettings.retry.pauseAfterFailureMs * 0.9;

/**
 * The longest a request may wait for the manager before it is sent or settles: a refresh's waiters
 * are released at refreshTimeoutMs (also while it waits for the store or its lock), and after the
 * token answer a hung store write is given up at refreshTimeoutMs; a retry's backoff comes between.
 */
const longestWaitMs = 3 * modelSettings.refreshTimeoutMs;

/** How long a slow store takes to write, in (fake) milliseconds. */
const slowStoreWriteMs = 250;

const apiOrigin = 'https://api.model.test';

/** How the scripted token endpoint fails a refresh. */
export type TokenCallFailure = 'invalid_grant' | 'unavailable' | 'invalid_client' | 'handler_crash';

/** A store call the scripted store can fail once: it rejects, or it never settles (a stalled disk, a Redis that never answers). */
export type StoreCallFault = { call: 'get' | 'set' | 'clear' | 'lock'; mode: 'reject' | 'hang' };

/** How the scripted resource server answers: by the token's validity, or 403 whatever the token. */
export type ResourceAnswer = 'by_token' | 'insufficient_scope';

/** What the other process does through the shared store. A sign-in or sign-out needs no lock. */
export type OtherProcessAction =
  | { kind: 'refresh'; rotate: boolean; lifetimeMs: number | undefined; announce: boolean }
  | { kind: 'signIn'; lifetimeMs: number | undefined }
  | { kind: 'signOut' };

interface AccessTokenRecord {
  readonly expiresAt: number | undefined;
  revoked: boolean;
}

interface PendingTokenCall {
  readonly tokens: TokenSet;
  /** Aborted when the manager lost the store lock it held while this call was open. */
  readonly lockLost: AbortSignal;
  readonly resolve: (tokens: TokenSet) => void;
  readonly reject: (error: unknown) => void;
}

interface ModelRequest {
  readonly id: number;
  readonly controller: AbortController;
  abortReason: Error | undefined;
  sends: Send[];
  settlements: number;
  outcome: { response: Response } | { error: unknown } | undefined;
  /** The request a foreign retrying client sent again as this one. */
  readonly retryOf: number | undefined;
  /** Since when it has waited for the manager (before its send, or after a 401 before its replay). */
  waitingSince: number | undefined;
}

interface Send {
  readonly request: ModelRequest;
  readonly accessToken: string;
  status: number | undefined;
  response: Response | undefined;
  readonly answer: (response: Response) => void;
}

interface LockWaiter {
  readonly grant: () => void;
}

/** Bounded waits: the drain never loops forever, whatever the engine does. */
const drainRounds = 40;

/** Lets every promise chain the last command started run to its end (setImmediate is not faked). */
async function flush(): Promise<void> {
  for (let round = 0; round < 4; round++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** How often a run reached each interesting situation; summed over runs to prove the generator reaches them. */
export interface ModelCoverage {
  /** Requests sent a second time after a 401. */
  replays: number;
  /** Replays after a 401 for a token already replaced: a late 401, no token call of its own. */
  lateReplays: number;
  /** Successful token calls after which two or more queued requests were sent with the new token. */
  sharedRefreshes: number;
  /** Token calls made because the token was near expiry, not because the server refused it. */
  proactiveRefreshes: number;
  /** Token calls retried with the same refresh token after a transient failure that certainly consumed nothing. */
  retries: number;
  /** Successful token calls that rotated the refresh token. */
  rotations: number;
  /** Refresh tokens declared dead (invalid_grant). */
  sessionExpiries: number;
  /** Requests aborted while a refresh was in flight. */
  abortsDuringRefresh: number;
  /** Sign-ins while a refresh was in flight. */
  signInsDuringRefresh: number;
  /** Shared store: refreshes that waited for the other process's lock. */
  lockWaits: number;
  /** Shared store: refreshes that ended by adopting the other process's tokens, with no token call. */
  adoptedFromOtherProcess: number;
  /** Shared store: writes of the other process this manager was not told about. */
  unannouncedWrites: number;
  /** Token calls whose waiters were released at the refresh timeout while the call stayed open. */
  releasedAtTimeout: number;
  /** Token calls answered after their waiters had been released at the refresh timeout. */
  lateAnswers: number;
  /** Token calls given up after lateAnswerWaitMs. */
  lateLimitAborts: number;
  /** Store writes that failed, leaving the store behind the manager's memory. */
  storeWriteFailures: number;
  /** Refreshes whose store write the store refused because the session was replaced meanwhile. */
  fencedWrites: number;
  /** Shared store: sign-ins and sign-outs of the other process while this manager's token call was open. */
  replacedDuringTokenCall: number;
  /** Shared store: the manager's lock lost while it held it. */
  lostLocks: number;
  /** Requests that failed fast in the pause after a failed refresh, without a token call. */
  pausedRequests: number;
  /** Shared store: requests sent without a bearer because another process signed out. */
  signedOutSends: number;
  /** Requests a foreign client sent again after a transient failure. */
  foreignRetries: number;
  /** Requests sent with a still-good token while a proactive refresh ran in the background. */
  sentDuringRefresh: number;
  /** Sign-outs in this process while a refresh was in flight. */
  signOutsDuringRefresh: number;
  /** Store calls that rejected or never settled. */
  storeCallFaults: number;
}

/** Options of one run, drawn by fast-check. */
export interface ModelRunConfig {
  /** Lifetime of the first access token; `undefined`: expiry unknown, learnt from 401s only. */
  readonly initialLifetimeMs: number | undefined;
  /** A store with a lock and announcements, shared with another process; otherwise a plain store. */
  readonly sharedStore: boolean;
  /** Store writes take a while (a slow disk or network store), so commands interleave with them. */
  readonly slowStore: boolean;
  /** A foreign client around the adapter retries failed requests on its own (as ky and ofetch do). */
  readonly foreignRetries: boolean;
}

/** One run's system: create it, `start()` it, drive it with commands, then `drainAndCheck()`. */
export class ModelSystem {
  readonly violations: string[] = [];
  readonly requests: ModelRequest[] = [];
  readonly manager: TokenManager;
  readonly coverage: ModelCoverage = {
    replays: 0,
    lateReplays: 0,
    sharedRefreshes: 0,
    proactiveRefreshes: 0,
    retries: 0,
    rotations: 0,
    sessionExpiries: 0,
    abortsDuringRefresh: 0,
    signInsDuringRefresh: 0,
    lockWaits: 0,
    adoptedFromOtherProcess: 0,
    unannouncedWrites: 0,
    releasedAtTimeout: 0,
    lateAnswers: 0,
    lateLimitAborts: 0,
    storeWriteFailures: 0,
    fencedWrites: 0,
    replacedDuringTokenCall: 0,
    lostLocks: 0,
    pausedRequests: 0,
    signedOutSends: 0,
    foreignRetries: 0,
    sentDuringRefresh: 0,
    signOutsDuringRefresh: 0,
    storeCallFaults: 0,
  };

  private readonly api: typeof fetch;
  private readonly accessTokens = new Map<string, AccessTokenRecord>();
  private readonly rejectedAccessTokens = new Set<string>();
  private readonly retiredRefreshTokens = new Set<string>();
  /** Refresh tokens the token endpoint answered invalid_grant for. */
  private readonly refusedRefreshTokens = new Set<string>();
  private pendingSends: Send[] = [];
  private tokenCall: PendingTokenCall | undefined;
  private lastFailedTokenCall: TokenSet | undefined;
  private counter = 0;
  /** From the first token call of a refresh until the manager reports its end (or the session is replaced). */
  private refreshInFlight = false;
  /** The newest tokens of the session: the newest issued to anyone (undefined after a sign-out). */
  private stored: TokenSet | undefined;
  /** What the store really holds; behind `stored` after a failed or withheld write of the manager. */
  private storeContent: StoredTokens | undefined;
  /** The highest revision the store ever held: a sign-in elsewhere goes above it, as a tokenrelay process's does. */
  private highestStoreRevision = 0;
  /** The store holds spent tokens the manager has replaced in memory only; it must write them before its next token call. */
  private storeBehind = false;
  /** Writes of the manager the store will refuse with an error (a full disk, Redis down). */
  private failingStoreWrites = 0;
  private pendingStoreWrites = 0;
  /** The session was replaced (by the other process) while this manager's token call was open: its answer is orphaned. */
  private callOrphaned = false;
  /** The open token call's waiters were released at the refresh timeout. */
  private callReleased = false;
  /** When the manager last reported a failed refresh (not a timeout), for the pause invariant. */
  private lastFailedRefreshAt: number | undefined;
  private lockLost: AbortController | undefined;
  /** The access token this manager has been told about (its own refresh, a sign-in, an announcement, a read). */
  private knownAccessToken: string | undefined;
  /** The newest refresh token has been refused (invalid_grant): no token call may present it again. */
  private refreshTokenDead = false;
  /** This manager saw the refresh token die and has not been given a new session since. */
  private sessionExpired = false;
  private lockHolder: 'manager' | 'other' | undefined;
  private lockQueue: LockWaiter[] = [];
  private readonly subscribers = new Set<(value: StoredTokens | undefined) => void>();
  private managerSigningIn = false;
  private signingIn: Promise<void> | undefined;
  private foreignRetriesPending = 0;
  private readonly supersededWrites = new Set<string>();
  /** The tokens the model expects the manager to write to the store next; cleared by that write. */
  private expectedWrite: TokenSet | undefined;
  /** The access token of this manager's last successful token call, to tell its refreshes from adoptions. */
  private lastOwnAccessToken: string | undefined;
  /** The access token this manager's last successful token call replaced. */
  private refreshedFromAccessToken: string | undefined;
  private successfulTokenCalls = 0;
  /** Successful token calls whose tokens the manager could not (failed write) or must not (lost lock) store: no refresh event. */
  private refreshesNotStored = 0;
  /** The write of this manager's last successful token call failed (already counted in refreshesNotStored). */
  private refreshWriteFailed = false;
  private refreshEvents = 0;
  private sessionExpiredEventsThisSession = 0;
  private readonly log: string[] = [];
  /** The next call of this kind fails (see StoreCallFault). */
  private storeFault: StoreCallFault | undefined;
  /** Access tokens of sessions signed out in this process: never sent again, never announced. */
  private readonly signedOutAccessTokens = new Set<string>();
  /** Refresh tokens of sessions signed out here whose store clear() has been issued: never written back. */
  private readonly clearedRefreshTokens = new Set<string>();
  private readonly signOutPending: string[] = [];
  private signingOut: Promise<void> | undefined;
  private everSignedOutHere = false;
  /** A store call never settled: the drain moves the clock far enough for the manager to give up on it. */
  private storeCallHung = false;
  /** Until then the manager's store writes queue behind a hung store call, which it gives up at refreshTimeoutMs. */
  private storeQueueStuckUntil = 0;

  constructor(private readonly config: ModelRunConfig) {
    const initial = this.issue(config.initialLifetimeMs, true);
    this.knownAccessToken = initial.accessToken;
    // The store starts empty: the manager must seed it with its initial tokens (under the lock when shared).
    this.stored = initial;
    this.expectedWrite = initial;
    this.manager = createTokenManager({
      tokens: initial,
      store: this.createStore(),
      refresh: this.refreshHandler,
      clock: { now: () => Date.now() },
      ...modelSettings,
    });
    this.manager.on('refresh', (tokens) => {
      if (this.signedOutAccessTokens.has(tokens.accessToken)) this.violate('a refresh event announced tokens of a session signed out here');
      this.refreshEvents++;
      if (tokens.accessToken !== this.lastOwnAccessToken) this.coverage.adoptedFromOtherProcess++;
      this.refreshInFlight = false;
    });
    this.manager.on('refreshError', (error) => {
      if (error.code === ErrorCode.REFRESH_TIMEOUT && this.tokenCall) {
        // The waiters are released; the token call stays open, and its answer will still be adopted.
        this.coverage.releasedAtTimeout++;
        this.callReleased = true;
        return;
      }
      // Waiters released while the refresh waits for the store or its lock: it goes on, nothing failed yet.
      if (error.code === ErrorCode.REFRESH_TIMEOUT && !error.inDoubt) return;
      this.refreshInFlight = false;
      this.lastFailedTokenCall = undefined;
      const pausing: readonly string[] = [ErrorCode.SESSION_EXPIRED, ErrorCode.NO_TOKENS, ErrorCode.STORE_ERROR];
      if (!pausing.includes(error.code)) this.lastFailedRefreshAt = Date.now();
    });
    this.manager.on('sessionExpired', () => {
      this.sessionExpiredEventsThisSession++;
    });
    this.api = withTokenRelay(this.resourceFetch, this.manager, { origins: [apiOrigin] });
  }

  /** Loads the initial tokens (seeding the empty store), as the first request would. */
  async start(): Promise<void> {
    const loading = this.manager.getTokens();
    // A slow store's seeding write completes only as the clock moves.
    if (this.config.slowStore) await vi.advanceTimersByTimeAsync(slowStoreWriteMs);
    await loading;
    await this.checkState('start');
  }

  // ── What commands look at ───────────────────────────────────────────────────────────────────

  get isShared(): boolean {
    return this.config.sharedStore;
  }

  get pendingSendCount(): number {
    return this.pendingSends.length;
  }

  get hasTokenCall(): boolean {
    return this.tokenCall !== undefined;
  }

  get unsettledRequests(): ModelRequest[] {
    return this.requests.filter((request) => request.outcome === undefined);
  }

  /** The other process can act when the lock is free or its own. */
  get otherProcessCanAct(): boolean {
    return this.config.sharedStore && this.lockHolder !== 'manager';
  }

  /** A sign-in or sign-out elsewhere needs no lock: it can come at any time, also during a token call. */
  get otherProcessCanReplaceSession(): boolean {
    // Not while this manager's own sign-in is being written: two sign-ins racing is last-writer-wins, no guarantee.
    // Nor while a write of the manager is on its way: a sign-out between an empty store's compare-and-set and its
    // write is the one race that revisions cannot see (clear leaves no revision behind); see docs/stores.md.
    return this.config.sharedStore && this.signingIn === undefined && this.signingOut === undefined && this.pendingStoreWrites === 0;
  }

  get managerHoldsLock(): boolean {
    return this.lockHolder === 'manager';
  }

  get otherProcessHoldsLock(): boolean {
    return this.lockHolder === 'other';
  }

  get lockIsFree(): boolean {
    return this.config.sharedStore && this.lockHolder === undefined;
  }

  // ── Commands ────────────────────────────────────────────────────────────────────────────────

  async startRequest(): Promise<void> {
    const request = this.sendRequest(undefined);
    await this.checkState(`request ${request.id}`);
  }

  /** A request through the fetch adapter; `retryOf` when the foreign retrying client sends it again. */
  private sendRequest(retryOf: number | undefined): ModelRequest {
    const request: ModelRequest = {
      id: this.requests.length,
      controller: new AbortController(),
      abortReason: undefined,
      sends: [],
      settlements: 0,
      outcome: undefined,
      retryOf,
      waitingSince: Date.now(),
    };
    this.requests.push(request);
    this.api(`${apiOrigin}/items/${request.id}`, { signal: request.controller.signal }).then(
      (response) => this.settle(request, { response }),
      (error: unknown) => this.settle(request, { error }),
    );
    return request;
  }

  /**
   * The foreign client around the adapter (ky, ofetch): a request that failed with a transient
   * error, or got a 5xx, is sent once more after 300 ms, on its own timer — so retries land in the
   * middle of refreshes, pauses and sign-outs, whatever the commands do.
   */
  private retryLikeAForeignClient(request: ModelRequest, outcome: { response: Response } | { error: unknown }): void {
    if (!this.config.foreignRetries || request.retryOf !== undefined || request.abortReason !== undefined) return;
    const failed =
      'error' in outcome ? isTokenRelayError(outcome.error) && outcome.error.transient : outcome.response.status >= 500;
    if (!failed) return;
    this.coverage.foreignRetries++;
    this.foreignRetriesPending++;
    setTimeout(() => {
      this.foreignRetriesPending--;
      this.sendRequest(request.id);
    }, 300);
  }

  async respond(pick: number, answer: ResourceAnswer): Promise<void> {
    const send = this.pendingSends[pick % this.pendingSends.length];
    if (!send) return;
    this.pendingSends = this.pendingSends.filter((other) => other !== send);
    const record = this.accessTokens.get(send.accessToken);
    const valid =
      record !== undefined && !record.revoked && (record.expiresAt === undefined || Date.now() < record.expiresAt);
    let response: Response;
    if (answer === 'insufficient_scope') {
      response = new Response(null, { status: 403, headers: { 'www-authenticate': 'Bearer error="insufficient_scope"' } });
    } else if (valid) {
      response = new Response(null, { status: 200 });
    } else {
      this.rejectedAccessTokens.add(send.accessToken);
      if (send.accessToken !== this.knownAccessToken && send.request.sends.length === 1) this.coverage.lateReplays++;
      response = new Response(null, { status: 401, headers: { 'www-authenticate': 'Bearer error="invalid_token"' } });
    }
    send.status = response.status;
    // A 401 sends the request back to the manager for a refresh (and its one replay).
    if (response.status === 401 && send.request.sends.length === 1) send.request.waitingSince = Date.now();
    send.response = response;
    send.answer(response);
    await this.checkState(`respond ${response.status} to request ${send.request.id}`);
  }

  /** The resource server stops accepting every access token issued so far (revoked, or expired server-side). */
  async revokeAccessTokens(): Promise<void> {
    for (const record of this.accessTokens.values()) record.revoked = true;
    await this.checkState('revoke access tokens');
  }

  async advanceClock(ms: number): Promise<void> {
    await vi.advanceTimersByTimeAsync(ms);
    await this.checkState(`advance ${ms} ms`);
  }

  async succeedTokenCall(rotate: boolean, lifetimeMs: number | undefined): Promise<void> {
    const call = this.tokenCall;
    if (!call) return;
    this.tokenCall = undefined;
    const tokens = this.issue(lifetimeMs, rotate);
    if (rotate) {
      this.retiredRefreshTokens.add(call.tokens.refreshToken ?? '');
      this.coverage.rotations++;
    }
    if (this.callReleased) this.coverage.lateAnswers++;
    this.callReleased = false;
    this.refreshWriteFailed = false;
    if (this.callOrphaned) {
      // The session was replaced while the call was open: the manager must neither keep nor store these,
      // and ends the refresh without a refresh event.
      this.callOrphaned = false;
      this.refreshInFlight = false;
      call.resolve(tokens);
      await this.checkState('token call for a replaced session succeeds');
      return;
    }
    // Without the lock it held when it called, the manager keeps these in memory only, and must
    // store them first under its next lock.
    if (call.lockLost.aborted) {
      // No refresh event either: the refresh ends quietly, its tokens in memory only.
      this.storeBehind = true;
      this.refreshesNotStored++;
      this.refreshInFlight = false;
    }
    // The manager must store these, keeping its refresh token when none came.
    this.stored = { ...tokens, refreshToken: tokens.refreshToken ?? call.tokens.refreshToken };
    this.knownAccessToken = tokens.accessToken;
    this.lastOwnAccessToken = tokens.accessToken;
    this.refreshedFromAccessToken = call.tokens.accessToken;
    this.successfulTokenCalls++;
    const sendsBefore = this.pendingSends.length;
    // The model's view of the store moves first; the manager's write must agree with it.
    this.expectWrite(this.stored);
    call.resolve(tokens);
    await flush();
    if (this.pendingSends.length - sendsBefore >= 2) this.coverage.sharedRefreshes++;
    await this.checkState(`token call succeeds${rotate ? ' with rotation' : ''}`);
  }

  async failTokenCall(failure: TokenCallFailure): Promise<void> {
    const call = this.tokenCall;
    if (!call) return;
    this.tokenCall = undefined;
    this.lastFailedTokenCall = call.tokens;
    this.callReleased = false;
    const orphaned = this.callOrphaned;
    this.callOrphaned = false;
    // A failed call for a replaced session ends its refresh quietly: the waiters get the new session.
    if (orphaned) this.refreshInFlight = false;
    if (failure === 'invalid_grant') this.refusedRefreshTokens.add(call.tokens.refreshToken ?? '');
    if (failure === 'invalid_grant' && !orphaned) {
      this.coverage.sessionExpiries++;
      this.refreshTokenDead = true;
      this.sessionExpired = true;
    }
    call.reject(tokenCallError(failure));
    await this.checkState(`token call fails: ${failure}`);
  }

  async abortRequest(pick: number): Promise<void> {
    const unsettled = this.unsettledRequests;
    const request = unsettled[pick % unsettled.length];
    if (!request) return;
    if (this.refreshInFlight) this.coverage.abortsDuringRefresh++;
    request.abortReason = new Error(`request ${request.id} aborted by the caller`);
    request.controller.abort(request.abortReason);
    await flush();
    if (request.outcome === undefined) this.violate(`request ${request.id} did not settle at once when aborted`);
    await this.checkState(`abort request ${request.id}`);
  }

  /** A new sign-in in this process replaces the session, also during a refresh. */
  async signIn(lifetimeMs: number | undefined): Promise<void> {
    if (this.refreshInFlight) this.coverage.signInsDuringRefresh++;
    const tokens = this.newSession(lifetimeMs);
    this.knownAccessToken = tokens.accessToken;
    this.sessionExpired = false;
    this.sessionExpiredEventsThisSession = 0;
    this.refreshInFlight = false;
    this.noteRefreshSuperseded();
    this.expectWrite(tokens);
    this.managerSigningIn = true;
    this.lastFailedRefreshAt = undefined;
    this.callOrphaned = this.tokenCall !== undefined;
    // Not awaited: with a slow store the write completes only when a later command moves the clock.
    this.signingIn = this.manager.setTokens(tokens).then(
      () => undefined,
      (error: unknown) => {
        if (!isTokenRelayError(error) || error.code !== ErrorCode.STORE_ERROR) this.violate(`setTokens failed with ${String(error)}`);
      },
    );
    const signingIn = this.signingIn;
    void signingIn.finally(() => {
      if (this.signingIn === signingIn) {
        this.managerSigningIn = false;
        this.signingIn = undefined;
      }
    });
    await this.checkState('sign in');
  }

  /** Shared store: the other process takes the lock and keeps it until `otherProcessReleases`. */
  async otherProcessTakesLock(): Promise<void> {
    if (this.lockHolder !== undefined) return;
    this.lockHolder = 'other';
    await this.checkState('other process takes the lock');
  }

  async otherProcessReleases(): Promise<void> {
    if (this.lockHolder !== 'other') return;
    this.releaseLock('other');
    await this.checkState('other process releases the lock');
  }

  /**
   * Shared store: the other process, under the lock (taken now if free), refreshes, signs in or
   * signs out through the store, then releases the lock.
   */
  async otherProcessActs(action: OtherProcessAction): Promise<void> {
    if (!this.otherProcessCanAct) return;
    // A refresh elsewhere presents what the store holds: never while this manager may have spent it
    // (a token call of its own still open, a write of its own on its way or queued behind a hung store
    // call, or memory ahead of the store).
    const storeSettled =
      !this.tokenCall && this.pendingStoreWrites === 0 && Date.now() >= this.storeQueueStuckUntil && !this.storeBehind;
    if (action.kind === 'refresh' && (this.stored === undefined || this.refreshTokenDead || !storeSettled)) return;
    if (action.kind !== 'refresh' && !this.otherProcessCanReplaceSession) return;
    this.lockHolder = 'other';
    if (action.kind === 'refresh') {
      const previous = this.stored as TokenSet;
      const tokens = this.issue(action.lifetimeMs, action.rotate);
      if (action.rotate) this.retiredRefreshTokens.add(previous.refreshToken ?? '');
      this.stored = { ...tokens, refreshToken: tokens.refreshToken ?? previous.refreshToken };
      this.writeStoreContent(this.stored);
      this.lastFailedRefreshAt = undefined;
      if (action.announce) {
        this.knownAccessToken = this.stored.accessToken;
        // A refresh of this manager between token calls (after a lost lock) ends quietly with these.
        if (!this.tokenCall) this.refreshInFlight = false;
        for (const listener of this.subscribers) listener(this.storeContent);
      } else {
        this.coverage.unannouncedWrites++;
      }
    } else {
      this.replaceSessionElsewhere(action);
    }
    this.releaseLock('other');
    const what = action.kind === 'refresh' ? `refreshes${action.announce ? '' : ' (unannounced)'}` : action.kind;
    await this.checkState(`other process ${what}`);
  }

  /** Shared store: the other process signs in or out without taking the lock, whatever this manager is doing. */
  async otherProcessReplacesSession(action: Exclude<OtherProcessAction, { kind: 'refresh' }>): Promise<void> {
    if (!this.otherProcessCanReplaceSession) return;
    this.replaceSessionElsewhere(action);
    await this.checkState(`other process ${action.kind} without the lock`);
  }

  /** Shared store: the manager's lease runs out while it holds the lock (a GC pause, SIGSTOP). */
  async loseLock(): Promise<void> {
    if (this.lockHolder !== 'manager' || !this.lockLost) return;
    this.coverage.lostLocks++;
    this.lockLost.abort(new Error('lease expired'));
    this.lockLost = undefined;
    this.releaseLock('manager');
    await this.checkState('the manager loses the store lock');
  }

  /** The store's next write of this manager fails (a full disk, Redis down). */
  async failNextStoreWrite(): Promise<void> {
    this.failingStoreWrites = 1;
    await this.checkState('the next store write will fail');
  }

  /** The store's next call of one kind rejects or never settles; the manager must give up on it and go on. */
  async failNextStoreCall(fault: StoreCallFault): Promise<void> {
    this.storeFault = fault;
    await this.checkState(`the next store ${fault.call} will ${fault.mode}`);
  }

  /**
   * This process signs out (clear()), also during a refresh: from now on no request may carry a token
   * of that session, no refresh event may announce one, and once the store's clear is issued no write
   * may put the session back.
   */
  async signOut(): Promise<void> {
    if (this.refreshInFlight) this.coverage.signOutsDuringRefresh++;
    this.everSignedOutHere = true;
    for (const accessToken of this.accessTokens.keys()) this.signedOutAccessTokens.add(accessToken);
    if (this.stored?.refreshToken) {
      this.retiredRefreshTokens.add(this.stored.refreshToken);
      this.signOutPending.push(this.stored.refreshToken);
    }
    this.noteRefreshSuperseded();
    // A write of this manager still on its way lands before the clear, which is queued after it.
    if (this.expectedWrite && (this.signingIn || this.pendingStoreWrites > 0)) this.supersededWrites.add(this.expectedWrite.accessToken);
    this.expectedWrite = undefined;
    this.stored = undefined;
    this.knownAccessToken = undefined;
    this.refreshTokenDead = false;
    this.sessionExpired = false;
    this.sessionExpiredEventsThisSession = 0;
    this.refreshInFlight = false;
    this.lastFailedRefreshAt = undefined;
    this.storeBehind = false;
    this.callOrphaned = this.tokenCall !== undefined;
    const signingOut = this.manager.clear().then(
      () => undefined,
      (error: unknown) => {
        // A store that fails or hangs: clear() says so, and the sign-out still holds in memory.
        if (!isTokenRelayError(error) || error.code !== ErrorCode.STORE_ERROR) this.violate(`clear() failed with ${String(error)}`);
      },
    );
    this.signingOut = signingOut;
    void signingOut.finally(() => {
      if (this.signingOut === signingOut) this.signingOut = undefined;
    });
    await this.checkState('sign out');
  }

  /** The fault armed for the next store call of this kind, as the promise the call returns; consumed once. */
  private takeStoreFault(call: StoreCallFault['call']): Promise<never> | undefined {
    if (this.storeFault?.call !== call) return undefined;
    const { mode } = this.storeFault;
    this.storeFault = undefined;
    this.coverage.storeCallFaults++;
    if (mode === 'hang') {
      this.storeCallHung = true;
      if (call !== 'lock') this.storeQueueStuckUntil = Date.now() + modelSettings.refreshTimeoutMs;
    }
    return mode === 'reject' ? Promise.reject(new Error(`the store's ${call} failed`)) : new Promise<never>(() => undefined);
  }

  private replaceSessionElsewhere(action: Exclude<OtherProcessAction, { kind: 'refresh' }>): void {
    if (this.tokenCall) {
      this.callOrphaned = true;
      this.coverage.replacedDuringTokenCall++;
    }
    if (action.kind === 'signIn') {
      this.stored = this.newSession(action.lifetimeMs);
    } else {
      if (this.stored?.refreshToken) this.retiredRefreshTokens.add(this.stored.refreshToken);
      this.stored = undefined;
    }
    this.noteRefreshSuperseded();
    // A sign-in elsewhere is a tokenrelay process's setTokens(): its revision is above every one it saw and
    // never below the clock (docs/stores.md), so it never repeats the revision a refresh here was fenced with.
    this.writeStoreContent(this.stored, action.kind === 'signIn' ? Math.max(this.highestStoreRevision + 1, Math.floor(Date.now())) : undefined);
    this.knownAccessToken = this.stored?.accessToken;
    this.sessionExpired = false;
    this.sessionExpiredEventsThisSession = 0;
    this.expectedWrite = undefined;
    this.storeBehind = false;
    this.lastFailedRefreshAt = undefined;
    // A refresh of the replaced session ends without a refresh event (its write is refused).
    if (!this.tokenCall) this.refreshInFlight = false;
    for (const listener of this.subscribers) listener(this.storeContent);
  }

  /** A refresh of this manager whose write is still on its way when the session is replaced ends without a refresh event. */
  private noteRefreshSuperseded(): void {
    const refreshWritePending = this.expectedWrite !== undefined && this.expectedWrite.accessToken === this.lastOwnAccessToken;
    if (refreshWritePending && !this.refreshWriteFailed) this.refreshesNotStored++;
  }

  /** The manager's next write must store `tokens`; a write of its own still on its way may land first. */
  private expectWrite(tokens: TokenSet): void {
    if (this.expectedWrite && (this.signingIn || this.pendingStoreWrites > 0)) {
      this.supersededWrites.add(this.expectedWrite.accessToken);
    }
    this.expectedWrite = tokens;
  }

  /** Another writer's write: the store holds `tokens` at `revision`, by default the next one (or nothing). */
  private writeStoreContent(tokens: TokenSet | undefined, revision = (this.storeContent?.revision ?? 0) + 1): void {
    this.storeContent = tokens && { tokens, revision };
    this.noteStoreRevision();
  }

  private noteStoreRevision(): void {
    this.highestStoreRevision = Math.max(this.highestStoreRevision, this.storeContent?.revision ?? 0);
  }

  // ── The end of a run ────────────────────────────────────────────────────────────────────────

  /**
   * Answers everything still open (each send by its token, each token call with success, a lock
   * the other process holds) and lets the clock run, a bounded number of rounds; then every
   * request must have settled, and no timer may be left behind.
   */
  async drainAndCheck(): Promise<void> {
    // A refresh whose waiters all aborted goes on by design; the drain answers it too.
    const open = () =>
      this.unsettledRequests.length > 0 ||
      this.tokenCall !== undefined ||
      this.refreshInFlight ||
      this.lockHolder !== undefined ||
      this.lockQueue.length > 0 ||
      this.pendingStoreWrites > 0 ||
      this.signingIn !== undefined ||
      this.signingOut !== undefined ||
      this.foreignRetriesPending > 0 ||
      // A hung store call nobody waits for (an announcement's confirming read) is still given up on.
      (this.storeCallHung && vi.getTimerCount() > 0);
    for (let round = 0; round < drainRounds && open(); round++) {
      if (this.lockHolder === 'other') await this.otherProcessReleases();
      if (this.tokenCall) await this.succeedTokenCall(true, 60_000);
      while (this.pendingSends.length > 0) await this.respond(0, 'by_token');
      // The manager gives up on a hung store call at refreshTimeoutMs (a lock at lateAnswerWaitMs).
      await this.advanceClock(this.storeCallHung ? modelSettings.lateAnswerWaitMs : modelSettings.retry.maxDelayMs);
    }
    for (const request of this.unsettledRequests) this.violate(`request ${request.id} never settled`);
    if (this.tokenCall || this.refreshInFlight) this.violate('a refresh is still open after the drain');
    if (this.lockHolder === 'manager' || this.lockQueue.length > 0) this.violate('the store lock was not given back');
    if (vi.getTimerCount() > 0) this.violate(`${vi.getTimerCount()} timer(s) left behind`);
    const storedRefreshes = this.successfulTokenCalls - this.refreshesNotStored;
    if (this.refreshEvents < storedRefreshes) {
      this.violate(`${this.refreshEvents} refresh events for ${storedRefreshes} stored refreshes`);
    }
    if (!this.isShared && this.refreshEvents !== storedRefreshes) {
      this.violate(`${this.refreshEvents} refresh events for ${this.successfulTokenCalls} successful token calls`);
    }
    this.throwOnViolations();
  }

  /** The invariants at a command boundary, after everything the command started has run. */
  private async checkState(step: string): Promise<void> {
    await flush();
    this.log.push(step);
    const held = await this.manager.getTokens();
    // While its store write is on its way (a slow store, or one it waits for until it gives up on a hung
    // store call), the manager holds the tokens it refreshed from.
    const storeQueueMoving = Date.now() >= this.storeQueueStuckUntil;
    const settled = this.pendingStoreWrites === 0 && storeQueueMoving;
    if (settled && held?.accessToken !== this.knownAccessToken) this.violate('the manager does not hold the tokens it was last given');
    if (settled && held && held.refreshToken !== this.stored?.refreshToken && this.knownAccessToken === this.stored?.accessToken) {
      this.violate('the manager holds another refresh token than the newest one issued');
    }
    if (this.expectedWrite !== undefined && !this.storeBehind && this.pendingStoreWrites === 0 && storeQueueMoving) {
      this.violate('the manager did not store the tokens it was given');
    }
    if (this.sessionExpiredEventsThisSession > 1) this.violate('sessionExpired fired more than once in one session');
    // (After the refusal the manager reads the store, to see whether another holder rotated meanwhile:
    // a hung read delays the event until the manager gives up on it.)
    if (this.sessionExpired && this.sessionExpiredEventsThisSession !== 1 && storeQueueMoving) {
      this.violate('the refresh token died but sessionExpired did not fire');
    }
    for (const request of this.requests) {
      if (request.waitingSince !== undefined && Date.now() - request.waitingSince > longestWaitMs) {
        this.violate(`request ${request.id} waited for the manager longer than ${longestWaitMs} ms`);
      }
    }
    this.throwOnViolations();
  }

  private throwOnViolations(): void {
    if (this.violations.length === 0) return;
    throw new Error(`Invariant violated: ${this.violations.join('; ')}\n  steps: ${this.log.join(' → ')}`);
  }

  private violate(message: string): void {
    this.violations.push(message);
  }

  // ── The scripted store ──────────────────────────────────────────────────────────────────────

  private createStore(): TokenStore {
    const store: TokenStore = {
      get: () => {
        const fault = this.takeStoreFault('get');
        if (fault) return fault;
        // What the manager reads, it knows (and adopts, if it differs from what it had) — unless it
        // reads a store that is behind its memory, or reads only to number a sign-in.
        if (this.storeContent && !this.storeBehind && !this.managerSigningIn) {
          this.knownAccessToken = this.storeContent.tokens.accessToken;
        }
        return this.storeContent;
      },
      set: (value, options) => {
        // The lock must be held when the write is issued; a slow store may complete it after a loss.
        const heldLock = this.lockHolder === 'manager';
        if (!value.sessionExpired && this.clearedRefreshTokens.has(value.tokens.refreshToken ?? '') && !this.supersededWrites.has(value.tokens.accessToken)) {
          this.violate('the manager wrote back a session signed out here');
        }
        const fault = this.takeStoreFault('set');
        if (fault) {
          // A write that never lands is a failed one: the store stays behind the manager's memory.
          this.noteFailedWrite(value);
          return fault;
        }
        const write = () => this.storeWrite(value, options?.expectedRevision, heldLock);
        if (!this.config.slowStore) return write();
        this.pendingStoreWrites++;
        return new Promise<boolean>((resolve, reject) => {
          setTimeout(() => {
            this.pendingStoreWrites--;
            try {
              resolve(write());
            } catch (error) {
              reject(error);
            }
          }, slowStoreWriteMs);
        });
      },
      clear: () => {
        for (const refreshToken of this.signOutPending.splice(0)) this.clearedRefreshTokens.add(refreshToken);
        const fault = this.takeStoreFault('clear');
        if (fault) return fault;
        this.storeContent = undefined;
      },
    };
    if (!this.config.sharedStore) return store;
    return {
      ...store,
      lock: ({ signal }) => this.acquireLock(signal),
      subscribe: (listener) => {
        this.subscribers.add(listener);
        return () => this.subscribers.delete(listener);
      },
    };
  }

  private storeWrite(value: StoredTokens, expectedRevision: number | undefined, heldLock: boolean): boolean {
    if (this.config.sharedStore && !heldLock && !this.managerSigningIn) {
      this.violate('the manager wrote the shared store without holding its lock');
    }
    if (this.failingStoreWrites > 0) {
      this.failingStoreWrites--;
      this.noteFailedWrite(value);
      throw new Error('the store is down');
    }
    if (expectedRevision !== undefined && expectedRevision !== (this.storeContent?.revision ?? 0)) {
      this.coverage.fencedWrites++;
      return false;
    }
    if (value.sessionExpired) {
      // The mark of a dead session: its refresh token must be one the token endpoint refused.
      if (!this.refusedRefreshTokens.has(value.tokens.refreshToken ?? '')) this.violate('the manager marked a live session dead');
      this.storeContent = value;
      this.noteStoreRevision();
      return true;
    }
    if (this.supersededWrites.delete(value.tokens.accessToken)) {
      this.storeContent = value;
      this.noteStoreRevision();
      return true;
    }
    const expected = this.expectedWrite;
    this.expectedWrite = undefined;
    const { tokens } = value;
    if (!expected || tokens.accessToken !== expected.accessToken || tokens.refreshToken !== expected.refreshToken) {
      this.violate('the manager stored tokens other than the newest ones issued');
    }
    if (value.revision <= (this.storeContent?.revision ?? 0) && expectedRevision !== undefined) {
      this.violate('the manager wrote a revision that does not grow');
    }
    this.storeContent = value;
    this.noteStoreRevision();
    this.storeBehind = false;
    return true;
  }

  /** A write of the manager that failed or never lands: the store stays behind its memory. */
  private noteFailedWrite(value: StoredTokens): void {
    this.coverage.storeWriteFailures++;
    if (!value.sessionExpired && this.expectedWrite) {
      this.storeBehind = true;
      if (!this.managerSigningIn) {
        this.refreshesNotStored++;
        this.refreshWriteFailed = true;
      }
    }
  }

  private acquireLock(signal: AbortSignal): Promise<TokenStoreLock> {
    if (this.lockHolder === 'manager') this.violate('the manager asked for the lock it already holds');
    // A lock service that fails, or never answers and ignores the abort (a frozen holder whose lease never ends).
    const fault = this.takeStoreFault('lock');
    if (fault) return fault;
    return new Promise<TokenStoreLock>((resolve, reject) => {
      if (signal.aborted) {
        reject(signal.reason);
        return;
      }
      const onAbort = () => {
        this.lockQueue = this.lockQueue.filter((other) => other !== waiter);
        reject(signal.reason);
      };
      const waiter: LockWaiter = {
        grant: () => {
          signal.removeEventListener('abort', onAbort);
          this.lockHolder = 'manager';
          const lost = new AbortController();
          this.lockLost = lost;
          let released = false;
          resolve({
            signal: lost.signal,
            release: () => {
              if (released) this.violate('the manager released the store lock twice');
              released = true;
              if (lost.signal.aborted) return; // lost already: nothing to give back
              this.lockLost = undefined;
              this.releaseLock('manager');
            },
          });
        },
      };
      signal.addEventListener('abort', onAbort, { once: true });
      if (this.lockHolder === undefined) {
        waiter.grant();
      } else {
        this.coverage.lockWaits++;
        this.lockQueue.push(waiter);
      }
    });
  }

  private releaseLock(holder: 'manager' | 'other'): void {
    if (this.lockHolder !== holder) {
      this.violate(`the ${holder} released a store lock it does not hold`);
      return;
    }
    this.lockHolder = undefined;
    this.lockQueue.shift()?.grant();
  }

  // ── The scripted servers ────────────────────────────────────────────────────────────────────

  private issue(lifetimeMs: number | undefined, withRefreshToken: boolean): TokenSet {
    this.counter++;
    const expiresAt = lifetimeMs === undefined ? undefined : Date.now() + lifetimeMs;
    const accessToken = `access-${this.counter}`;
    this.accessTokens.set(accessToken, { expiresAt, revoked: false });
    return {
      accessToken,
      ...(withRefreshToken ? { refreshToken: `refresh-${this.counter}` } : {}),
      ...(expiresAt === undefined ? {} : { expiresAt }),
      tokenType: 'Bearer',
    };
  }

  /** A new grant family: the old refresh token is retired, the dead one forgotten. */
  private newSession(lifetimeMs: number | undefined): TokenSet {
    const tokens = this.issue(lifetimeMs, true);
    if (this.stored?.refreshToken) this.retiredRefreshTokens.add(this.stored.refreshToken);
    this.stored = tokens;
    this.refreshTokenDead = false;
    return tokens;
  }

  /** Was there a reason to refresh `accessToken`: the server refused it, or it is within the margin of its expiry? */
  private isStaleForRefresh(accessToken: string): boolean {
    const expiresAt = this.accessTokens.get(accessToken)?.expiresAt;
    const nearExpiry = expiresAt !== undefined && Date.now() >= expiresAt - modelSettings.refreshMarginMs;
    return nearExpiry || this.rejectedAccessTokens.has(accessToken);
  }

  private readonly refreshHandler: RefreshHandler = ({ tokens, signal }) => {
    if (this.tokenCall) this.violate('two token calls at once');
    if (this.config.sharedStore && this.lockHolder !== 'manager') this.violate('a token call without the store lock');
    if (this.refreshTokenDead) this.violate('a token call after the refresh token died');
    if (tokens?.refreshToken === undefined || tokens.refreshToken !== this.stored?.refreshToken) {
      this.violate(
        `a token call presented ${this.retiredRefreshTokens.has(tokens?.refreshToken ?? '') ? 'a retired' : 'an unknown'} refresh token`,
      );
    }
    if (tokens?.accessToken !== this.knownAccessToken) this.violate('a token call for tokens that were already replaced');
    if (!this.isStaleForRefresh(tokens?.accessToken ?? '')) {
      this.violate('a token call for an access token that was neither refused nor near its expiry');
    }
    if (!this.rejectedAccessTokens.has(tokens?.accessToken ?? '')) this.coverage.proactiveRefreshes++;
    if (this.lastFailedTokenCall === tokens) this.coverage.retries++;
    if (this.config.sharedStore && this.storeBehind) this.violate('a token call while the shared store still holds spent tokens');
    if (this.lastFailedRefreshAt !== undefined && Date.now() - this.lastFailedRefreshAt < shortestPauseMs) {
      this.violate('a token call within the pause after a failed refresh');
    }
    if (!tokens) this.violate('a token call without tokens for a grant that needs a refresh token');
    this.refreshInFlight = true;
    this.callReleased = false;
    this.callOrphaned = false;
    const lockLost = this.lockLost?.signal ?? new AbortController().signal;
    return new Promise<TokenSet>((resolve, reject) => {
      const call: PendingTokenCall = { tokens: tokens as TokenSet, lockLost, resolve, reject };
      this.tokenCall = call;
      // A call aborted after lateAnswerWaitMs, or for a replaced session, never reached the server in this model.
      signal.addEventListener(
        'abort',
        () => {
          if (this.tokenCall === call) {
            this.tokenCall = undefined;
            this.callReleased = false;
            // A call for a replaced session that is given up ends its refresh quietly: the waiters get the new session.
            if (this.callOrphaned) this.refreshInFlight = false;
            this.callOrphaned = false;
          }
          if (isTokenRelayError(signal.reason) && signal.reason.code === ErrorCode.REFRESH_TIMEOUT) {
            this.coverage.lateLimitAborts++;
            this.lastFailedTokenCall = tokens;
          }
          reject(signal.reason);
        },
        { once: true },
      );
    });
  };

  private readonly resourceFetch = ((input: Parameters<typeof fetch>[0], init?: RequestInit): Promise<Response> => {
    const url = new URL(String(input));
    const request = this.requests[Number(url.pathname.split('/').at(-1))];
    const authorization = new Headers(init?.headers).get('authorization') ?? '';
    const accessToken = authorization.replace(/^Bearer /, '');
    if (!request) {
      this.violate(`a send for an unknown request ${url.pathname}`);
      return Promise.reject(new Error('unknown request'));
    }
    this.checkSend(request, accessToken);
    const signal = init?.signal ?? undefined;
    return new Promise<Response>((resolve, reject) => {
      const send: Send = { request, accessToken, status: undefined, response: undefined, answer: resolve };
      request.waitingSince = undefined;
      request.sends.push(send);
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      this.pendingSends.push(send);
      signal?.addEventListener(
        'abort',
        () => {
          this.pendingSends = this.pendingSends.filter((other) => other !== send);
          reject(signal.reason);
        },
        { once: true },
      );
    });
  }) as typeof fetch;

  /** A send must carry the newest token the manager knows, not an expired one, not during a refresh, and at most once again after a 401. */
  private checkSend(request: ModelRequest, accessToken: string): void {
    const what = `request ${request.id}`;
    const previous = request.sends.at(-1);
    if (request.sends.length >= 2) this.violate(`${what} was sent a third time`);
    if (previous && previous.status !== 401) this.violate(`${what} was replayed without a 401`);
    if (previous) this.coverage.replays++;
    if (accessToken === '') {
      // Signed out: the request goes without a bearer, and the server decides.
      this.coverage.signedOutSends++;
      if (this.knownAccessToken !== undefined) this.violate(`${what} was sent without a bearer while signed in`);
      if (previous) this.violate(`${what} was replayed without a bearer`);
      return;
    }
    if (this.sessionExpired) this.violate(`${what} was sent after the session expired`);
    if (this.signedOutAccessTokens.has(accessToken)) this.violate(`${what} was sent with a token of a session signed out here`);
    // While a proactive refresh runs, a token with time to spare may still be sent; a refused one never.
    if (this.refreshInFlight && (this.rejectedAccessTokens.has(accessToken) || this.accessTokens.get(accessToken)?.expiresAt === undefined)) {
      this.violate(`${what} was sent while a refresh was in flight`);
    }
    if (this.refreshInFlight) this.coverage.sentDuringRefresh++;
    // The new tokens are used once stored: while the write is on its way, the token they replace may still go out.
    const writeOnItsWay = this.pendingStoreWrites > 0 || Date.now() < this.storeQueueStuckUntil;
    const replacedButUnstored = writeOnItsWay && accessToken === this.refreshedFromAccessToken;
    if (accessToken !== this.knownAccessToken && !replacedButUnstored) this.violate(`${what} was sent with a replaced access token`);
    const expiresAt = this.accessTokens.get(accessToken)?.expiresAt;
    if (expiresAt !== undefined && Date.now() >= expiresAt) {
      this.violate(`${what} was sent with an access token the manager knows has expired`);
    }
  }

  private settle(request: ModelRequest, outcome: { response: Response } | { error: unknown }): void {
    request.waitingSince = undefined;
    this.retryLikeAForeignClient(request, outcome);
    request.settlements++;
    if (request.settlements > 1) this.violate(`request ${request.id} settled twice`);
    request.outcome = outcome;
    const what = `request ${request.id}`;
    if ('response' in outcome) {
      const last = request.sends.at(-1);
      if (!last || last.response !== outcome.response) this.violate(`${what} resolved with a response it was not sent`);
      // Signed out (before the send, or during the refresh its 401 started), the caller gets the 401 as it is.
      const signedOut = last?.accessToken === '' || this.knownAccessToken === undefined;
      if (outcome.response.status === 401 && request.sends.length !== 2 && !signedOut) {
        this.violate(`${what} got a 401 back without its one replay`);
      }
      return;
    }
    if (request.abortReason !== undefined) {
      if (outcome.error !== request.abortReason) this.violate(`${what} was aborted but rejected with something else`);
      return;
    }
    const allowed: readonly string[] = [
      ErrorCode.SESSION_EXPIRED,
      ErrorCode.TOKEN_ENDPOINT_ERROR,
      ErrorCode.REFRESH_FAILED,
      // The waiters of a token call that outlived the refresh timeout (the call itself goes on).
      ErrorCode.REFRESH_TIMEOUT,
      // The store failed to write (the manager keeps the tokens in memory) or the lock was lost.
      ErrorCode.STORE_ERROR,
      // Only after a sign-out (here, or in the other process).
      ...(this.isShared || this.everSignedOutHere ? [ErrorCode.NO_TOKENS] : []),
    ];
    if (this.lastFailedRefreshAt !== undefined && Date.now() - this.lastFailedRefreshAt < modelSettings.retry.maxPauseAfterFailureMs) {
      this.coverage.pausedRequests++;
    }
    if (!isTokenRelayError(outcome.error) || !allowed.includes(outcome.error.code)) {
      this.violate(`${what} rejected with ${String(outcome.error)}`);
    }
  }
}

function tokenCallError(failure: TokenCallFailure): unknown {
  switch (failure) {
    case 'invalid_grant':
      return new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'invalid_grant', { status: 400, oauthError: 'invalid_grant' });
    case 'unavailable':
      return new TokenRelayError(ErrorCode.TOKEN_ENDPOINT_ERROR, 'HTTP 503', { status: 503, transient: true });
    case 'invalid_client':
      return new TokenRelayError(ErrorCode.TOKEN_ENDPOINT_ERROR, 'invalid_client', { status: 401, oauthError: 'invalid_client' });
    case 'handler_crash':
      return new TypeError('the refresh handler crashed');
  }
}
