/*
 * Child process: starts @tokenrelay/testing OAuth servers on 127.0.0.1 on request and answers
 * the benchmark's commands over IPC. Exits (closing every server) when the parent disconnects.
 */
import { setMaxListeners } from 'node:events';
import { startOAuthServer, type OAuthServer } from '@tokenrelay/testing';
import type { HostReply, HostRequest, HostResult } from './protocol.js';

// Each delayed request (`?delayMs=`, a slow token endpoint) listens on the server's one closing
// signal; the benchmark holds thousands at once, which is intended, not a listener leak.
setMaxListeners(0);

const servers = new Map<number, OAuthServer>();
let nextServer = 1;

function serverOf(request: HostRequest & { server: number }): OAuthServer {
  const server = servers.get(request.server);
  if (!server) throw new Error(`unknown server ${request.server}`);
  return server;
}

async function handle(request: HostRequest): Promise<HostResult> {
  if (request.op === 'start') {
    const server = await startOAuthServer(request.options);
    const id = nextServer++;
    servers.set(id, server);
    return { server: id, url: server.url, tokenEndpoint: server.tokenEndpoint };
  }
  const server = serverOf(request);
  switch (request.op) {
    case 'issue':
      return server.issue();
    case 'revokeAccessTokens':
      server.revokeAccessTokens();
      return null;
    case 'revokeRefreshTokens':
      server.revokeRefreshTokens();
      return null;
    case 'failNextTokenRequests':
      server.failNextTokenRequests(request.count, request.failure);
      return null;
    case 'clearFailures':
      server.clearFailures();
      return null;
    case 'stats': {
      const { tokenRequestLog, apiRequestLog: _apiLog, ...counters } = server.stats();
      return {
        ...counters,
        tokenIssuedAt: tokenRequestLog.filter((entry) => entry.status === 200).map((entry) => entry.at),
      };
    }
    case 'close':
      servers.delete(request.server);
      await server.close();
      return null;
  }
}

process.on('message', (request: HostRequest) => {
  handle(request).then(
    (result) => process.send?.({ id: request.id, ok: true, result } satisfies HostReply),
    (error: unknown) =>
      process.send?.({ id: request.id, ok: false, message: error instanceof Error ? error.message : String(error) } satisfies HostReply),
  );
});

process.on('disconnect', () => {
  void Promise.all([...servers.values()].map((server) => server.close())).finally(() => process.exit(0));
});
