/*
 * createDpop: a fetch that puts a fresh DPoP proof on every request, keeps the servers' nonces per
 * origin, and retries once when a server asks for a nonce. The token endpoint and the APIs both go
 * through it; the manager and the doors stay as they are.
 */
import { configurationError, parseWwwAuthenticate } from '@tokenrelay/core/kit';
import { algorithmOf, generateDpopKey, htuOf, signProof, thumbprintOf, type DpopAlgorithm, type DpopKeySource } from './proof.js';

/** Options of {@link createDpop}. */
export interface DpopOptions {
  /**
   * The key proofs are signed with: a key pair, or a function asked before every proof
   * ({@link browserDpopKey} in a browser, {@link sessionDpopKey} for processes sharing a session).
   * @default a new non-extractable key pair of `algorithm`, in this process's memory only
   * @example
   * ```ts
   * key: browserDpopKey()
   * ```
   */
  key?: DpopKeySource;
  /**
   * The algorithm of the default key (a given key's own algorithm is used as it is). EdDSA needs a
   * runtime whose WebCrypto has Ed25519; elsewhere the first proof fails with a `CONFIGURATION_ERROR`.
   * @default 'ES256'
   */
  algorithm?: DpopAlgorithm;
  /**
   * The fetch that sends the requests.
   * @default globalThis.fetch at call time
   */
  fetch?: typeof fetch;
  /**
   * A nonce learned longer ago than this counts as stale before a refresh-token request: the nonce
   * is learned again first, by a request without the refresh token, so a server that rejects the
   * proof never sees (and never spends) the refresh token.
   * @default 60_000
   */
  nonceMaxAgeMs?: number;
}

/** What {@link createDpop} returns. */
export interface Dpop {
  /**
   * A fetch that adds a fresh proof to every request (with `ath` when it carries
   * `Authorization: DPoP <token>`, and the origin's nonce when one is known), records every
   * `DPoP-Nonce`, and retries once with a new proof on a nonce challenge (a 400 `use_dpop_nonce`
   * from a token endpoint, a 401 `DPoP error="use_dpop_nonce"` from an API) when the body can be
   * sent again. Give it to `refreshTokenGrant({ fetch })` and to a door (`withTokenRelay(dpop.fetch, …)`).
   */
  readonly fetch: typeof fetch;
  /** One proof for `method` and `url` (with `ath` for `accessToken`), for a door that signs requests itself. */
  proof(method: string, url: string | URL, accessToken?: string): Promise<string>;
  /** The RFC 7638 JWK thumbprint of the key: the `dpop_jkt` of an authorization request. */
  thumbprint(): Promise<string>;
}

/** A refresh-token request's stand-in value in a nonce probe: the server can never know it. */
const PROBE_REFRESH_TOKEN = 'tokenrelay-dpop-nonce-probe';

interface KnownNonce {
  /** The nonce, or `undefined` when the server answered without asking for one. */
  readonly value: string | undefined;
  readonly learnedAt: number;
}

function isRequest(input: RequestInfo | URL): input is Request {
  return typeof input === 'object' && !(input instanceof URL) && typeof input.url === 'string';
}

/** A ReadableStream or an async iterable can be read only once: a request carrying one is never retried. */
function isOneShotBody(body: unknown): boolean {
  return (
    typeof body === 'object' &&
    body !== null &&
    (typeof (body as { getReader?: unknown }).getReader === 'function' || Symbol.asyncIterator in body)
  );
}

/** The form parameters of a token-endpoint body, when it is one (refreshTokenGrant sends URLSearchParams). */
function formOf(body: unknown): URLSearchParams | undefined {
  if (body instanceof URLSearchParams) return body;
  if (typeof body === 'string' && body.includes('grant_type=')) return new URLSearchParams(body);
  return undefined;
}

const documentBase = () => {
  const href = (globalThis as { location?: { href?: unknown } }).location?.href;
  return typeof href === 'string' ? href : undefined;
};

/** Does `response` ask for a new proof with the nonce it carries? (RFC 9449 §8 and §9.) */
async function asksForNonce(response: Response): Promise<boolean> {
  if (response.headers.get('dpop-nonce') === null) return false;
  if (response.status === 401) {
    return parseWwwAuthenticate(response.headers.get('www-authenticate') ?? undefined).some(
      (challenge) => challenge.scheme === 'dpop' && challenge.params.error === 'use_dpop_nonce',
    );
  }
  if (response.status !== 400) return false;
  const body: unknown = await response
    .clone()
    .json()
    .catch(() => undefined);
  return typeof body === 'object' && body !== null && (body as { error?: unknown }).error === 'use_dpop_nonce';
}

function discard(response: Response): void {
  response.body?.cancel().catch(() => {});
}

