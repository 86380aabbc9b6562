/*
 * The messages between the benchmark and its server host: a child process that runs
 * @tokenrelay/testing's OAuth servers, so the server's sockets and CPU are not the client's.
 */
import type { TokenSet } from '@tokenrelay/core';
import type { OAuthServerOptions, OAuthServerStats, TokenEndpointFailure } from '@tokenrelay/testing';

/**
 * The counters the scenarios read (the server's own, without its request logs, which are too
 * large to send per call), and when each token call that issued a token arrived.
 */
export type ServerCounters = Omit<OAuthServerStats, 'tokenRequestLog' | 'apiRequestLog'> & {
  /** Epoch ms of each successful token call, oldest first. */
  readonly tokenIssuedAt: readonly number[];
};

export type HostRequest =
  | { readonly id: number; readonly op: 'start'; readonly options: OAuthServerOptions }
  | { readonly id: number; readonly op: 'issue' | 'revokeAccessTokens' | 'revokeRefreshTokens' | 'clearFailures' | 'stats' | 'close'; readonly server: number }
  | {
      readonly id: number;
      readonly op: 'failNextTokenRequests';
      readonly server: number;
      readonly count: number;
      readonly failure: TokenEndpointFailure;
    };

export type HostResult =
  | { readonly server: number; readonly url: string; readonly tokenEndpoint: string }
  | TokenSet
  | ServerCounters
  | null;

export type HostReply =
  | { readonly id: number; readonly ok: true; readonly result: HostResult }
  | { readonly id: number; readonly ok: false; readonly message: string };
