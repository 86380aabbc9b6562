/**
 * The tokenrelay demo: a real OAuth 2.0 server on 127.0.0.1 with rotating refresh tokens (reuse
 * revokes the whole session), and two clients — an axios instance and a wrapped fetch — hammering
 * its API: bursts of concurrent requests after the server revokes the access token, and steady
 * traffic across 1-second access tokens. It prints what happened and checks the
 * promise: one token call per expiry, no failed request, no second use of a refresh token.
 */
import { attachTokenRelay } from '@tokenrelay/axios';
import { createTokenManager, refreshTokenGrant, type TokenManager } from '@tokenrelay/core';
import { withTokenRelay } from '@tokenrelay/fetch';
import { startOAuthServer, type OAuthServer } from '@tokenrelay/testing';
import axios from 'axios';

const BURST_SIZE = 200;
const BURST_ROUNDS = 3;
const STEADY_MS = 3_500;
const STEADY_CONCURRENCY = 10;

type Send = (path: string) => Promise<boolean>;
interface Client {
  name: string;
  connect(server: OAuthServer, manager: TokenManager): Send;
}

const clients: Client[] = [
  {
    name: 'axios',
    connect(server, manager) {
      const api = axios.create({ baseURL: server.url });
      attachTokenRelay(api, manager);
      return async (path) => (await api.get(path)).status === 200;
    },
  },
  {
    name: 'fetch',
    connect(server, manager) {
      const relayedFetch = withTokenRelay(fetch, manager, { origins: [server.url] });
      return async (path) => {
        const response = await relayedFetch(`${server.url}${path}`);
        await response.arrayBuffer();
        return response.ok;
      };
    },
  },
];

interface Row {
  client: string;
  scenario: string;
  requests: number;
  expiries: number;
  tokenCalls: number;
  api401: number;
  replays: number;
  failures: number;
  familiesRevoked: number;
}

async function run(client: Client, scenario: 'burst' | 'steady'): Promise<Row> {
  const server = await startOAuthServer({
    // Bursts: the revocation is the only expiry (a 1 s lifetime on top would expire replays in transit on a busy
    // machine, and a replay is never replayed twice). Steady traffic: 1 s tokens, refreshed before they expire.
    accessTokenTtlSeconds: scenario === 'burst' ? 3600 : 1,
    rotateRefreshTokens: true,
    reuseDetection: true,
    tokenEndpointLatencyMs: 50,
  });
  try {
    const manager = createTokenManager({
      tokens: server.issue(),
      refresh: refreshTokenGrant({
        tokenEndpoint: server.tokenEndpoint,
        clientId: 'tokenrelay-demo',
        clientSecret: 'tokenrelay-demo-secret',
      }),
    });
    const expiresAt: number[] = [];
    const initial = await manager.getTokens();
    if (initial?.expiresAt) expiresAt.push(initial.expiresAt);
    manager.on('refresh', (tokens) => tokens.expiresAt && expiresAt.push(tokens.expiresAt));
    const send = client.connect(server, manager);
    let requests = 0;
    let failures = 0;
    const attempt = (path: string) => {
      requests++;
      return send(path).then(
        (ok) => void (ok || failures++),
        () => void failures++,
      );
    };
    server.resetStats();
    let expiries: number;
    if (scenario === 'burst') {
      // The server revokes the access token behind the client's back: the next burst meets 401s.
      for (let round = 0; round < BURST_ROUNDS; round++) {
        server.revokeAccessTokens();
        await Promise.all(Array.from({ length: BURST_SIZE }, (_, i) => attempt(`/api/items/${i}`)));
      }
      expiries = BURST_ROUNDS;
    } else {
      // Steady traffic across several 1-second token lifetimes: refreshed before expiry, so no 401s.
      const startedAt = Date.now();
      const worker = async () => {
        while (Date.now() - startedAt < STEADY_MS) {
          await attempt('/api/steady');
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      };
      await Promise.all(Array.from({ length: STEADY_CONCURRENCY }, worker));
      const endedAt = Date.now();
      expiries = expiresAt.filter((at) => at <= endedAt).length;
    }
    const stats = server.stats();
    return {
      client: client.name,
      scenario: scenario === 'burst' ? `${BURST_ROUNDS} × ${BURST_SIZE} concurrent after revocation` : `steady, 1 s tokens, ${STEADY_MS / 1000} s`,
      requests,
      expiries,
      tokenCalls: stats.tokenRequests,
      api401: stats.api401,
      replays: stats.apiRequests - requests,
      failures,
      familiesRevoked: stats.familiesRevoked,
    };
  } finally {
    await server.close();
  }
}

function printTable(rows: Row[]): void {
  const header = ['client', 'scenario', 'requests', 'expiries', 'token calls', '401s', 'replays', 'failures'];
  const lines = rows.map((row) => [
    row.client,
    row.scenario,
    String(row.requests),
    String(row.expiries),
    String(row.tokenCalls),
    String(row.api401),
    String(row.replays),
    String(row.failures),
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...lines.map((line) => line[column]?.length ?? 0)));
  const format = (cells: string[]) => `| ${cells.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join(' | ')} |`;
  console.log(format(header));
  console.log(`|${widths.map((width) => '-'.repeat(width + 2)).join('|')}|`);
  for (const line of lines) console.log(format(line));
}

const rows: Row[] = [];
for (const client of clients) {
  for (const scenario of ['burst', 'steady'] as const) rows.push(await run(client, scenario));
}
console.log('tokenrelay demo: a local OAuth 2.0 server with rotating refresh tokens and reuse detection\n');
printTable(rows);

const problems = rows.flatMap((row) => {
  const where = `${row.client}, ${row.scenario}`;
  const found: string[] = [];
  // Steady traffic may end just after a refresh for a token that had not expired yet: allow one.
  const allowed = row.scenario.startsWith('steady') ? [row.expiries, row.expiries + 1] : [row.expiries];
  if (!allowed.includes(row.tokenCalls)) found.push(`${where}: ${row.tokenCalls} token calls for ${row.expiries} expiries`);
  if (row.failures > 0) found.push(`${where}: ${row.failures} failed requests`);
  if (row.familiesRevoked > 0) found.push(`${where}: a refresh token was used twice and the session was revoked`);
  if (row.scenario.startsWith('steady') && row.api401 > 0) found.push(`${where}: ${row.api401} 401s under steady traffic`);
  if (row.replays !== row.api401) found.push(`${where}: ${row.replays} replays for ${row.api401} 401s`);
  return found;
});
if (problems.length > 0) {
  console.error(`\nFAILED:\n- ${problems.join('\n- ')}`);
  process.exitCode = 1;
} else {
  console.log('\nOK: one token call per expiry, every 401 replayed once, no failed request, no refresh token used twice.');
}
