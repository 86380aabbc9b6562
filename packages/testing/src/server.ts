import { createHash, createPublicKey, type JsonWebKeyInput } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { createServer, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TokenSet } from '@tokenrelay/core';
import { JtiRegistry, checkAssertion, peekClaims } from './assertions.js';
import { checkClient, readPresentedClient, type PresentedClient } from './client-auth.js';
import { DpopNonces } from './dpop-nonces.js';
import { DPOP_ALGORITHMS, verifyDpopProof, type DpopProofCheck } from './dpop-proof.js';
import { answerFor, normalizeFailure, type InjectedFailure } from './failures.js';
import { isLoopbackUrl } from './loopback.js';
import {
  BodyTooLargeError,
  JSON_TYPE,
  RequestAbortedError,
  mediaType,
  preflightHeaders,
  readBody,
  send,
  sendJson,
} from './http.js';
import {
  INVALID_SESSION_BODY,
  SALESFORCE_JSON,
  identityUrl,
  salesforceFixtures,
  salesforceRest,
  salesforceSignature,
} from './salesforce.js';
import { StatsRecorder, type TokenRequestEntry } from './stats.js';
import { TokenRegistry, opaqueToken, type AccessTokenCheck, type GrantFamily, type RefreshTokenCheck } from './token-registry.js';
import type {
  ClientAuthenticationMethod,
  DpopServerOptions,
  IssueOptions,
  OAuthClient,
  OAuthServer,
  OAuthServerMode,
  OAuthServerOptions,
  OAuthServerStats,
  TokenEndpointFailure,
} from './types.js';

/**
 * The client a server knows when `options.clients` is not given: a confidential client that
 * authenticates with HTTP Basic.
 */
export const defaultClient: Readonly<OAuthClient> = Object.freeze({
  clientId: 'tokenrelay-demo',
  clientSecret: 'tokenrelay-demo-secret',
  authMethod: 'client_secret_basic',
});

const HOST = '127.0.0.1';
const REALM = 'tokenrelay-testing';
const TOKEN_BODY_LIMIT = 64 * 1024;
const API_BODY_LIMIT = 10 * 1024 * 1024;
/** Upper bound of the API's `?delayMs=`, so a test cannot park a request for long. */
export const MAX_API_DELAY_MS = 30_000;

interface ServerConfig {
  readonly accessTokenTtlMs: number;
  readonly refreshTokenTtlMs: number | undefined;
  readonly rotateRefreshTokens: boolean;
  readonly reuseDetection: boolean;
  readonly tokenEndpointLatencyMs: number;
  readonly clients: readonly OAuthClient[];
  readonly mode: OAuthServerMode;
  readonly port: number;
  readonly requestLogLimit: number;
  readonly dpop: DpopConfig | undefined;
}

interface DpopConfig {
  readonly required: boolean;
  readonly nonces: DpopNonces | undefined;
  readonly maxProofAgeSeconds: number;
  readonly spendRefreshTokenBeforeNonceCheck: boolean;
}

const authMethods: readonly ClientAuthenticationMethod[] = ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'];

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

/** Salesforce keeps at most this many token pairs per user and app; a new one revokes the oldest. */
const SALESFORCE_TOKEN_PAIRS_PER_USER_AND_APP = 5;

/** Salesforce accepts JWT bearer assertions whose exp is at most 3 minutes ahead; RFC 7523 servers commonly 5. */
const maxAssertionLifetimeSeconds = { standard: 300, salesforce: 180 } as const;

/** The subject of `issue()` sign-ins in standard mode. */
const STANDARD_SUBJECT = 'demo-user';

function option(value: number | undefined, name: string, fallback: number, check: (n: number) => boolean, rule: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || !check(value)) {
    throw new RangeError(`startOAuthServer: ${name} must be ${rule}, got ${String(value)}`);
  }
  return value;
}

const isPositive = (n: number) => n > 0;
const isNonNegative = (n: number) => n >= 0;
const positiveSeconds = 'a positive number of seconds';

function resolveClients(clients: readonly OAuthClient[] | undefined): readonly OAuthClient[] {
  if (clients === undefined) return [defaultClient];
  if (!Array.isArray(clients) || clients.length === 0) throw new TypeError('startOAuthServer: clients must be a non-empty array');
  const seen = new Set<string>();
  return clients.map((client: OAuthClient) => {
    const { clientId, clientSecret, authMethod } = client;
    if (typeof clientId !== 'string' || clientId === '') throw new TypeError('startOAuthServer: every client needs a clientId');
    if (seen.has(clientId)) throw new TypeError(`startOAuthServer: client "${clientId}" is listed twice`);
    seen.add(clientId);
    if (!authMethods.includes(authMethod)) {
      throw new TypeError(`startOAuthServer: client "${clientId}" has an unknown authMethod "${String(authMethod)}"`);
    }
    if ((authMethod === 'client_secret_basic' || authMethod === 'client_secret_post') && (typeof clientSecret !== 'string' || clientSecret === '')) {
      throw new TypeError(`startOAuthServer: client "${clientId}" uses ${authMethod} and needs a clientSecret`);
    }
    if (authMethod === 'private_key_jwt' && client.publicKey === undefined) {
      throw new TypeError(`startOAuthServer: client "${clientId}" uses private_key_jwt and needs a publicKey`);
    }
    if (client.publicKey !== undefined) {
      try {
        const { publicKey } = client;
        if (typeof publicKey === 'string') createPublicKey(publicKey);
        else createPublicKey({ key: publicKey as JsonWebKeyInput['key'], format: 'jwk' });
      } catch {
        throw new TypeError(`startOAuthServer: the publicKey of client "${clientId}" is not a PEM public key, certificate or JWK`);
      }
    }
    return Object.freeze({ ...client });
  });
}

