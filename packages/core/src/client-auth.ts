/*
 * Client authentication at the token endpoint (RFC 6749 §2.3, RFC 7523 §2.2): one piece for every
 * grant and for revocation, so each method is built, checked and redacted the same way everywhere.
 */
import { configurationError } from './errors.js';
import { assertionClaims, assertionSigner, type AssertionSigningOptions, type PrivateKeyInput, type SigningAlgorithm } from './jwt.js';
import type { Clock } from './types.js';

/**
 * How the client proves its identity to the token endpoint: HTTP Basic (`client_secret_basic`),
 * the form body (`client_secret_post`), a JWT signed with its private key (`private_key_jwt`,
 * RFC 7523 §2.2), or `client_id` alone (`none`, public clients).
 */
export type ClientAuthentication = 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt' | 'none';

/** The client authentication options every grant (and `revokeToken`) takes. */
export interface ClientAuthenticationOptions {
  /** The OAuth client id. */
  clientId: string;
  /** The client secret of a confidential client (`client_secret_basic`, `client_secret_post`). */
  clientSecret?: string;
  /**
   * How the client authenticates: HTTP Basic (`client_secret_basic`, id and secret form-urlencoded
   * before base64 as RFC 6749 §2.3.1 requires), in the form body (`client_secret_post`), with a
   * JWT signed by `privateKey` (`private_key_jwt`: `iss` = `sub` = clientId, `aud` = the endpoint
   * URL, a fresh `jti`, 2 minutes of life), or `client_id` alone (`none`, public clients).
   * @default 'client_secret_basic' when a clientSecret is given, 'private_key_jwt' when a
   * privateKey is given, otherwise 'none'
   */
  clientAuthentication?: ClientAuthentication;
  /** `private_key_jwt` only: the key the client assertion is signed with (PEM PKCS#8, JWK or CryptoKey). */
  privateKey?: PrivateKeyInput;
  /**
   * `private_key_jwt` only: the signing algorithm.
   * @default the key's own when a JWK `alg` or a CryptoKey tells it, otherwise 'RS256'
   */
  algorithm?: SigningAlgorithm;
  /** `private_key_jwt` only: the key id, sent as `kid`. */
  keyId?: string;
}

/** Adds the client's authentication to a request; returns every secret it put there, for redaction. */
export type ClientAuthenticator = (
  request: { endpoint: string; params: URLSearchParams; headers: Record<string, string> },
  clock: Clock,
) => Promise<string[]>;

/** A {@link ClientAuthenticator} for one method, which it names. */
export type MethodAuthenticator = ClientAuthenticator & { readonly method: ClientAuthentication };

const methods: readonly ClientAuthentication[] = ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'];

/** RFC 6749 Appendix B: application/x-www-form-urlencoded, as URLSearchParams serialises it. */
const formEncode = (value: string) => new URLSearchParams([['', value]]).toString().slice(1);

/** The form parameters client authentication owns: `extraParams` may not set them. */
export const clientAuthenticationParams = ['client_id', 'client_secret', 'client_assertion', 'client_assertion_type'] as const;

/**
 * Checks the options (synchronously, `CONFIGURATION_ERROR` naming `who`) and returns the
 * authenticator.
 */
export function clientAuthenticator(options: ClientAuthenticationOptions, who: string): MethodAuthenticator {
  const authenticate = authenticatorFor(options, who);
  return Object.assign(authenticate.run, { method: authenticate.method });
}

function authenticatorFor(options: ClientAuthenticationOptions, who: string): { method: ClientAuthentication; run: ClientAuthenticator } {
  const { clientId, clientSecret, privateKey } = options;
  const configError = (message: string) => configurationError(`${who}: ${message}`);
  if (typeof clientId !== 'string' || clientId === '') throw configError('clientId is required');
  const method =
    options.clientAuthentication ??
    (clientSecret ? 'client_secret_basic' : privateKey !== undefined ? 'private_key_jwt' : 'none');
  if (!methods.includes(method)) throw configError(`unknown clientAuthentication "${String(method)}"`);
  const usesSecret = method === 'client_secret_basic' || method === 'client_secret_post';
  if (usesSecret && !clientSecret) throw configError(`clientAuthentication "${method}" needs a clientSecret`);
  if (!usesSecret && clientSecret) throw configError(`clientSecret was given but clientAuthentication is "${method}"`);
  if (method === 'private_key_jwt' && privateKey === undefined) throw configError('clientAuthentication "private_key_jwt" needs a privateKey');
  if (method !== 'private_key_jwt' && privateKey !== undefined) {
    throw configError(`privateKey was given but clientAuthentication is "${method}"`);
  }

  switch (method) {
    case 'client_secret_basic': {
      const credentials = `${formEncode(clientId)}:${formEncode(clientSecret ?? '')}`;
      const authorization = `Basic ${btoa(credentials)}`;
      const run: ClientAuthenticator = async ({ headers }) => {
        headers.authorization = authorization;
        return [clientSecret ?? '', credentials];
      };
      return { method, run };
    }
    case 'client_secret_post':
      return {
        method,
        run: async ({ params }) => {
          params.set('client_id', clientId);
          params.set('client_secret', clientSecret ?? '');
          return [clientSecret ?? ''];
        },
      };
    case 'private_key_jwt': {
      const sign = assertionSigner(options as AssertionSigningOptions, who);
      const run: ClientAuthenticator = async ({ endpoint, params }, clock) => {
        const assertion = await sign(assertionClaims({ iss: clientId, sub: clientId, aud: endpoint }, clock));
        params.set('client_id', clientId);
        params.set('client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
        params.set('client_assertion', assertion);
        return [assertion, ...assertion.split('.')];
      };
      return { method, run };
    }
    case 'none':
      return {
        method,
        run: async ({ params }) => {
          params.set('client_id', clientId);
          return [];
        },
      };
  }
}
