import type { Cluster, Redis } from 'ioredis';

/*
 * The Lua scripts of the store. Each runs atomically in Redis, so "check the owner (or the
 * revision), then act" cannot interleave with another process, and a write and its notification
 * leave together. ioredis sends a script's source (EVAL) the first time on each connection and
 * its SHA (EVALSHA) after that, and recovers from NOSCRIPT by itself. Every script names its keys
 * in KEYS, and a script's keys share one hash slot (the tokens key and `<key>:lock` carry the same
 * hash tag), so each runs on a Redis Cluster too. PUBLISH takes no key: a cluster relays it to
 * every node, so subscribers connected to any node hear it.
 */

/**
 * SET NX PX, idempotent for its owner: ioredis may resend a command after a reconnect, and a
 * lock our first SET already took is ours. Returns {1, 0} when held, else {0, PTTL of the holder's lock}.
 * KEYS[1] lock key; ARGV[1] owner; ARGV[2] lease ms.
 */
const acquireLock = `
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('get', KEYS[1]) == ARGV[1] then
  return {1, 0}
end
return {0, redis.call('pttl', KEYS[1])}`;

/**
 * Compare-and-set. KEYS[1] tokens key; KEYS[2] lock key; ARGV[1] value; ARGV[2] channel;
 * ARGV[3] notification; ARGV[4] expected revision ('' = unconditional); ARGV[5] lock owner that
 * must still hold the lock ('' = none). Returns 1 written, 0 revision mismatch, -1 lock lost,
 * -2 the stored value has no readable revision.
 */
const setAndPublish = `
if ARGV[5] ~= '' and redis.call('get', KEYS[2]) ~= ARGV[5] then
  return -1
end
if ARGV[4] ~= '' then
  local current = redis.call('get', KEYS[1])
  local revision = 0
  if current then
    local ok, decoded = pcall(cjson.decode, current)
    if not ok or type(decoded) ~= 'table' or type(decoded['revision']) ~= 'number' then
      return -2
    end
    revision = decoded['revision']
  end
  if revision ~= tonumber(ARGV[4]) then
    return 0
  end
end
redis.call('set', KEYS[1], ARGV[1])
redis.call('publish', ARGV[2], ARGV[3])
return 1`;

/** KEYS[1] tokens key; ARGV[1] channel; ARGV[2] notification. */
const deleteAndPublish = `
redis.call('del', KEYS[1])
redis.call('publish', ARGV[1], ARGV[2])
return 1`;

/** Compare-and-delete: only the owner's token releases the lock. KEYS[1] lock key; ARGV[1] owner; ARGV[2] channel; ARGV[3] notification. */
const releaseLock = `
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1])
  redis.call('publish', ARGV[2], ARGV[3])
  return 1
end
return 0`;

/** Compare-and-pexpire: only the owner extends its lease. KEYS[1] lock key; ARGV[1] owner; ARGV[2] lease ms. */
const renewLock = `
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0`;

/** The commands {@link defineStoreCommands} adds to a client. */
export interface StoreCommands {
  tokenrelayAcquireLock(lockKey: string, owner: string, leaseMs: number): Promise<[number, number]>;
  tokenrelaySetAndPublish(
    key: string,
    lockKey: string,
    value: string,
    channel: string,
    message: string,
    expectedRevision: string,
    owner: string,
  ): Promise<number>;
  tokenrelayDeleteAndPublish(key: string, channel: string, message: string): Promise<number>;
  tokenrelayReleaseLock(lockKey: string, owner: string, channel: string, message: string): Promise<number>;
  tokenrelayRenewLock(lockKey: string, owner: string, leaseMs: number): Promise<number>;
}

/**
 * Defines the store's scripts on `client` (a `Redis` or a `Cluster`) with ioredis' `defineCommand`.
 * Defining them again (a second store on the same client) replaces them with the same scripts,
 * which is harmless.
 */
export function defineStoreCommands<Client extends Redis | Cluster>(client: Client): Client & StoreCommands {
  client.defineCommand('tokenrelayAcquireLock', { numberOfKeys: 1, lua: acquireLock });
  client.defineCommand('tokenrelaySetAndPublish', { numberOfKeys: 2, lua: setAndPublish });
  client.defineCommand('tokenrelayDeleteAndPublish', { numberOfKeys: 1, lua: deleteAndPublish });
  client.defineCommand('tokenrelayReleaseLock', { numberOfKeys: 1, lua: releaseLock });
  client.defineCommand('tokenrelayRenewLock', { numberOfKeys: 1, lua: renewLock });
  return client as Client & StoreCommands;
}
