/*
 * What the tests ask the OAuth server of @tokenrelay/testing about token requests: which refresh
 * tokens were presented, and whether one is being processed right now.
 */
import type { OAuthServer } from '@tokenrelay/testing';
import { expect, vi } from 'vitest';

/** The refresh token of every token request so far, in order. */
export const presentedRefreshTokens = (server: OAuthServer) =>
  server.stats().tokenRequestLog.map((entry) => entry.params.refresh_token);

/** Waits (bounded) until the token endpoint has read a refresh request's body and not answered it yet. */
export async function tokenRequestInFlight(server: OAuthServer): Promise<void> {
  await vi.waitFor(
    () => {
      const pending = server.stats().tokenRequestLog.filter((entry) => entry.status === undefined && entry.params.refresh_token);
      expect(pending).toHaveLength(1);
    },
    { timeout: 10_000, interval: 5 },
  );
}
