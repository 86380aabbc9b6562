import { randomBytes, randomUUID } from 'node:crypto';
import { ErrorCode, TokenRelayError, type TokenSet, type TokenStore, type TokenStoreLock } from '@tokenrelay/core';
import type { Redis } from 'ioredis';
import { createTokenCodec, type RedisStoreEncryption } from './codec.js';
import { defineStoreCommands } from './scripts.js';

/** Options of {@link redisStore}. */
export interface RedisStoreOptions {
  /**
   * Your ioredis client. The store adds five Lua commands to it (`tokenrelay*`, with
   * `defineCommand`) and opens one more connection with `client.duplicate()` for pub/sub. When
   * your client ends (`quit()`/`disconnect()`), the store closes that connection too.
   * @example
   * ```ts
   * client: new Redis(process.env.REDIS_URL)
   * ```
   */
  client: Redis;
  /**
   * The Redis key of the session's tokens, shared by every process of that session. The lock
   * lives at `<key>:lock`. One key per session: for one user per session, put the user id in it.
   * @example 'tokenrelay:crm-integration'
   */
  key: string;
  /**
   * How long the lock lasts if its holder dies. A live holder renews it every third of this
   * time, so a slow refresh keeps it; a crashed one lets the others take over after at most this long.
   * @default 10_000
   */
  lockLeaseMs?: number;
  /**
   * How long a process waits for the lock before its refresh fails with `STORE_ERROR`. Make it
   * longer than your slowest refresh: with `createTokenManager`'s defaults (10 s timeout, 2
   * retries with backoff) a refresh can take about 40 s in the worst case.
   * @default 60_000
   */
  lockWaitMs?: number;
  /**
   * Waiters wake up at once when the holder publishes (see `channel`); this is the longest they
   * sleep between two attempts when no notification comes (a lost message, a subscriber that is
   * still connecting). A waiter also wakes when the holder's lease runs out.
   * @default 1_000
   */
  lockPollMs?: number;
  /**
   * The pub/sub channel on which writes, clears and lock releases are announced. The messages
   * carry no tokens: listeners read the key again. Pub/sub ignores the database number, so give
   * two deployments on one Redis distinct keys (or channels).
   * @default `${key}:events`
   */
  channel?: string;
  /**
   * Encrypts the tokens at rest with AES-256-GCM and your key. Without it they are stored as
   * plain JSON, readable by anyone who can read the key.
   * @default undefined (plain JSON)
   */
  encryption?: RedisStoreEncryption;
  /**
   * Receives errors that happen outside any call you could catch: a lost lock, a failed lease
   * renewal, a notification whose tokens cannot be read, a broken subscriber connection. Never
   * called with a token in the message.
   * @default logs the message with `console.warn`
   */
  onError?: (error: TokenRelayError) => void;
}

/** A {@link TokenStore} on Redis, with the lock and the notifications. */
export interface RedisTokenStore extends TokenStore {
  /**
   * Reads the tokens at `key`, or `undefined` when the key is empty.
   * @throws TokenRelayError `STORE_ERROR` for a corrupt value, one that cannot be decrypted, or a Redis failure.
   */
  get(): Promise<TokenSet | undefined>;
  /** Writes the tokens (encrypted, if configured) and announces the write on `channel`. */
  set(tokens: TokenSet): Promise<void>;
  /** Deletes `key` and announces it on `channel`. */
  clear(): Promise<void>;
  /**
   * Takes the session's refresh lock: `SET <key>:lock <random owner> NX PX <lockLeaseMs>`,
   * renewed while held. Waits (woken by pub/sub, polling as a fallback) up to `lockWaitMs`.
   *
   * @throws TokenRelayError `STORE_ERROR` after `lockWaitMs`, or when Redis fails; `signal.reason` when `signal` aborts.
   */
  lock(options: { signal: AbortSignal }): Promise<TokenStoreLock>;
  /** Calls `listener` with the stored tokens whenever another store instance writes or clears them. */
  subscribe(listener: (tokens: TokenSet | undefined) => void): () => void;
  /**
   * Unsubscribes every listener and closes the pub/sub connection. The store still reads,
   * writes and locks (waiters then poll). Happens by itself when your client ends.
   */
  close(): Promise<void>;
}

type StoreEvent = 'set' | 'clear' | 'release';

const DEFAULT_LEASE_MS = 10_000;
const DEFAULT_WAIT_MS = 60_000;
const DEFAULT_POLL_MS = 1_000;

const configError = (message: string) => new TokenRelayError(ErrorCode.CONFIGURATION_ERROR, message);

/**
 * A store error for a failed Redis call. Only the message of the Redis error is kept: ioredis
 * errors carry the command's arguments (our tokens, for a write) in enumerable properties.
 */
function redisError(what: string, error: unknown): TokenRelayError {
  const reason = error instanceof Error ? `${error.name}: ${error.message}` : 'unknown error';
  return new TokenRelayError(ErrorCode.STORE_ERROR, `${what}: ${reason}`);
}

