/*
 * A real OpenID Provider (panva's oidc-provider, certified) on 127.0.0.1 for the interop tests,
 * with refresh-token rotation, introspection and revocation on, DPoP nonces required of every proof
 * and a public client whose tokens must be DPoP-bound, plus a small protected resource that checks
 * every bearer at the provider's introspection endpoint (RFC 7662).
 *
 * signIn() drives a real authorization-code login over HTTP, as a browser would: it follows the
 * redirects with a cookie jar, fills in the provider's development login and consent forms, and
 * exchanges the code (with PKCE) for tokens.
 */
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ClientAuthentication, TokenSet } from '@tokenrelay/core';
import Provider, { type Configuration } from 'oidc-provider';
import { createMemoryAdapter } from 'oidc-provider/lib/adapters/memory_adapter.js';

/** A client registered at the provider. */
export interface OidcClient {
  readonly clientId: string;
  readonly clientSecret?: string;
  readonly authMethod: ClientAuthentication;
}

/** The three clients the interop tests sign in with: one per secret-or-none client authentication method. */
export const oidcClients: readonly (OidcClient & { readonly authMethod: Exclude<ClientAuthentication, 'private_key_jwt'> })[] = [
  { clientId: 'confidential-basic', clientSecret: 'basic secret: with reserved+chars', authMethod: 'client_secret_basic' },
  { clientId: 'confidential-post', clientSecret: 'post-secret-0123456789', authMethod: 'client_secret_post' },
  { clientId: 'public-spa', authMethod: 'none' },
];

/** The private key of the `private_key_jwt` machine client (its public half is registered at the provider). */
const machineKeys = generateKeyPairSync('rsa', { modulusLength: 2048 });
export const machineClientPrivateKey = machineKeys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

/** A public client whose tokens must be DPoP-bound (`dpop_bound_access_tokens`): its refresh tokens are bound to the key. */
export const dpopClient: OidcClient = { clientId: 'public-dpop', authMethod: 'none' };

/** Clients for the client credentials grant: one with a secret, one with private_key_jwt. */
export const machineClients: readonly OidcClient[] = [
  { clientId: 'machine-basic', clientSecret: 'machine secret: with reserved+chars', authMethod: 'client_secret_basic' },
  { clientId: 'machine-jwt', authMethod: 'private_key_jwt' },
];

/** The protected resource's own confidential client, used only to call introspection. */
const resourceServerClient: OidcClient = {
  clientId: 'protected-resource',
  clientSecret: 'resource-server-secret',
  authMethod: 'client_secret_basic',
};

const redirectUri = 'http://127.0.0.1/callback';
const accountId = 'alice';
/** Redirects and form posts of one login; the dev interactions need about eight. */
const maxLoginHops = 16;

/** The tokens of a sign-in: the provider always returns a refresh token (offline_access) and expires_in. */
export type SignedInTokens = TokenSet & { refreshToken: string; expiresAt: number };

/** A running provider. */
export interface OidcServer {
  readonly issuer: string;
  readonly tokenEndpoint: string;
  readonly introspectionEndpoint: string;
  /**
   * Logs in as `alice` with the authorization-code flow (+ PKCE) and returns the client's tokens.
   * The code is exchanged through `tokenFetch` (a DPoP client's `dpop.fetch`, so the tokens are bound).
   */
  signIn(client: OidcClient, tokenFetch?: typeof fetch): Promise<SignedInTokens>;
  /**
   * Replaces the DPoP nonce secret, as a provider restarted with a new one: every nonce a client
   * holds is refused from now on (\`use_dpop_nonce\`). Sessions, grants and tokens are kept.
   */
  rotateDpopNonceSecret(): void;
  /** Every token-endpoint answer so far, in order: the grant type and the OAuth error, if any. */
  readonly grants: readonly TokenEndpointOutcome[];
  /** Introspects an access token (RFC 7662) as the protected resource: the provider's JSON answer. */
  introspect(accessToken: string): Promise<{ active?: unknown; cnf?: { jkt?: unknown } }>;
  /** Revokes a token at the revocation endpoint (RFC 7009), authenticated as `client`. */
  revoke(client: OidcClient, token: string, hint: 'refresh_token' | 'access_token'): Promise<void>;
  /** A raw refresh-token grant, outside tokenrelay: the status and OAuth error the provider answers. */
  rawRefresh(client: OidcClient, refreshToken: string): Promise<{ status: number; error: string | undefined }>;
  close(): Promise<void>;
}

