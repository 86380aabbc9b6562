/**
 * A Salesforce app with a jsforce Connection and direct REST calls through axios, both on one
 * tokenrelay manager, keeping its tokens in tokens/_salesforce.json. The embedded server plays
 * the org (Salesforce mode, refresh token rotation on); with a real org, only the login URL and
 * the connected app's credentials change. The app checks its own outcome and exits 1 on failure.
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { attachTokenRelay } from '@tokenrelay/axios';
import { createTokenManager, type TokenManager } from '@tokenrelay/core';
// The tokens/_salesforce.json habit, made safe: 0600, atomic replace, and a lock shared by every process using the file.
import { fileStore } from '@tokenrelay/core/node';
import { isSalesforceSessionExpired, jsforceRefreshFn, readSalesforceSession, salesforceRefreshGrant } from '@tokenrelay/salesforce';
import { salesforceFixtures, startOAuthServer } from '@tokenrelay/testing';
import axios from 'axios';
import jsforce from 'jsforce';

const VERSION = '62.0';
const connectedApp = { clientId: 'jsforce-app', clientSecret: 'jsforce-app-consumer-secret' };

const failures: string[] = [];
function check(condition: boolean, what: string): void {
  console.log(`${condition ? 'ok  ' : 'FAIL'} ${what}`);
  if (!condition) failures.push(what);
}

/** A jsforce Connection on the manager's current session; every refresh goes through the manager. */
async function connect(manager: TokenManager) {
  const tokens = await manager.getTokens();
  return new jsforce.Connection({
    instanceUrl: readSalesforceSession(tokens).instanceUrl,
    accessToken: tokens?.accessToken,
    refreshFn: jsforceRefreshFn(manager),
    version: VERSION,
  });
}

const server = await startOAuthServer({
  mode: 'salesforce',
  rotateRefreshTokens: true,
  clients: [{ ...connectedApp, authMethod: 'client_secret_post' }],
});
const directory = await mkdtemp(join(tmpdir(), 'tokenrelay-jsforce-app-'));
const tokenFile = join(directory, 'tokens', '_salesforce.json');
try {
  // 1. One manager for the org session: it owns the tokens, the file and the (single) refresh.
  const refresh = salesforceRefreshGrant({ loginUrl: server.url, ...connectedApp });
  const signIn = server.issue(); // in an app: the tokens of your OAuth web server or JWT flow
  const manager = createTokenManager({ tokens: signIn, store: fileStore(tokenFile), refresh });
  manager.on('sessionExpired', () => console.log('session expired: sign in again'));

  // 2. jsforce and axios on the same manager.
  const conn = await connect(manager);
  const rest = axios.create({ baseURL: readSalesforceSession(signIn).instanceUrl, proxy: false });
  attachTokenRelay(rest, manager, { shouldRefresh: isSalesforceSessionExpired });
  const getAccount = () => rest.get<{ Name: string }>(`/services/data/v${VERSION}/sobjects/Account/${salesforceFixtures.account.Id}`);

  const first = await conn.query<{ Name: string }>('SELECT Id, Name FROM Account LIMIT 1');
  check(first.records[0]?.Name === 'Acme' && (await getAccount()).data.Name === 'Acme', 'jsforce query and axios GET before any expiry');

  // 3. Three session expiries, each hitting 10 jsforce queries and 10 axios GETs at once.
  let previousRefreshToken = signIn.refreshToken;
  for (let expiry = 1; expiry <= 3; expiry++) {
    server.revokeAccessTokens();
    const [queries, gets] = await Promise.all([
      Promise.all(Array.from({ length: 10 }, () => conn.query('SELECT Id, Name FROM Account LIMIT 1'))),
      Promise.all(Array.from({ length: 10 }, getAccount)),
    ]);
    const stored = (await fileStore(tokenFile).get())?.tokens;
    console.log(
      `expiry ${expiry}: ${queries.filter((result) => result.totalSize === 1).length}/10 queries,`,
      `${gets.filter((response) => response.status === 200).length}/10 GETs, ${server.stats().tokenRequests} token call(s) so far`,
    );
    check(server.stats().tokenRequests === expiry, `expiry ${expiry}: one token call for 20 requests on two clients`);
    check(
      stored?.refreshToken !== undefined && stored.refreshToken !== previousRefreshToken && stored.refreshToken === (await manager.getTokens())?.refreshToken,
      `expiry ${expiry}: the rotated refresh token is in ${tokenFile.slice(directory.length + 1)}`,
    );
    previousRefreshToken = stored?.refreshToken;
  }
  check(((await stat(tokenFile)).mode & 0o777) === 0o600, 'the token file is readable by its owner only (0600)');

  // 4. A restart: a new process reads the file and carries on with the rotated refresh token.
  server.revokeAccessTokens();
  const restarted = createTokenManager({ store: fileStore(tokenFile), refresh });
  const afterRestart = await (await connect(restarted)).query('SELECT Id FROM Account LIMIT 1');
  check(afterRestart.totalSize === 1, 'after a restart the stored session refreshes and the query succeeds');

  const stats = server.stats();
  console.log(`token calls: ${stats.tokenRequests}, refresh token reuses: ${stats.refreshTokenReuses}, grants revoked: ${stats.familiesRevoked}`);
  check(stats.tokenRequests === 4 && stats.refreshTokenReuses === 0 && stats.familiesRevoked === 0, 'no refresh token was ever presented twice');
} finally {
  await server.close();
  await rm(directory, { recursive: true, force: true });
}

if (failures.length > 0) {
  console.error(`${failures.length} check(s) failed`);
  process.exitCode = 1;
}
