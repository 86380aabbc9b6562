/*
 * @tokenrelay/core/grants: what only some apps need, so that the others do not ship it — the grants
 * without a refresh token (client credentials, JWT bearer), `private_key_jwt` client authentication
 * (with its WebCrypto JWT signer) and token revocation. `refreshTokenGrant` is on the main entry.
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
