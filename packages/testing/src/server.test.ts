import { describe, expect, it } from 'vitest';
import { startOAuthServer } from './server.js';
import type { OAuthServerOptions } from './types.js';
import { useServers } from './test-helpers.js';

const start = useServers();

describe('startOAuthServer', () => {
  it('listens on 127.0.0.1 on an ephemeral port, with the standard token endpoint', async () => {
    const server = await start();
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(Number(new URL(server.url).port)).toBeGreaterThan(0);
    expect(server.tokenEndpoint).toBe(`${server.url}/oauth/token`);
    expect(server.mode).toBe('standard');
  });

  it('starts independent servers on different ports', async () => {
    const [one, two] = await Promise.all([start(), start()]);
    expect(one!.url).not.toBe(two!.url);
    const tokenOfOne = one!.issue().accessToken;
    const response = await fetch(`${two!.url}/api/me`, { headers: { authorization: `Bearer ${tokenOfOne}` } });
    expect(response.status).toBe(401);
  });

  it('rejects when the requested port is taken', async () => {
    const first = await start();
    await expect(startOAuthServer({ port: Number(new URL(first.url).port) })).rejects.toThrow(/EADDRINUSE/);
  });

  it.each<[string, OAuthServerOptions]>([
    ['a zero TTL', { accessTokenTtlSeconds: 0 }],
    ['a negative latency', { tokenEndpointLatencyMs: -1 }],
    ['a fractional port', { port: 80.5 }],
    ['an unknown mode', { mode: 'okta' as 'standard' }],
    ['an empty client list', { clients: [] }],
    ['a confidential client without a secret', { clients: [{ clientId: 'x', authMethod: 'client_secret_basic' }] }],
    ['a client listed twice', { clients: [{ clientId: 'x', authMethod: 'none' }, { clientId: 'x', authMethod: 'none' }] }],
  ])('rejects %s', async (_name, options) => {
    await expect(startOAuthServer(options)).rejects.toThrow(/startOAuthServer: /);
  });

  it('can be closed twice', async () => {
    const server = await start();
    await server.close();
    await server.close();
    await expect(fetch(`${server.url}/api/me`)).rejects.toThrow();
  });
});
