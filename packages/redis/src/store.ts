import { randomBytes, randomUUID } from 'node:crypto';
import type {
  StoredTokens,
  TokenRelayError,
  TokenStore,
  TokenStoreLock,
  TokenStoreSetOptions,
} from '@tokenrelay/core';
import { assertTimerDelay, configurationError, delay, notifyListeners, storeError } from '@tokenrelay/core/kit';
import type { Cluster, Redis } from 'ioredis';
import { createTokenCodec, type RedisStoreEncryption } from './codec.js';
import { defineStoreCommands } from './scripts.js';

/** Options of {@link redisStore}. */
export interface RedisStoreOptions {
  /**
   * Your ioredis client: a `Redis` (one server, or a primary with replicas) or a `Cluster`. The
   * store adds five Lua commands to it (`tokenrelay*`, with `defineCommand`) and opens one more
   * connection with `client.duplicate()` for pub/sub. When your client ends
   * (`quit()`/`disconnect()`), the store closes that connection too.
   * @example
   * ```ts
   * client: new Redis(process.env.REDIS_URL)
   * client: new Cluster([{ host: 'redis-1.internal', port: 6379 }])
   * ```
   */
  client: Redis | Cluster;
  /**
   * The Redis key of the session's tokens, shared by every process of that session. The lock
   * lives at `<key>:lock`. One key per session: for one user per session, put the user id in it.
   * With a `Cluster`, the key must carry a hash tag (`{…}`), so that the tokens and their lock
   * live in one hash slot and one script can check both.
   * @example 'tokenrelay:crm-integration'
   * @example '{tokenrelay:crm-integration}' // on a Redis Cluster
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
   * two deployments on one Redis distinct keys (or channels). On a Cluster, every node relays
   * the messages to its subscribers (classic pub/sub), so any connection hears them.
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
   * Receives errors that happen outside any call you could catch: a failed lease renewal, a
   * notification whose tokens cannot be read, a broken subscriber connection. (A lost lock also
   * aborts the lock's `signal`, which the manager watches.) Never called with a token in the message.
   * @default logs the message with `console.warn`
   */
  onError?: (error: TokenRelayError) => void;
}