/**
 * DPoP (RFC 9449) for a session: one key, a proof on every request, the servers' nonces.
 *
 * @example
 * ```ts
 * const dpop = createDpop()
 * const manager = createTokenManager({
 *   tokens,
 *   refresh: refreshTokenGrant({ tokenEndpoint: 'https://auth.example.com/oauth/token', clientId: 'app', fetch: dpop.fetch }),
 * })
 * const api = withTokenRelay(dpop.fetch, manager, { origins: ['https://api.example.com'] })
 * ```
 */
export function createDpop(options: DpopOptions = {}): Dpop {
  const { algorithm = 'ES256', nonceMaxAgeMs = 60_000 } = options;
  if (algorithm !== 'ES256' && algorithm !== 'EdDSA') {
    throw configurationError(`createDpop: algorithm must be 'ES256' or 'EdDSA', not ${String(algorithm)}`);
  }
  const source = options.key;
  let ownKey: Promise<CryptoKeyPair> | undefined;
  const keys = async (): Promise<CryptoKeyPair> => {
    if (source === undefined) {
      // A failed generation (no Ed25519 here) is not kept: every proof reports it.
      ownKey ??= generateDpopKey({ algorithm }).catch((error: unknown) => {
        ownKey = undefined;
        throw error;
      });
      return ownKey;
    }
    const pair = typeof source === 'function' ? await source() : source;
    algorithmOf(pair.privateKey);
    return pair;
  };
  const nonces = new Map<string, KnownNonce>();
  const send = (...args: Parameters<typeof fetch>) => (options.fetch ?? globalThis.fetch)(...args);

  const proofFor = async (method: string, url: URL, accessToken: string | undefined) =>
    signProof(await keys(), { htm: method.toUpperCase(), htu: htuOf(url), nonce: nonces.get(url.origin)?.value, accessToken });

  const noteNonce = (origin: string, response: Response) => {
    const nonce = response.headers.get('dpop-nonce');
    if (nonce !== null) nonces.set(origin, { value: nonce, learnedAt: Date.now() });
  };

  /** Sends once with a fresh proof and records the nonce the answer carries. */
  async function sendWithProof(input: RequestInfo | URL, init: RequestInit | undefined, headers: Headers, method: string, url: URL, accessToken: string | undefined) {
    headers.set('dpop', await proofFor(method, url, accessToken));
    const response = await send(input, { ...init, headers });
    noteNonce(url.origin, response);
    return response;
  }

  /**
   * Learns the token endpoint's nonce with the same request minus its credentials worth protecting:
   * the refresh token is replaced by a stand-in and a client assertion (whose `jti` may be single-use)
   * is left out. A server that checks the proof first names its nonce; any other answer means the
   * proof passed as it was.
   */
  async function learnNonce(input: RequestInfo | URL, init: RequestInit | undefined, form: URLSearchParams, method: string, url: URL) {
    const probe = new URLSearchParams(form);
    probe.set('refresh_token', PROBE_REFRESH_TOKEN);
    probe.delete('client_assertion');
    probe.delete('client_assertion_type');
    const known = nonces.get(url.origin);
    const target = isRequest(input) ? input.url : input;
    const response = await sendWithProof(target, { ...init, body: probe }, new Headers(init?.headers), method, url, undefined);
    discard(response);
    if (response.headers.get('dpop-nonce') === null) nonces.set(url.origin, { value: known?.value, learnedAt: Date.now() });
  }

  async function dpopFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
    const request = isRequest(input) ? input : undefined;
    const url = new URL(request ? request.url : String(input), documentBase());
    const method = (init?.method ?? request?.method ?? 'GET').toUpperCase();
    const headers = new Headers(init?.headers ?? request?.headers);
    const authorization = /^dpop\s+(\S+)$/i.exec(headers.get('authorization') ?? '');
    const accessToken = authorization?.[1];
    const form = formOf(init?.body);
    if (form?.get('grant_type') === 'refresh_token' && form.has('refresh_token')) {
      const known = nonces.get(url.origin);
      if (known === undefined || Date.now() - known.learnedAt > nonceMaxAgeMs) await learnNonce(input, init, form, method, url);
    }
    // The first send consumes a Request's body; the clone keeps the same bytes for the one retry.
    const retryInput = request && (init?.body ?? undefined) === undefined && request.body !== null ? request.clone() : input;
    const response = await sendWithProof(input, init, headers, method, url, accessToken);
    if (isOneShotBody(init?.body) || !(await asksForNonce(response))) return response;
    discard(response);
    return sendWithProof(retryInput, init, headers, method, url, accessToken);
  }

  return {
    fetch: dpopFetch as typeof fetch,
    proof: async (method, url, accessToken) => proofFor(method, new URL(url, documentBase()), accessToken),
    thumbprint: async () => thumbprintOf((await keys()).publicKey),
  };
}
