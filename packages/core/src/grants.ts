/*
 * @tokenrelay/core/grants: what only some apps need — the grants without a refresh token (client
 * credentials, JWT bearer), `private_key_jwt` client authentication (with its WebCrypto JWT signer)
 * and token revocation. The main entry exports them too (issue 11's names); this entry holds them
 * alone, for bundlers and readers that want only these.
 */
export {
  clientCredentialsGrant,
  jwtBearerGrant,
  type ClientCredentialsGrantOptions,
  type JwtBearerGrantOptions,
} from './credential-grants.js';
export { privateKeyJwt } from './private-key-jwt.js';
export type { AssertionSigningOptions, PrivateKeyInput, SigningAlgorithm } from './jwt.js';
export { revokeToken, type RevokeTokenOptions } from './revoke.js';