function checkDuration(name: string, value: number | undefined, minimum: number): void {
  if (value !== undefined && !(Number.isFinite(value) && value >= minimum)) {
    throw configError(`redisStore: ${name} must be a finite number ≥ ${minimum}`);
  }
}

/**
 * A token store on Redis for many processes and servers holding one session: the tokens are one
 * JSON value (optionally encrypted), a refresh takes a lock with a lease, and the others are told
 * by pub/sub when new tokens land. Give it to `createTokenManager({ store })` in every process.
 *
 * @throws TokenRelayError `CONFIGURATION_ERROR` (synchronously) for invalid options.
 * @example
 * ```ts
 * import { Redis } from 'ioredis'
 * import { createTokenManager, refreshTokenGrant } from '@tokenrelay/core'
 * import { redisStore } from '@tokenrelay/redis'
 *
 * const client = new Redis(process.env.REDIS_URL)
 * const manager = createTokenManager({
 *   store: redisStore({ client, key: 'tokenrelay:crm' }),
 *   refresh: refreshTokenGrant({ tokenEndpoint, clientId, clientSecret }),
 * })
 * ```
 */
export function redisStore(options: RedisStoreOptions): RedisTokenStore {
  const client = options?.client;
  if (typeof client?.duplicate !== 'function' || typeof client.defineCommand !== 'function') {
    throw configError('redisStore: options.client must be an ioredis client (new Redis(...))');
  }
  const { key } = options;
  if (typeof key !== 'string' || key === '') throw configError('redisStore: options.key must be a non-empty string');
  checkDuration('lockLeaseMs', options.lockLeaseMs, 3);
  checkDuration('lockWaitMs', options.lockWaitMs, 0);
  checkDuration('lockPollMs', options.lockPollMs, 1);
  const channel = options.channel ?? `${key}:events`;
  if (typeof channel !== 'string' || channel === '') throw configError('redisStore: options.channel must be a non-empty string');

  const lockKey = `${key}:lock`;
  const leaseMs = options.lockLeaseMs ?? DEFAULT_LEASE_MS;
  const waitMs = options.lockWaitMs ?? DEFAULT_WAIT_MS;
  const pollMs = options.lockPollMs ?? DEFAULT_POLL_MS;
  const codec = createTokenCodec(key, options.encryption);
  const onError = options.onError ?? ((error: TokenRelayError) => console.warn(`[@tokenrelay/redis] ${error.message}`));
  const redis = defineStoreCommands(client);
  /** Tells our own notifications apart from the other instances'. */
  const instanceId = randomUUID();
  const notification = (event: StoreEvent) => JSON.stringify({ event, from: instanceId });

  const listeners = new Set<(tokens: TokenSet | undefined) => void>();
  const wakeups = new Set<() => void>();
  /** Bumped by every notification, so a waiter knows one came while it was asking Redis. */
  let notifications = 0;
  let subscriber: Redis | undefined;
  let closed = false;

  /** Runs a user callback; if it throws, the store goes on and the error goes where uncaught errors go. */
  function callSafely(callback: () => void): void {
    try {
      callback();
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
  }
  const report = (error: TokenRelayError) => callSafely(() => onError(error));

  async function get(): Promise<TokenSet | undefined> {
    let raw: string | null;
    try {
      raw = await client.get(key);
    } catch (error) {
      throw redisError(`Could not read Redis key "${key}"`, error);
    }
    return raw === null ? undefined : codec.decode(raw);
  }

  async function deliver(): Promise<void> {
    let tokens: TokenSet | undefined;
    try {
      tokens = await get();
    } catch (error) {
      report(error as TokenRelayError); // get() rejects with TokenRelayErrors only.
      return;
    }
    for (const listener of listeners) callSafely(() => listener(tokens));
  }

  function onNotification(message: string): void {
    notifications++;
    for (const wake of wakeups) wake();
    let event: unknown;
    try {
      event = JSON.parse(message);
    } catch {
      return; // Not ours: someone else publishes on this channel.
    }
    if (typeof event !== 'object' || event === null || listeners.size === 0) return;
    const { event: kind, from } = event as { event?: unknown; from?: unknown };
    if (from !== instanceId && (kind === 'set' || kind === 'clear')) void deliver();
  }

  /** Opens the pub/sub connection on first need. Without it, waiters still poll. */
  function ensureSubscriber(): void {
    if (subscriber || closed) return;
    const connection = client.duplicate();
    subscriber = connection;
    connection.on('error', (error: unknown) => {
      if (!closed) report(redisError('The Redis pub/sub connection of the token store failed', error));
    });
    connection.on('message', (_channel: string, message: string) => onNotification(message));
    connection.subscribe(channel).catch((error: unknown) => {
      if (!closed) report(redisError(`Could not subscribe to "${channel}"; waiting processes fall back to polling`, error));
    });
  }

  /** Resolves after `ms`, or as soon as a notification arrives; rejects when `signal` aborts. */
  function waitForNotification(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const finish = (error?: unknown) => {
        clearTimeout(timer);
        wakeups.delete(wake);
        signal.removeEventListener('abort', onAbort);
        if (error === undefined) resolve();
        else reject(error);
      };
      const wake = () => finish();
      const onAbort = () => finish(signal.reason);
      const timer = setTimeout(wake, ms);
      wakeups.add(wake);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** The held lock: renews its lease until released, and reports when it finds the lock gone. */
  function holdLock(owner: string): { release(): Promise<void> } {
    let state: 'held' | 'lost' | 'released' = 'held';
    let timer: ReturnType<typeof setTimeout> | undefined;
    const schedule = () => {
      timer = setTimeout(() => void renew(), Math.floor(leaseMs / 3));
      // The refresh keeps the process alive while it runs; a forgotten lock must not.
      timer.unref?.();
    };
    async function renew(): Promise<void> {
      let renewed: number;
      try {
        renewed = await redis.tokenrelayRenewLock(lockKey, owner, leaseMs);
      } catch (error) {
        if (state !== 'held') return;
        report(redisError(`Could not renew the refresh lock "${lockKey}"; retrying`, error));
        schedule();
        return;
      }
      if (state !== 'held') return;
      if (renewed === 1) {
        schedule();
        return;
      }
      // Nothing safe remains to undo: the token request may already have rotated the refresh
      // token, so the refresh goes on and its result is stored rather than lost.
      state = 'lost';
      report(
        new TokenRelayError(
          ErrorCode.STORE_ERROR,
          `The refresh lock "${lockKey}" expired before its holder renewed it, so another process may ` +
            'refresh at the same time. This refresh goes on and stores its tokens. Raise lockLeaseMs ' +
            'above your longest event-loop stall or Redis outage.',
        ),
      );
    }
    schedule();
    return {
      async release() {
        if (state === 'released') return;
        state = 'released';
        clearTimeout(timer);
        try {
          // Compare-and-delete: a lock that expired and was taken by another process stays theirs.
          await redis.tokenrelayReleaseLock(lockKey, owner, channel, notification('release'));
        } catch (error) {
          throw redisError(`Could not release the refresh lock "${lockKey}" (it expires after its lease)`, error);
        }
      },
    };
  }

  async function lock({ signal }: { signal: AbortSignal }): Promise<TokenStoreLock> {
    signal.throwIfAborted();
    ensureSubscriber();
    const owner = randomBytes(16).toString('base64url');
    const deadline = Date.now() + waitMs;
    // Bounded by the deadline: every pass either takes the lock, gives up, or waits.
    for (;;) {
      const seen = notifications;
      let acquired: number;
      let remainingLeaseMs: number;
      try {
        [acquired, remainingLeaseMs] = await redis.tokenrelayAcquireLock(lockKey, owner, leaseMs);
      } catch (error) {
        throw redisError(`Could not take the refresh lock "${lockKey}"`, error);
      }
      if (acquired === 1) {
        const held = holdLock(owner);
        // Aborted while we asked: hand the lock straight back (if that fails, its lease ends it).
        if (signal.aborted) await held.release().catch(() => undefined);
        signal.throwIfAborted();
        return held;
      }
      signal.throwIfAborted();
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new TokenRelayError(
          ErrorCode.STORE_ERROR,
          `Gave up waiting for the refresh lock "${lockKey}" after ${waitMs} ms: another process held it ` +
            'all that time (raise lockWaitMs if refreshes can take that long)',
        );
      }
      if (notifications !== seen) continue;
      // Wake up when the holder's lease ends, if that comes first. PTTL -1: a lock without expiry (not set by us): poll.
      const untilExpiry = remainingLeaseMs < 0 ? pollMs : remainingLeaseMs + 1;
      await waitForNotification(Math.min(pollMs, untilExpiry, left), signal);
    }
  }

  async function close(): Promise<void> {
    if (closed) return;
    closed = true;
    client.off('end', onClientEnd);
    listeners.clear();
    // disconnect(), not quit(): nothing is left to flush, and it ends a reconnecting connection too.
    subscriber?.disconnect();
    subscriber = undefined;
  }
  const onClientEnd = () => void close();
  client.once('end', onClientEnd);

  return {
    get,
    async set(tokens: TokenSet) {
      const value = codec.encode(tokens);
      try {
        await redis.tokenrelaySetAndPublish(key, value, channel, notification('set'));
      } catch (error) {
        throw redisError(`Could not write Redis key "${key}"`, error);
      }
    },
    async clear() {
      try {
        await redis.tokenrelayDeleteAndPublish(key, channel, notification('clear'));
      } catch (error) {
        throw redisError(`Could not delete Redis key "${key}"`, error);
      }
    },
    lock,
    subscribe(listener) {
      if (closed) return () => {};
      listeners.add(listener);
      ensureSubscriber();
      return () => {
        listeners.delete(listener);
      };
    },
    close,
  };
}
