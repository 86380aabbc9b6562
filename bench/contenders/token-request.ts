import type { AxiosInstance } from 'axios';
import type { ContenderSetup } from './types.js';

/** The tokens hand-written refresh code keeps in a variable. */
export interface BearerTokens {
  accessToken: string;
  refreshToken: string | undefined;
}

/**
 * The refresh call people write next to an axios interceptor: POST `grant_type=refresh_token` with
 * HTTP Basic client credentials, keep the new refresh token if the server rotated it. Shared by
 * the axios-auth-refresh and the naive contender, so they differ only in how they use it.
 */
export async function postRefreshTokenGrant(
  tokenClient: AxiosInstance,
  setup: ContenderSetup,
  refreshToken: string | undefined,
): Promise<BearerTokens> {
  const { data } = await tokenClient.post<{ access_token: string; refresh_token?: string }>(
    setup.tokenEndpoint,
    new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken ?? '' }),
    { auth: { username: setup.clientId, password: setup.clientSecret } },
  );
  return { accessToken: data.access_token, refreshToken: data.refresh_token ?? refreshToken };
}
