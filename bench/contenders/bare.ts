/*
 * The bare clients, without any token handling: the baselines of the hot-path measurement. They go
 * through the same Session/Outcome plumbing as the contenders, so only the library's cost differs.
 */
import axios from 'axios';
import { axiosOutcome, fetchOutcome } from './outcome.js';
import type { Contender } from './types.js';

export const bareAxios: Contender = {
  id: 'bare-axios',
  name: 'axios (bare)',
  client: 'axios',
  isTokenRelay: false,
  connect(setup) {
    const api = axios.create({ baseURL: setup.apiOrigin, adapter: setup.axiosAdapter });
    return { send: (path) => axiosOutcome(api.get(path)) };
  },
};

export const bareFetch: Contender = {
  id: 'bare-fetch',
  name: 'fetch (bare)',
  client: 'fetch',
  isTokenRelay: false,
  connect(setup) {
    return { send: (path) => fetchOutcome(globalThis.fetch(`${setup.apiOrigin}${path}`)) };
  },
};
