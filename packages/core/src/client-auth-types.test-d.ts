/*
 * Type tests, checked by `tsc -p tsconfig.json`: clientAuthentication takes the method names built by
 * core, 'private_key_jwt' with a privateKey (issue 11's form), and the object privateKeyJwt makes. The
 * options are one plain interface per grant, so code extends, Omits, Picks and spreads them as any
 * options object; wrong combinations are CONFIGURATION_ERRORs when the grant is made (client-auth.test.ts).
 */
import { expectTypeOf, test } from 'vitest';
import type { ClientAuthentication, ClientAuthenticationMethod, ClientAuthenticationOptions } from './client-auth.js';
import { clientCredentialsGrant, jwtBearerGrant, type ClientCredentialsGrantOptions } from './credential-grants.js';
import { refreshTokenGrant, type RefreshTokenGrantOptions } from './grant.js';
import { privateKeyJwt } from './private-key-jwt.js';
import { revokeToken, type RevokeTokenOptions } from './revoke.js';

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

test('takes a privateKey alone (private_key_jwt by default) and a method held in a ClientAuthentication', () => {
  clientCredentialsGrant({ tokenEndpoint, clientId: 'worker', privateKey });
  const method = 'client_secret_post' as ClientAuthentication;
  const secret = 's' as string | undefined;
  clientCredentialsGrant({ tokenEndpoint, clientId: 'worker', clientAuthentication: method, clientSecret: secret });
  const fromConfig = { tokenEndpoint, clientId: 'worker', clientAuthentication: 'private_key_jwt', privateKey };
  // @ts-expect-error a string widened from a config object is no method name (as for any string union)
  clientCredentialsGrant(fromConfig);
});

test('options are plain interfaces: extended, Omitted, Picked, made Partial and spread', () => {
  interface RegionalOptions extends ClientCredentialsGrantOptions {
    region: string;
  }
  const regional = ({ region, ...options }: RegionalOptions) => clientCredentialsGrant({ ...options, scope: region });
  regional({ tokenEndpoint, clientId: 'worker', privateKey, keyId: 'k', region: 'eu' });
  const withFetch = (options: Omit<RefreshTokenGrantOptions, 'fetch'>) => refreshTokenGrant({ ...options, fetch });
  withFetch({ tokenEndpoint, clientId: 'app', clientAuthentication: 'private_key_jwt', privateKey });
  const withDefaults = (options: Partial<ClientCredentialsGrantOptions>) => clientCredentialsGrant({ tokenEndpoint, clientId: 'worker', ...options });
  withDefaults({ clientSecret: 's' });
  type Auth = Pick<ClientCredentialsGrantOptions, 'clientId' | 'clientSecret' | 'clientAuthentication' | 'privateKey'>;
  const fromAuth = (auth: Auth) => clientCredentialsGrant({ tokenEndpoint, ...auth });
  fromAuth({ clientId: 'worker', privateKey });
  const usesKey = Math.random() > 0.5;
  clientCredentialsGrant({ tokenEndpoint, clientId: 'worker', ...(usesKey ? { clientAuthentication: 'private_key_jwt' as const, privateKey } : { clientSecret: 's' }) });
  const revokeWith = ({ tokenEndpoint: _endpoint, scope: _scope, extraParams: _extra, ...client }: RefreshTokenGrantOptions, token: string) =>
    revokeToken({ ...client, revocationEndpoint: tokenEndpoint, token });
  void revokeWith({ tokenEndpoint, clientId: 'app', clientSecret: 's' }, 't');
  expectTypeOf<RevokeTokenOptions>().toMatchTypeOf<ClientAuthenticationOptions>();
});

test('refuses an object that claims another method', () => {
  const basicObject = { method: 'client_secret_basic' as const, authenticate: async () => [] };
  // @ts-expect-error the only method made as an object is private_key_jwt
  refreshTokenGrant({ tokenEndpoint, clientId: 'app', clientAuthentication: basicObject });
});

test('jwtBearerGrant takes the endpoint options every grant takes, extraParams too', () => {
  jwtBearerGrant({ tokenEndpoint, clientId: 'c', subject: 's', audience: 'a', privateKey, scope: ['api'], extraParams: { format: 'json' } });
});
