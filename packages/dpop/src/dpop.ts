/*
 * createDpop: a fetch that puts a fresh DPoP proof on every request, keeps the servers' nonces per
 * origin, and retries once when a server asks for a nonce. The token endpoint and the APIs both go
 * through it; the manager and the doors stay as they are.
 */
import { isOneShotBody, isRequest, parseWwwAuthenticate, readBody, type DpopRequest, type DpopSender } from '@tokenrelay/core/kit';
import { algorithmOf, checkedAlgorithm, generateDpopKey, keptUnlessFailed, htuOf, signProof, thumbprintOf, type DpopAlgorithm, type DpopKeySource } from './proof.js';

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

type DpopAnswer = ReturnType<DpopRequest<unknown>['answerOf']>;

/** What {@link createDpop} returns. */
export interface Dpop extends DpopSender {
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
  /**
   * Sends one request of a door that is not a fetch (axios's transport, undici, got) as `fetch` does:
   * a fresh proof per attempt, the answer's `DPoP-Nonce` kept for the URL's origin, and one more
   * attempt on a nonce challenge unless the body is a stream. The doors' `dpop` option calls it.
   */
  send<R>(request: DpopRequest<R>): Promise<R>;
}

/** A refresh-token request's stand-in value in a nonce probe: the server can never know it. */
const PROBE_REFRESH_TOKEN = 'tokenrelay-dpop-nonce-probe';

