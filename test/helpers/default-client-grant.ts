/*
 * The grant most tests refresh with: refreshTokenGrant for the testing server's default client.
 */
import { refreshTokenGrant, type RefreshHandler, type RefreshTokenGrantOptions } from '@tokenrelay/core';
import { defaultClient, type OAuthServer } from '@tokenrelay/testing';

/** refreshTokenGrant at `server`'s token endpoint as its default client (id and secret); `options` add to it (a `fetch`, say). */
export function defaultClientGrant(
  server: Pick<OAuthServer, 'tokenEndpoint'>,
  options: Partial<Omit<RefreshTokenGrantOptions, 'tokenEndpoint' | 'clientId'>> = {},
): RefreshHandler {
  return refreshTokenGrant({
    tokenEndpoint: server.tokenEndpoint,
    clientId: defaultClient.clientId,
    clientSecret: defaultClient.clientSecret,
    ...options,
  });
}
