/**
 * A server-to-server Salesforce integration (the OAuth 2.0 JWT Bearer flow): no person signs in and
 * there is no refresh token. One tokenrelay manager signs an assertion with the app's private key
 * when it needs a session, and a jsforce Connection and an axios REST client share it. The embedded
 * server plays the org: it verifies each assertion against the certificate's public key, refuses
 * replayed ones and keeps Salesforce's limit of 5 token pairs per user and app. With a real org,
 * only the login URL, the consumer key, the username and the key file change. The app checks its
 * own outcome and exits 1 on failure.
 */
import { generateKeyPairSync } from 'node:crypto';
import { attachTokenRelay } from '@tokenrelay/axios';
import { createTokenManager } from '@tokenrelay/core';
import { createJsforceConnection, isSalesforceSessionExpired, readSalesforceSession, salesforceJwtBearerGrant } from '@tokenrelay/salesforce';
import { salesforceFixtures, startOAuthServer } from '@tokenrelay/testing';
import axios from 'axios';
import jsforce from 'jsforce';

const VERSION = '62.0';

const failures: string[] = [];
function check(condition: boolean, what: string): void {
  console.log(`${condition ? 'ok  ' : 'FAIL'} ${what}`);
  if (!condition) failures.push(what);
}

// In a real deployment: the PEM PKCS#8 key from a file or a secret manager, and its certificate
// uploaded to the External Client App ("Use digital signatures").
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const privateKeyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const app = { clientId: 'etl-integration', publicKey: publicKey.export({ type: 'spki', format: 'pem' }).toString() };

const server = await startOAuthServer({
  mode: 'salesforce',
  rotateRefreshTokens: true,
  clients: [{ ...app, clientSecret: 'etl-integration-consumer-secret', authMethod: 'client_secret_post' }],
});
try {
  // 1. One manager for the org and the integration user. It starts with no tokens: the first request acquires them.
  const manager = createTokenManager({
    refresh: salesforceJwtBearerGrant({
      loginUrl: server.url, // https://login.salesforce.com (or https://test.salesforce.com) with a real org
      clientId: app.clientId,
      username: salesforceFixtures.username,
      privateKey: privateKeyPem,
    }),
  });
  check((await manager.getTokens()) === undefined, 'no tokens before the first request');

  // 2. jsforce and axios on the same manager.
  const conn = await createJsforceConnection(manager, jsforce.Connection, { version: VERSION });
  const instanceUrl = readSalesforceSession(await manager.getTokens()).instanceUrl;
  const rest = axios.create({ baseURL: instanceUrl, proxy: false });
  attachTokenRelay(rest, manager, { shouldRefresh: isSalesforceSessionExpired });
  const getAccount = () => rest.get<{ Name: string }>(`/services/data/v${VERSION}/sobjects/Account/${salesforceFixtures.account.Id}`);

  const first = await conn.query<{ Name: string }>('SELECT Id, Name FROM Account LIMIT 1');
  check(first.records[0]?.Name === 'Acme' && (await getAccount()).data.Name === 'Acme', 'jsforce query and axios GET on the first session');
  check(server.stats().tokenRequests === 1, 'one JWT bearer token call for the first session');

  // 3. Three session expiries, each hitting 10 jsforce queries and 10 axios GETs at once.
  for (let expiry = 1; expiry <= 3; expiry++) {
    server.revokeAccessTokens();
    const [queries, gets] = await Promise.all([
      Promise.all(Array.from({ length: 10 }, () => conn.query('SELECT Id, Name FROM Account LIMIT 1'))),
      Promise.all(Array.from({ length: 10 }, getAccount)),
    ]);
    console.log(
      `expiry ${expiry}: ${queries.filter((result) => result.totalSize === 1).length}/10 queries,`,
      `${gets.filter((response) => response.status === 200).length}/10 GETs, ${server.stats().tokenRequests} token call(s) so far`,
    );
    check(server.stats().tokenRequests === expiry + 1, `expiry ${expiry}: one new assertion for 20 requests on two clients`);
  }

  const stats = server.stats();
  console.log(`token calls: ${stats.tokenRequests}, refused: ${JSON.stringify(stats.tokenErrors)}, token pairs evicted: ${stats.tokenPairsEvicted}`);
  check(Object.keys(stats.tokenErrors).length === 0, 'every assertion was accepted (fresh jti, exp within 3 minutes, aud the login host)');
  check(stats.tokenPairsEvicted === 0, 'the 5-token-pairs-per-user-and-app limit was never hit');
} finally {
  await server.close();
}

if (failures.length > 0) {
  console.error(`${failures.length} check(s) failed`);
  process.exitCode = 1;
}