/** A {@link TokenStore} on Redis, with the lock and the notifications. */
export interface RedisTokenStore extends TokenStore {
  /**
   * Reads what `key` holds, or `undefined` when it is empty.
   * @throws TokenRelayError `STORE_ERROR` for a corrupt value, one that cannot be decrypted, or a Redis failure.
   */
  get(): Promise<StoredTokens | undefined>;
  /**
   * Writes the tokens (encrypted, if configured) and announces the write on `channel`, in one Lua
   * script. With `expectedRevision` the script first compares the stored revision (compare-and-set)
   * and, while this store holds the lock, that the lock is still its own. Such a write (a refresh's)
   * that cannot reach Redis is tried again every 100 ms until the lock's lease could have run out,
   * so a short outage or restart does not lose the refresh token it carries.
   * @throws TokenRelayError `STORE_ERROR` when the lock was lost (nothing is written) or Redis fails.
   */
  set(value: StoredTokens, options?: TokenStoreSetOptions): Promise<boolean>;
  /** Deletes `key` and announces it on `channel`. */
  clear(): Promise<void>;
  /**
   * Takes the session's refresh lock: `SET <key>:lock <random owner> NX PX <lockLeaseMs>`,
   * renewed while held. Waits (woken by pub/sub, polling as a fallback) up to `lockWaitMs`. The
   * lock's `signal` aborts when a renewal finds another owner, or no renewal got through for a whole lease.
   * Its `assertHeld` asks Redis at once (one GET of `<key>:lock`), for a holder that resumed from a
   * freeze before its renewal ran: it rejects when the lock is no longer this owner's, or Redis fails.
   *
   * @throws TokenRelayError `STORE_ERROR` after `lockWaitMs`, or when Redis fails; `signal.reason` when `signal` aborts.
   */
  lock(options: { signal: AbortSignal }): Promise<HeldRedisLock>;
  /** Calls `listener` with what the key holds whenever another store instance writes or clears it. */
  subscribe(listener: (value: StoredTokens | undefined) => void): () => void;
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
/** How often a refresh's write is tried again while Redis cannot be reached and the lease is still ours. */
const WRITE_RETRY_MS = 100;

/**
 * Redis Cluster hashes only the part of a key between its first `{` and the first `}` after it,
 * when that part is not empty (so `<key>:lock` shares the slot of `<key>`).
 */
function hasHashTag(key: string): boolean {
  const open = key.indexOf('{');
  return open !== -1 && key.indexOf('}', open + 1) > open + 1;
}

/**
 * A store error for a failed Redis call. Only the message of the Redis error is kept: ioredis
 * errors carry the command's arguments (our tokens, for a write) in enumerable properties.
 */
function redisError(what: string, error: unknown): TokenRelayError {
  const reason = error instanceof Error ? `${error.name}: ${error.message}` : 'unknown error';
  return storeError(`${what}: ${reason}`);
}

/** The lock {@link RedisTokenStore.lock} hands out. */
interface HeldRedisLock extends TokenStoreLock {
  readonly signal: AbortSignal;
  assertHeld(): Promise<void>;
  release(): Promise<void>;
}

/** The lock this store instance holds. */
interface HeldLock {
  readonly owner: string;
  readonly lost: AbortController;
  /**
   * Until when the lock is ours for certain: the lease measured from before the last SET or
   * PEXPIRE that set it was sent, so Redis cannot have expired it earlier.
   */
  leaseEnd: number;
}

/**
 * A token store on Redis for many processes and servers holding one session: the tokens are one
 * JSON value (optionally encrypted), a refresh takes a lock with a lease, every write is one Lua
 * script (compare-and-set, owner check, notification), and the others are told by pub/sub when
 * new tokens land. Give it to `createTokenManager({ store })` in every process. Works with a
 * single Redis and with a Redis Cluster (give the key a hash tag).
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
    throw configurationError('redisStore: options.client must be an ioredis client (new Redis(...) or new Cluster(...))');
  }
  const { key } = options;
  if (typeof key !== 'string' || key === '') throw configurationError('redisStore: options.key must be a non-empty string');
  if ((client as Cluster).isCluster === true && !hasHashTag(key)) {
    throw configurationError(
      `redisStore: on a Redis Cluster the key must carry a hash tag, e.g. "{${key}}", so that the tokens and their lock share one hash slot`,
    );
  }
  assertTimerDelay('redisStore', 'lockLeaseMs', options.lockLeaseMs, 3);
  assertTimerDelay('redisStore', 'lockWaitMs', options.lockWaitMs, 0);
  assertTimerDelay('redisStore', 'lockPollMs', options.lockPollMs, 1);
  const channel = options.channel ?? `${key}:events`;
  if (typeof channel !== 'string' || channel === '') throw configurationError('redisStore: options.channel must be a non-empty string');

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

  const listeners = new Set<(value: StoredTokens | undefined) => void>();
  const wakeups = new Set<() => void>();
  /** Bumped by every notification, so a waiter knows one came while it was asking Redis. */
  let notifications = 0;
  let subscriber: Redis | Cluster | undefined;
  let held: HeldLock | undefined;
  let closed = false;

  const report = (error: TokenRelayError) => notifyListeners([onError], error);

  const lostLock = () =>
    storeError(
      `Lost the refresh lock "${lockKey}": its lease ran out before its holder renewed it (an event-loop stall or a Redis ` +
        'outage longer than lockLeaseMs), so another process may refresh now. Nothing more is written under it.',
    );

  async function get(): Promise<StoredTokens | undefined> {
    let raw: string | null;
    try {
      raw = await client.get(key);
    } catch (error) {
      throw redisError(`Could not read Redis key "${key}"`, error);
    }
    return raw === null ? undefined : codec.decode(raw);
  }

