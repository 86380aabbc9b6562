/*
 * tokenrelay, configured as its README's quick start: createTokenManager + refreshTokenGrant with
 * every default (refresh 30 s — or a quarter of the lifetime — before expiry, 2 retries with
 * jittered backoff for transient failures, 10 s refresh timeout), then the axios or fetch adapter.
 */
import { attachTokenRelay } from '@tokenrelay/axios';
import { createTokenManager, refreshTokenGrant, type TokenManager } from '@tokenrelay/core';
import { withTokenRelay } from '@tokenrelay/fetch';
import axios from 'axios';
import { axiosOutcome, fetchOutcome } from './outcome.js';
import type { Contender, ContenderSetup } from './types.js';

function managerFor(setup: ContenderSetup): TokenManager {
  return createTokenManager({
    tokens: setup.tokens,
    refresh: refreshTokenGrant({
      tokenEndpoint: setup.tokenEndpoint,
      clientId: setup.clientId,
      clientSecret: setup.clientSecret,
    }),
  });
}

export const tokenRelayAxios: Contender = {
  id: 'tokenrelay-axios',
  name: 'tokenrelay (axios)',
  client: 'axios',
  isTokenRelay: true,
  connect(setup) {
    const api = axios.create({ baseURL: setup.apiOrigin, adapter: setup.axiosAdapter });
    attachTokenRelay(api, managerFor(setup));
    return { send: (path) => axiosOutcome(api.get(path)) };
  },
};

/** The global fetch behind tokenrelay's fetch wrapper, as the quick start sets it up. */
export const relayedFetchFor = (setup: ContenderSetup): typeof fetch =>
  withTokenRelay(globalThis.fetch, managerFor(setup), { origins: [setup.apiOrigin] });

export const tokenRelayFetch: Contender = {
  id: 'tokenrelay-fetch',
  name: 'tokenrelay (fetch)',
  client: 'fetch',
  isTokenRelay: true,
  connect(setup) {
    const relayedFetch = relayedFetchFor(setup);
    return { send: (path) => fetchOutcome(relayedFetch(`${setup.apiOrigin}${path}`)) };
  },
};