/** One answer of the provider's token endpoint. */
export interface TokenEndpointOutcome {
  readonly grantType: string | undefined;
  /** The refresh token presented, if any. */
  readonly refreshToken: string | undefined;
  readonly error: string | undefined;
}

let signingKey: Record<string, unknown> | undefined;

/** One RSA key for the whole run: ID tokens are RS256 by default, and RSA key generation is slow. */
function providerJwks(): { keys: Array<Record<string, unknown>> } {
  signingKey ??= {
    ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
    use: 'sig',
    kid: 'interop-test',
  };
  return { keys: [signingKey] };
}

const base64url = (bytes: Buffer) => bytes.toString('base64url');
/** RFC 6749 Appendix B, as URLSearchParams serialises a value. */
const formEncode = (value: string) => new URLSearchParams([['', value]]).toString().slice(1);

/** Adds `client`'s credentials to a token, revocation or introspection request, by its method. */
function authenticate(client: OidcClient, body: URLSearchParams, headers: Record<string, string>): void {
  if (client.authMethod === 'client_secret_basic') {
    const credentials = `${formEncode(client.clientId)}:${formEncode(client.clientSecret ?? '')}`;
    headers.authorization = `Basic ${Buffer.from(credentials).toString('base64')}`;
    return;
  }
  body.set('client_id', client.clientId);
  if (client.authMethod === 'client_secret_post') body.set('client_secret', client.clientSecret ?? '');
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

async function postForm(url: string, client: OidcClient, params: Record<string, string>, send: typeof fetch = fetch): Promise<Response> {
  const body = new URLSearchParams(params);
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
  authenticate(client, body, headers);
  return send(url, { method: 'POST', body, headers, redirect: 'error' });
}

/** A cookie jar just good enough for the provider's interaction cookies: name, path, deletion. */
class CookieJar {
  private readonly cookies = new Map<string, { name: string; value: string; path: string }>();

  store(setCookies: readonly string[]): void {
    for (const line of setCookies) {
      const [pair = '', ...attributes] = line.split(';').map((part) => part.trim());
      const separator = pair.indexOf('=');
      const name = pair.slice(0, separator);
      const value = pair.slice(separator + 1);
      const attribute = (key: string) =>
        attributes.find((part) => part.toLowerCase().startsWith(`${key}=`))?.slice(key.length + 1);
      const path = attribute('path') ?? '/';
      const expires = attribute('expires');
      const key = `${name} ${path}`;
      if (value === '' || (expires !== undefined && Date.parse(expires) <= Date.now())) this.cookies.delete(key);
      else this.cookies.set(key, { name, value, path });
    }
  }

  header(url: URL): string {
    return [...this.cookies.values()]
      .filter((cookie) => url.pathname === cookie.path || url.pathname.startsWith(cookie.path.endsWith('/') ? cookie.path : `${cookie.path}/`))
      .map((cookie) => `${cookie.name}=${cookie.value}`)
      .join('; ');
  }
}

const decodeHtml = (text: string) =>
  text.replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');

/** The post form of a dev-interactions page: its action and its hidden fields. */
function parseForm(html: string): { action: string; fields: URLSearchParams } {
  const action = /<form[^>]*action="([^"]+)"[^>]*method="post"/.exec(html)?.[1];
  if (!action) throw new Error(`no form on the interaction page: ${html.slice(0, 300)}`);
  const fields = new URLSearchParams();
  for (const [, name = '', value = ''] of html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)"/g)) {
    fields.set(name, decodeHtml(value));
  }
  return { action: decodeHtml(action), fields };
}

/**
 * Starts the provider on an ephemeral 127.0.0.1 port. Access tokens live `accessTokenTtlSeconds`,
 * every refresh rotates the refresh token, and offline_access is granted on consent.
 */
