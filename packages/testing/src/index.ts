/**
 * @tokenrelay/testing: a real OAuth 2.0 authorization server and protected API on 127.0.0.1,
 * for demos, for tokenrelay's own tests and for yours.
 */
export { startOAuthServer, defaultClient, MAX_API_DELAY_MS } from './server.js';
export { salesforceFixtures } from './salesforce.js';
export { isLoopbackUrl, loopbackOnlyFetch } from './loopback.js';
export type {
  ApiRequestRecord,
  ClientAuthenticationMethod,
  DpopNonceOptions,
  DpopServerOptions,
  IssueOptions,
  OAuthClient,
  OAuthServer,
  OAuthServerMode,
  OAuthServerOptions,
  OAuthServerStats,
  TokenEndpointFailure,
  TokenEndpointFailureKind,
  TokenRequestRecord,
} from './types.js';
export {
  describeTokenStoreConformance,
  type ConformanceOptions,
  type ConformanceRunner,
  type ConformanceSession,
} from './store-conformance.js';