  async function deliver(): Promise<void> {
    let value: StoredTokens | undefined;
    try {
      value = await get();
    } catch (error) {
      report(error as TokenRelayError); // get() rejects with TokenRelayErrors only.
      return;
    }
    notifyListeners(listeners, value);
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
    const subscribe = (connection: Redis | Cluster) =>
      connection.subscribe(channel).catch((error: unknown) => {
        if (!closed) report(redisError(`Could not subscribe to "${channel}"; waiting processes fall back to polling`, error));
      });
    let connection: Redis | Cluster;
    if ((client as Cluster).isCluster === true) {
      // A Cluster re-subscribes through its own subscriber, and handles the failures of doing so.
      connection = client.duplicate();
      void subscribe(connection);
    } else {
      // A plain connection subscribes on every `ready` itself: ioredis' own re-subscription after a
      // reconnect leaves its promise unhandled, and a close in that moment would crash the process
      // with an unhandled rejection ("Connection is closed.").
      connection = (client as Redis).duplicate({ autoResubscribe: false, lazyConnect: false });
      connection.on('ready', () => void subscribe(connection));
    }
    subscriber = connection;
    connection.on('error', (error: unknown) => {
      if (!closed) report(redisError('The Redis pub/sub connection of the token store failed', error));
    });
    connection.on('message', (_channel: string, message: string) => onNotification(message));
  }

