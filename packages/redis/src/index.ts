/*
 * @tokenrelay/redis: one refresh across a fleet. The tokens of a session live at one Redis key;
 * a refresh takes a lock with a lease (renewed while it runs), and pub/sub tells the other
 * processes when new tokens land. Core's manager does the rest (re-read under the lock, adopt
 * tokens another process stored instead of calling the token endpoint again).
 */
export { redisStore, type RedisStoreOptions, type RedisTokenStore } from './store.js';
export type { RedisStoreEncryption } from './codec.js';
