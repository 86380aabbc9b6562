/*
 * Type tests, checked by `tsc -p tsconfig.json`: clientAuthentication takes the method names built by
 * core, 'private_key_jwt' with a privateKey (issue 11's form), and the object privateKeyJwt makes; a
 * privateKey goes only with 'private_key_jwt', never with a clientSecret.
 */
import { expectTypeOf, test } from 'vitest';
import type { ClientAuthenticationMethod, ClientAuthenticationOptions } from './client-auth.js';
import { clientCredentialsGrant, jwtBearerGrant } from './credential-grants.js';
import { refreshTokenGrant } from './grant.js';
import { privateKeyJwt } from './private-key-jwt.js';
import { revokeToken } from './revoke.js';

const tokenEndpoint = 'https://auth.example.com/oauth/token';
const privateKey = '-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----';

test('privateKeyJwt makes the private_key_jwt method', () => {
  expectTypeOf(privateKeyJwt({ privateKey }).method).toEqualTypeOf<'private_key_jwt'>();
});

test('takes a method name, privateKeyJwt, or private_key_jwt with a privateKey', () => {
  for (const clientAuthentication of ['client_secret_basic', 'client_secret_post', 'none'] as const) {
    refreshTokenGrant({ tokenEndpoint, clientId: 'app', clientSecret: 's', clientAuthentication });
  }
  refreshTokenGrant({ tokenEndpoint, clientId: 'app', clientAuthentication: privateKeyJwt({ privateKey }) });
  refreshTokenGrant({ tokenEndpoint, clientId: 'app', clientAuthentication: 'private_key_jwt', privateKey, algorithm: 'ES256', keyId: 'k' });
  clientCredentialsGrant({ tokenEndpoint, clientId: 'app', clientAuthentication: 'private_key_jwt', privateKey });
  void revokeToken({ revocationEndpoint: tokenEndpoint, token: 't', clientId: 'app', clientAuthentication: 'private_key_jwt', privateKey, keyId: 'k' });
  expectTypeOf<ClientAuthenticationOptions['clientAuthentication']>().toEqualTypeOf<
    'client_secret_basic' | 'client_secret_post' | 'private_key_jwt' | 'none' | ClientAuthenticationMethod | undefined
  >();
});

test('refuses a privateKey without private_key_jwt or beside a clientSecret, and private_key_jwt without a key', () => {
  // @ts-expect-error a privateKey goes with clientAuthentication: 'private_key_jwt'
  refreshTokenGrant({ tokenEndpoint, clientId: 'app', privateKey });
  // @ts-expect-error a privateKey goes with clientAuthentication: 'private_key_jwt'
  clientCredentialsGrant({ tokenEndpoint, clientId: 'app', clientSecret: 's', clientAuthentication: 'client_secret_basic', privateKey });
  // @ts-expect-error no clientSecret with private_key_jwt
  clientCredentialsGrant({ tokenEndpoint, clientId: 'app', clientSecret: 's', clientAuthentication: 'private_key_jwt', privateKey });
  // @ts-expect-error private_key_jwt needs a privateKey
  refreshTokenGrant({ tokenEndpoint, clientId: 'app', clientAuthentication: 'private_key_jwt' });
  // @ts-expect-error the key is given once: in privateKeyJwt, not beside it as well
  refreshTokenGrant({ tokenEndpoint, clientId: 'app', clientAuthentication: privateKeyJwt({ privateKey }), privateKey });
  const basicObject = { method: 'client_secret_basic' as const, authenticate: async () => [] };
  // @ts-expect-error the only method made as an object is private_key_jwt
  refreshTokenGrant({ tokenEndpoint, clientId: 'app', clientAuthentication: basicObject });
});

test('jwtBearerGrant takes the endpoint options every grant takes, extraParams too', () => {
  jwtBearerGrant({ tokenEndpoint, clientId: 'c', subject: 's', audience: 'a', privateKey, scope: ['api'], extraParams: { format: 'json' } });
});