function resolveDpop(dpop: boolean | DpopServerOptions | undefined, mode: OAuthServerMode): DpopConfig | undefined {
  if (dpop === undefined || dpop === false) return undefined;
  if (mode === 'salesforce') throw new TypeError('startOAuthServer: Salesforce mode has no DPoP');
  const settings: DpopServerOptions = dpop === true ? {} : dpop;
  if (typeof settings !== 'object' || settings === null) throw new TypeError('startOAuthServer: dpop must be a boolean or an object');
  const nonce = settings.nonce ?? {};
  const rotateEveryMs =
    nonce === false ? undefined : option(nonce.rotateEveryMs, 'dpop.nonce.rotateEveryMs', Infinity, isPositive, 'a positive number of milliseconds');
  return {
    required: settings.required ?? true,
    nonces: nonce === false ? undefined : new DpopNonces(rotateEveryMs === Infinity ? undefined : rotateEveryMs),
    maxProofAgeSeconds: option(settings.maxProofAgeSeconds, 'dpop.maxProofAgeSeconds', 60, isPositive, positiveSeconds),
    spendRefreshTokenBeforeNonceCheck: settings.spendRefreshTokenBeforeNonceCheck ?? false,
  };
}

function resolveOptions(options: OAuthServerOptions): ServerConfig {
  const mode = options.mode ?? 'standard';
  if (mode !== 'standard' && mode !== 'salesforce') throw new TypeError(`startOAuthServer: unknown mode "${String(mode)}"`);
  const ttlSeconds =
    mode === 'salesforce'
      ? option(options.salesforceSessionTimeoutSeconds, 'salesforceSessionTimeoutSeconds', 7200, isPositive, positiveSeconds)
      : option(options.accessTokenTtlSeconds, 'accessTokenTtlSeconds', 3600, isPositive, positiveSeconds);
  const refreshTtl = option(options.refreshTokenTtlSeconds, 'refreshTokenTtlSeconds', Infinity, isPositive, positiveSeconds);
  return {
    accessTokenTtlMs: ttlSeconds * 1000,
    refreshTokenTtlMs: refreshTtl === Infinity ? undefined : refreshTtl * 1000,
    rotateRefreshTokens: options.rotateRefreshTokens ?? false,
    reuseDetection: options.reuseDetection ?? true,
    tokenEndpointLatencyMs: option(options.tokenEndpointLatencyMs, 'tokenEndpointLatencyMs', 0, isNonNegative, 'a non-negative number'),
    clients: resolveClients(options.clients),
    mode,
    port: option(options.port, 'port', 0, (n) => Number.isInteger(n) && n >= 0 && n <= 65535, 'an integer from 0 to 65535'),
    requestLogLimit: option(options.requestLogLimit, 'requestLogLimit', 10_000, (n) => Number.isInteger(n) && n >= 0, 'a non-negative integer'),
    dpop: resolveDpop(options.dpop, mode),
  };
}

const parseScope = (scope: string): string[] => [...new Set(scope.split(' ').filter(Boolean))];

/** The token response converted the way `refreshTokenGrant` of `@tokenrelay/core` converts one. */
function toTokenSet(response: Record<string, unknown>, receivedAt: number): TokenSet {
  const { access_token, refresh_token, expires_in, token_type, scope, ...raw } = response;
  const tokens: TokenSet = { accessToken: String(access_token), tokenType: String(token_type), scope: String(scope), raw };
  if (typeof refresh_token === 'string') tokens.refreshToken = refresh_token;
  if (typeof expires_in === 'number') tokens.expiresAt = receivedAt + expires_in * 1000;
  return tokens;
}

function findDuplicateParam(form: URLSearchParams): string | undefined {
  const names = [...form.keys()];
  return names.find((name, index) => names.indexOf(name) !== index);
}

/** The access token of an `Authorization` header (RFC 6750 §2.1, RFC 9449 §7.1): its scheme, and `token` unless malformed. */
interface PresentedAccessToken {
  readonly scheme: 'bearer' | 'dpop';
  readonly token: string | undefined;
}

/** `Authorization: Bearer <token>` or `DPoP <token>`; `undefined` without either scheme. */
function readAccessToken(header: string | undefined): PresentedAccessToken | undefined {
  const scheme = header === undefined ? undefined : /^(bearer|dpop)(\s|$)/i.exec(header)?.[1]?.toLowerCase();
  if (scheme !== 'bearer' && scheme !== 'dpop') return undefined;
  return { scheme, token: /^\S+ +([A-Za-z0-9\-._~+/!]+=*) *$/.exec(header ?? '')?.[1] };
}

