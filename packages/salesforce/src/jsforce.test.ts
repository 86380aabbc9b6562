import { ErrorCode, TokenRelayError, createTokenManager, isTokenRelayError, type TokenSet } from '@tokenrelay/core';
import { describe, expect, it, vi } from 'vitest';
import {
  jsforceRefreshFn,
  type JsforceConnection,
  type JsforceHttpResponse,
  type JsforceRefreshFn,
  type SalesforceTokenResponse,
} from './jsforce.js';

const instanceUrl = 'https://acme.my.salesforce.com';
const session = (accessToken: string): TokenSet => ({
  accessToken,
  refreshToken: 'refresh-1',
  scope: 'api refresh_token',
  raw: { instance_url: instanceUrl, id: 'https://login.salesforce.com/id/00D/005', issued_at: '1718000000123', signature: 'sig' },
});

/** A manager whose refreshes mint access-1, access-2, … and count themselves. */
function countingManager(tokens: TokenSet | undefined = session('access-0')) {
  let refreshes = 0;
  const manager = createTokenManager({
    ...(tokens === undefined ? {} : { tokens }),
    refresh: async () => session(`access-${++refreshes}`),
    retry: false,
  });
  return { manager, refreshes: () => refreshes };
}

/** A stand-in for a jsforce Connection: a transport whose answers the test decides. */
function fakeConnection(accessToken: string | undefined) {
  const statuses: number[] = [];
  const conn: JsforceConnection = {
    accessToken,
    instanceUrl: 'https://old-instance.my.salesforce.com',
    _transport: {
      httpRequest: async (): Promise<JsforceHttpResponse> => ({ statusCode: statuses.shift() ?? 200, body: '' }),
    },
  };
  /** Sends `request` with the connection's token and waits for the answer, as jsforce's HttpApi does. */
  const send = async (request: object, status: number) => {
    statuses.push(status);
    return conn._transport.httpRequest(request);
  };
  return { conn, send };
}

/** Calls the refreshFn the way jsforce's SessionRefreshDelegate does, and applies its result to the connection. */
function refreshThrough(refreshFn: JsforceRefreshFn, conn: JsforceConnection) {
  return new Promise<{ accessToken: string | undefined; response: SalesforceTokenResponse | undefined }>((resolve, reject) => {
    refreshFn(conn, (error, accessToken, response) => {
      if (error) return reject(error);
      conn.accessToken = accessToken;
      resolve({ accessToken, response });
    });
  });
}

async function errorOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => expect.unreachable('expected a rejection'),
    (error: unknown) => error,
  );
}

describe('jsforceRefreshFn', () => {
  it('refreshes through the manager and hands jsforce the token, a TokenResponse and the instance URL', async () => {
    const { manager, refreshes } = countingManager();
    const { conn } = fakeConnection('access-0');

    const { accessToken, response } = await refreshThrough(jsforceRefreshFn(manager), conn);

    expect(refreshes()).toBe(1);
    expect(accessToken).toBe('access-1');
    expect(conn.instanceUrl).toBe(instanceUrl);
    expect(response).toEqual({
      access_token: 'access-1',
      refresh_token: 'refresh-1',
      token_type: 'Bearer',
      scope: 'api refresh_token',
      instance_url: instanceUrl,
      id: 'https://login.salesforce.com/id/00D/005',
      issued_at: '1718000000123',
      signature: 'sig',
    });
  });

  it('gives a connection holding an older token the current one without a refresh', async () => {
    const { manager, refreshes } = countingManager();
    await manager.refresh(); // another client refreshed: the manager holds access-1
    const { conn } = fakeConnection('access-0');

    expect((await refreshThrough(jsforceRefreshFn(manager), conn)).accessToken).toBe('access-1');
    expect(refreshes()).toBe(1);
  });

  it('gives a connection created without a token the current one without a refresh', async () => {
    const { manager, refreshes } = countingManager();
    const { conn } = fakeConnection(undefined);

    expect((await refreshThrough(jsforceRefreshFn(manager), conn)).accessToken).toBe('access-0');
    expect(refreshes()).toBe(0);
  });

  it('shares one refresh among connections that ask at the same time', async () => {
    const { manager, refreshes } = countingManager();
    const refreshFn = jsforceRefreshFn(manager);
    const connections = [1, 2, 3].map(() => fakeConnection('access-0').conn);

    const results = await Promise.all(connections.map((conn) => refreshThrough(refreshFn, conn)));

    expect(results.map((result) => result.accessToken)).toEqual(['access-1', 'access-1', 'access-1']);
    expect(refreshes()).toBe(1);
  });

  it("passes the manager's errors to jsforce's callback", async () => {
    const manager = createTokenManager({
      tokens: session('access-0'),
      refresh: async () => {
        throw new TokenRelayError(ErrorCode.SESSION_EXPIRED, 'The refresh token is dead');
      },
    });
    const error = await errorOf(refreshThrough(jsforceRefreshFn(manager), fakeConnection('access-0').conn));
    expect(isTokenRelayError(error) && error.code).toBe(ErrorCode.SESSION_EXPIRED);
  });

  it('fails with a configuration error for an object that is not a jsforce 3 Connection', async () => {
    const { manager } = countingManager();
    const notAConnection = { accessToken: 'access-0', instanceUrl } as unknown as JsforceConnection;
    const error = await errorOf(refreshThrough(jsforceRefreshFn(manager), notAConnection));
    expect(isTokenRelayError(error) && error.code).toBe(ErrorCode.CONFIGURATION_ERROR);
  });

  it("fails jsforce's refresh, instead of leaving it pending, when a 'refresh' listener throws", async () => {
    const { manager } = countingManager();
    const { conn } = fakeConnection('access-0');
    const outcome = vi.fn();
    jsforceRefreshFn(manager)(conn, (error, accessToken) => {
      outcome(error?.message, accessToken);
      if (!error) throw new Error('listener bug');
    });
    await vi.waitFor(() => expect(outcome).toHaveBeenCalledTimes(2));
    expect(outcome.mock.calls).toEqual([
      [undefined, 'access-1'],
      ['listener bug', undefined],
    ]);
  });
});

