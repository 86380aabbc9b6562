/*
 * The benchmark's side of the server host: OAuth servers from @tokenrelay/testing, running in a
 * child process and driven over IPC. A 10,000-request burst needs 10,000 sockets on each side;
 * in one process that would be 20,000 file descriptors and the server's work would be timed as
 * the client's.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { TokenSet } from '@tokenrelay/core';
import type { OAuthServerOptions, TokenEndpointFailure } from '@tokenrelay/testing';
import type { HostReply, HostRequest, HostResult, ServerCounters } from './protocol.js';

/** No command takes long (closing a server ends its hung requests); a missing answer is a bug. */
const REPLY_TIMEOUT_MS = 30_000;

/** A request without its id (which #call assigns), for each member of the union. */
type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;
type Command = WithoutId<HostRequest>;

/** An OAuth server of @tokenrelay/testing running in the host process. */
export interface RemoteOAuthServer {
  readonly url: string;
  readonly tokenEndpoint: string;
  issue(): Promise<TokenSet>;
  revokeAccessTokens(): Promise<void>;
  revokeRefreshTokens(): Promise<void>;
  failNextTokenRequests(count: number, failure: TokenEndpointFailure): Promise<void>;
  /** Drops the injected failures not yet consumed: the token endpoint answers normally again. */
  clearFailures(): Promise<void>;
  stats(): Promise<ServerCounters>;
  close(): Promise<void>;
}

export class ServerHost {
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, { resolve: (result: HostResult) => void; reject: (error: Error) => void }>();
  #nextId = 1;

  private constructor(child: ChildProcess) {
    this.#child = child;
    child.on('message', (reply: HostReply) => {
      const pending = this.#pending.get(reply.id);
      if (!pending) return;
      this.#pending.delete(reply.id);
      if (reply.ok) pending.resolve(reply.result);
      else pending.reject(new Error(`server host: ${reply.message}`));
    });
    child.on('exit', (code) => {
      for (const pending of this.#pending.values()) pending.reject(new Error(`server host exited (${code})`));
      this.#pending.clear();
    });
  }

  /** Starts the host process (TypeScript through tsx, like the benchmark itself). */
  static async start(): Promise<ServerHost> {
    const child = fork(fileURLToPath(new URL('./host.ts', import.meta.url)), {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    return new ServerHost(child);
  }

  #call(command: Command): Promise<HostResult> {
    const id = this.#nextId++;
    return new Promise<HostResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`server host: no answer to ${command.op} within ${REPLY_TIMEOUT_MS} ms`));
      }, REPLY_TIMEOUT_MS);
      const settle = <T>(done: (value: T) => void) => (value: T) => {
        clearTimeout(timer);
        done(value);
      };
      this.#pending.set(id, { resolve: settle(resolve), reject: settle(reject) });
      this.#child.send({ ...command, id } as HostRequest);
    });
  }

  /** Starts a fresh OAuth server (its own port, tokens and counters). */
  async startServer(options: OAuthServerOptions): Promise<RemoteOAuthServer> {
    const { server, url, tokenEndpoint } = (await this.#call({ op: 'start', options })) as {
      server: number;
      url: string;
      tokenEndpoint: string;
    };
    const call = (op: 'issue' | 'revokeAccessTokens' | 'revokeRefreshTokens' | 'clearFailures' | 'stats' | 'close') =>
      this.#call({ op, server });
    return {
      url,
      tokenEndpoint,
      issue: async () => (await call('issue')) as TokenSet,
      revokeAccessTokens: async () => void (await call('revokeAccessTokens')),
      revokeRefreshTokens: async () => void (await call('revokeRefreshTokens')),
      failNextTokenRequests: async (count, failure) =>
        void (await this.#call({ op: 'failNextTokenRequests', server, count, failure })),
      clearFailures: async () => void (await call('clearFailures')),
      stats: async () => (await call('stats')) as ServerCounters,
      close: async () => void (await call('close')),
    };
  }

  /** Ends the host process; its servers close with it. */
  async close(): Promise<void> {
    if (this.#child.exitCode !== null || !this.#child.connected) return;
    const exited = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()));
    this.#child.disconnect();
    // The host closes its servers and exits; if it does not within 5 s, it is stopped.
    const timer = setTimeout(() => this.#child.kill(), 5_000);
    await exited;
    clearTimeout(timer);
  }
}