  /** Resolves after `ms`, or as soon as a notification arrives; rejects when `signal` aborts. */
  async function waitForNotification(ms: number, signal: AbortSignal): Promise<void> {
    const woken = new AbortController();
    const wake = () => woken.abort();
    const onAbort = () => woken.abort();
    wakeups.add(wake);
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await delay(ms, woken.signal).catch(() => undefined);
    } finally {
      wakeups.delete(wake);
      signal.removeEventListener('abort', onAbort);
    }
    signal.throwIfAborted();
  }

  /**
   * The held lock, taken by a SET sent at `askedAt`: renews its lease until released, and aborts its
   * signal when it finds the lock gone.
   */
  function holdLock(owner: string, askedAt: number): HeldRedisLock {
    const lock: HeldLock = { owner, lost: new AbortController(), leaseEnd: askedAt + leaseMs };
    held = lock;
    let released = false;
    let renewedAt = askedAt;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const lose = () => {
      if (!lock.lost.signal.aborted) lock.lost.abort(lostLock());
    };
    const schedule = () => {
      timer = setTimeout(() => void renew(), Math.floor(leaseMs / 3));
      // The refresh keeps the process alive while it runs; a forgotten lock must not.
      timer.unref?.();
    };
    async function renew(): Promise<void> {
      const startedAt = Date.now();
      let renewed: number;
      try {
        renewed = await redis.tokenrelayRenewLock(lockKey, owner, leaseMs);
      } catch (error) {
        if (released) return;
        // Without a renewal for a whole lease, the lock may be someone else's by now.
        if (Date.now() - renewedAt >= leaseMs) {
          lose();
          return;
        }
        report(redisError(`Could not renew the refresh lock "${lockKey}"; retrying`, error));
        schedule();
        return;
      }
      if (released) return;
      if (applyRenewal(renewed, startedAt)) schedule();
    }
    /**
     * Takes a renewal's answer: extends the lease when the lock was still ours and renewed within a
     * lease of the last renewal; otherwise (another owner, or none, or a whole lease without a
     * renewal: the lock is, or may be, someone else's) loses it. Returns whether it is held.
     */
    function applyRenewal(renewed: number, startedAt: number): boolean {
      if (renewed === 1 && startedAt - renewedAt < leaseMs) {
        renewedAt = startedAt;
        lock.leaseEnd = startedAt + leaseMs;
        return true;
      }
      lose();
      return false;
    }
    schedule();
    return {
      signal: lock.lost.signal,
      async assertHeld() {
        if (!lock.lost.signal.aborted) {
          // Renewed, not only looked at: a lock found ours with a millisecond of lease left would be taken
          // over while the token request that follows is on its way. Owner-checked, like every renewal.
          const startedAt = Date.now();
          let renewed: number;
          try {
            renewed = await redis.tokenrelayRenewLock(lockKey, owner, leaseMs);
          } catch (error) {
            throw redisError(`Could not check the refresh lock "${lockKey}"`, error);
          }
          applyRenewal(renewed, startedAt);
        }
        if (lock.lost.signal.aborted) throw lock.lost.signal.reason;
      },
      async release() {
        if (released) return;
        released = true;
        clearTimeout(timer);
        if (held === lock) held = undefined;
        try {
          // Compare-and-delete: a lock that expired and was taken by another process stays theirs.
          await redis.tokenrelayReleaseLock(lockKey, owner, channel, notification('release'));
        } catch (error) {
          throw redisError(`Could not release the refresh lock "${lockKey}" (it expires after its lease)`, error);
        }
      },
    };
  }

  async function lock({ signal }: { signal: AbortSignal }): Promise<HeldRedisLock> {
    signal.throwIfAborted();
    ensureSubscriber();
    const owner = randomBytes(16).toString('base64url');
    const deadline = Date.now() + waitMs;
    // Bounded by the deadline: every pass either takes the lock, gives up, or waits.
    for (;;) {
      const seen = notifications;
      const askedAt = Date.now();
      let acquired: number;
      let remainingLeaseMs: number;
      try {
        [acquired, remainingLeaseMs] = await redis.tokenrelayAcquireLock(lockKey, owner, leaseMs);
      } catch (error) {
        throw redisError(`Could not take the refresh lock "${lockKey}"`, error);
      }
      if (acquired === 1) {
        const taken = holdLock(owner, askedAt);
        // Aborted while we asked: hand the lock straight back (if that fails, its lease ends it).
        if (signal.aborted) await taken.release().catch(() => undefined);
        signal.throwIfAborted();
        return taken;
      }
      signal.throwIfAborted();
      const left = deadline - Date.now();
      if (left <= 0) {
        throw storeError(
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

  /**
   * Runs a write script. Under a held lock (a refresh's write) it is tried again while Redis cannot
   * be reached, for as long as the lease is certainly still ours: the refresh token it stores may be
   * the only live one, and nobody else can refresh before the lease ends. An answer from Redis
   * (an error reply) is final.
   */
  async function writeUnderLease(write: () => Promise<number>, fence: HeldLock | undefined): Promise<number> {
    // Bounded by the lease end; every pass waits WRITE_RETRY_MS.
    for (;;) {
      try {
        return await write();
      } catch (error) {
        const redisAnswered = error instanceof Error && error.name === 'ReplyError';
        if (!fence || redisAnswered || Date.now() + WRITE_RETRY_MS >= fence.leaseEnd) {
          throw redisError(`Could not write Redis key "${key}"`, error);
        }
        // Rejects with the lost-lock error when a renewal finds the lock gone meanwhile.
        await delay(WRITE_RETRY_MS, fence.lost.signal);
      }
    }
  }

  async function set(value: StoredTokens, { expectedRevision }: TokenStoreSetOptions = {}): Promise<boolean> {
    const encoded = codec.encode(value);
    // A refresh's write (conditional) must come from the lock holder; sign-in and sign-out always win.
    const fence = expectedRevision === undefined ? undefined : held;
    if (fence?.lost.signal.aborted) throw fence.lost.signal.reason;
    const result = await writeUnderLease(
      () =>
        redis.tokenrelaySetAndPublish(
          key,
          lockKey,
          encoded,
          channel,
          notification('set'),
          expectedRevision === undefined ? '' : String(expectedRevision),
          fence?.owner ?? '',
        ),
      fence,
    );
    if (result === -1) {
      const error = lostLock();
      if (fence && !fence.lost.signal.aborted) fence.lost.abort(error);
      throw error;
    }
    if (result === -2) {
      throw storeError(`The value at Redis key "${key}" has no readable revision; fix or delete it, then sign in again`);
    }
    return result === 1;
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
    set,
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
