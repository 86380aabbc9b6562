/**
 * Node cluster workers sharing one OAuth session through a file store. Every worker keeps its own
 * token manager, but they all read and write tokens/_session.json and take its lock around a
 * refresh: when the (1 s) access token nears expiry, one worker calls the token endpoint and the
 * others pick up its tokens. With rotating refresh tokens and reuse detection on, as here, two
 * calls with the same refresh token would end the session for everyone.
 */
import cluster, { type Worker } from 'node:cluster';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTokenManager, refreshTokenGrant, type RefreshHandler } from '@tokenrelay/core';
import { fileStore } from '@tokenrelay/core/node';
import { withTokenRelay } from '@tokenrelay/fetch';
import { defaultClient, startOAuthServer } from '@tokenrelay/testing';

const WORKERS = 4;
const RUN_MS = 4_000;
/** The whole example must end within this, whatever happens. */
const DEADLINE_MS = 60_000;

interface WorkerReport {
  requests: number;
  failed: number;
  tokenCalls: number;
}

if (cluster.isPrimary) await runPrimary();
else await runWorker();

async function runPrimary(): Promise<void> {
  const server = await startOAuthServer({ accessTokenTtlSeconds: 1, rotateRefreshTokens: true, reuseDetection: true, tokenEndpointLatencyMs: 50 });
  const directory = await mkdtemp(join(tmpdir(), 'tokenrelay-cluster-'));
  const tokenFile = join(directory, 'tokens', '_session.json');
  const workers: Worker[] = [];
  const deadline = setTimeout(() => {
    console.error(`Timed out after ${DEADLINE_MS} ms`);
    for (const worker of workers) worker.process.kill('SIGKILL');
    process.exit(1);
  }, DEADLINE_MS);
  try {
    // The sign-in: its tokens go to the file every worker reads.
    await fileStore(tokenFile, { watch: false }).set({ revision: 1, tokens: server.issue() });
    const reports = await Promise.all(
      Array.from({ length: WORKERS }, () => {
        const worker = cluster.fork({ TOKEN_FILE: tokenFile, API_URL: server.url, TOKEN_ENDPOINT: server.tokenEndpoint });
        workers.push(worker);
        return new Promise<WorkerReport>((resolve, reject) => {
          worker.once('message', resolve);
          worker.once('exit', (code) => reject(new Error(`worker ${worker.id} exited with ${code} before reporting`)));
        });
      }),
    );

    const stats = server.stats();
    const presented = stats.tokenRequestLog.map((entry) => entry.params.refresh_token);
    const distinct = new Set(presented).size;
    console.log('worker  requests  failed  token calls');
    reports.forEach((report, index) =>
      console.log(`${String(index + 1).padEnd(8)}${String(report.requests).padEnd(10)}${String(report.failed).padEnd(8)}${report.tokenCalls}`),
    );
    const total = reports.reduce((sum, report) => ({
      requests: sum.requests + report.requests,
      failed: sum.failed + report.failed,
      tokenCalls: sum.tokenCalls + report.tokenCalls,
    }));
    console.log(`${'total'.padEnd(8)}${String(total.requests).padEnd(10)}${String(total.failed).padEnd(8)}${total.tokenCalls}`);
    console.log(
      `Token endpoint: ${stats.tokenRequests} calls over ${RUN_MS / 1000} s of 1 s tokens, each with a different refresh token ` +
        `(${distinct} distinct): one call per expiry for all ${WORKERS} workers. Families revoked: ${stats.familiesRevoked}.`,
    );

    const problems = [
      total.failed > 0 && `${total.failed} requests failed`,
      stats.familiesRevoked > 0 && 'the refresh token family was revoked (a refresh token was used twice)',
      distinct !== stats.tokenRequests && 'two token calls presented the same refresh token',
      stats.tokenRequests < 2 && 'expected several expiries during the run',
      total.tokenCalls !== stats.tokenRequests && 'the workers and the server disagree on the number of token calls',
    ].filter((problem): problem is string => typeof problem === 'string');
    if (problems.length > 0) throw new Error(problems.join('; '));
  } finally {
    clearTimeout(deadline);
    for (const worker of workers) worker.kill();
    await server.close();
    await rm(directory, { recursive: true, force: true });
  }
}

async function runWorker(): Promise<void> {
  const { TOKEN_FILE, API_URL, TOKEN_ENDPOINT } = process.env;
  if (!TOKEN_FILE || !API_URL || !TOKEN_ENDPOINT) throw new Error('started without TOKEN_FILE, API_URL and TOKEN_ENDPOINT');
  const grant = refreshTokenGrant({
    tokenEndpoint: TOKEN_ENDPOINT,
    clientId: defaultClient.clientId,
    clientSecret: defaultClient.clientSecret,
  });
  let tokenCalls = 0;
  // Counts this worker's own token calls, for the table; the manager calls it only under the file's lock.
  const refresh: RefreshHandler = Object.assign((context: Parameters<RefreshHandler>[0]) => {
    tokenCalls++;
    return grant(context);
  }, { tokenEndpoint: grant.tokenEndpoint });

  const manager = createTokenManager({ store: fileStore(TOKEN_FILE), refresh });
  const api = withTokenRelay(fetch, manager, { origins: [API_URL] });

  let requests = 0;
  let failed = 0;
  const startedAt = Date.now();
  while (Date.now() - startedAt < RUN_MS) {
    // Bursts of five concurrent requests, like a server handling traffic.
    await Promise.all(
      Array.from({ length: 5 }, async () => {
        requests++;
        try {
          const response = await api(`${API_URL}/api/orders`);
          await response.arrayBuffer();
          if (!response.ok) failed++;
        } catch {
          failed++;
        }
      }),
    );
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  process.send?.({ requests, failed, tokenCalls } satisfies WorkerReport);
}
