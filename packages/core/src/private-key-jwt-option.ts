/*
 * `clientAuthentication: 'private_key_jwt'` with `privateKey` (and `algorithm?`, `keyId?`) on a
 * grant's own options: the object `privateKeyJwt` makes, nothing else. Browser builds use
 * private-key-jwt-option.browser.ts instead, which refuses it, so that a browser app never ships the
 * JWT signer for a string it cannot use.
 */
import type { ClientAuthenticationMethod, ClientAuthenticationOptions } from './client-auth.js';
import { configurationError } from './errors.js';
import { privateKeyJwtFor } from './private-key-jwt.js';

/**
 * The client authentication of options that name `'private_key_jwt'` or give a `privateKey`
 * (`CONFIGURATION_ERROR`, naming `who`, unless they do both).
 */
export function privateKeyJwtOption(options: ClientAuthenticationOptions, who: string): ClientAuthenticationMethod {
  if (options.clientAuthentication !== 'private_key_jwt') {
    throw configurationError(`${who}: privateKey is for clientAuthentication: 'private_key_jwt'`);
  }
  if (options.privateKey === undefined) throw configurationError(`${who}: clientAuthentication "private_key_jwt" needs a privateKey`);
  return privateKeyJwtFor(options, who);
}
