import { createHash, timingSafeEqual } from 'node:crypto';
import { checkAssertion, peekClaims, type JtiRegistry } from './assertions.js';
import type { ClientAuthenticationMethod, OAuthClient, OAuthServerMode } from './types.js';

const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/** What a token request presented to identify its client, before it is checked. */
export interface PresentedClient {
  readonly method: ClientAuthenticationMethod | undefined;
  readonly clientId: string | undefined;
  readonly secret: string | undefined;
  /** `private_key_jwt`: the client assertion. */
  readonly assertion?: string;
  /** An `Authorization` header was sent: an `invalid_client` answer must then carry `WWW-Authenticate`. */
  readonly usedHeader: boolean;
  /** Why the presentation is malformed, if it is. */
  readonly problem: string | undefined;
}

export type ClientCheck = { ok: true; client: OAuthClient } | { ok: false; description: string };

/** RFC 6749 Appendix B decoding: `+` is a space, then percent-decoding. */
function formDecode(value: string): string | undefined {
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '));
  } catch {
    return undefined;
  }
}

function parseBasic(header: string): { clientId: string; secret: string } | string {
  const match = /^basic +([A-Za-z0-9+/]+={0,2}) *$/i.exec(header);
  if (!match?.[1]) return 'The Authorization header is not "Basic <base64>"';
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return 'The Basic credentials have no ":"';
  const clientId = formDecode(decoded.slice(0, colon));
  const secret = formDecode(decoded.slice(colon + 1));
  if (clientId === undefined || secret === undefined) return 'The Basic credentials are not form-urlencoded';
  return { clientId, secret };
}

/** Reads the client identification of a token request (RFC 6749 §2.3.1), without checking it. */
export function readPresentedClient(authorization: string | undefined, form: URLSearchParams): PresentedClient {
  const bodyId = form.get('client_id') ?? undefined;
  const bodySecret = form.get('client_secret') ?? undefined;
  const assertionType = form.get('client_assertion_type') ?? undefined;
  const assertion = form.get('client_assertion') ?? undefined;
  if (assertionType !== undefined || assertion !== undefined) {
    const issuer = assertion === undefined ? undefined : peekClaims(assertion)?.iss;
    const clientId = bodyId ?? (typeof issuer === 'string' ? issuer : undefined);
    const problem =
      authorization !== undefined || bodySecret !== undefined
        ? 'The client authenticated with a client assertion and a secret'
        : assertionType !== CLIENT_ASSERTION_TYPE
          ? 'client_assertion_type is not urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
          : assertion === undefined
            ? 'client_assertion is missing'
            : undefined;
    return { method: 'private_key_jwt', clientId, secret: undefined, assertion, usedHeader: authorization !== undefined, problem };
  }
  if (authorization !== undefined) {
    const basic = parseBasic(authorization);
    if (typeof basic === 'string') {
      return { method: undefined, clientId: bodyId, secret: undefined, usedHeader: true, problem: basic };
    }
    let problem: string | undefined;
    // §2.3: a client MUST NOT use more than one authentication method in one request.
    if (bodySecret !== undefined) problem = 'The client authenticated with both Basic and client_secret in the body';
    else if (bodyId !== undefined && bodyId !== basic.clientId) problem = 'client_id in the body differs from the Basic one';
    return { method: 'client_secret_basic', clientId: basic.clientId, secret: basic.secret, usedHeader: true, problem };
  }
  if (bodySecret !== undefined) {
    const problem = bodyId === undefined ? 'client_secret was sent without client_id' : undefined;
    return { method: 'client_secret_post', clientId: bodyId, secret: bodySecret, usedHeader: false, problem };
  }
  if (bodyId !== undefined) {
    return { method: 'none', clientId: bodyId, secret: undefined, usedHeader: false, problem: undefined };
  }
  return { method: undefined, clientId: undefined, secret: undefined, usedHeader: false, problem: 'No client authentication was sent' };
}

// Hashing first gives equal lengths, which timingSafeEqual needs, without leaking the secret's length.
const digest = (value: string) => createHash('sha256').update(value, 'utf8').digest();
const secretsEqual = (a: string, b: string) => timingSafeEqual(digest(a), digest(b));

/** Where a client assertion is checked: its `aud` must be this endpoint's exact URL. */
export interface AssertionContext {
  readonly endpoint: string;
  readonly now: number;
  readonly jtis: JtiRegistry;
}

/** Client assertions live at most this long (RFC 7523 servers commonly allow 5 minutes). */
const CLIENT_ASSERTION_MAX_LIFETIME_SECONDS = 300;

/**
 * Checks a presented client against the registered ones. Standard mode requires exactly the
 * client's registered method; Salesforce mode accepts Basic or body credentials for a client
 * with a secret, and `client_id` alone for a `none` client. A `private_key_jwt` client's assertion
 * is verified against its registered public key, with `aud` = the endpoint and a fresh `jti`.
 */
export function checkClient(
  presented: PresentedClient,
  clients: readonly OAuthClient[],
  mode: OAuthServerMode,
  context: AssertionContext,
): ClientCheck {
  if (presented.problem !== undefined) return { ok: false, description: presented.problem };
  const client = clients.find((candidate) => candidate.clientId === presented.clientId);
  if (!client || presented.method === undefined) return { ok: false, description: 'Unknown client' };
  if (presented.method === 'private_key_jwt' || client.authMethod === 'private_key_jwt') {
    if (presented.method !== client.authMethod) return { ok: false, description: `The client must authenticate with ${client.authMethod}` };
    if (client.publicKey === undefined || presented.assertion === undefined) return { ok: false, description: 'Client authentication failed' };
    const check = checkAssertion(
      presented.assertion,
      client.publicKey,
      {
        issuer: client.clientId,
        subject: client.clientId,
        audiences: [context.endpoint],
        maxLifetimeSeconds: CLIENT_ASSERTION_MAX_LIFETIME_SECONDS,
        now: context.now,
      },
      context.jtis,
    );
    return check.ok ? { ok: true, client } : { ok: false, description: check.description };
  }
  if (presented.method === 'none') {
    return client.authMethod === 'none' ? { ok: true, client } : { ok: false, description: 'The client must authenticate with its secret' };
  }
  if (mode === 'standard' && presented.method !== client.authMethod) {
    return { ok: false, description: `The client must authenticate with ${client.authMethod}` };
  }
  if (client.clientSecret === undefined || presented.secret === undefined || !secretsEqual(presented.secret, client.clientSecret)) {
    return { ok: false, description: 'Client authentication failed' };
  }
  return { ok: true, client };
}
