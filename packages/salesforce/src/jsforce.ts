/*
 * jsforce bridge. jsforce 3 calls `refreshFn(conn, callback)` from its SessionRefreshDelegate
 * when an API answers "session expired"; on callback(null, accessToken, res) it sets
 * conn.accessToken, emits 'refresh'(accessToken, res) and replays the failed request, with the
 * same request object, through HttpApi.request. That replay is recursive with no cap: if the new
 * token is rejected too, the delegate calls refreshFn again, and again. This bridge routes every
 * refresh through one TokenManager and refuses the refresh that would start that loop.
 */
import { ErrorCode, TokenRelayError, type TokenManager, type TokenSet } from '@tokenrelay/core';
import { readSalesforceSession } from './grant.js';
import { isSessionExpiryAnswer } from './session-expired.js';

/** What the bridge reads of a jsforce HTTP response. */
export interface JsforceHttpResponse {
  readonly statusCode: number;
  readonly body?: unknown;
}

/**
 * The parts of a jsforce 3 `Connection` the bridge uses, declared here so that this package does
 * not import jsforce. `_transport` is jsforce's own (see {@link jsforceRefreshFn} for why).
 */
export interface JsforceConnection {
  accessToken?: string | null;
  instanceUrl: string;
  _transport: {
    httpRequest(request: object, options?: object): PromiseLike<JsforceHttpResponse>;
  };
}

/**
 * The token response handed to jsforce (and to its `'refresh'` listeners), shaped like jsforce's
 * `TokenResponse` and rebuilt from the manager's tokens: the Salesforce fields of `tokens.raw`,
 * the access token, and the manager's current refresh token (rotated or not). A field the
 * manager does not know (tokens set by hand without `raw`) is an empty string.
 */
export interface SalesforceTokenResponse {
  access_token: string;
  refresh_token?: string;
  token_type: 'Bearer';
  scope: string;
  instance_url: string;
  id: string;
  issued_at: string;
  signature: string;
  sfdc_community_url?: string;
  sfdc_community_id?: string;
}

/** jsforce's refresh callback: `callback(error)` or `callback(null, accessToken, response)`. */
export type JsforceRefreshCallback = (
  error: Error | null | undefined,
  accessToken?: string,
  response?: SalesforceTokenResponse,
) => unknown;

/** A jsforce 3 `refreshFn`, for `new jsforce.Connection({ refreshFn })`. */
export type JsforceRefreshFn = (conn: JsforceConnection, callback: JsforceRefreshCallback) => void;

/** What the bridge knows of one connection. */
interface ConnectionState {
  /** The transport whose sends are observed (jsforce keeps one per connection). */
  transport: JsforceConnection['_transport'] | undefined;
  /** Request objects already sent: jsforce replays a request by sending the same object again. */
  readonly sent: WeakSet<object>;
  /** Requests whose replay was rejected: they are never sent again. */
  readonly exhausted: WeakSet<object>;
  /** The access token the last refresh gave this connection, and what became of it so far. */
  handed: string | undefined;
  handedAnswered: boolean;
  handedAccepted: boolean;
  handedRejections: number;
  /** A replay carrying this token was rejected, and nothing carrying it was accepted since. */
  rejectedOnReplay: string | undefined;
}

const newState = (): ConnectionState => ({
  transport: undefined,
  sent: new WeakSet(),
  exhausted: new WeakSet(),
  handed: undefined,
  handedAnswered: false,
  handedAccepted: false,
  handedRejections: 0,
  rejectedOnReplay: undefined,
});

const replayRejected = () =>
  new TokenRelayError(
    ErrorCode.REFRESH_FAILED,
    'Salesforce rejected the session just given by a refresh; tokenrelay does not refresh again for it, nor replay ' +
      "a request twice. A new token cannot cure this: check the connected app's OAuth policies, IP restrictions and " +
      "the user's API access",
  );

/**
 * Whether jsforce may take this answer for an expired session (and so ask for a refresh): any
 * 401 (its REST check), or Bulk 1.0's and SOAP's invalid-session answers.
 */
const isRejection = (response: JsforceHttpResponse) =>
  response.statusCode === 401 || isSessionExpiryAnswer(response.statusCode, typeof response.body === 'string' ? response.body : '');

const text = (value: unknown) => (typeof value === 'string' ? value : value === undefined || value === null ? '' : String(value));

function tokenResponse(tokens: TokenSet): SalesforceTokenResponse {
  const raw = tokens.raw ?? {};
  const response: SalesforceTokenResponse = {
    access_token: tokens.accessToken,
    token_type: 'Bearer',
    scope: tokens.scope ?? '',
    instance_url: text(raw.instance_url),
    id: text(raw.id),
    issued_at: text(raw.issued_at),
    signature: text(raw.signature),
  };
  if (tokens.refreshToken !== undefined) response.refresh_token = tokens.refreshToken;
  if (typeof raw.sfdc_community_url === 'string') response.sfdc_community_url = raw.sfdc_community_url;
  if (typeof raw.sfdc_community_id === 'string') response.sfdc_community_id = raw.sfdc_community_id;
  return response;
}

