/*
 * DPoP across processes: two real Node processes share one DPoP-bound session through a fileStore
 * (tokens and the key the refresh token is bound to travel together) against the testing server's
 * DPoP mode, with rotation, reuse detection, nonces, and a server that spends the refresh token
 * before it checks the nonce.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTokenManager, refreshTokenGrant } from '@tokenrelay/core';
import { fileStore } from '@tokenrelay/core/node';
import { createDpop, sessionDpopKey } from '@tokenrelay/dpop';
import { defaultClient, startOAuthServer, type OAuthServer } from '@tokenrelay/testing';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { burst, disposeWorkers, startWorkers, stopWorkers } from './helpers/worker-pool.js';

let directory: string;
let server: OAuthServer | undefined;

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), 'tokenrelay-dpop-'));
});

afterEach(async () => {
  await stopWorkers();
  await server?.close();
  await rm(directory, { recursive: true, force: true });
});

afterAll(disposeWorkers);

describe('two processes sharing a DPoP-bound session through a fileStore', () => {
  it(
    'sign every proof with the key stored at sign-in and make one refresh per expiry, a nonce rotated mid-session included',
    async () => {
      server = await startOAuthServer({
        rotateRefreshTokens: true,
        reuseDetection: true,
        dpop: { spendRefreshTokenBeforeNonceCheck: true },
      });
      const path = join(directory, 'session.json');

      // The sign-in: this process makes the key, and the tokens (bound to it) and the key are written together.
      const store = fileStore(path, { watch: false });
      const signIn = createTokenManager({ store, refresh: refreshTokenGrant({ tokenEndpoint: server.tokenEndpoint, clientId: 'unused' }) });
      const key = sessionDpopKey(signIn);
      const jkt = await createDpop({ key }).thumbprint();
      const issued = server.issue({ dpopJkt: jkt });
      await signIn.setTokens(await key.attachTo(issued));
      await store.close?.();
      expect((await fileStore(path, { watch: false }).get())?.tokens).toMatchObject({ tokenType: 'DPoP', sessionData: { dpopKey: { kty: 'EC' } } });

      const workers = await startWorkers(2, {
        apiUrl: server.url,
        tokenEndpoint: server.tokenEndpoint,
        clientId: defaultClient.clientId,
        clientSecret: defaultClient.clientSecret ?? '',
        store: { kind: 'file', path },
        dpop: true,
      });

      for (let round = 1; round <= 3; round++) {
        if (round === 3) server.rotateDpopNonce();
        server.revokeAccessTokens();
        const outcomes = (await burst(workers, round, 10)).flat();
        expect(outcomes, `round ${round}`).toEqual(Array(20).fill('200'));
      }

      const stats = server.stats();
      const realRefreshes = stats.tokenRequestLog.filter((entry) => entry.params.refresh_token !== 'tokenrelay-dpop-nonce-probe');
      // One refresh per expiry, each presenting the refresh token the previous one issued, with a proof of the stored key.
      expect(realRefreshes.map((entry) => entry.status)).toEqual([200, 200, 200]);
      expect(realRefreshes[0]?.params.refresh_token).toBe(issued.refreshToken);
      expect(realRefreshes.every((entry) => entry.dpopJkt === jkt)).toBe(true);
      expect(stats).toMatchObject({ refreshTokenReuses: 0, familiesRevoked: 0 });
      const answered = stats.apiRequestLog.filter((entry) => entry.status === 200);
      expect(answered).toHaveLength(60);
      expect(answered.every((entry) => entry.dpopJkt === jkt)).toBe(true);
    },
    60_000,
  );
});
