/*
 * ofetch 1 on top of tokenrelay's fetch wrapper (`createFetch({ fetch })`), with ofetch's default
 * retry: 1 retry of a GET, at once, on a failed fetch (a TokenRelayError included) and on
 * 408/409/425/429/5xx. Measured where retries meet a token endpoint that is down: they must not
 * multiply tokenrelay's token calls.
 */
import { createFetch } from 'ofetch';
import { failureOutcome } from './outcome.js';
import { relayedFetchFor } from './tokenrelay.js';
import type { Contender } from './types.js';

export const ofetchOnTokenRelay: Contender = {
  id: 'ofetch-on-tokenrelay-fetch',
  name: 'ofetch (default retry) on tokenrelay (fetch)',
  client: 'fetch',
  isTokenRelay: true,
  measuredIn: ['token-endpoint-outage'],
  layeredOn: 'tokenrelay-fetch',
  connect(setup) {
    const api = createFetch({ fetch: relayedFetchFor(setup) });
    return {
      async send(path) {
        try {
          const response = await api.raw(`${setup.apiOrigin}${path}`);
          return { ok: true, status: response.status };
        } catch (error) {
          return failureOutcome(error);
        }
      },
    };
  },
};
