/*
 * The browser build's private-key-jwt-option.ts: `'private_key_jwt'` named as a string, and
 * `privateKey`, `algorithm` or `keyId` on a grant's options, are refused there, so the browser bundle
 * carries no JWT signer for them. An app that means it (a browser app is a public client: a key in it
 * is no secret) passes the object `privateKeyJwt({ privateKey, algorithm, keyId })` makes.
 */
import type { ClientAuthenticationOptions } from './client-auth.js';
import { configurationError } from './errors.js';

/** Refuses the string form of `private_key_jwt` and the key's options in a browser, with `CONFIGURATION_ERROR` naming `who`. */
export function privateKeyJwtOption(_options: ClientAuthenticationOptions, who: string): never {
  throw configurationError(`${who}: in a browser, use privateKeyJwt({ privateKey, algorithm, keyId })`);
}