const invalidGrantDescriptions: Record<Exclude<RefreshTokenCheck, { valid: true }>['reason'], string> = {
  unknown: 'The refresh token is unknown',
  other_client: 'The refresh token was issued to another client',
  revoked: 'The refresh token was revoked',
  rotated: 'The refresh token was already used',
  expired: 'The refresh token expired',
};

const accessTokenDescriptions = {
  unknown: 'The access token is unknown',
  expired: 'The access token expired',
  revoked: 'The access token was revoked',
  malformed: 'The Authorization header is malformed',
} as const;

class EmbeddedOAuthServer implements OAuthServer {
  readonly url: string;
  readonly tokenEndpoint: string;
  readonly revocationEndpoint: string;
  readonly mode: OAuthServerMode;
  readonly #config: ServerConfig;
  readonly #server: Server;
  readonly #sockets: ReadonlySet<Socket>;
  readonly #tokenPath: string;
  readonly #revocationPath: string;
  readonly #registry = new TokenRegistry();
  readonly #jtis = new JtiRegistry();
  /** DPoP proofs' jti values, apart from assertions': the two are different namespaces. */
  readonly #proofJtis = new JtiRegistry();
  readonly #stats: StatsRecorder;
  readonly #closing = (() => {
    const controller = new AbortController();
    // Every delayed response waits on this one signal: hundreds may wait at once in load tests.
    setMaxListeners(0, controller.signal);
    return controller;
  })();
  #failures: InjectedFailure[] = [];
  #closed: Promise<void> | undefined;

  constructor(config: ServerConfig, server: Server, sockets: ReadonlySet<Socket>) {
    this.#config = config;
    this.#server = server;
    this.#sockets = sockets;
    this.#stats = new StatsRecorder(config.requestLogLimit);
    this.mode = config.mode;
    this.url = `http://${HOST}:${(server.address() as AddressInfo).port}`;
    this.#tokenPath = config.mode === 'salesforce' ? '/services/oauth2/token' : '/oauth/token';
    this.tokenEndpoint = this.url + this.#tokenPath;
    this.#revocationPath = config.mode === 'salesforce' ? '/services/oauth2/revoke' : '/oauth/revoke';
    this.revocationEndpoint = this.url + this.#revocationPath;
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      this.#route(req, res).catch((error: unknown) => this.#internalError(res, error));
    });
  }

  issue(options: IssueOptions = {}): TokenSet {
    const { clients, mode, refreshTokenTtlMs } = this.#config;
    const client = options.clientId === undefined ? clients[0] : clients.find(({ clientId }) => clientId === options.clientId);
    if (!client) throw new Error(`issue: unknown client "${String(options.clientId)}"`);
    const scope = parseScope(options.scope ?? (mode === 'salesforce' ? 'api refresh_token' : 'read write'));
    const now = Date.now();
    const family = this.#startFamily(client.clientId, mode === 'salesforce' ? salesforceFixtures.username : STANDARD_SUBJECT, scope);
    const dpopJkt = this.#config.dpop ? options.dpopJkt : undefined;
    if (client.authMethod === 'none') family.dpopJkt = dpopJkt;
    const refreshToken = this.#registry.issueRefreshToken(family, refreshTokenTtlMs === undefined ? undefined : now + refreshTokenTtlMs);
    return toTokenSet(this.#grantAccess(family, client, scope, refreshToken, now, dpopJkt), now);
  }

  rotateDpopNonce(): void {
    const nonces = this.#config.dpop?.nonces;
    if (!nonces) throw new Error('rotateDpopNonce: the server runs without DPoP nonces');
    nonces.rotate();
  }

  revokeAccessTokens(): void {
    this.#registry.revokeAccessTokens();
  }

  revokeRefreshTokens(): void {
    this.#stats.familiesRevoked(this.#registry.revokeAllFamilies());
  }

  failNextTokenRequests(count: number, failure: TokenEndpointFailure): void {
    if (!Number.isInteger(count) || count < 0) throw new RangeError('failNextTokenRequests: count must be a non-negative integer');
    const normalized = normalizeFailure(failure);
    for (let index = 0; index < count; index++) this.#failures.push(normalized);
  }

  clearFailures(): void {
    this.#failures = [];
  }

  stats(): OAuthServerStats {
    return this.#stats.snapshot();
  }

  resetStats(): void {
    this.#stats.reset();
  }

  close(): Promise<void> {
    this.#closed ??= new Promise<void>((resolve) => {
      // Ends every pending wait (latency, ?delayMs, 'slow'); their handlers then stop.
      this.#closing.abort();
      this.#server.close(() => resolve());
      // server.close() alone waits for open connections: keep-alive, in-flight and 'hang' ones.
      for (const socket of this.#sockets) socket.destroy();
    });
    return this.#closed;
  }

  /** A new grant family; in Salesforce mode the 6th live one of a user and app revokes the oldest. */
  #startFamily(clientId: string, subject: string, scope: readonly string[]): GrantFamily {
    const limit = this.mode === 'salesforce' ? SALESFORCE_TOKEN_PAIRS_PER_USER_AND_APP : Infinity;
    const { family, evicted } = this.#registry.startFamily(clientId, subject, scope, { limit });
    this.#stats.tokenPairsEvicted(evicted);
    return family;
  }

  /** Mints an access token (and signs, in Salesforce mode) and returns the token response body. */
  #grantAccess(
    family: GrantFamily,
    client: OAuthClient,
    scope: readonly string[],
    refreshToken: string | undefined,
    now: number,
    dpopJkt?: string,
  ): Record<string, unknown> {
    const { accessTokenTtlMs, mode } = this.#config;
    const refresh = refreshToken === undefined ? {} : { refresh_token: refreshToken };
    if (mode === 'standard') {
      const accessToken = this.#registry.issueAccessToken(family, now + accessTokenTtlMs, { dpopJkt });
      const tokenType = dpopJkt === undefined ? 'Bearer' : 'DPoP';
      return { access_token: accessToken, token_type: tokenType, expires_in: accessTokenTtlMs / 1000, scope: scope.join(' '), ...refresh };
    }
    // Real Salesforce access tokens start with the 15-character org id and "!".
    const accessToken = this.#registry.issueAccessToken(family, now + accessTokenTtlMs, {
      prefix: `${salesforceFixtures.organizationId.slice(0, 15)}!`,
    });
    const id = identityUrl(this.url);
    const issuedAt = String(now);
    return {
      access_token: accessToken,
      ...refresh,
      signature: salesforceSignature(client.clientSecret ?? '', id, issuedAt),
      scope: scope.join(' '),
      instance_url: this.url,
      id,
      token_type: 'Bearer',
      issued_at: issuedAt,
    };
  }

  async #route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.url);
    if (req.method === 'OPTIONS') {
      // No Content-Length: RFC 9110 forbids it on a 204.
      res.writeHead(204, preflightHeaders).end();
      return;
    }
    if (url.pathname === this.#tokenPath) return this.#handleToken(req, res);
    if (url.pathname === this.#revocationPath) return this.#handleRevocation(req, res);
    if (url.pathname === '/redirect') return this.#redirect(req, res, url);
    if (url.pathname.startsWith('/api/') || (this.mode === 'salesforce' && url.pathname.startsWith('/services/data/'))) {
      return this.#handleApi(req, res, url);
    }
    sendJson(res, 404, { error: 'not_found', error_description: `Nothing at ${url.pathname}` });
  }

  /** `/redirect?to=<path or loopback URL>&status=<301|302|303|307|308>` (302 by default), whatever the token. */
  #redirect(req: IncomingMessage, res: ServerResponse, url: URL): void {
    req.resume();
    const status = Number(url.searchParams.get('status') ?? 302);
    const to = url.searchParams.get('to');
    const target = to === null || !URL.canParse(to, this.url) ? undefined : new URL(to, this.url);
    if (![301, 302, 303, 307, 308].includes(status) || !target || !isLoopbackUrl(target)) {
      sendJson(res, 400, { error: 'invalid_request', error_description: 'to must be a path or a loopback URL; status a redirect status' });
      return;
    }
    send(res, status, { location: target.href }, '');
  }

  #internalError(res: ServerResponse, error: unknown): void {
    // After close() or a client hang-up there is nobody to answer.
    if (this.#closing.signal.aborted || error instanceof RequestAbortedError || res.headersSent) {
      res.destroy();
      return;
    }
    sendJson(res, 500, { error: 'server_error', error_description: 'Internal error in @tokenrelay/testing' });
  }

  /** Waits, or throws (ending the request handler) when the server closes meanwhile. */
  async #pause(ms: number): Promise<void> {
    if (ms > 0) await sleep(ms, undefined, { signal: this.#closing.signal });
  }

  async #handleToken(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { entry, done } = this.#stats.tokenRequestStarted(req.method ?? 'GET');
    res.once('close', done);
    // Taken at arrival, so concurrent requests consume the queue in the order they came.
    const failure = this.#failures.shift();
    if (failure) this.#stats.tokenInjected(entry, failure.kind);

    let body: Buffer;
    try {
      body = await readBody(req, TOKEN_BODY_LIMIT);
    } catch (error) {
      if (!(error instanceof BodyTooLargeError)) throw error;
      this.#tokenError(res, entry, 413, 'invalid_request', error.message, { connection: 'close' });
      return;
    }
    const form = mediaType(req.headers['content-type']) === 'application/x-www-form-urlencoded'
      ? new URLSearchParams(body.toString('utf8'))
      : undefined;
    const presented = readPresentedClient(req.headers.authorization, form ?? new URLSearchParams());
    entry.clientAuthentication = presented.method;
    entry.clientId = presented.clientId;
    entry.accessToken = readAccessToken(req.headers.authorization)?.token;
    entry.params = Object.fromEntries([...(form ?? [])].filter(([name]) => name !== 'client_secret'));

    await this.#pause(this.#config.tokenEndpointLatencyMs);
    if (failure) {
      const answer = answerFor(failure, this.mode);
      switch (answer.type) {
        case 'oauth_error':
          this.#tokenError(res, entry, answer.status, answer.error, answer.description, answer.headers);
          return;
        case 'raw':
          this.#stats.tokenAnswered(entry, answer.status, undefined);
          send(res, answer.status, answer.headers, answer.body);
          return;
        case 'hang':
          // Left unanswered on purpose; close() destroys the socket.
          return;
        case 'reset':
          req.socket.resetAndDestroy();
          return;
        case 'slow':
          await this.#pause(answer.delayMs);
          break;
      }
    }
    await this.#grant(req, res, entry, form, presented);
  }

  /**
   * DPoP mode: checks the request's proof (with `ath` for `accessToken`) and counts it. `undefined`
   * when there is nothing to check: no DPoP mode, or no proof where none is required.
   */
  async #checkProof(req: IncomingMessage, url: URL, accessToken?: string): Promise<DpopProofCheck | undefined> {
    const dpop = this.#config.dpop;
    const header = req.headers.dpop;
    // Several DPoP headers are one invalid proof (§4.3 step 1).
    const proof = Array.isArray(header) ? header.join(', ') : header;
    if (!dpop || (proof === undefined && !dpop.required && accessToken === undefined)) return undefined;
    const now = Date.now();
    // htu is compared with the URL the client addressed, so a client that says localhost is not refused.
    const target = `http://${req.headers.host ?? new URL(this.url).host}${url.pathname}`;
    const check = await verifyDpopProof(
      proof,
      { method: req.method ?? 'GET', url: target, maxAgeSeconds: dpop.maxProofAgeSeconds, now, nonce: dpop.nonces?.current(now), accessToken },
      this.#proofJtis,
    );
    this.#stats.dpopProofChecked(proof !== undefined, check.ok ? undefined : check.replay ? 'replay' : check.error);
    return check;
  }

  /** The `DPoP-Nonce` header every DPoP-mode response carries when nonces are on. */
  #nonceHeader(): OutgoingHttpHeaders {
    const nonces = this.#config.dpop?.nonces;
    return nonces ? { 'dpop-nonce': nonces.current(Date.now()) } : {};
  }

  /** RFC 7009 revocation. */
  async #handleRevocation(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req, TOKEN_BODY_LIMIT).catch((error: unknown) => {
      if (error instanceof BodyTooLargeError) return undefined;
      throw error;
    });
    const fail = (status: number, error: string, description: string, headers: OutgoingHttpHeaders = {}) =>
      sendJson(res, status, { error, error_description: description }, headers);
    if (req.method !== 'POST') return fail(405, 'invalid_request', 'The revocation endpoint accepts POST only', { allow: 'POST, OPTIONS' });
    if (body === undefined || mediaType(req.headers['content-type']) !== 'application/x-www-form-urlencoded') {
      return fail(400, 'invalid_request', 'The body must be an application/x-www-form-urlencoded form');
    }
    const form = new URLSearchParams(body.toString('utf8'));
    let clientId: string | undefined;
    // Salesforce's revoke takes the token alone; a standard server authenticates the client (RFC 7009 §2.1).
    if (this.mode === 'standard') {
      const presented = readPresentedClient(req.headers.authorization, form);
      const client = checkClient(presented, this.#config.clients, this.mode, { endpoint: this.revocationEndpoint, now: Date.now(), jtis: this.#jtis });
      if (!client.ok) {
        return fail(401, 'invalid_client', client.description, presented.usedHeader ? { 'www-authenticate': `Basic realm="${REALM}"` } : {});
      }
      clientId = client.client.clientId;
    }
    const token = form.get('token');
    if (!token) return fail(400, 'invalid_request', 'token is missing');
    this.#registry.revoke(token, clientId);
    this.#stats.revoked();
    send(res, 200, { 'cache-control': 'no-store' });
  }

  #tokenError(
    res: ServerResponse,
    entry: TokenRequestEntry,
    status: number,
    error: string,
    description: string,
    headers: OutgoingHttpHeaders = {},
  ): void {
    this.#stats.tokenAnswered(entry, status, error);
    sendJson(res, status, { error, error_description: description }, { 'cache-control': 'no-store', ...this.#nonceHeader(), ...headers });
  }

  /** The token endpoint proper: the refresh token, client credentials and JWT bearer grants. */
  async #grant(
    req: IncomingMessage,
    res: ServerResponse,
    entry: TokenRequestEntry,
    form: URLSearchParams | undefined,
    presented: PresentedClient,
  ): Promise<void> {
    const fail = (status: number, error: string, description: string, headers?: OutgoingHttpHeaders) =>
      this.#tokenError(res, entry, status, error, description, headers);
    if (req.method !== 'POST') return fail(405, 'invalid_request', 'The token endpoint accepts POST only', { allow: 'POST, OPTIONS' });
    if (!form) return fail(400, 'invalid_request', 'The body must be application/x-www-form-urlencoded');
    const duplicate = findDuplicateParam(form);
    if (duplicate !== undefined) return fail(400, 'invalid_request', `The parameter ${duplicate} was sent more than once`);
    const grantType = form.get('grant_type');
    const proof = await this.#checkProof(req, new URL(this.tokenEndpoint));
    const now = Date.now();
    if (proof && !proof.ok) {
      if (proof.error === 'use_dpop_nonce' && this.#config.dpop?.spendRefreshTokenBeforeNonceCheck) this.#spendRefreshToken(form, presented, now);
      return fail(400, proof.error, proof.description);
    }
    const dpopJkt = proof?.jkt;
    entry.dpopJkt = dpopJkt;
    // RFC 7523 §3.1: the assertion identifies and authenticates the client; no other authentication is needed.
    if (grantType === JWT_BEARER && presented.method === undefined) return this.#jwtBearer(res, entry, form, now, dpopJkt);

    const { clients, mode, reuseDetection, rotateRefreshTokens, refreshTokenTtlMs } = this.#config;
    const client = checkClient(presented, clients, mode, { endpoint: this.tokenEndpoint, now, jtis: this.#jtis });
    if (!client.ok) {
      // RFC 6749 §5.2: 401, with WWW-Authenticate when the client used the Authorization header.
      return fail(401, 'invalid_client', client.description, presented.usedHeader ? { 'www-authenticate': `Basic realm="${REALM}"` } : {});
    }
    if (!grantType) return fail(400, 'invalid_request', 'grant_type is missing');
    if (grantType === JWT_BEARER) return this.#jwtBearer(res, entry, form, now, dpopJkt);
    if (grantType === 'client_credentials') {
      if (client.client.authMethod === 'none') return fail(400, 'unauthorized_client', 'A public client cannot use client_credentials');
      const scope = parseScope(form.get('scope') ?? (mode === 'salesforce' ? 'api' : 'read write'));
      // Salesforce runs a client credentials app as its configured "run as" user: the fixture user here.
      const family = this.#startFamily(client.client.clientId, mode === 'salesforce' ? salesforceFixtures.username : client.client.clientId, scope);
      return this.#answerTokens(res, entry, this.#grantAccess(family, client.client, scope, undefined, now, dpopJkt));
    }
    if (grantType !== 'refresh_token') {
      return fail(400, 'unsupported_grant_type', `Supported grants: refresh_token, client_credentials, ${JWT_BEARER}`);
    }
    const refreshToken = form.get('refresh_token');
    if (!refreshToken) return fail(400, 'invalid_request', 'refresh_token is missing');

    const found = this.#registry.checkRefreshToken(refreshToken, client.client.clientId, now);
    if (!found.valid) {
      if (found.reason === 'rotated' && found.entry) {
        // RFC 9700 §4.14.2: the server cannot tell the thief from the client, so the whole grant goes.
        this.#stats.refreshTokenReused(reuseDetection && this.#registry.revokeFamily(found.entry.family));
      }
      return fail(400, 'invalid_grant', mode === 'salesforce' ? 'expired access/refresh token' : invalidGrantDescriptions[found.reason]);
    }
    const { family } = found.entry;
    // RFC 9449 §5: a public client's refresh token is bound to the key of its first proof.
    if (client.client.authMethod === 'none' && family.dpopJkt !== undefined && family.dpopJkt !== dpopJkt) {
      return fail(400, 'invalid_grant', 'The refresh token is bound to another DPoP key');
    }
    if (client.client.authMethod === 'none') family.dpopJkt ??= dpopJkt;
    const requested = parseScope(form.get('scope') ?? '');
    if (requested.some((scope) => !family.scope.includes(scope))) {
      return fail(400, 'invalid_scope', 'The requested scope exceeds the scope originally granted');
    }
    let newRefreshToken: string | undefined;
    if (rotateRefreshTokens) {
      found.entry.state = 'rotated';
      newRefreshToken = this.#registry.issueRefreshToken(family, refreshTokenTtlMs === undefined ? undefined : now + refreshTokenTtlMs);
    }
    const scope = requested.length > 0 ? requested : family.scope;
    this.#answerTokens(res, entry, this.#grantAccess(family, client.client, scope, newRefreshToken, now, dpopJkt));
  }

  /** The buggy server of `spendRefreshTokenBeforeNonceCheck`: the presented refresh token is marked used. */
  #spendRefreshToken(form: URLSearchParams, presented: PresentedClient, now: number): void {
    const refreshToken = form.get('grant_type') === 'refresh_token' ? form.get('refresh_token') : null;
    if (!refreshToken || presented.clientId === undefined) return;
    const found = this.#registry.checkRefreshToken(refreshToken, presented.clientId, now);
    if (found.valid) found.entry.state = 'rotated';
  }

  /**
   * The JWT bearer grant (RFC 7523 §2.1): the assertion's iss names a client with a registered public
   * key, its signature, aud (Salesforce: the login host; otherwise the token endpoint or the server),
   * sub (Salesforce: the fixture user, pre-authorized), exp and a fresh jti are checked.
   */
  #jwtBearer(res: ServerResponse, entry: TokenRequestEntry, form: URLSearchParams, now: number, dpopJkt: string | undefined): void {
    const fail = (status: number, error: string, description: string) => this.#tokenError(res, entry, status, error, description);
    const assertion = form.get('assertion');
    if (!assertion) return fail(400, 'invalid_request', 'assertion is missing');
    const issuer = peekClaims(assertion)?.iss;
    const client = this.#config.clients.find((candidate) => candidate.clientId === issuer);
    entry.clientId = typeof issuer === 'string' ? issuer : undefined;
    // Salesforce answers an unknown consumer key with invalid_client, any other refusal with invalid_grant.
    if (!client) return fail(400, 'invalid_client', 'invalid client credentials');
    if (client.publicKey === undefined) return fail(400, 'invalid_grant', 'The client has no public key for JWT bearer assertions');
    const salesforce = this.mode === 'salesforce';
    const check = checkAssertion(
      assertion,
      client.publicKey,
      {
        issuer: client.clientId,
        subject: salesforce ? salesforceFixtures.username : undefined,
        audiences: salesforce ? [this.url] : [this.tokenEndpoint, this.url],
        maxLifetimeSeconds: maxAssertionLifetimeSeconds[this.mode],
        now,
      },
      this.#jtis,
    );
    if (!check.ok) return fail(400, 'invalid_grant', check.description);
    const scope = parseScope(form.get('scope') ?? (salesforce ? 'api' : 'read write'));
    const family = this.#startFamily(client.clientId, String(check.claims.sub), scope);
    this.#answerTokens(res, entry, this.#grantAccess(family, client, scope, undefined, now, dpopJkt));
  }

  #answerTokens(res: ServerResponse, entry: TokenRequestEntry, response: Record<string, unknown>): void {
    this.#stats.tokenSucceeded();
    this.#stats.tokenAnswered(entry, 200, undefined);
    const contentType = this.mode === 'salesforce' ? SALESFORCE_JSON : JSON_TYPE;
    const headers = { 'content-type': contentType, 'cache-control': 'no-store', pragma: 'no-cache', ...this.#nonceHeader() };
    send(res, 200, headers, JSON.stringify(response));
  }

  async #handleApi(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const method = req.method ?? 'GET';
    const presented = readAccessToken(req.headers.authorization);
    const entry = this.#stats.apiRequestStarted(method, url.pathname, presented?.token);
    const reply = (status: number, headers: OutgoingHttpHeaders, body: string) => {
      this.#stats.apiAnswered(entry, status);
      send(res, status, headers, body);
    };
    const replyJson = (status: number, value: unknown, headers: OutgoingHttpHeaders = {}) =>
      reply(status, { 'content-type': JSON_TYPE, ...headers }, JSON.stringify(value));

    let body: Buffer;
    try {
      body = await readBody(req, API_BODY_LIMIT);
    } catch (error) {
      if (!(error instanceof BodyTooLargeError)) throw error;
      return replyJson(413, { ok: false, error: 'payload_too_large', error_description: error.message }, { connection: 'close' });
    }
    const delayParam = url.searchParams.get('delayMs');
    const delayMs = delayParam === null ? 0 : /^\d{1,5}$/.test(delayParam) ? Number(delayParam) : NaN;
    if (!(delayMs <= MAX_API_DELAY_MS)) {
      return replyJson(400, { ok: false, error: 'invalid_request', error_description: `delayMs must be an integer from 0 to ${MAX_API_DELAY_MS}` });
    }
    // The token is checked after the wait: a request sent with a token that dies meanwhile gets a late 401.
    await this.#pause(delayMs);

    if (url.pathname === '/api/dpop') {
      return replyJson(401, { ok: false, error: 'use_dpop_nonce' }, {
        'www-authenticate': 'DPoP algs="ES256", error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"',
        'dpop-nonce': opaqueToken(),
      });
    }
    const dpop = this.#config.dpop;
    const check = presented?.token === undefined ? undefined : this.#registry.checkAccessToken(presented.token, Date.now());
    const dpopBound = check?.valid === true && check.dpopJkt !== undefined;
    if (dpop && (dpop.required || presented?.scheme === 'dpop' || dpopBound)) {
      const refusal = await this.#refuseDpopAccess(req, url, presented, check);
      if (refusal) {
        const challenge = refusal.error === undefined ? '' : `, error="${refusal.error}", error_description="${refusal.description}"`;
        const error = refusal.error === undefined ? {} : { error: refusal.error };
        return replyJson(401, { ok: false, ...error, error_description: refusal.description }, {
          'www-authenticate': `DPoP algs="${DPOP_ALGORITHMS.join(' ')}"${challenge}`,
          ...this.#nonceHeader(),
        });
      }
      entry.dpopJkt = check?.valid ? check.dpopJkt : undefined;
      return this.#answerApi(method, url, body, replyJson, reply, 'DPoP');
    }
    const bearer = presented?.scheme === 'bearer' ? presented : undefined;
    if (!check?.valid || !bearer) {
      if (this.mode === 'salesforce') return reply(401, { 'content-type': SALESFORCE_JSON }, INVALID_SESSION_BODY);
      if (bearer === undefined) {
        return replyJson(401, { ok: false, error_description: 'No access token was sent' }, { 'www-authenticate': `Bearer realm="${REALM}"` });
      }
      const description = accessTokenDescriptions[check && !check.valid ? check.reason : 'malformed'];
      return replyJson(401, { ok: false, error: 'invalid_token', error_description: description }, {
        'www-authenticate': `Bearer realm="${REALM}", error="invalid_token", error_description="${description}"`,
      });
    }
    this.#answerApi(method, url, body, replyJson, reply, 'Bearer');
  }

  /**
   * DPoP mode: why the API refuses a request (RFC 9449 §7), or `undefined` when it is accepted. The
   * proof is checked before the token, so a stale nonce is answered `use_dpop_nonce` even for an expired
   * token: the client's retry with the nonce then learns of the expiry.
   */
  async #refuseDpopAccess(
    req: IncomingMessage,
    url: URL,
    presented: PresentedAccessToken | undefined,
    check: AccessTokenCheck | undefined,
  ): Promise<{ error: string | undefined; description: string } | undefined> {
    if (presented === undefined) return { error: undefined, description: 'No access token was sent' };
    const invalidToken = (description: string) => ({ error: 'invalid_token', description });
    if (presented.token === undefined) return invalidToken(accessTokenDescriptions.malformed);
    // §7.2: a bound token sent as a bearer is refused, or the binding would be pointless.
    if (presented.scheme !== 'dpop') return invalidToken('The access token must be sent with the DPoP scheme and a proof');
    const proof = await this.#checkProof(req, url, presented.token);
    if (proof && !proof.ok) return { error: proof.error, description: proof.description };
    if (!check?.valid) return invalidToken(accessTokenDescriptions[check ? check.reason : 'malformed']);
    if (check.dpopJkt === undefined) return invalidToken('The access token is not DPoP-bound');
    if (check.dpopJkt !== proof?.jkt) return invalidToken('The access token is bound to another DPoP key');
    return undefined;
  }

  /** The API's answer to an accepted request. */
  #answerApi(
    method: string,
    url: URL,
    body: Buffer,
    replyJson: (status: number, value: unknown, headers?: OutgoingHttpHeaders) => void,
    reply: (status: number, headers: OutgoingHttpHeaders, body: string) => void,
    scheme: 'Bearer' | 'DPoP',
  ): void {
    const headers = scheme === 'DPoP' ? this.#nonceHeader() : {};
    if (url.pathname === '/api/forbidden') {
      return replyJson(403, { ok: false, error: 'insufficient_scope', scope: 'admin' }, {
        'www-authenticate': `${scheme} realm="${REALM}", error="insufficient_scope", scope="admin"`,
        ...headers,
      });
    }
    if (url.pathname.startsWith('/services/data/')) {
      const answer = salesforceRest(method, url.pathname, url.searchParams);
      return reply(answer.status, { 'content-type': SALESFORCE_JSON }, JSON.stringify(answer.body));
    }
    const echo =
      body.length === 0 ? {} : { body: body.toString('utf8'), bodySha256: createHash('sha256').update(body).digest('hex') };
    replyJson(200, { ok: true, method, path: url.pathname, ...echo }, headers);
  }
}

