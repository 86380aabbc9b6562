/*
 * Client authentication at the token endpoint (RFC 6749 §2.3): one piece for every grant and for
 * revocation, so each method is built, checked and redacted the same way everywhere. The secret
 * methods live here; `private_key_jwt` (RFC 7523 §2.2) needs a signer that most apps never ship,
 * so it is an object made by `privateKeyJwt` of `@tokenrelay/core/grants` and passed in.
 */
import { configurationError, requireStringOptions } from './errors.js';
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
 * A client authentication made outside this entry: `privateKeyJwt({ privateKey })` of
 * `@tokenrelay/core/grants`, the one method whose maker lives elsewhere. Adds itself to the request
 * and returns every secret it put there, so that no error message can echo one.
 */
export interface ClientAuthenticationMethod {
  readonly method: 'private_key_jwt';
  authenticate(request: ClientAuthenticationRequest): Promise<readonly string[]>;
}

/** The client authentication options every grant (and `revokeToken`) takes. */
export interface ClientAuthenticationOptions {
  /** The OAuth client id. */
  clientId: string;
  /** The client secret of a confidential client (`client_secret_basic`, `client_secret_post`). */
  clientSecret?: string;
  /**
   * How the client authenticates: HTTP Basic (`client_secret_basic`, id and secret form-urlencoded
   * before base64 as RFC 6749 §2.3.1 requires), in the form body (`client_secret_post`), `client_id`
   * alone (`none`, public clients), or a JWT signed with the client's private key:
   * `privateKeyJwt({ privateKey })` from `@tokenrelay/core/grants` (`private_key_jwt`).
   * @default 'client_secret_basic' when a clientSecret is given, otherwise 'none'
   * @example
   * ```ts
   * import { privateKeyJwt } from '@tokenrelay/core/grants'
   * refreshTokenGrant({ tokenEndpoint, clientId: 'app', clientAuthentication: privateKeyJwt({ privateKey }) })
   * ```
   */
  clientAuthentication?: Exclude<ClientAuthentication, 'private_key_jwt'> | ClientAuthenticationMethod;
}

/** Adds the client's authentication to a request; returns every secret it put there, for redaction. */
export type ClientAuthenticator = (request: Omit<ClientAuthenticationRequest, 'clientId'>) => Promise<readonly string[]>;

/** A {@link ClientAuthenticator} for one method, which it names. */
export type MethodAuthenticator = ClientAuthenticator & { readonly method: ClientAuthentication };

/** The methods named by a string: those this entry builds itself. */
type NamedClientAuthentication = Exclude<ClientAuthentication, 'private_key_jwt'>;

/** RFC 6749 Appendix B: application/x-www-form-urlencoded, as URLSearchParams serialises it. */
const formEncode = (value: string) => new URLSearchParams([['', value]]).toString().slice(1);

/** The form parameters client authentication owns: `extraParams` may not set them. */
export const clientAuthenticationParams = ['client_id', 'client_secret', 'client_assertion', 'client_assertion_type'] as const;

/**
 * Checks the options (synchronously, `CONFIGURATION_ERROR` naming `who`) and returns the
 * authenticator.
 */
export function clientAuthenticator(options: ClientAuthenticationOptions, who: string): MethodAuthenticator {
  const { clientId, clientSecret } = options;
  const configError = (message: string) => configurationError(`${who}: ${message}`);
  requireStringOptions(who, { clientId });
  // Before 0.1.0 private_key_jwt took a `privateKey` option: point its users to the new form.
  if ((options as { privateKey?: unknown }).privateKey !== undefined || options.clientAuthentication === ('private_key_jwt' as string)) {
    throw configError('private_key_jwt is clientAuthentication: privateKeyJwt({ privateKey }) from @tokenrelay/core/grants');
  }
  const chosen = options.clientAuthentication ?? (clientSecret ? 'client_secret_basic' : 'none');
  // Decided once: an object is made by privateKeyJwt; anything else names a method built here.
  if (typeof chosen !== 'object') return Object.assign(namedAuthenticator(chosen, clientId, clientSecret, configError), { method: chosen });
  if (clientSecret) throw configError(`clientSecret was given but clientAuthentication is "${chosen.method}"`);
  const authenticate: ClientAuthenticator = (request) => chosen.authenticate({ ...request, clientId });
  return Object.assign(authenticate, { method: chosen.method });
}

/** The authenticator of a method named by a string: checks that the secret is there exactly when the method sends one. */
function namedAuthenticator(
  method: NamedClientAuthentication,
  clientId: string,
  clientSecret: string | undefined,
  configError: (message: string) => Error,
): ClientAuthenticator {
  if (method === 'none') {
    if (clientSecret) throw configError('clientSecret was given but clientAuthentication is "none"');
    return async ({ params }) => {
      params.set('client_id', clientId);
      return [];
    };
  }
  if (method !== 'client_secret_basic' && method !== 'client_secret_post') {
    throw configError(`unknown clientAuthentication "${String(method satisfies never)}"`);
  }
  if (!clientSecret) throw configError(`clientAuthentication "${method}" needs a clientSecret`);
  if (method === 'client_secret_post') {
    return async ({ params }) => {
      params.set('client_id', clientId);
      params.set('client_secret', clientSecret);
      return [clientSecret];
    };
  }
  const credentials = `${formEncode(clientId)}:${formEncode(clientSecret)}`;
  return async ({ headers }) => {
    headers.authorization = `Basic ${btoa(credentials)}`;
    return [clientSecret, credentials];
  };
}
