/**
 * The app under test: an API client whose fetch is kept authenticated by tokenrelay. Nothing in it
 * knows about msw; the test decides what the network answers.
 */
import { createTokenManager, refreshTokenGrant, type TokenManager, type TokenSet } from '@tokenrelay/core';
import { withTokenRelay } from '@tokenrelay/fetch';

export const apiOrigin = 'https://api.example.com';
export const tokenEndpoint = 'https://auth.example.com/oauth/token';

export interface Profile {
  name: string;
}

export interface ApiClient {
  readonly manager: TokenManager;
  getProfile(): Promise<Profile>;
}

export function createApiClient(tokens: TokenSet): ApiClient {
  const manager = createTokenManager({
    tokens,
    refresh: refreshTokenGrant({ tokenEndpoint, clientId: 'my-app' }),
  });
  // Looks `globalThis.fetch` up on every call rather than wrapping the one there at import time:
  // msw's `server.listen()` replaces the global later, and a wrapper around the old one would go
  // straight to the network, past msw.
  const apiFetch = withTokenRelay((input: RequestInfo | URL, init?: RequestInit) => globalThis.fetch(input, init), manager, { origins: [apiOrigin] });

  return {
    manager,
    async getProfile() {
      const response = await apiFetch(`${apiOrigin}/me`);
      if (!response.ok) throw new Error(`GET /me answered ${response.status}`);
      return (await response.json()) as Profile;
    },
  };
}