/**
 * Starts an OAuth 2.0 authorization server and a protected API on 127.0.0.1 (an ephemeral port
 * unless `options.port` says otherwise). Close it with `server.close()` when done.
 *
 * - Token endpoint (`server.tokenEndpoint`): the refresh token grant, with client
 *   authentication, optional rotation and reuse detection, latency and injected failures.
 * - Protected API: any path under `/api/` answers 200 JSON (echoing the request body) to a
 *   valid bearer and 401 with `WWW-Authenticate: Bearer ... error="invalid_token"` otherwise;
 *   `?delayMs=N` waits before checking the token. `/api/forbidden` answers 403
 *   `insufficient_scope`, `/api/dpop` a DPoP nonce challenge. Salesforce mode adds
 *   `/services/data/v<ver>/query` and `/sobjects/Account/<id>`.
 * - `/redirect?to=<path or loopback URL>&status=<3xx>`: a redirect (302 by default), for tests
 *   of where a bearer goes when a client follows one.
 *
 * @throws TypeError/RangeError (as a rejection) for invalid options; the listen error when the port is taken.
 * @example
 * ```ts
 * const server = await startOAuthServer({ accessTokenTtlSeconds: 1, rotateRefreshTokens: true })
 * const tokens = server.issue()
 * const response = await fetch(`${server.url}/api/items`, { headers: { authorization: `Bearer ${tokens.accessToken}` } })
 * await server.close()
 * ```
 */
export async function startOAuthServer(options: OAuthServerOptions = {}): Promise<OAuthServer> {
  const config = resolveOptions(options);
  const server = createServer();
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  // A malformed request: answer 400 where possible, never crash.
  server.on('clientError', (_error: Error, socket: Socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: config.port, host: HOST }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return new EmbeddedOAuthServer(config, server, sockets);
}

