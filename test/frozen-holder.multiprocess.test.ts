/*
 * A lock holder frozen (SIGSTOP) between reading the store under the fileStore lock and presenting
 * the refresh token, past its lease: another process takes the lock over and rotates the refresh
 * token. When the frozen one resumes, its continuation runs before any timer (its heartbeat has not
 * noticed the takeover), so only the manager's check against the store (`assertHeld`) keeps it from
 * presenting the spent token, which would revoke the whole grant family (RFC 9700).
 * Real processes (node + tsx), a real token file, the testing server with rotation + reuse detection.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fileStore } from '@tokenrelay/core/node';
import { defaultClient, startOAuthServer, type OAuthServer } from '@tokenrelay/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { presentedRefreshTokens } from './helpers/token-requests.js';
import { startScriptProcess } from './helpers/script-process.js';

const coreSource = fileURLToPath(new URL('../packages/core/src/index.ts', import.meta.url));
const nodeSource = fileURLToPath(new URL('../packages/core/src/node.ts', import.meta.url));
const LEASE_MS = 600;

let directory: string;
let tokenPath: string;
let server: OAuthServer;
const cleanups: (() => unknown)[] = [];

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), 'tokenrelay-frozen-holder-'));
  tokenPath = join(directory, 'session.json');
  server = await startOAuthServer({ rotateRefreshTokens: true, reuseDetection: true });
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await server.close();
  await rm(directory, { recursive: true, force: true });
});

/**
 * A Node process with a token manager on the shared token file; `code` runs with `manager`, `store`
 * and `print` in scope. With `freezeUnderLock`, the store's first read under the lock prints `holding`
 * and then blocks the whole process (no timer runs: a freeze) until the file `go` exists.
 */
function startProcess(code: string, { freezeUnderLock = false } = {}) {
  const script = `
    import { existsSync } from 'node:fs';
    import { createTokenManager, refreshTokenGrant } from ${JSON.stringify(coreSource)};
    import { fileStore } from ${JSON.stringify(nodeSource)};
    const print = (line) => console.log(line);
    const shared = fileStore(${JSON.stringify(tokenPath)}, { watch: false, lockLeaseMs: ${LEASE_MS} });
    let underLock = false;
    let frozen = false;
    const store = {
      ...shared,
      async get() {
        const value = await shared.get();
        if (${freezeUnderLock} && underLock && !frozen) {
          frozen = true;
          print('holding');
          // Bounded: 30 s at most, in 10 ms sleeps that block the event loop like a freeze.
          const pause = new Int32Array(new SharedArrayBuffer(4));
          for (let slept = 0; slept < 30_000 && !existsSync(${JSON.stringify(join(directory, 'go'))}); slept += 10) Atomics.wait(pause, 0, 0, 10);
        }
        return value;
      },
      async lock(options) {
        const lock = await shared.lock(options);
        underLock = true;
        return { ...lock, release: () => { underLock = false; return lock.release(); } };
      },
    };
    const manager = createTokenManager({
      store,
      refresh: refreshTokenGrant({
        tokenEndpoint: ${JSON.stringify(server.tokenEndpoint)},
        clientId: ${JSON.stringify(defaultClient.clientId)},
        clientSecret: ${JSON.stringify(defaultClient.clientSecret)},
      }),
      retry: { retries: 0, pauseAfterFailureMs: 50, maxPauseAfterFailureMs: 50 },
    });
    ${code}
    await shared.close();`;
  return startScriptProcess(script, cleanups);
}

describe('a lock holder frozen past its lease', () => {
  it('never presents the refresh token another process spent meanwhile: the family stays intact and it adopts the new tokens', async () => {
    const signedIn = server.issue();
    const setup = fileStore(tokenPath, { watch: false });
    await setup.set({ revision: 1, tokens: signedIn });
    await setup.close();

    const frozen = startProcess(
      `try {
         const tokens = await manager.refresh();
         print('first: refreshed ' + tokens.refreshToken);
       } catch (error) {
         print('first: failed ' + error.code);
       }
       await new Promise((resolve) => setTimeout(resolve, 300));
       const tokens = await manager.refresh();
       print('second: ' + tokens.refreshToken);`,
      { freezeUnderLock: true },
    );
    await frozen.printed('holding');
    // Frozen holding the lock, having read the store, before presenting the refresh token.
    frozen.child.kill('SIGSTOP');

    const successor = startProcess(`const tokens = await manager.refresh(); print('refreshed ' + tokens.refreshToken);`);
    const rotated = (await successor.printed('refreshed ')).slice('refreshed '.length);
    expect(rotated).not.toBe(signedIn.refreshToken);

    // Resumes with its token request next in line.
    await writeFile(join(directory, 'go'), '');
    frozen.child.kill('SIGCONT');

    expect(await frozen.printed('first: ')).toBe('first: failed STORE_ERROR');
    expect(await frozen.printed('second: ')).toBe(`second: ${rotated}`);
    expect(presentedRefreshTokens(server)).toEqual([signedIn.refreshToken]);
    expect(server.stats()).toMatchObject({ refreshTokenReuses: 0, familiesRevoked: 0 });
  }, 60_000);
});
