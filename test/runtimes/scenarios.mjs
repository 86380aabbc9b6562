// The scenarios every runtime runs (Bun, Deno, workerd), against the built packages: plain
// JavaScript importing the dist files, so the runtime sees what a user installs.
import { createTokenManager, refreshTokenGrant } from '../../packages/core/dist/index.js';
import { withTokenRelay } from '../../packages/fetch/dist/index.js';

/**
 * @typedef {object} ScenarioConfig  What the Node driver (run.ts) hands over.
 * @property {string} apiUrl  The protected API, `http://127.0.0.1:PORT/api`.
 * @property {string} tokenEndpoint
 * @property {string} clientId
 * @property {string} clientSecret
 * @property {object} expiredSession  Tokens whose access token the server has revoked; expiresAt lies ahead.
 * @property {object} concurrentSession  Another such session.
 * @property {number} concurrency  How many requests the second scenario sends at once.
 */

/** A manager and a wrapped fetch for one session, counting the token calls. */
function client(config, tokens) {
  const counter = { tokenCalls: 0 };
  const countingFetch = (input, init) => {
    counter.tokenCalls++;
    return fetch(input, init);
  };
  const manager = createTokenManager({
    tokens,
    refresh: refreshTokenGrant({
      tokenEndpoint: config.tokenEndpoint,
      clientId: config.clientId,
      clientSecret: config.clientSecret,
      fetch: countingFetch,
    }),
  });
  const api = withTokenRelay(fetch, manager, { origins: [new URL(config.apiUrl).origin] });
  return { api, counter };
}

/**
 * Runs both scenarios and reports what happened; the driver judges it.
 * @param {ScenarioConfig} config
 */
export async function runScenarios(config) {
  const expired = client(config, config.expiredSession);
  const response = await expired.api(`${config.apiUrl}/items`);

  const concurrent = client(config, config.concurrentSession);
  const responses = await Promise.all(
    Array.from({ length: config.concurrency }, (_, index) => concurrent.api(`${config.apiUrl}/items/${index}`)),
  );

  return {
    expiredToken: { status: response.status, tokenCalls: expired.counter.tokenCalls },
    concurrent401s: { statuses: responses.map((each) => each.status), tokenCalls: concurrent.counter.tokenCalls },
  };
}
