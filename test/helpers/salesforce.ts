/*
 * Salesforce helpers for the integration tests: the connected app the embedded server knows,
 * and an "org" on 127.0.0.1 whose API rejects every session, for the replay-cap tests.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** The connected app registered with the embedded server in Salesforce mode. */
export const connectedApp = {
  clientId: 'tokenrelay-sf-app',
  clientSecret: 'tokenrelay-sf-consumer-secret',
  authMethod: 'client_secret_post',
} as const;

/** An org whose API answers 401 INVALID_SESSION_ID to the first `rejections` requests, then an empty query result. */
export interface RejectingOrg {
  /** `http://127.0.0.1:PORT`, to use as the instance URL. */
  readonly url: string;
  /** The API requests received so far, and the bearer each carried. */
  readonly requests: ReadonlyArray<{ readonly path: string; readonly accessToken: string | undefined }>;
  /** Closes the server and every connection. */
  close(): Promise<void>;
}

/**
 * Starts a {@link RejectingOrg} on 127.0.0.1.
 * @param rejections how many requests get 401 INVALID_SESSION_ID before the org answers 200
 * @default Infinity (every request is rejected)
 */
export async function startRejectingOrg(rejections = Infinity): Promise<RejectingOrg> {
  const requests: { path: string; accessToken: string | undefined }[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    requests.push({ path: req.url ?? '/', accessToken: /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] });
    req.resume();
    const rejected = requests.length <= rejections;
    const body = rejected
      ? JSON.stringify([{ message: 'Session expired or invalid', errorCode: 'INVALID_SESSION_ID' }])
      : JSON.stringify({ totalSize: 0, done: true, records: [] });
    res.writeHead(rejected ? 401 : 200, { 'content-type': 'application/json;charset=UTF-8', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: 0, host: '127.0.0.1' }, () => resolve());
  });
  let closed: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      });
      return closed;
    },
  };
}
