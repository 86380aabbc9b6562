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
  retry: { retries: 1, minDelayMs: 100, maxDelayMs: 100 },
} as const;

const apiOrigin = 'https://api.model.test';

/** How the scripted token endpoint fails a refresh. */
export type TokenCallFailure = 'invalid_grant' | 'unavailable' | 'invalid_client' | 'handler_crash';

/** How the scripted resource server answers: by the token's validity, or 403 whatever the token. */
export type ResourceAnswer = 'by_token' | 'insufficient_scope';

/** What the other process does through the shared store. */
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
  /** Token calls the manager aborted at its refresh timeout. */
  timeouts: number;
  /** Token calls retried with the same refresh token after a transient failure or a timeout. */
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
}

/** Options of one run, drawn by fast-check. */
export interface ModelRunConfig {
  /** Lifetime of the first access token; `undefined`: expiry unknown, learnt from 401s only. */
  readonly initialLifetimeMs: number | undefined;
  /** A store with a lock and announcements, shared with another process; otherwise a plain store. */
  readonly sharedStore: boolean;
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
    timeouts: 0,
    retries: 0,
    rotations: 0,
    sessionExpiries: 0,
    abortsDuringRefresh: 0,
    signInsDuringRefresh: 0,
    lockWaits: 0,
    adoptedFromOtherProcess: 0,
    unannouncedWrites: 0,
  };

  private readonly api: typeof fetch;
  private readonly accessTokens = new Map<string, AccessTokenRecord>();
  private readonly rejectedAccessTokens = new Set<string>();
  private readonly retiredRefreshTokens = new Set<string>();
  private pendingSends: Send[] = [];
  private tokenCall: PendingTokenCall | undefined;
  private lastFailedTokenCall: TokenSet | undefined;
  private counter = 0;
  /** From the first token call of a refresh until the manager reports its end (or the session is replaced). */
  private refreshInFlight = false;
  /** The tokens in the store: the newest issued to anyone (undefined after a sign-out). */
  private stored: TokenSet | undefined;
  /** The access token this manager has been told about (its own refresh, a sign-in, an announcement, a read). */
  private knownAccessToken: string | undefined;
  /** The newest refresh token has been refused (invalid_grant): no token call may present it again. */
  private refreshTokenDead = false;
  /** This manager saw the refresh token die and has not been given a new session since. */
  private sessionExpired = false;
  private lockHolder: 'manager' | 'other' | undefined;
  private lockQueue: LockWaiter[] = [];
  private readonly subscribers = new Set<(tokens: TokenSet | undefined) => void>();
  private managerSigningIn = false;
  /** The tokens the model expects the manager to write to the store next; cleared by that write. */
  private expectedWrite: TokenSet | undefined;
  /** The access token of this manager's last successful token call, to tell its refreshes from adoptions. */
  private lastOwnAccessToken: string | undefined;
  private successfulTokenCalls = 0;
  private refreshEvents = 0;
  private sessionExpiredEventsThisSession = 0;
  private readonly log: string[] = [];

  constructor(private readonly config: ModelRunConfig) {
    const initial = this.issue(config.initialLifetimeMs, true);
    this.knownAccessToken = initial.accessToken;
    // The store starts empty: the manager must seed it with its initial tokens (under the lock when shared).
    this.expectedWrite = initial;
    this.manager = createTokenManager({
      tokens: initial,
      store: this.createStore(),
      refresh: this.refreshHandler,
      clock: { now: () => Date.now() },
      ...modelSettings,
    });
    this.manager.on('refresh', (tokens) => {
      this.refreshEvents++;
      if (tokens.accessToken !== this.lastOwnAccessToken) this.coverage.adoptedFromOtherProcess++;
      this.refreshInFlight = false;
    });
    this.manager.on('refreshError', () => {
      this.refreshInFlight = false;
      this.lastFailedTokenCall = undefined;
    });
    this.manager.on('sessionExpired', () => {
      this.sessionExpiredEventsThisSession++;
    });
    this.api = withTokenRelay(this.resourceFetch, this.manager, { origins: [apiOrigin] });
  }

  /** Loads the initial tokens (seeding the empty store), as the first request would. */
  async start(): Promise<void> {
    await this.manager.getTokens();
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

  get otherProcessHoldsLock(): boolean {
    return this.lockHolder === 'other';
  }

  get lockIsFree(): boolean {
    return this.config.sharedStore && this.lockHolder === undefined;
  }

  // ── Commands ────────────────────────────────────────────────────────────────────────────────

  async startRequest(): Promise<void> {
    const request: ModelRequest = {
      id: this.requests.length,
      controller: new AbortController(),
      abortReason: undefined,
      sends: [],
      settlements: 0,
      outcome: undefined,
    };
    this.requests.push(request);
    this.api(`${apiOrigin}/items/${request.id}`, { signal: request.controller.signal }).then(
      (response) => this.settle(request, { response }),
      (error: unknown) => this.settle(request, { error }),
    );
    await this.checkState(`request ${request.id}`);
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
    // The manager must store these, keeping its refresh token when none came.
    this.stored = { ...tokens, refreshToken: tokens.refreshToken ?? call.tokens.refreshToken };
    this.knownAccessToken = tokens.accessToken;
    this.lastOwnAccessToken = tokens.accessToken;
    this.successfulTokenCalls++;
    const sendsBefore = this.pendingSends.length;
    // The model's view of the store moves first; the manager's write must agree with it.
    this.expectedWrite = this.stored;
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
    if (failure === 'invalid_grant') {
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
    this.expectedWrite = tokens;
    this.managerSigningIn = true;
    try {
      await this.manager.setTokens(tokens);
    } finally {
      this.managerSigningIn = false;
    }
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
    if (action.kind === 'refresh' && (this.stored === undefined || this.refreshTokenDead)) return;
    this.lockHolder = 'other';
    let announced: TokenSet | undefined;
    if (action.kind === 'refresh') {
      const previous = this.stored as TokenSet;
      const tokens = this.issue(action.lifetimeMs, action.rotate);
      if (action.rotate) this.retiredRefreshTokens.add(previous.refreshToken ?? '');
      this.stored = { ...tokens, refreshToken: tokens.refreshToken ?? previous.refreshToken };
      if (!action.announce) this.coverage.unannouncedWrites++;
      announced = action.announce ? this.stored : undefined;
    } else if (action.kind === 'signIn') {
      this.stored = this.newSession(action.lifetimeMs);
      announced = this.stored;
    } else {
      if (this.stored?.refreshToken) this.retiredRefreshTokens.add(this.stored.refreshToken);
      this.stored = undefined;
    }
    if (announced || action.kind === 'signOut') {
      this.knownAccessToken = announced?.accessToken;
      if (announced && action.kind === 'signIn') {
        this.sessionExpired = false;
        this.sessionExpiredEventsThisSession = 0;
      }
      for (const listener of this.subscribers) listener(announced);
    }
    this.releaseLock('other');
    const what = action.kind === 'refresh' ? `refreshes${action.announce ? '' : ' (unannounced)'}` : action.kind;
    await this.checkState(`other process ${what}`);
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
      this.lockQueue.length > 0;
    for (let round = 0; round < drainRounds && open(); round++) {
      if (this.lockHolder === 'other') await this.otherProcessReleases();
      if (this.tokenCall) await this.succeedTokenCall(true, 60_000);
      while (this.pendingSends.length > 0) await this.respond(0, 'by_token');
      await this.advanceClock(modelSettings.retry.maxDelayMs);
    }
    for (const request of this.unsettledRequests) this.violate(`request ${request.id} never settled`);
    if (this.tokenCall || this.refreshInFlight) this.violate('a refresh is still open after the drain');
    if (this.lockHolder === 'manager' || this.lockQueue.length > 0) this.violate('the store lock was not given back');
    if (vi.getTimerCount() > 0) this.violate(`${vi.getTimerCount()} timer(s) left behind`);
    if (this.refreshEvents < this.successfulTokenCalls) {
      this.violate(`${this.refreshEvents} refresh events for ${this.successfulTokenCalls} successful token calls`);
    }
    if (!this.isShared && this.refreshEvents !== this.successfulTokenCalls) {
      this.violate(`${this.refreshEvents} refresh events for ${this.successfulTokenCalls} successful token calls`);
    }
    this.throwOnViolations();
  }

  /** The invariants at a command boundary, after everything the command started has run. */
  private async checkState(step: string): Promise<void> {
    await flush();
    this.log.push(step);
    const held = await this.manager.getTokens();
    if (held?.accessToken !== this.knownAccessToken) this.violate('the manager does not hold the tokens it was last given');
    if (held && held.refreshToken !== this.stored?.refreshToken && this.knownAccessToken === this.stored?.accessToken) {
      this.violate('the manager holds another refresh token than the newest one issued');
    }
    if (this.expectedWrite !== undefined) this.violate('the manager did not store the tokens it was given');
    if (this.sessionExpiredEventsThisSession > 1) this.violate('sessionExpired fired more than once in one session');
    if (this.sessionExpired && this.sessionExpiredEventsThisSession !== 1) {
      this.violate('the refresh token died but sessionExpired did not fire');
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
        // What the manager reads, it knows (and adopts, if it differs from what it had).
        if (this.stored) this.knownAccessToken = this.stored.accessToken;
        return this.stored;
      },
      set: (tokens) => {
        if (this.config.sharedStore && this.lockHolder !== 'manager' && !this.managerSigningIn) {
          this.violate('the manager wrote the shared store without holding its lock');
        }
        const expected = this.expectedWrite;
        this.expectedWrite = undefined;
        if (!expected || tokens.accessToken !== expected.accessToken || tokens.refreshToken !== expected.refreshToken) {
          this.violate('the manager stored tokens other than the newest ones issued');
        }
        this.stored = tokens;
      },
      clear: () => {
        this.stored = undefined;
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

  private acquireLock(signal: AbortSignal): Promise<TokenStoreLock> {
    if (this.lockHolder === 'manager') this.violate('the manager asked for the lock it already holds');
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
          let released = false;
          resolve({
            release: () => {
              if (released) this.violate('the manager released the store lock twice');
              released = true;
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
    if (tokens.refreshToken === undefined || tokens.refreshToken !== this.stored?.refreshToken) {
      this.violate(
        `a token call presented ${this.retiredRefreshTokens.has(tokens.refreshToken ?? '') ? 'a retired' : 'an unknown'} refresh token`,
      );
    }
    if (tokens.accessToken !== this.knownAccessToken) this.violate('a token call for tokens that were already replaced');
    if (!this.isStaleForRefresh(tokens.accessToken)) {
      this.violate('a token call for an access token that was neither refused nor near its expiry');
    }
    if (!this.rejectedAccessTokens.has(tokens.accessToken)) this.coverage.proactiveRefreshes++;
    if (this.lastFailedTokenCall === tokens) this.coverage.retries++;
    this.refreshInFlight = true;
    return new Promise<TokenSet>((resolve, reject) => {
      const call: PendingTokenCall = { tokens, resolve, reject };
      this.tokenCall = call;
      // A timed-out or superseded call never reaches the server in this model: it consumed nothing.
      signal.addEventListener(
        'abort',
        () => {
          if (this.tokenCall === call) this.tokenCall = undefined;
          if (isTokenRelayError(signal.reason) && signal.reason.code === ErrorCode.REFRESH_TIMEOUT) {
            this.coverage.timeouts++;
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
    if (this.sessionExpired) this.violate(`${what} was sent after the session expired`);
    if (this.refreshInFlight) this.violate(`${what} was sent while a refresh was in flight`);
    if (accessToken !== this.knownAccessToken) this.violate(`${what} was sent with a replaced access token`);
    const expiresAt = this.accessTokens.get(accessToken)?.expiresAt;
    if (expiresAt !== undefined && Date.now() >= expiresAt) {
      this.violate(`${what} was sent with an access token the manager knows has expired`);
    }
  }

  private settle(request: ModelRequest, outcome: { response: Response } | { error: unknown }): void {
    request.settlements++;
    if (request.settlements > 1) this.violate(`request ${request.id} settled twice`);
    request.outcome = outcome;
    const what = `request ${request.id}`;
    if ('response' in outcome) {
      const last = request.sends.at(-1);
      if (!last || last.response !== outcome.response) this.violate(`${what} resolved with a response it was not sent`);
      if (outcome.response.status === 401 && request.sends.length !== 2) {
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
      // Only after the other process signed out.
      ...(this.isShared ? [ErrorCode.NO_TOKENS] : []),
    ];
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
