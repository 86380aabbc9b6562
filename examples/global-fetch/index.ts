/**
 * The global fetch kept authenticated by tokenrelay: installTokenRelay wraps globalThis.fetch,
 * so every fetch in the app to the listed origins carries the bearer and survives expiry.
 */
import { createTokenManager, refreshTokenGrant } from '@tokenrelay/core';
import { installTokenRelay } from '@tokenrelay/fetch';
import { startOAuthServer } from '@tokenrelay/testing';

// Access tokens that live one second: the manager refreshes them before they expire.
const server = await startOAuthServer({ accessTokenTtlSeconds: 1 });
const manager = createTokenManager({
  tokens: server.issue(),
  refresh: refreshTokenGrant({
    tokenEndpoint: server.tokenEndpoint,
    clientId: 'tokenrelay-demo',
    clientSecret: 'tokenrelay-demo-secret',
  }),
});
// Only this origin gets the bearer; any other fetch passes through untouched.
const restore = installTokenRelay(manager, { origins: [server.url] });
try {
  let ok = 0;
  const startedAt = Date.now();
  while (Date.now() - startedAt < 2_500) {
    const response = await fetch(`${server.url}/api/reports`);
    if (response.ok) ok++;
    await response.arrayBuffer();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const { api401, tokenRequests } = server.stats();
  console.log(`${ok} requests over 2.5 s of 1 s tokens -> ${tokenRequests} proactive refreshes, ${api401} 401s`);
  if (api401 !== 0 || tokenRequests < 2) throw new Error('expected refreshes before expiry and no 401');
} finally {
  restore();
  await server.close();
}
