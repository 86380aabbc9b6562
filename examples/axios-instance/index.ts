/**
 * An axios instance kept authenticated by tokenrelay. The embedded OAuth server stands in for
 * your authorization server and API; with your own, only the URLs and client credentials change.
 */
import { attachTokenRelay } from '@tokenrelay/axios';
import { createTokenManager, isTokenRelayError, refreshTokenGrant } from '@tokenrelay/core';
import { startOAuthServer } from '@tokenrelay/testing';
import axios from 'axios';

const server = await startOAuthServer({ rotateRefreshTokens: true });
try {
  // 1. One manager per session: it owns the tokens and the (single) refresh.
  const manager = createTokenManager({
    tokens: server.issue(), // in an app: the tokens from your sign-in
    refresh: refreshTokenGrant({
      tokenEndpoint: server.tokenEndpoint,
      clientId: 'tokenrelay-demo',
      clientSecret: 'tokenrelay-demo-secret',
    }),
  });
  manager.on('sessionExpired', () => console.log('session expired: send the user to sign in'));

  // 2. Attach it to an axios instance; the bearer goes to the baseURL's origin only.
  const api = axios.create({ baseURL: server.url });
  const detach = attachTokenRelay(api, manager);

  const me = await api.get('/api/me');
  console.log('GET /api/me ->', me.status);

  // 3. The server revokes the access token; 20 concurrent requests all get 401 ...
  server.revokeAccessTokens();
  const responses = await Promise.all(Array.from({ length: 20 }, (_, i) => api.get(`/api/orders/${i}`)));
  // ... and are replayed after exactly one refresh.
  console.log(`20 concurrent requests after revocation -> ${responses.filter((r) => r.status === 200).length} OK,`,
    `${server.stats().tokenRequests} token call(s)`);

  // 4. When the refresh token dies, requests fail with a typed error instead of looping.
  server.revokeRefreshTokens();
  await api.get('/api/me').catch((error: unknown) => {
    if (isTokenRelayError(error)) console.log('after the session was revoked ->', error.code);
    else throw error;
  });
  detach();
  if (server.stats().tokenRequests !== 2) throw new Error('expected exactly 2 token calls (one refresh, one rejected)');
} finally {
  await server.close();
}