interface KnownNonce {
  /** The nonce, or `undefined` when the server answered without asking for one. */
  readonly value: string | undefined;
  readonly learnedAt: number;
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

/** Does the answer ask for a new proof with the nonce it carries? (RFC 9449 §8 and §9.) */
async function asksForNonce(answer: DpopAnswer): Promise<boolean> {
  if (answer.header('dpop-nonce') === undefined) return false;
  if (answer.status === 401) {
    return parseWwwAuthenticate(answer.header('www-authenticate')).some(
      (challenge) => challenge.scheme === 'dpop' && challenge.params.error === 'use_dpop_nonce',
    );
  }
  return answer.status === 400 && oauthErrorOf(await answer.text()) === 'use_dpop_nonce';
}

/** The `error` of an OAuth error body (RFC 6749 §5.2), or `undefined` when the text is none. */
function oauthErrorOf(text: string): unknown {
  try {
    return (JSON.parse(text) as { error?: unknown } | null)?.error;
  } catch {
    return undefined;
  }
}

const answerOfResponse = (response: Response): DpopAnswer => ({
  status: response.status,
  header: (name) => response.headers.get(name) ?? undefined,
  text: () => response.clone().text(),
});

function discard(response: Response): void {
  response.body?.cancel().catch(() => {});
}

/**
 * Is a nonce probe's answer from before the server (a load balancer, a proxy, a rate limit), so that it says
 * nothing of the proof? A 429, a 502-504, or a 5xx that is neither the server's own OAuth error nor carries its
 * `DPoP-Nonce` (a load balancer names none). Only a JSON body is read, and no more than 16 KiB of it: a proxy's
 * error page is not read, and a body that fails or runs over is no answer of the server either.
 */
async function isOutage(response: Response): Promise<boolean> {
  const { status, headers } = response;
  if (status === 429) return true;
  if (status < 500 || headers.has('dpop-nonce')) return false;
  if ((status > 501 && status < 505) || !/json/i.test(headers.get('content-type') ?? '')) return true;
  return typeof oauthErrorOf((await readBody(response, 16_384).catch(() => undefined)) ?? '') !== 'string';
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
  const { nonceMaxAgeMs = 60_000 } = options;
  const algorithm = checkedAlgorithm(options.algorithm);
  const source = options.key;
  // A failed generation (no Ed25519 here) is not kept: every proof reports it.
  const ownKey = keptUnlessFailed(() => generateDpopKey({ algorithm }));
  const keys = async (): Promise<CryptoKeyPair> => {
    if (source === undefined) return ownKey();
    const pair = typeof source === 'function' ? await source() : source;
    algorithmOf(pair.privateKey);
    return pair;
  };
  const nonces = new Map<string, KnownNonce>();
  const fetchWith = (...args: Parameters<typeof fetch>) => (options.fetch ?? globalThis.fetch)(...args);

  const proofFor = async (method: string, url: URL, accessToken: string | undefined) =>
    signProof(await keys(), { htm: method.toUpperCase(), htu: htuOf(url), nonce: nonces.get(url.origin)?.value, accessToken });

  async function send<R>(request: DpopRequest<R>): Promise<R> {
    const url = new URL(request.url, documentBase());
    const accessToken = /^dpop\s+(\S+)$/i.exec(request.authorization ?? '')?.[1];
    const attempt = async () => {
      const result = await request.attempt(await proofFor(request.method, url, accessToken));
      const answer = request.answerOf(result);
      const nonce = answer.header('dpop-nonce');
      if (nonce !== undefined) nonces.set(url.origin, { value: nonce, learnedAt: Date.now() });
      return { result, answer };
    };
    const first = await attempt();
    if (isOneShotBody(request.body) || !(await asksForNonce(first.answer))) return first.result;
    request.discard?.(first.result);
    return (await attempt()).result;
  }

  /**
   * Learns the token endpoint's nonce with the same request minus its credentials worth protecting:
   * the refresh token is replaced by a stand-in and a client assertion (whose `jti` may be single-use)
   * is left out. A server that checks the proof first names its nonce; an answer of the server
   * itself (an OAuth error about the stand-in or a `DPoP-Nonce`, even with a 5xx) means the proof passed
   * with the nonce it names, or as it was. An answer from before the server ({@link isOutage}: a load
   * balancer, a rate limit) says nothing of the proof: it is the `outage`, and the refresh token
   * waits for the next attempt, which probes again. `known` is the origin's nonce entry as it stood when
   * the probe was decided on: kept when the answer names none.
   */
  async function learnNonce(init: RequestInit | undefined, form: URLSearchParams, method: string, url: URL, known: KnownNonce | undefined): Promise<{ outage?: Response }> {
    const probe = new URLSearchParams(form);
    probe.set('refresh_token', PROBE_REFRESH_TOKEN);
    probe.delete('client_assertion');
    probe.delete('client_assertion_type');
    const headers = new Headers(init?.headers);
    headers.set('dpop', await proofFor(method, url, undefined));
    const response = await fetchWith(url, { ...init, body: probe, headers });
    const { status, headers: answered } = response;
    const outage = await isOutage(response);
    discard(response);
    // Status and Retry-After (when it came) only: nothing the probe's answer says is about the real refresh token.
    if (outage) return { outage: new Response(null, { status, headers: answered.has('retry-after') ? { 'retry-after': answered.get('retry-after')! } : {} }) };
    // No nonce asked for: the one known (or none) passed, and is fresh again.
    nonces.set(url.origin, { value: answered.get('dpop-nonce') ?? known?.value, learnedAt: Date.now() });
    return {};
  }

  async function dpopFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
    const request = isRequest(input) ? input : undefined;
    const url = new URL(request ? request.url : String(input), documentBase());
    const method = init?.method ?? request?.method ?? 'GET';
    const headers = new Headers(init?.headers ?? request?.headers);
    const form = formOf(init?.body);
    if (form?.get('grant_type') === 'refresh_token' && form.has('refresh_token')) {
      const known = nonces.get(url.origin);
      if (known === undefined || Date.now() - known.learnedAt > nonceMaxAgeMs) {
        const { outage } = await learnNonce(init, form, method, url, known);
        if (outage) return outage;
      }
    }
    // The first send consumes a Request's body; the clone keeps the same bytes for the one retry.
    const retryInput = request && (init?.body ?? undefined) === undefined && request.body !== null ? request.clone() : input;
    let sent = false;
    return send<Response>({
      method,
      url: url.href,
      authorization: headers.get('authorization') ?? undefined,
      body: init?.body,
      attempt: (proof) => {
        headers.set('dpop', proof);
        const target = sent ? retryInput : input;
        sent = true;
        return fetchWith(target, { ...init, headers });
      },
      answerOf: answerOfResponse,
      discard,
    });
  }

  return {
    fetch: dpopFetch as typeof fetch,
    proof: async (method, url, accessToken) => proofFor(method, new URL(url, documentBase()), accessToken),
    thumbprint: async () => thumbprintOf((await keys()).publicKey),
    send,
  };
}
