/*
 * One process of the multi-process tests (started by worker-pool.ts): a real session built from
 * createTokenManager + withTokenRelay, sharing a file or Redis store with its siblings, driven over IPC.
 */
import {
  createTokenManager,
  isTokenRelayError,
  memoryStore,
  refreshTokenGrant,
  type RefreshHandler,
  type TokenStore,
} from '@tokenrelay/core';
import { fileStore } from '@tokenrelay/core/node';
import { createDpop, sessionDpopKey } from '@tokenrelay/dpop';
import { withTokenRelay } from '@tokenrelay/fetch';
import { redisStore } from '@tokenrelay/redis';
import { salesforceJwtBearerGrant } from '@tokenrelay/salesforce';
import { loopbackOnlyFetch } from '@tokenrelay/testing';
import { Redis } from 'ioredis';
import type { ParentMessage, WorkerConfig, WorkerMessage } from './worker-pool.js';

const send = (message: WorkerMessage) => process.send?.(message);
// Never outlive the test that started us.
process.on('disconnect', () => process.exit(1));

const gates: (() => void)[] = [];
let api: typeof fetch | undefined;
let apiUrl = '';

function createGrant(config: WorkerConfig, tokenFetch: typeof fetch): RefreshHandler {
  const { clientId, salesforceJwt } = config;
  if (salesforceJwt) return salesforceJwtBearerGrant({ loginUrl: config.apiUrl, clientId, ...salesforceJwt, fetch: tokenFetch });
  // A public client (a DPoP session's, whose refresh token is bound to the session's key) has no secret.
  const clientSecret = config.clientSecret === '' ? undefined : config.clientSecret;
  return refreshTokenGrant({ tokenEndpoint: config.tokenEndpoint, clientId, clientSecret, fetch: tokenFetch });
}

function createStore({ store }: WorkerConfig): TokenStore {
  switch (store.kind) {
    case 'file':
      return fileStore(store.path, { lockLeaseMs: store.lockLeaseMs, lockWaitMs: store.lockWaitMs });
    case 'redis':
      return redisStore({ client: new Redis({ host: '127.0.0.1', port: store.port, maxRetriesPerRequest: 1 }), key: store.key });
    case 'memory':
      return memoryStore(store.tokens && { revision: 1, tokens: store.tokens });
  }
}

function createSession(config: WorkerConfig): typeof fetch {
  // DPoP: every request and token call goes through dpop.fetch, signed with the key stored with the session.
  const dpop = config.dpop ? createDpop({ key: sessionDpopKey({ getTokens: () => manager.getTokens() }), fetch: loopbackOnlyFetch() }) : undefined;
  const sessionFetch = dpop?.fetch ?? loopbackOnlyFetch();
  const grant = createGrant(config, sessionFetch);
  const refresh: RefreshHandler = Object.assign(
    async (context: Parameters<RefreshHandler>[0]) => {
      // The manager calls this under the store's lock: tell the parent who holds it.
      send({ type: 'refreshing', at: Date.now() });
      if (config.gateRefreshes) await new Promise<void>((resolve) => gates.push(resolve));
      return grant(context);
    },
    { tokenEndpoint: grant.tokenEndpoint, needsRefreshToken: grant.needsRefreshToken },
  );
  const manager = createTokenManager({ store: createStore(config), refresh });
  return withTokenRelay(sessionFetch, manager, { origins: [config.apiUrl] });
}

async function fire(round: number, requests: number): Promise<string[]> {
  const session = api;
  if (!session) throw new Error('burst before init');
  return Promise.all(
    Array.from({ length: requests }, async (_, index) => {
      try {
        const response = await session(`${apiUrl}/api/round-${round}/item-${index}`);
        await response.arrayBuffer();
        return String(response.status);
      } catch (error) {
        return isTokenRelayError(error) ? error.code : error instanceof Error ? error.name : 'unknown';
      }
    }),
  );
}

process.on('message', (message: ParentMessage) => {
  switch (message.type) {
    case 'init':
      apiUrl = message.config.apiUrl;
      api = createSession(message.config);
      send({ type: 'ready' });
      break;
    case 'burst':
      void fire(message.round, message.requests).then((outcomes) => send({ type: 'burst-done', round: message.round, outcomes }));
      break;
    case 'proceed':
      gates.shift()?.();
      break;
    case 'exit':
      process.exit(0);
  }
});
