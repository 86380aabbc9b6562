/*
 * `clientAuthentication: 'private_key_jwt'` with a privateKey, in the full build (the object
 * privateKeyJwt makes) and in the browser build (refused: a browser app is a public client).
 */
import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from './errors.js';
import { privateKeyJwtOption as inBrowserBuild } from './private-key-jwt-option.browser.js';
import { privateKeyJwtOption } from './private-key-jwt-option.js';

const privateKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const options = { clientId: 'app', clientAuthentication: 'private_key_jwt', privateKey, algorithm: 'ES256', keyId: 'k' } as const;

describe("'private_key_jwt' with a privateKey", () => {
  it('is the private_key_jwt method in the full build, adding a signed client assertion', async () => {
    const method = privateKeyJwtOption(options, 'refreshTokenGrant');
    expect(method.method).toBe('private_key_jwt');
    const params = new URLSearchParams();
    const secrets = await method.authenticate({ clientId: 'app', endpoint: 'https://auth.example.test/token', params, headers: {}, clock: Date });
    expect(params.get('client_id')).toBe('app');
    expect(JSON.parse(Buffer.from(params.get('client_assertion')?.split('.')[0] ?? '', 'base64url').toString())).toEqual({ alg: 'ES256', typ: 'JWT', kid: 'k' });
    expect(secrets).toContain(params.get('client_assertion'));
  });

  it('is refused in the browser build with CONFIGURATION_ERROR pointing to privateKeyJwt, so no signer is bundled for it', () => {
    const refusal = (() => {
      try {
        return inBrowserBuild(options, 'refreshTokenGrant');
      } catch (error) {
        return error;
      }
    })();
    expect(refusal).toMatchObject({ code: ErrorCode.CONFIGURATION_ERROR });
    expect((refusal as Error).message).toMatch(/^refreshTokenGrant: in a browser, use privateKeyJwt\(\{ privateKey, algorithm, keyId \}\)/);
    expect((refusal as Error).message).not.toContain('PRIVATE KEY');
  });
});
