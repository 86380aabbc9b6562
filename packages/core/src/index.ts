export { createTokenManager } from './manager.js';
export { refreshTokenGrant, type GrantEndpointOptions, type RefreshTokenGrantOptions } from './grant.js';
// Also on `@tokenrelay/core/grants`. The package has no side effects, so a bundle that does not use
// them leaves them out (bench/size-limit.config.js checks it).
export {
  clientCredentialsGrant,
  jwtBearerGrant,
  type ClientCredentialsGrantOptions,
  type JwtBearerGrantOptions,
} from './credential-grants.js';
export { privateKeyJwt } from './private-key-jwt.js';
export type { AssertionSigningOptions, PrivateKeyInput, SigningAlgorithm } from './jwt.js';
export { revokeToken, type RevokeTokenOptions } from './revoke.js';
export type {
  ClientAuthentication,
  ClientAuthenticationMethod,
  ClientAuthenticationOptions,
  ClientAuthenticationRequest,
} from './client-auth.js';
export type { TokenRequestOptions } from './token-request.js';
export { tokenSetFromResponse, type TokenSetFromResponseOptions } from './token-response.js';
export { memoryStore } from './memory-store.js';
export { ErrorCode, TokenRelayError, findTokenRelayError, isTokenRelayError, type TokenRelayErrorDetails } from './errors.js';
// What an app writes an adapter's `shouldRefresh`, `origins` and `queue` with; the pieces the adapters
// and stores are built from are on `@tokenrelay/core/kit`.
export { defaultShouldRefresh, type FailedResponse, type Origins, type RequestQueue, type ShouldRefresh } from './adapter-kit.js';
export type {
  Clock,
  GetAccessTokenOptions,
  RefreshContext,
  RefreshHandler,
  RefreshOptions,
  RetryPolicy,
  StoredTokens,
  TokenManager,
  TokenManagerEvents,
  TokenManagerOptions,
  TokenSet,
  TokenStore,
  TokenStoreLock,
  TokenStoreSetOptions,
} from './types.js';
