import type { Cluster, Redis } from 'ioredis';

/*
 * The Lua scripts of the store. Each runs atomically in Redis, so "check the owner (or the
 * revision), then act" cannot interleave with another process, and a write and its notification
 * leave together. ioredis sends a script's source (EVAL) the first time on each connection and
 * its SHA (EVALSHA) after that, and recovers from NOSCRIPT by itself. Every script names its keys
 * in KEYS, and a script's keys share one hash slot (the tokens key, `<key>:lock` and
 * `<key>:signed-out` carry the same hash tag), so each runs on a Redis Cluster too. PUBLISH takes no
 * key: a cluster relays it to every node, so subscribers connected to any node hear it.
 *
 * The session's keys: KEYS[1] the tokens; KEYS[2] the refresh lock; KEYS[3] the sign-out mark,
 * `{"revision":N,"signedOut":true}`, which a sign-out leaves in place of the tokens. So "no tokens"
 * has two kinds: signed out (the mark) and nothing at all, which for a store instance that has seen
 * the session means its data was lost (eviction, a restart without persistence, FLUSHALL, a
 * failover): not a sign-out.
 */

/**
 * What every script that may find the data lost starts with. ARGV[1] is the caller's copy of what
 * it last saw in the keys (the raw stored string, '' for none), ARGV[2] its kind ('tokens' or
 * 'signed-out'), ARGV[3] the lease in ms, ARGV[4] the channel, ARGV[5] the notification of a put-back.
 *
 * `putBack()` puts the copy back when the keys hold nothing, and then fences the lock for one lease
 * (`restored:<revision>`, unless someone holds it): a holder whose lock vanished with the data takes
 * it back meanwhile and stores its refresh, and nobody else refreshes from the copy before that. While
 * the fence lasts, a newer copy (by revision) replaces the one put back, so the newest copy any caller
 * holds wins. Returns 1 when it wrote.
 */
const prelude = `
local FENCE = 'restored:'
local function revisionOf(raw)
  local ok, decoded = pcall(cjson.decode, raw)
  if ok and type(decoded) == 'table' and type(decoded['revision']) == 'number' then
    return decoded['revision']
  end
  return nil
end
local function current()
  local raw = redis.call('get', KEYS[1])
  if raw then
    return raw, 'tokens'
  end
  raw = redis.call('get', KEYS[3])
  if raw then
    return raw, 'signed-out'
  end
  return false, false
end
local function isFence(lock)
  return lock and string.sub(lock, 1, #FENCE) == FENCE
end
local function putBack()
  local copy = ARGV[1]
  if copy == '' then
    return 0
  end
  local raw = current()
  local lock = redis.call('get', KEYS[2])
  -- The common case, decided without decoding anything: the keys hold their data, and no fence is up.
  if raw and not isFence(lock) then
    return 0
  end
  local copyRevision = revisionOf(copy)
  if not copyRevision then
    return 0
  end
  if raw then
    local restored = tonumber(string.sub(lock, #FENCE + 1))
    local stored = revisionOf(raw)
    if not (restored and stored == restored and copyRevision > stored) then
      return 0
    end
  end
  if ARGV[2] == 'tokens' then
    redis.call('set', KEYS[1], copy)
    redis.call('del', KEYS[3])
  else
    redis.call('set', KEYS[3], copy)
    redis.call('del', KEYS[1])
  end
  local fence = FENCE .. string.format('%.0f', copyRevision)
  if not lock then
    redis.call('set', KEYS[2], fence, 'PX', ARGV[3])
  elseif isFence(lock) then
    local left = redis.call('pttl', KEYS[2])
    redis.call('set', KEYS[2], fence, 'PX', left > 0 and left or ARGV[3])
  end
  redis.call('publish', ARGV[4], ARGV[5])
  return 1
end
`;

/**
 * Reads the session's keys. Returns {raw, kind, put back}, or {false, false, 0} when they hold nothing.
 * ARGV[1..5] as in the prelude.
 */
const read = `${prelude}
local putBackNow = putBack()
local raw, kind = current()
return {raw, kind, putBackNow}`;

/**
 * SET NX PX, idempotent for its owner: ioredis may resend a command after a reconnect, and a lock our
 * first SET already took is ours. A fence (see the prelude) is a lock held. Returns {1, 0, put back}
 * when held, else {0, PTTL of the holder's lock, put back}. ARGV[1..5] as in the prelude; ARGV[6] owner.
 */
const acquireLock = `${prelude}
local putBackNow = putBack()
if redis.call('set', KEYS[2], ARGV[6], 'NX', 'PX', ARGV[3]) or redis.call('get', KEYS[2]) == ARGV[6] then
  return {1, 0, putBackNow}
end
return {0, redis.call('pttl', KEYS[2]), putBackNow}`;

/**
 * Whether the lock is ARGV[6]'s, taking it back if it vanished while its lease still ran: ARGV[7] is
 * what the owner read under the lock ('' = it may not take it back: it read nothing, or its lease may
 * have run out). Taken back only when the lock is gone or fenced and the keys still hold exactly that,
 * so nobody refreshed meanwhile.
 */
const holdsLock = `
local function holdsLock()
  local lock = redis.call('get', KEYS[2])
  if lock == ARGV[6] then
    return true
  end
  if ARGV[7] ~= '' and (not lock or isFence(lock)) and current() == ARGV[7] then
    redis.call('set', KEYS[2], ARGV[6], 'PX', ARGV[3])
    return true
  end
  return false
end
`;