export async function startOidcServer(options: { accessTokenTtlSeconds: number }): Promise<OidcServer> {
  const httpServer = createServer();
  const issuer = await listen(httpServer);
  const grants: TokenEndpointOutcome[] = [];
  // One in-memory store for every provider of this server: a provider made anew keeps every session and token.
  const adapter = createMemoryAdapter();
  const createProvider = (dpopNonceSecret: Buffer) => {
    const provider = new Provider(issuer, configuration(dpopNonceSecret));
    const params = (ctx: unknown) => (ctx as { oidc?: { params?: { grant_type?: string; refresh_token?: string } } }).oidc?.params;
    const outcome = (ctx: unknown, error: string | undefined) => ({ grantType: params(ctx)?.grant_type, refreshToken: params(ctx)?.refresh_token, error });
    provider.on('grant.success', (ctx) => grants.push(outcome(ctx, undefined)));
    provider.on('grant.error', (ctx, error) => grants.push(outcome(ctx, (error as { error?: string }).error)));
    return provider;
  };
  const configuration = (dpopNonceSecret: Buffer): Configuration => ({
    adapter,
    clients: [...oidcClients, dpopClient, ...machineClients, resourceServerClient].map((client) => ({
      client_id: client.clientId,
      ...(client.clientSecret === undefined ? {} : { client_secret: client.clientSecret }),
      token_endpoint_auth_method: client.authMethod,
      ...(client.authMethod === 'private_key_jwt'
        ? { jwks: { keys: [{ ...machineKeys.publicKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256' }] } }
        : {}),
      ...(client === resourceServerClient
        ? { redirect_uris: [], grant_types: [], response_types: [] }
        : machineClients.includes(client)
          ? { redirect_uris: [], grant_types: ['client_credentials'], response_types: [] }
          : { redirect_uris: [redirectUri], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'] }),
      ...(client === dpopClient ? { dpop_bound_access_tokens: true } : {}),
    })),
    findAccount: (_ctx, id) => ({ accountId: id, claims: () => ({ sub: id }) }),
    jwks: providerJwks(),
    cookies: { keys: [randomBytes(32).toString('hex')] },
    // Server-to-server only: no browser origin may call the provider cross-origin.
    clientBasedCORS: () => false,
    // Rotation on every refresh, for confidential clients too (the default waits for 70 % of the TTL).
    rotateRefreshToken: true,
    // PKCE for every client, not only public ones (OAuth 2.1).
    pkce: { required: () => true },
    ttl: {
      AccessToken: options.accessTokenTtlSeconds,
      RefreshToken: 24 * 3600,
      Grant: 24 * 3600,
      Session: 3600,
      Interaction: 600,
      IdToken: 3600,
      // The client-credentials tests never wait for an expiry.
      ClientCredentials: 3600,
    },
    features: {
      devInteractions: { enabled: true },
      // Nonces required of every proof (RFC 9449 §8), replays refused.
      dPoP: { enabled: true, nonceSecret: dpopNonceSecret, requireNonce: () => true, allowReplay: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: () => true },
      // Each client revokes its own tokens only (a public one included: it has no secret to prove more).
      revocation: {
        enabled: true,
        allowedPolicy: (ctx, client, token) =>
          (client as { clientId: string }).clientId === (token as { clientId: string }).clientId,
      },
    },
  });
  let handle = createProvider(randomBytes(32)).callback();
  httpServer.on('request', (request: IncomingMessage, response: ServerResponse) => handle(request, response));
  const tokenEndpoint = `${issuer}/token`;

  async function signIn(client: OidcClient, tokenFetch?: typeof fetch): Promise<SignedInTokens> {
    const jar = new CookieJar();
    const verifier = base64url(randomBytes(32));
    const state = base64url(randomBytes(16));
    let url = new URL(`${issuer}/auth`);
    url.search = new URLSearchParams({
      client_id: client.clientId,
      redirect_uri: redirectUri,
      response_type: 'code',
      // offline_access (a refresh token) is granted only with prompt=consent (OpenID Connect Core §11).
      scope: 'openid offline_access',
      prompt: 'consent',
      state,
      code_challenge: base64url(createHash('sha256').update(verifier).digest()),
      code_challenge_method: 'S256',
    }).toString();
    let form: URLSearchParams | undefined;
    let code: string | undefined;
    for (let hop = 0; hop < maxLoginHops && code === undefined; hop++) {
      const headers: Record<string, string> = { cookie: jar.header(url) };
      if (form) headers['content-type'] = 'application/x-www-form-urlencoded';
      const response = await fetch(url, { method: form ? 'POST' : 'GET', body: form, headers, redirect: 'manual' });
      jar.store(response.headers.getSetCookie());
      form = undefined;
      const location = response.headers.get('location');
      if (response.status >= 300 && response.status < 400 && location) {
        const next = new URL(location, url);
        if (next.href.startsWith(redirectUri)) {
          if (next.searchParams.get('state') !== state) throw new Error('the provider returned another state');
          const error = next.searchParams.get('error');
          if (error) throw new Error(`the authorization failed: ${error} ${next.searchParams.get('error_description') ?? ''}`);
          code = next.searchParams.get('code') ?? '';
        }
        url = next;
        continue;
      }
      const page = await response.text();
      if (response.status !== 200) throw new Error(`HTTP ${response.status} at ${url.pathname}: ${page.slice(0, 300)}`);
      // A login or consent page of the dev interactions: submit it as the user would.
      const { action, fields } = parseForm(page);
      if (fields.get('prompt') === 'login') {
        fields.set('login', accountId);
        fields.set('password', 'any password: dev interactions accept any');
      }
      url = new URL(action, url);
      form = fields;
    }
    if (!code) throw new Error(`no authorization code after ${maxLoginHops} redirects and forms`);

    const startedAt = Date.now();
    const response = await postForm(
      tokenEndpoint,
      client,
      { grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier },
      tokenFetch,
    );
    const json = (await response.json()) as Record<string, unknown>;
    if (response.status !== 200 || typeof json.access_token !== 'string' || typeof json.refresh_token !== 'string') {
      throw new Error(`the code exchange failed: HTTP ${response.status} ${String(json.error)}`);
    }
    const { access_token, refresh_token, expires_in, token_type, scope, ...raw } = json;
    return {
      accessToken: access_token,
      refreshToken: refresh_token,
      expiresAt: startedAt + Number(expires_in) * 1000,
      tokenType: String(token_type),
      scope: String(scope),
      raw,
    };
  }

  return {
    issuer,
    tokenEndpoint,
    introspectionEndpoint: `${issuer}/token/introspection`,
    signIn,
    grants,
    async introspect(accessToken) {
      const response = await postForm(`${issuer}/token/introspection`, resourceServerClient, { token: accessToken, token_type_hint: 'access_token' });
      if (response.status !== 200) throw new Error(`introspection failed: HTTP ${response.status}`);
      return (await response.json()) as { active?: unknown; cnf?: { jkt?: unknown } };
    },
    rotateDpopNonceSecret() {
      handle = createProvider(randomBytes(32)).callback();
    },
    async revoke(client, token, hint) {
      const response = await postForm(`${issuer}/token/revocation`, client, { token, token_type_hint: hint });
      if (response.status !== 200) throw new Error(`revocation failed: HTTP ${response.status} ${await response.text()}`);
    },
    async rawRefresh(client, refreshToken) {
      const response = await postForm(tokenEndpoint, client, { grant_type: 'refresh_token', refresh_token: refreshToken });
      const json = (await response.json()) as { error?: unknown };
      return { status: response.status, error: typeof json.error === 'string' ? json.error : undefined };
    },
    close: () => closeServer(httpServer),
  };
}

/** One request the protected resource received. */
export interface ResourceRequest {
  readonly accessToken: string | undefined;
  readonly status: number;
}

/** A protected resource that accepts a bearer only if the provider's introspection says it is active. */
export interface ProtectedResource {
  readonly url: string;
  readonly requests: readonly ResourceRequest[];
  close(): Promise<void>;
}

/** Starts the protected resource on 127.0.0.1, validating tokens at `server`'s introspection endpoint. */
export async function startProtectedResource(server: OidcServer): Promise<ProtectedResource> {
  const requests: ResourceRequest[] = [];
  const isActive = async (accessToken: string) => (await server.introspect(accessToken).catch(() => ({ active: false }))).active === true;
  const answer = async (request: IncomingMessage, response: ServerResponse) => {
    const accessToken = /^Bearer (.+)$/.exec(request.headers.authorization ?? '')?.[1];
    const active = accessToken !== undefined && (await isActive(accessToken));
    const status = active ? 200 : 401;
    requests.push({ accessToken, status });
    if (!active) response.setHeader('www-authenticate', 'Bearer realm="interop", error="invalid_token"');
    response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: active }));
  };
  const httpServer = createServer((request, response) => {
    answer(request, response).catch(() => response.writeHead(502).end());
  });
  const url = await listen(httpServer);
  return { url, requests, close: () => closeServer(httpServer) };
}
