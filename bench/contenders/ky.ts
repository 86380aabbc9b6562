/*
 * ky 1 on top of tokenrelay's fetch wrapper (`ky.create({ fetch })`), with ky's default retry:
 * 2 retries of a GET after 0.3 s and 0.6 s, on network errors (anything thrown that is not an
 * HTTP status, a TokenRelayError included) and on 408/413/429/5xx. Measured where retries meet
 * a token endpoint that is down: they must not multiply tokenrelay's token calls.
 */
import ky from 'ky';
import { fetchOutcome } from './outcome.js';
import { relayedFetchFor } from './tokenrelay.js';
import type { Contender } from './types.js';

export const kyOnTokenRelay: Contender = {
  id: 'ky-on-tokenrelay-fetch',
  name: 'ky (default retry) on tokenrelay (fetch)',
  client: 'fetch',
  isTokenRelay: true,
  measuredIn: ['token-endpoint-outage'],
  layeredOn: 'tokenrelay-fetch',
  connect(setup) {
    const api = ky.create({ fetch: relayedFetchFor(setup) });
    return { send: (path) => fetchOutcome(api.get(`${setup.apiOrigin}${path}`)) };
  },
};
