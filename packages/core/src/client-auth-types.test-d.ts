/*
 * Type tests, checked by `tsc -p tsconfig.json`: clientAuthentication takes the method names built by
 * core and the object privateKeyJwt makes, and an object is typed as narrowly as privateKeyJwt makes it.
 */
import { expectTypeOf, test } from 'vitest';
import type { ClientAuthenticationMethod, ClientAuthenticationOptions } from './client-auth.js';
import { jwtBearerGrant } from './credential-grants.js';
import { refreshTokenGrant } from './grant.js';
import { privateKeyJwt } from './private-key-jwt.js';

const tokenEndpoint = 'https://auth.example.com/oauth/token';
const privateKey = '-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----';

test('privateKeyJwt makes the private_key_jwt method', () => {
  expectTypeOf(privateKeyJwt({ privateKey }).method).toEqualTypeOf<'private_key_jwt'>();
});

test('takes a method name or privateKeyJwt, as before', () => {
  for (const clientAuthentication of ['client_secret_basic', 'client_secret_post', 'none'] as const) {
    refreshTokenGrant({ tokenEndpoint, clientId: 'app', clientSecret: 's', clientAuthentication });
  }
  refreshTokenGrant({ tokenEndpoint, clientId: 'app', clientAuthentication: privateKeyJwt({ privateKey }) });
  expectTypeOf<ClientAuthenticationOptions['clientAuthentication']>().toEqualTypeOf<
    'client_secret_basic' | 'client_secret_post' | 'none' | ClientAuthenticationMethod | undefined
  >();
});

test('refuses private_key_jwt as a name and an object that claims another method', () => {
  // @ts-expect-error private_key_jwt is privateKeyJwt({ privateKey })
  refreshTokenGrant({ tokenEndpoint, clientId: 'app', clientAuthentication: 'private_key_jwt' });
  const basicObject = { method: 'client_secret_basic' as const, authenticate: async () => [] };
  // @ts-expect-error the only method made as an object is private_key_jwt
  refreshTokenGrant({ tokenEndpoint, clientId: 'app', clientAuthentication: basicObject });
});

test('jwtBearerGrant takes the endpoint options every grant takes, extraParams too', () => {
  jwtBearerGrant({ tokenEndpoint, clientId: 'c', subject: 's', audience: 'a', privateKey, scope: ['api'], extraParams: { format: 'json' } });
});
