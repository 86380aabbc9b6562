export { createTokenManager } from './manager.js';
export { refreshTokenGrant, type RefreshTokenGrantOptions, type ClientAuthentication } from './grant.js';
export { memoryStore } from './memory-store.js';
export { ErrorCode, TokenRelayError, isTokenRelayError, type TokenRelayErrorDetails } from './errors.js';
export {
  accessTokenIfSignedIn,
  bearerAuthorization,
  createOriginMatcher,
  defaultShouldRefresh,
  isSecureOrLoopback,
  isSignedOut,
  parseWwwAuthenticate,
  unwrappedFetch,
  type AuthChallenge,
  type FailedResponse,
  type Origins,
  type ShouldRefresh,
} from './adapter-kit.js';
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
