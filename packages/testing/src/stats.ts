import type { ApiRequestRecord, OAuthServerStats, TokenEndpointFailureKind, TokenRequestRecord } from './types.js';

type Mutable<T> = { -readonly [K in keyof T]: T[K] };
export type TokenRequestEntry = Mutable<TokenRequestRecord>;
export type ApiRequestEntry = Mutable<ApiRequestRecord>;

/** The server's counters and bounded request logs. */
export class StatsRecorder {
  readonly #logLimit: number;
  #inFlight = 0;
  #counters = StatsRecorder.#zero();
  #tokenErrors: Record<string, number> = {};
  #injected: Partial<Record<TokenEndpointFailureKind, number>> = {};
  #tokenLog: TokenRequestEntry[] = [];
  #apiLog: ApiRequestEntry[] = [];

  constructor(logLimit: number) {
    this.#logLimit = logLimit;
  }

  static #zero() {
    return {
      tokenRequests: 0,
      tokenSuccesses: 0,
      refreshTokenReuses: 0,
      familiesRevoked: 0,
      tokenPairsEvicted: 0,
      revocations: 0,
      maxInFlightTokenRequests: 0,
      apiRequests: 0,
      apiOk: 0,
      api401: 0,
      dpopProofs: 0,
      dpopNonceChallenges: 0,
      dpopReplaysRefused: 0,
      dpopProofsRefused: 0,
    };
  }

  #append<T>(log: T[], entry: T): T {
    log.push(entry);
    if (log.length > this.#logLimit) log.shift();
    return entry;
  }

  /** Counts a token request as started; call the returned function once when its response closes. */
  tokenRequestStarted(method: string): { entry: TokenRequestEntry; done: () => void } {
    this.#counters.tokenRequests++;
    this.#inFlight++;
    this.#counters.maxInFlightTokenRequests = Math.max(this.#counters.maxInFlightTokenRequests, this.#inFlight);
    const entry = this.#append(this.#tokenLog, {
      at: Date.now(),
      method,
      clientAuthentication: undefined,
      clientId: undefined,
      accessToken: undefined,
      dpopJkt: undefined,
      params: {},
      status: undefined,
      error: undefined,
      injected: undefined,
    });
    return { entry, done: () => void this.#inFlight-- };
  }

  tokenInjected(entry: TokenRequestEntry, kind: TokenEndpointFailureKind): void {
    entry.injected = kind;
    this.#injected[kind] = (this.#injected[kind] ?? 0) + 1;
  }

  tokenAnswered(entry: TokenRequestEntry, status: number, error: string | undefined): void {
    entry.status = status;
    entry.error = error;
    if (error !== undefined) this.#tokenErrors[error] = (this.#tokenErrors[error] ?? 0) + 1;
  }

  tokenSucceeded(): void {
    this.#counters.tokenSuccesses++;
  }

  refreshTokenReused(familyRevoked: boolean): void {
    this.#counters.refreshTokenReuses++;
    if (familyRevoked) this.#counters.familiesRevoked++;
  }

  tokenPairsEvicted(count: number): void {
    this.#counters.tokenPairsEvicted += count;
    this.#counters.familiesRevoked += count;
  }

  revoked(): void {
    this.#counters.revocations++;
  }

  familiesRevoked(count: number): void {
    this.#counters.familiesRevoked += count;
  }

  apiRequestStarted(method: string, path: string, accessToken: string | undefined): ApiRequestEntry {
    this.#counters.apiRequests++;
    return this.#append(this.#apiLog, { at: Date.now(), method, path, accessToken, dpopJkt: undefined, status: undefined });
  }

  /** Counts a DPoP proof check: whether a proof was sent and, when the request was refused, why. */
  dpopProofChecked(sent: boolean, refusal: 'use_dpop_nonce' | 'invalid_dpop_proof' | 'replay' | undefined): void {
    if (sent) this.#counters.dpopProofs++;
    if (refusal === 'use_dpop_nonce') this.#counters.dpopNonceChallenges++;
    if (refusal === 'invalid_dpop_proof' || refusal === 'replay') this.#counters.dpopProofsRefused++;
    if (refusal === 'replay') this.#counters.dpopReplaysRefused++;
  }

  apiAnswered(entry: ApiRequestEntry, status: number): void {
    entry.status = status;
    if (status === 200) this.#counters.apiOk++;
    if (status === 401) this.#counters.api401++;
  }

  snapshot(): OAuthServerStats {
    return {
      ...this.#counters,
      tokenErrors: { ...this.#tokenErrors },
      injectedFailures: { ...this.#injected },
      tokenRequestLog: this.#tokenLog.map((entry) => ({ ...entry, params: { ...entry.params } })),
      apiRequestLog: this.#apiLog.map((entry) => ({ ...entry })),
    };
  }

  /** Zeroes everything; requests still in flight keep counting towards the new maximum. */
  reset(): void {
    this.#counters = { ...StatsRecorder.#zero(), maxInFlightTokenRequests: this.#inFlight };
    this.#tokenErrors = {};
    this.#injected = {};
    this.#tokenLog = [];
    this.#apiLog = [];
  }
}
