import { createServer } from 'node:net';

/** A TCP port on 127.0.0.1 that was free a moment ago, for a program that takes its port as an argument. */
export async function freeLoopbackPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('Could not get a free loopback port');
  return address.port;
}
