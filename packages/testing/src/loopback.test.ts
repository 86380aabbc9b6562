import { describe, expect, it, vi } from 'vitest';
import { isLoopbackUrl, loopbackOnlyFetch } from './loopback.js';
import { useServers } from './test-helpers.js';

const start = useServers();

describe('isLoopbackUrl', () => {
  it('accepts http(s) URLs on localhost, 127.0.0.0/8 and [::1]', () => {
    for (const url of ['http://127.0.0.1:8080/x', 'https://localhost/', 'http://127.1.2.3', 'http://[::1]:3000/api']) {
      expect(isLoopbackUrl(url)).toBe(true);
    }
    expect(isLoopbackUrl(new URL('http://127.0.0.1/'))).toBe(true);
  });

  it('refuses other hosts, look-alikes, other schemes and relative URLs', () => {
    for (const url of ['https://api.example.com', 'http://127.0.0.1.example.com', 'http://localhost.evil.test', 'ftp://127.0.0.1', '/api/me', 'http://10.0.0.1']) {
      expect(isLoopbackUrl(url)).toBe(false);
    }
  });
});

describe('loopbackOnlyFetch', () => {
  it('rejects a non-loopback URL before any traffic, naming only its origin', async () => {
    const inner = vi.fn<typeof fetch>();
    const guarded = loopbackOnlyFetch(inner);
    const error: unknown = await guarded('https://api.example.com/users?token=s3cret').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(TypeError);
    expect(String(error)).toContain('https://api.example.com');
    expect(String(error)).not.toContain('s3cret');
    await expect(guarded(new Request('https://api.example.com/'))).rejects.toThrow(TypeError);
    expect(inner).not.toHaveBeenCalled();
  });

  it('passes loopback requests through to the wrapped fetch', async () => {
    const server = await start();
    const guarded = loopbackOnlyFetch();
    const response = await guarded(`${server.url}/api/me`, { headers: { authorization: `Bearer ${server.issue().accessToken}` } });
    expect(response.status).toBe(200);
  });
});
