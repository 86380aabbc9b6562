/*
 * Client authentication decides once what it was given: a method named by a string (built here, its
 * secret checked), 'private_key_jwt' with a privateKey (made by privateKeyJwt; the default when a
 * privateKey is given), or the object privateKeyJwt makes (which must come without a clientSecret).
 * The key's options (privateKey, algorithm, keyId) beside any other method are refused, not dropped.
 */
import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { clientAuthenticator, type ClientAuthenticationOptions } from './client-auth.js';
import { ErrorCode } from './errors.js';
import { privateKeyJwt } from './private-key-jwt.js';

const privateKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const endpoint = 'https://auth.example.test/oauth/token';

/** Runs the authenticator on an empty request and returns what it added and the secrets it named. */
async function authenticate(options: ClientAuthenticationOptions) {
  const params = new URLSearchParams();
  const headers: Record<string, string> = {};
  const secrets = await clientAuthenticator(options, 'test')({ endpoint, params, headers, clock: Date });
  return { params: Object.fromEntries(params), headers, secrets };
}

describe('client authentication', () => {
  it('names its method: the string given, the default, or private_key_jwt for privateKeyJwt', () => {
    expect(clientAuthenticator({ clientId: 'c', clientSecret: 's' }, 'test').method).toBe('client_secret_basic');
    expect(clientAuthenticator({ clientId: 'c', privateKey }, 'test').method).toBe('private_key_jwt');
    expect(clientAuthenticator({ clientId: 'c' }, 'test').method).toBe('none');
    expect(clientAuthenticator({ clientId: 'c', clientSecret: 's', clientAuthentication: 'client_secret_post' }, 'test').method).toBe('client_secret_post');
    expect(clientAuthenticator({ clientId: 'c', clientAuthentication: privateKeyJwt({ privateKey }) }, 'test').method).toBe('private_key_jwt');
    expect(clientAuthenticator({ clientId: 'c', clientAuthentication: 'private_key_jwt', privateKey }, 'test').method).toBe('private_key_jwt');
  });

  it('adds each method to the request and names what it sent as secrets', async () => {
    expect(await authenticate({ clientId: 'my app', clientSecret: 's e' })).toEqual({
      params: {},
      headers: { authorization: `Basic ${btoa('my+app:s+e')}` },
      secrets: ['s e', 'my+app:s+e'],
    });
    expect(await authenticate({ clientId: 'c', clientSecret: 's', clientAuthentication: 'client_secret_post' })).toEqual({
      params: { client_id: 'c', client_secret: 's' },
      headers: {},
      secrets: ['s'],
    });
    expect(await authenticate({ clientId: 'c' })).toEqual({ params: { client_id: 'c' }, headers: {}, secrets: [] });
    const signed = await authenticate({ clientId: 'c', clientAuthentication: privateKeyJwt({ privateKey }) });
    expect(signed.params).toMatchObject({ client_id: 'c', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer' });
    expect(signed.secrets[0]).toBe(signed.params.client_assertion);
    const named = await authenticate({ clientId: 'c', clientAuthentication: 'private_key_jwt', privateKey });
    expect(Object.keys(named.params)).toEqual(Object.keys(signed.params));
    expect(named.secrets[0]).toBe(named.params.client_assertion);
  });

  it.each([
    ['a clientSecret with privateKeyJwt', { clientId: 'c', clientSecret: 's', clientAuthentication: privateKeyJwt({ privateKey }) }, /clientSecret was given but clientAuthentication is "private_key_jwt"/],
    ['a clientSecret with none', { clientId: 'c', clientSecret: 's', clientAuthentication: 'none' as const }, /clientSecret was given but clientAuthentication is "none"/],
    ['client_secret_basic without a clientSecret', { clientId: 'c', clientAuthentication: 'client_secret_basic' as const }, /"client_secret_basic" needs a clientSecret/],
    ['an unknown name', { clientId: 'c', clientSecret: 's', clientAuthentication: 'client_secret_jwt' as never }, /unknown clientAuthentication "client_secret_jwt"/],
    ["'private_key_jwt' without a privateKey", { clientId: 'c', clientAuthentication: 'private_key_jwt' as const, keyId: 'k' }, /"private_key_jwt" needs a privateKey/],
    ['a privateKey with client_secret_basic', { clientId: 'c', clientSecret: 's', clientAuthentication: 'client_secret_basic' as const, privateKey }, /privateKey is for clientAuthentication: 'private_key_jwt'/],
    ['a privateKey with client_secret_post', { clientId: 'c', clientSecret: 's', clientAuthentication: 'client_secret_post' as const, privateKey }, /privateKey is for clientAuthentication: 'private_key_jwt'/],
    ['a privateKey beside privateKeyJwt', { clientId: 'c', clientAuthentication: privateKeyJwt({ privateKey }), privateKey }, /privateKey is for clientAuthentication: 'private_key_jwt'/],
    ['a keyId beside privateKeyJwt (no kid would be sent)', { clientId: 'c', clientAuthentication: privateKeyJwt({ privateKey }), keyId: 'k' }, /keyId is for clientAuthentication: 'private_key_jwt'/],
    ['a keyId with a clientSecret', { clientId: 'c', clientSecret: 's', keyId: 'k' }, /keyId is for clientAuthentication: 'private_key_jwt'/],
    ['an algorithm without a key', { clientId: 'c', algorithm: 'ES256' as const }, /"private_key_jwt" needs a privateKey/],
    ['both a privateKey and a clientSecret', { clientId: 'c', clientSecret: 's', clientAuthentication: 'private_key_jwt' as const, privateKey }, /clientSecret was given but clientAuthentication is "private_key_jwt"/],
    ['both a privateKey and a clientSecret, no method named', { clientId: 'c', clientSecret: 's', privateKey }, /privateKey is for clientAuthentication: 'private_key_jwt'/],
    ['a value that is neither a name nor an object', { clientId: 'c', clientAuthentication: 7 as never }, /unknown clientAuthentication "7"/],
  ])('refuses %s with CONFIGURATION_ERROR when it is made', (_name, options, message) => {
    expect(() => clientAuthenticator(options, 'test')).toThrow(message);
    expect(() => clientAuthenticator(options, 'test')).toThrow(expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR }));
  });
});