/**
 * Watches the connection's sends: which are jsforce's replays (the same request object sent
 * again, or a request sent with a just-refreshed token before that token had any answer), and
 * whether Salesforce accepted or rejected the session each carried.
 */
function observeTransport(conn: JsforceConnection, state: ConnectionState): void {
  const transport = conn._transport;
  if (transport !== undefined && state.transport === transport) return;
  if (typeof transport?.httpRequest !== 'function') {
    throw new TokenRelayError(
      ErrorCode.CONFIGURATION_ERROR,
      'jsforceRefreshFn: this connection has no _transport.httpRequest; it needs a jsforce 3 Connection',
    );
  }
  const send = transport.httpRequest;
  transport.httpRequest = function (this: unknown, request: object, options?: object) {
    // jsforce resends a rejected replay without asking for a refresh when another refresh ended
    // meanwhile. Thrown synchronously, this fails that call before anything is sent.
    if (state.exhausted.has(request)) throw replayRejected();
    // jsforce puts conn.accessToken into the request (header, SOAP envelope) just before sending.
    const token = conn.accessToken ?? undefined;
    const replay = state.sent.has(request) || (token !== undefined && token === state.handed && !state.handedAnswered);
    state.sent.add(request);
    const answer = send.call(this, request, options);
    const settle = (response: JsforceHttpResponse | undefined) => {
      // Compared at answer time: a refresh may have handed the connection another token meanwhile.
      const handed = token !== undefined && token === state.handed;
      if (handed) state.handedAnswered = true;
      if (token === undefined || response === undefined) return;
      if (!isRejection(response)) {
        // A 5xx tells nothing about the session; any other answer means Salesforce took it.
        if (response.statusCode >= 500) return;
        if (handed) state.handedAccepted = true;
        if (state.rejectedOnReplay === token) state.rejectedOnReplay = undefined;
        return;
      }
      if (handed) state.handedRejections++;
      if (replay) {
        state.rejectedOnReplay = token;
        state.exhausted.add(request);
      }
    };
    // Registered before jsforce awaits the answer, so the state is current when jsforce asks for a refresh.
    answer.then(settle, () => settle(undefined));
    return answer;
  };
  state.transport = transport;
}

/** Whether a refresh asked for by this connection must be refused; reads the state before any await. */
function mustRefuse(state: ConnectionState, stale: string): boolean {
  if (state.rejectedOnReplay === stale) return true;
  return stale === state.handed && !state.handedAccepted && state.handedRejections >= 2;
}

/**
 * Returns a `refreshFn` for jsforce 3 connections, so that every `Connection` created with it,
 * and every axios or fetch client on the same manager, shares the manager's single-flight
 * refresh, its store and its (rotated) refresh token.
 *
 * What happens when a Salesforce API answers "session expired" on a connection:
 * - If the manager already holds a newer access token than the connection (another connection
 *   or client refreshed meanwhile), the connection just takes it: no token call.
 * - Otherwise the manager refreshes (one token call however many connections ask at once).
 * - jsforce then sets `conn.accessToken`, emits `'refresh'(accessToken, response)` (see
 *   {@link SalesforceTokenResponse}) and replays the request; this bridge also sets
 *   `conn.instanceUrl` from the token response's `instance_url`.
 *
 * Replays are capped at once. jsforce replays a rejected request after every refresh with no
 * limit (`HttpApi.request` → `SessionRefreshDelegate.refresh` → `this.request(request)`, recursively),
 * so a token Salesforce keeps rejecting (API access disabled, IP or session policies) would cost a
 * token call per round trip, forever. The bridge therefore watches the connection's sends (it
 * wraps `conn._transport.httpRequest` when the connection first refreshes) and, for the token the
 * last refresh gave the connection, refuses to refresh again (no token call) once Salesforce
 * rejected that token
 * - on a replay: the same request object sent again, or any request sent with the token before
 *   the token had an answer (this also covers requests sent before the bridge was watching); or
 * - twice, without accepting it once.
 *
 * A request jsforce would send a third time is refused before it goes out. The failing call gets
 * jsforce's `Error('Unable to refresh session due to: …')` carrying the message of a
 * `TokenRelayError` with code `REFRESH_FAILED` (or that error itself). The connection refreshes
 * normally again once Salesforce accepts that token on any request, and it always takes a newer
 * token the manager holds (another client's refresh, `manager.refresh()`, `setTokens()`) without
 * a token call.
 *
 * Errors from the manager reach jsforce the same way (`SESSION_EXPIRED` when the refresh token
 * is dead). jsforce keeps only the message; listen to `manager.on('sessionExpired')` to react.
 *
 * No helper pushes new tokens into idle connections: a connection holding an older token gets
 * the current one, without a token call, on its next "session expired" answer. Overwriting
 * `conn.accessToken` from outside would instead make a late answer to a request sent with the old
 * token look like a rejection of the new one. Do not give the `Connection` a `refreshToken`: the
 * manager holds it.
 *
 * @example
 * ```ts
 * const manager = createTokenManager({ tokens, store, refresh: salesforceRefreshGrant({ clientId, clientSecret }) })
 * const current = await manager.getTokens()
 * const conn = new jsforce.Connection({
 *   instanceUrl: readSalesforceSession(current).instanceUrl,
 *   accessToken: current?.accessToken,
 *   refreshFn: jsforceRefreshFn(manager),
 *   version: '62.0',
 * })
 * ```
 */
