/*
 * `clientAuthentication: 'private_key_jwt'` (named, or the default when a `privateKey` is given) with
 * `privateKey`, `algorithm?` and `keyId?` on a grant's own options: the object `privateKeyJwt` makes,
 * nothing else. Browser builds use private-key-jwt-option.browser.ts instead, which refuses it, so
 * that a browser app never ships the JWT signer for a string it cannot use.
 */
import type { ClientAuthenticationMethod, ClientAuthenticationOptions } from './client-auth.js';
import { configurationError } from './errors.js';
import { privateKeyJwtFor } from './private-key-jwt.js';

/**
 * The `private_key_jwt` client authentication of options that name it or give a privateKey, algorithm
 * or keyId (it is their default without a clientSecret): `CONFIGURATION_ERROR`, naming `who`, without
 * a privateKey, and for the key's options beside another method, where they would be dropped.
 */
export function privateKeyJwtOption(options: ClientAuthenticationOptions, who: string): ClientAuthenticationMethod {
  const { privateKey, clientAuthentication = options.clientSecret ? 'client_secret_basic' : 'private_key_jwt' } = options;
  if (clientAuthentication !== 'private_key_jwt') {
    const given = (['privateKey', 'algorithm', 'keyId'] as const).find((key) => options[key] !== undefined);
    throw configurationError(`${who}: ${given} is for clientAuthentication: 'private_key_jwt'`);
  }
  if (privateKey === undefined) throw configurationError(`${who}: clientAuthentication "private_key_jwt" needs a privateKey`);
  return privateKeyJwtFor({ ...options, privateKey }, who);
}
