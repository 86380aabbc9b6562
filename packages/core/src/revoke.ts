/*
 * Token revocation (RFC 7009), on the same token-endpoint client as the grants: the same client
 * authentication, error codes and redaction.
 */
import { clientAuthenticator, type ClientAuthenticationOptions } from './client-auth.js';
import { configurationError } from './errors.js';
import { parseEndpoint, tokenEndpointClient, type TokenRequestOptions } from './token-request.js';

/** Options of {@link revokeToken}. */
export interface RevokeTokenOptions extends ClientAuthenticationOptions, Omit<TokenRequestOptions, 'maxResponseBytes'> {
  /**
   * The revocation endpoint. Must be `https:`; `http:` is accepted for loopback hosts only.
   * @example 'https://auth.example.com/oauth/revoke'
   */
  revocationEndpoint: string | URL;
  /** The token to revoke: usually the refresh token, which (at most servers) revokes its access tokens too. */
  token: string;
  /** What the token is, to help the server find it. */
  tokenTypeHint?: 'refresh_token' | 'access_token';
  /** Aborts the request. */
  signal?: AbortSignal;
}

/**
 * Revokes a token at the authorization server (RFC 7009), e.g. on sign-out, before `manager.clear()`.
 * Resolves when the server answered 200, which it does for an unknown or already revoked token too.
 * The client authenticates as at the token endpoint (`private_key_jwt` assertions have the
 * revocation endpoint as `aud`).
 *
 * @throws TokenRelayError `CONFIGURATION_ERROR` for invalid options; `CREDENTIALS_REJECTED` for
 * `invalid_client`; `TOKEN_ENDPOINT_ERROR` for other error answers (`unsupported_token_type`, …;
 * `transient` for 5xx and 429); `NETWORK_ERROR` when the server cannot be reached.
 * No message ever holds the token or the client's credentials.
 * @example
 * ```ts
 * const tokens = await manager.getTokens()
 * if (tokens?.refreshToken) {
 *   await revokeToken({ revocationEndpoint, clientId: 'app', token: tokens.refreshToken, tokenTypeHint: 'refresh_token' })
 * }
 * await manager.clear()
 * ```
 */
export async function revokeToken(options: RevokeTokenOptions): Promise<void> {
  const who = 'revokeToken';
  const endpoint = parseEndpoint(options.revocationEndpoint, who, 'revocationEndpoint');
  const client = tokenEndpointClient(endpoint, clientAuthenticator(options, who), { ...options, who });
  const { token, tokenTypeHint, signal = new AbortController().signal } = options;
  if (typeof token !== 'string' || token === '') throw configurationError(`${who}: token is required`);
  const params = new URLSearchParams({ token });
  if (tokenTypeHint) params.set('token_type_hint', tokenTypeHint);
  const error = client.errorOf(await client.post(params, { signal, secrets: [token] }));
  if (error) throw error;
}