export function jsforceRefreshFn(manager: TokenManager): JsforceRefreshFn {
  const states = new WeakMap<JsforceConnection, ConnectionState>();

  async function nextTokens(conn: JsforceConnection, state: ConnectionState): Promise<TokenSet> {
    const stale = conn.accessToken || undefined;
    // Decided before any await: jsforce calls us right after the answer that updated the state.
    const refuse = stale !== undefined && mustRefuse(state, stale);
    state.rejectedOnReplay = undefined;
    observeTransport(conn, state);
    if (stale === undefined) {
      // A connection created without a token: hand it the current one (refreshed first only if it is expiring).
      await manager.getAccessToken();
      const tokens = await manager.getTokens();
      if (tokens) return tokens;
      throw new TokenRelayError(ErrorCode.NO_TOKENS, 'The token manager holds no tokens; call setTokens() after sign-in');
    }
    // A newer token in the manager is taken without a token call even then.
    if (refuse && (await manager.getTokens())?.accessToken === stale) throw replayRejected();
    return manager.refresh({ staleAccessToken: stale });
  }

  return (conn, callback) => {
    let state = states.get(conn);
    if (!state) {
      state = newState();
      states.set(conn, state);
    }
    const connectionState = state;
    const fail = (error: unknown) =>
      callback(
        error instanceof Error ? error : new TokenRelayError(ErrorCode.REFRESH_FAILED, 'The refresh failed (see cause)', { cause: error }),
      );
    nextTokens(conn, connectionState)
      .then((tokens) => {
        const { instanceUrl } = readSalesforceSession(tokens);
        if (instanceUrl !== undefined) conn.instanceUrl = instanceUrl;
        if (connectionState.handed !== tokens.accessToken) {
          connectionState.handed = tokens.accessToken;
          connectionState.handedAnswered = false;
          connectionState.handedAccepted = false;
          connectionState.handedRejections = 0;
        }
        callback(null, tokens.accessToken, tokenResponse(tokens));
      }, fail)
      // A throwing 'refresh' listener would leave jsforce's refresh pending forever: fail it instead, as jsforce's own refreshFn does.
      .catch(fail);
  };
}

/** What {@link createJsforceConnection} passes to the jsforce `Connection` constructor. */
export interface JsforceConnectionOptions {
  instanceUrl?: string;
  accessToken?: string;
  refreshFn: JsforceRefreshFn;
}

/**
 * Creates a jsforce 3 `Connection` on the manager's session: it gets the manager's access token
 * (acquiring the first one for a JWT bearer or client credentials manager, or refreshing an
 * expiring one), points at the session's `instance_url`, and refreshes through
 * {@link jsforceRefreshFn}. Pass jsforce's `Connection` class (this package does not import
 * jsforce) and any other connection options, such as `version`.
 *
 * @throws TokenRelayError whatever the manager's first token call throws (`CREDENTIALS_REJECTED`,
 * `NO_TOKENS` for a refresh-token manager with no session, …).
 * @example
 * ```ts
 * import jsforce from 'jsforce'
 * const manager = createTokenManager({ refresh: salesforceJwtBearerGrant({ clientId, username, privateKey }) })
 * const conn = await createJsforceConnection(manager, jsforce.Connection, { version: '62.0' })
 * const { records } = await conn.query('SELECT Id, Name FROM Account')
 * ```
 */
export async function createJsforceConnection<C, O extends object = object>(
  manager: TokenManager,
  Connection: new (options: O & JsforceConnectionOptions) => C,
  options?: O,
): Promise<C> {
  const accessToken = await manager.getAccessToken();
  const { instanceUrl } = readSalesforceSession(await manager.getTokens());
  return new Connection({
    ...(options as O),
    ...(instanceUrl === undefined ? {} : { instanceUrl }),
    accessToken,
    refreshFn: jsforceRefreshFn(manager),
  });
}
