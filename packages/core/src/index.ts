export { createTokenManager } from './manager.js';
// The grants without a refresh token, private_key_jwt and revocation are on `@tokenrelay/core/grants`.
export { refreshTokenGrant, type GrantEndpointOptions, type RefreshTokenGrantOptions } from './grant.js';
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