/**
 * Compare-and-pexpire: only the owner extends its lease (or takes back its vanished lock, see
 * `holdsLock`). Returns {1 renewed or 0, put back}. ARGV[1..5] as in the prelude; ARGV[6] owner;
 * ARGV[7] what it read under the lock.
 */
const renewLock = `${prelude}${holdsLock}
local putBackNow = putBack()
if holdsLock() then
  redis.call('pexpire', KEYS[2], ARGV[3])
  return {1, putBackNow}
end
return {0, putBackNow}`;

/**
 * Writes the tokens and announces it. ARGV[1..5] as in the prelude; ARGV[6] owner that must hold the
 * lock ('' = none); ARGV[7] what it read under the lock; ARGV[8] value; ARGV[9] notification; ARGV[10]
 * expected revision ('' = unconditional: a sign-in, which puts nothing back). A conditional write is a
 * compare-and-set on the revision the keys hold; expected revision 0 means "only if signed out or
 * empty". Returns {1 written, 0 revision mismatch, -1 lock lost, -2 no readable revision; put back}.
 */
const setAndPublish = `${prelude}${holdsLock}
local putBackNow = 0
if ARGV[10] ~= '' then
  putBackNow = putBack()
end
if ARGV[6] ~= '' and not holdsLock() then
  return {-1, putBackNow}
end
if ARGV[10] ~= '' then
  local raw, kind = current()
  local revision = 0
  if raw then
    revision = revisionOf(raw)
    if revision == nil then
      return {-2, putBackNow}
    end
  end
  local expected = tonumber(ARGV[10])
  if (kind == 'tokens' and revision ~= expected) or (kind ~= 'tokens' and expected ~= 0) then
    return {0, putBackNow}
  end
end
redis.call('set', KEYS[1], ARGV[8])
redis.call('del', KEYS[3])
redis.call('publish', ARGV[4], ARGV[9])
return {1, putBackNow}`;

/**
 * Signs out: the tokens give way to the sign-out mark, one revision above what the keys held (or, if
 * they hold nothing, above ARGV[1], the caller's copy), and the sign-out is announced. Returns the
 * mark. ARGV[1] copy; ARGV[2] channel; ARGV[3] notification (it puts nothing back: the prelude's
 * `putBack` is not called).
 */
const signOutAndPublish = `${prelude}
local raw = current() or ARGV[1]
local revision = (raw ~= '' and revisionOf(raw)) or 0
local mark = string.format('{"revision":%.0f,"signedOut":true}', revision + 1)
redis.call('del', KEYS[1])
redis.call('set', KEYS[3], mark)
redis.call('publish', ARGV[2], ARGV[3])
return mark`;

/** Compare-and-delete: only the owner's token releases the lock. KEYS[1] lock key; ARGV[1] owner; ARGV[2] channel; ARGV[3] notification. */
const releaseLock = `
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1])
  redis.call('publish', ARGV[2], ARGV[3])
  return 1
end
return 0`;

/** The session's keys, in the order every script names them. */
export type SessionKeys = readonly [tokens: string, lock: string, signedOut: string];

/** What a caller last saw in the keys, and where a put-back is announced: the prelude's ARGV[1..5]. */
export type PutBackArguments = readonly [copy: string, kind: string, leaseMs: number, channel: string, notification: string];

/** The commands {@link defineStoreCommands} adds to a client. */
export interface StoreCommands {
  tokenrelayRead(...args: [...SessionKeys, ...PutBackArguments]): Promise<[string | null, string | null, number]>;
  tokenrelayAcquireLock(...args: [...SessionKeys, ...PutBackArguments, owner: string]): Promise<[number, number, number]>;
  tokenrelayRenewLock(...args: [...SessionKeys, ...PutBackArguments, owner: string, read: string]): Promise<[number, number]>;
  tokenrelaySetAndPublish(
    ...args: [...SessionKeys, ...PutBackArguments, owner: string, read: string, value: string, message: string, expectedRevision: string]
  ): Promise<[number, number]>;
  tokenrelaySignOutAndPublish(...args: [...SessionKeys, copy: string, channel: string, message: string]): Promise<string>;
  tokenrelayReleaseLock(lockKey: string, owner: string, channel: string, message: string): Promise<number>;
}

/**
 * Defines the store's scripts on `client` (a `Redis` or a `Cluster`) with ioredis' `defineCommand`.
 * Defining them again (a second store on the same client) replaces them with the same scripts,
 * which is harmless.
 */
export function defineStoreCommands<Client extends Redis | Cluster>(client: Client): Client & StoreCommands {
  client.defineCommand('tokenrelayRead', { numberOfKeys: 3, lua: read });
  client.defineCommand('tokenrelayAcquireLock', { numberOfKeys: 3, lua: acquireLock });
  client.defineCommand('tokenrelayRenewLock', { numberOfKeys: 3, lua: renewLock });
  client.defineCommand('tokenrelaySetAndPublish', { numberOfKeys: 3, lua: setAndPublish });
  client.defineCommand('tokenrelaySignOutAndPublish', { numberOfKeys: 3, lua: signOutAndPublish });
  client.defineCommand('tokenrelayReleaseLock', { numberOfKeys: 1, lua: releaseLock });
  return client as Client & StoreCommands;
}
