import type { TokenSet } from '@tokenrelay/core';
import type { AxiosAdapter } from 'axios';

/** Everything a contender is told: where the servers are, who the client is, the signed-in session. */
export interface ContenderSetup {
  /** Origin of the protected API, e.g. `http://127.0.0.1:PORT`; requests go to `${apiOrigin}${path}`. */
  readonly apiOrigin: string;
  /** The OAuth token endpoint (`grant_type=refresh_token`, `client_secret_basic`). */
  readonly tokenEndpoint: string;
  readonly clientId: string;
  readonly clientSecret: string;
  /** The session a sign-in produced. `expiresAt` may lie in the past: an expired access token. */
  readonly tokens: TokenSet;
  /**
   * Replaces axios's HTTP adapter for the API requests (the hot path passes a canned one). Fetch
   * contenders use `globalThis.fetch`, which the hot path replaces the same way.
   */
  readonly axiosAdapter?: AxiosAdapter;
}

/** How one request ended, as the caller saw it. */
export interface Outcome {
  /** A 2xx answer reached the caller. */
  readonly ok: boolean;
  /** The final HTTP status, when there was one. */
  readonly status?: number;
  /** Why it failed: `HTTP 401`, a TokenRelayError code, an axios error code, an error name. */
  readonly error?: string;
}

/** One signed-in client: sends authorized GET requests to the API. */
export interface Session {
  /** Sends `GET ${apiOrigin}${path}` and reports how it ended. Never rejects. */
  send(path: string): Promise<Outcome>;
}

/** One library (or hand-written code) under test, configured as its documentation recommends. */
export interface Contender {
  /** Stable key used in the JSON results. */
  readonly id: string;
  /** Column title in the table. */
  readonly name: string;
  /** The HTTP client underneath: the hot path compares with the bare one. */
  readonly client: 'axios' | 'fetch';
  /** True for tokenrelay's own adapters: the ones whose goals fail the run. */
  readonly isTokenRelay: boolean;
  /**
   * The parts of the run (scenario ids, `hot-path`, `bundle-size`) this contender takes part in;
   * every part when absent. A client layered on tokenrelay runs only where the layering matters.
   */
  readonly measuredIn?: readonly string[];
  /**
   * The id of the contender this one adds a layer on top of (ky's own retries over tokenrelay's
   * fetch wrapper): a scenario's `compareWithBase` judges it against that contender's result.
   */
  readonly layeredOn?: string;
  connect(setup: ContenderSetup): Session;
}

/** Whether `contender` takes part in the part of the run with this id. */
export const takesPart = (contender: Contender, part: string) => contender.measuredIn?.includes(part) ?? true;