describe('jsforceRefreshFn replay cap', () => {
  it('refuses a second refresh when the replayed request is rejected with the new token, and never sends it a third time', async () => {
    const { manager, refreshes } = countingManager();
    const refreshFn = jsforceRefreshFn(manager);
    const { conn, send } = fakeConnection('access-0');
    const request = {};

    await refreshThrough(refreshFn, conn); // the first 401: refreshed to access-1
    await send(request, 401); // jsforce's replay of the same request, rejected again
    const error = await errorOf(refreshThrough(refreshFn, conn));

    expect(isTokenRelayError(error) && error.code).toBe(ErrorCode.REFRESH_FAILED);
    expect(refreshes()).toBe(1);
    expect(() => conn._transport.httpRequest(request)).toThrow(/does not refresh again for it, nor replay a request twice/);
  });

  it('refuses when the just-refreshed token is rejected twice before Salesforce accepted it once', async () => {
    const { manager, refreshes } = countingManager();
    const refreshFn = jsforceRefreshFn(manager);
    const { conn, send } = fakeConnection('access-0');

    await refreshThrough(refreshFn, conn);
    await send({}, 200); // answered (accepted): later requests are new, not replays
    await refreshThrough(refreshFn, conn); // the accepted token expired: refreshing is right
    expect(refreshes()).toBe(2);

    await send({}, 404); // an answer that is no rejection: the session was accepted
    await send({}, 401);
    await refreshThrough(refreshFn, conn);
    expect(refreshes()).toBe(3);

    await send({}, 503); // a failure that says nothing about the session
    await send({}, 401);
    await send({}, 401);
    expect(isTokenRelayError(await errorOf(refreshThrough(refreshFn, conn)))).toBe(true);
    expect(refreshes()).toBe(3);
  });

  it('refreshes again for a new request once the new token was accepted, so only replays are capped', async () => {
    const { manager, refreshes } = countingManager();
    const refreshFn = jsforceRefreshFn(manager);
    const { conn, send } = fakeConnection('access-0');

    await refreshThrough(refreshFn, conn);
    await send({}, 200);
    await send({}, 401); // later, the token expired: a new request is rejected
    await refreshThrough(refreshFn, conn);

    expect(refreshes()).toBe(2);
    expect(conn.accessToken).toBe('access-2');
  });

  it("takes a newer token from the manager even when the connection's own refresh would be refused", async () => {
    const { manager, refreshes } = countingManager();
    const refreshFn = jsforceRefreshFn(manager);
    const { conn, send } = fakeConnection('access-0');
    const request = {};
    await refreshThrough(refreshFn, conn);
    await send(request, 401);

    await manager.refresh(); // another client got access-2
    expect((await refreshThrough(refreshFn, conn)).accessToken).toBe('access-2');
    expect(refreshes()).toBe(2);
  });
});
