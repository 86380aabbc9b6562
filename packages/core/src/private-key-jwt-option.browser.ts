/*
 * The browser build's private-key-jwt-option.ts: a browser app is a public client, so the string form
 * of `private_key_jwt` is refused there, and the browser bundle carries no JWT signer for it.
 */
import type { ClientAuthenticationOptions } from './client-auth.js';
import { configurationError } from './errors.js';

/** Refuses `'private_key_jwt'` and `privateKey` in a browser, with `CONFIGURATION_ERROR` naming `who`. */
export function privateKeyJwtOption(_options: ClientAuthenticationOptions, who: string): never {
  throw configurationError(`${who}: a browser app is a public client: a private key in it is no secret. If you mean it: privateKeyJwt({ privateKey }) from @tokenrelay/core/grants`);
}
