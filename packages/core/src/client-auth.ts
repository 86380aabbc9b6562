/*
 * Client authentication at the token endpoint (RFC 6749 §2.3): one piece for every grant and for
 * revocation, so each method is built, checked and redacted the same way everywhere. The secret
 * methods live here; `private_key_jwt` (RFC 7523 §2.2) is the object `privateKeyJwt` makes, which
 * `'private_key_jwt'` with a `privateKey` builds too (private-key-jwt-option.ts). So every build that
 * bundles a grant ships the JWT signer (Node, workerd, edge, Deno, Bun), except browser builds: the
 * `browser` export condition swaps in private-key-jwt-option.browser.ts, which refuses the string
 * (a browser app is a public client) and leaves the signer out.
 */
import { configurationError } from './errors.js';
import type { PrivateKeyInput, SigningAlgorithm } from './jwt.js';
import { privateKeyJwtOption } from './private-key-jwt-option.js';
import type { Clock } from './types.js';

/**
 * How the client proves its identity to the token endpoint: HTTP Basic (`client_secret_basic`),
 * the form body (`client_secret_post`), a JWT signed with its private key (`private_key_jwt`,
 * RFC 7523 §2.2), or `client_id` alone (`none`, public clients).
 */
export type ClientAuthentication = 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt' | 'none';

/** What a client authentication adds to one token-endpoint request. */
export interface ClientAuthenticationRequest {
  /** The client id. */
  readonly clientId: string;
  /** The endpoint's URL (a client assertion's `aud`). */
  readonly endpoint: string;
  /** The form being posted. */
  readonly params: URLSearchParams;
  /** The request headers. */
  readonly headers: Record<string, string>;
  /** The clock of the grant. */
  readonly clock: Clock;
}

/**
 * A client authentication made as an object: `privateKeyJwt({ privateKey })`. Adds itself to the
 * request and returns every secret it put there, so that no error message can echo one.
 */
export interface ClientAuthenticationMethod {
  readonly method: 'private_key_jwt';
  authenticate(request: ClientAuthenticationRequest): Promise<readonly string[]>;
}

/** The client authentication options every grant (and `revokeToken`) takes. */
export interface ClientAuthenticationOptions {
  /** The OAuth client id (a client assertion's `iss` and `sub`). */
  clientId: string;
  /** The client secret of a confidential client (`client_secret_basic`, `client_secret_post`). */
  clientSecret?: string;
  /**
   * How the client authenticates: HTTP Basic (`client_secret_basic`, id and secret form-urlencoded
   * before base64 as RFC 6749 §2.3.1 requires), in the form body (`client_secret_post`), `client_id`
   * alone (`none`, public clients), or a JWT signed with the client's private key (`private_key_jwt`,
   * RFC 7523 §2.2): each request carries a fresh assertion signed with `privateKey` (`aud` = the
   * endpoint URL, a unique `jti`). `'private_key_jwt'` with `privateKey`, `algorithm?` and `keyId?`
   * is the same as `privateKeyJwt({ privateKey, algorithm, keyId })`; browser builds refuse the string
   * (`CONFIGURATION_ERROR`: a browser app is a public client, a private key in it is no secret).
   * Wrong combinations (a secret and a key, a key or `keyId` with a secret method) are a
   * `CONFIGURATION_ERROR` when the grant is made.
   * @default 'client_secret_basic' when a clientSecret is given, 'private_key_jwt' when a privateKey is, otherwise 'none'
   * @example
   * ```ts
   * clientCredentialsGrant({ tokenEndpoint, clientId: 'worker', clientAuthentication: 'private_key_jwt', privateKey: pem, keyId: 'key-1' })
   * ```
   */
  clientAuthentication?: ClientAuthentication | ClientAuthenticationMethod;
  /** The client's private key, for `private_key_jwt` (see {@link PrivateKeyInput}). */
  privateKey?: PrivateKeyInput;
  /**
   * The assertion's JWS algorithm, for `private_key_jwt` (RS256, ES256 or PS256).
   * @default the JWK's `alg` or the CryptoKey's own algorithm when they tell, otherwise 'RS256'
   */
  algorithm?: SigningAlgorithm;
  /** The key id, sent as `kid` in the assertion's header, for `private_key_jwt`. */
  keyId?: string;
}

/** What a {@link ClientAuthenticator} is given: the request, whose client id it knows. */
type AuthenticatorRequest = Omit<ClientAuthenticationRequest, 'clientId'>;

/** Adds the client's authentication to a request; returns every secret it put there, for redaction. */
export type ClientAuthenticator = (request: AuthenticatorRequest) => Promise<readonly string[]>;

/** A {@link ClientAuthenticator} for one method, which it names. */
export type MethodAuthenticator = ClientAuthenticator & { readonly method: ClientAuthentication };

/** RFC 6749 Appendix B: application/x-www-form-urlencoded, as URLSearchParams serialises it. */
const formEncode = (value: string) => new URLSearchParams([['', value]]).toString().slice(1);

/** The form parameters client authentication owns: `extraParams` may not set them. */
export const clientAuthenticationParams = ['client_id', 'client_secret', 'client_assertion', 'client_assertion_type'] as const;

/**
 * Checks the options (synchronously, `CONFIGURATION_ERROR` naming `who`) and returns the
 * authenticator.
 */
export function clientAuthenticator(options: ClientAuthenticationOptions, who: string): MethodAuthenticator {
  const { clientId, clientSecret, privateKey } = options;
  const configError = (message: string) => configurationError(`${who}: ${message}`);
  if (typeof clientId !== 'string' || clientId === '') throw configError('clientId is required');
  const named = options.clientAuthentication ?? (clientSecret ? 'client_secret_basic' : 'none');
  // 'private_key_jwt' and the key's options become the object privateKeyJwt makes (private-key-jwt-option.ts:
  // the default without a clientSecret; refused beside another method, and in a browser build).
  const chosen = named === 'private_key_jwt' || (privateKey ?? options.algorithm ?? options.keyId) !== undefined ? privateKeyJwtOption(options, who) : named;
  // Decided once: an object is made by privateKeyJwt, which sends no secret; a string names a method built here.
  if (typeof chosen === 'object') {
    if (clientSecret) throw configError(`clientSecret was given but clientAuthentication is "${chosen.method}"`);
    return Object.assign((request: AuthenticatorRequest) => chosen.authenticate({ ...request, clientId }), { method: chosen.method });
  }
  const usesSecret = chosen === 'client_secret_basic' || chosen === 'client_secret_post';
  if (!usesSecret && chosen !== 'none') throw configError(`unknown clientAuthentication "${String(chosen)}"`);
  if (usesSecret && !clientSecret) throw configError(`clientAuthentication "${chosen}" needs a clientSecret`);
  if (!usesSecret && clientSecret) throw configError(`clientSecret was given but clientAuthentication is "${chosen}"`);
  const secret = clientSecret ?? '';
  const credentials = `${formEncode(clientId)}:${formEncode(secret)}`;
  const authenticate: ClientAuthenticator = async ({ params, headers }) => {
    if (chosen === 'client_secret_basic') {
      headers.authorization = `Basic ${btoa(credentials)}`;
      return [secret, credentials];
    }
    params.set('client_id', clientId);
    if (chosen === 'none') return [];
    params.set('client_secret', secret);
    return [secret];
  };
  return Object.assign(authenticate, { method: chosen });
}
