/*
 * @badgateway/oauth2-client 3, as its README's "Fetch Wrapper" section shows: an OAuth2Client with
 * the token endpoint, and an OAuth2Fetch whose getStoredToken supplies the signed-in session and
 * whose getNewToken returns null (a dead refresh token means the user must sign in again; there is
 * no user here to do it). Defaults otherwise (scheduleRefresh on). Requests go through
 * `OAuth2Fetch.fetch`, which calls the global fetch.
 */
import { OAuth2Client, OAuth2Fetch } from '@badgateway/oauth2-client';
import { fetchOutcome } from './outcome.js';
import type { Contender } from './types.js';

export const badgatewayOAuth2Client: Contender = {
  id: 'badgateway-oauth2-client',
  name: '@badgateway/oauth2-client',
  client: 'fetch',
  isTokenRelay: false,
  connect(setup) {
    const client = new OAuth2Client({
      server: setup.apiOrigin,
      tokenEndpoint: setup.tokenEndpoint,
      clientId: setup.clientId,
      clientSecret: setup.clientSecret,
      authenticationMethod: 'client_secret_basic',
    });
    const { accessToken, refreshToken, expiresAt } = setup.tokens;
    const wrapper = new OAuth2Fetch({
      client,
      getNewToken: () => null,
      getStoredToken: () => ({ accessToken, refreshToken: refreshToken ?? null, expiresAt: expiresAt ?? null }),
    });
    return { send: (path) => fetchOutcome(wrapper.fetch(`${setup.apiOrigin}${path}`)) };
  },
};
