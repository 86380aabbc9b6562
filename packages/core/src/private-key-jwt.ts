/*
 * `private_key_jwt` client authentication (RFC 7523 §2.2). Outside a browser build every grant brings
 * its signer along (for the grants' own `'private_key_jwt'` option); a browser build bundles it only
 * for an app that imports `privateKeyJwt`.
 */
import type { ClientAuthenticationMethod } from './client-auth.js';
import { assertionSigner, type AssertionSigningOptions } from './jwt.js';

/**
 * Client authentication with a JWT signed by the client's private key (`private_key_jwt`): each
 * token request carries a fresh assertion (`iss` = `sub` = clientId, `aud` = the endpoint URL, a
 * unique `jti`, 2 minutes of life), signed with WebCrypto (RS256, ES256 or PS256). Pass it as
 * `clientAuthentication` to any grant or to `revokeToken`; `clientAuthentication: 'private_key_jwt'`
 * with `privateKey`, `algorithm?` and `keyId?` on the grant's options means the same, outside a
 * browser. The assertion never appears in an error.
 *
 * @throws TokenRelayError `CONFIGURATION_ERROR` (synchronously) for invalid key options; (when
 * signing) for a key WebCrypto cannot import.
 * @example
 * ```ts
 * import { clientCredentialsGrant, privateKeyJwt } from '@tokenrelay/core'
 * const refresh = clientCredentialsGrant({
 *   tokenEndpoint: 'https://auth.example.com/oauth/token',
 *   clientId: 'worker',
 *   clientAuthentication: privateKeyJwt({ privateKey: await readFile('worker.key.pem', 'utf8') }),
 * })
 * ```
 */
export function privateKeyJwt(options: AssertionSigningOptions): ClientAuthenticationMethod {
  return privateKeyJwtFor(options, 'privateKeyJwt');
}

/**
 * {@link privateKeyJwt}, its configuration errors naming `who`: also what a grant given
 * `clientAuthentication: 'private_key_jwt'` with `privateKey` makes (private-key-jwt-option.ts).
 */
export function privateKeyJwtFor(options: AssertionSigningOptions, who: string): ClientAuthenticationMethod {
  const sign = assertionSigner(options, who);
  return {
    method: 'private_key_jwt',
    async authenticate({ clientId, endpoint, params, clock }) {
      const { assertion, secrets } = await sign({ iss: clientId, sub: clientId, aud: endpoint }, clock);
      params.set('client_id', clientId);
      params.set('client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
      params.set('client_assertion', assertion);
      return secrets;
    },
  };
}
