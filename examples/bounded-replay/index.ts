/**
 * Bounded release with p-queue: 1,000 requests wait behind one refresh (the server revoked the
 * access token); when it is done they go to the API at most 8 at a time instead of in one burst.
 * Requests that never waited are not queued.
 */
import { createTokenManager, refreshTokenGrant } from '@tokenrelay/core';
import { withTokenRelay } from '@tokenrelay/fetch';
import { loopbackOnlyFetch, startOAuthServer } from '@tokenrelay/testing';
import PQueue from 'p-queue';

const server = await startOAuthServer({ tokenEndpointLatencyMs: 300 });
const manager = createTokenManager({
  tokens: server.issue(),
  refresh: refreshTokenGrant({
    tokenEndpoint: server.tokenEndpoint,
    clientId: 'tokenrelay-demo',
    clientSecret: 'tokenrelay-demo-secret',
  }),
});

// Counts the API requests in flight, as the API would see them.
let inFlight = 0;
let peak = 0;
const network = loopbackOnlyFetch();
const countingFetch = async (input: string | URL | Request, init?: RequestInit) => {
  peak = Math.max(peak, ++inFlight);
  try {
    const response = await network(input, init);
    await response.clone().arrayBuffer();
    return response;
  } finally {
    inFlight--;
  }
};

const queue = new PQueue({ concurrency: 8 });
const api = withTokenRelay(countingFetch, manager, { origins: [server.url], queue });
try {
  // The session is fine: 50 requests go out together, none queued.
  await Promise.all(Array.from({ length: 50 }, (_, i) => api(`${server.url}/api/warm/${i}`)));
  const unqueuedPeak = peak;

  // The server revokes the access token: the next request's 401 starts one refresh (the token
  // endpoint takes 300 ms), and the 1,000 requests made meanwhile wait for it.
  server.revokeAccessTokens();
  const first = api(`${server.url}/api/items/first`);
  await new Promise((resolve) => setTimeout(resolve, 100));
  peak = inFlight;
  const responses = await Promise.all([first, ...Array.from({ length: 1_000 }, (_, i) => api(`${server.url}/api/items/${i}`))]);
  const ok = responses.filter((response) => response.ok).length;
  const { tokenRequests } = server.stats();

  console.log(
    `before the revocation: ${unqueuedPeak} requests in flight at once (not queued); after it: ${ok}/1001 succeeded, ` +
      `${tokenRequests} token call, at most ${peak} requests in flight at once once released (queue concurrency 8, the replay included)`,
  );
  if (ok !== 1_001 || tokenRequests !== 1) throw new Error('expected every request to succeed after one refresh');
  if (peak > 8) throw new Error('the requests released by the refresh must go through the queue, 8 at a time');
  if (unqueuedPeak < 10) throw new Error('requests that never waited must not be queued');
} finally {
  await server.close();
}
