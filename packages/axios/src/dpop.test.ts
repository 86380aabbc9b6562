import { ErrorCode } from '@tokenrelay/core';
import type { DpopRequest, DpopSender } from '@tokenrelay/core/kit';
import axios, { AxiosHeaders, type AxiosAdapter, type AxiosResponse } from 'axios';
import { describe, expect, it } from 'vitest';
import { attachDpop } from './dpop.js';

const API = 'https://api.example.test';

/** A transport that answers the first request with a nonce challenge (rejected, as axios's own adapters do) and the rest with 200. */
function challengingTransport() {
  const sent: { dpop: unknown; authorization: unknown }[] = [];
  const adapter: AxiosAdapter = async (config) => {
    const headers = AxiosHeaders.from(config.headers);
    sent.push({ dpop: headers.get('DPoP'), authorization: headers.get('Authorization') });
    if (sent.length > 1) return { data: 'ok', status: 200, statusText: 'OK', headers: {}, config };
    const response = {
      data: '',
      status: 401,
      statusText: 'Unauthorized',
      headers: new AxiosHeaders({ 'www-authenticate': 'DPoP error="use_dpop_nonce"', 'dpop-nonce': 'n-1' }),
      config,
    };
    throw new axios.AxiosError('Request failed with status code 401', 'ERR_BAD_REQUEST', config, undefined, response);
  };
  return { adapter, sent };
}

/** A DpopSender that signs attempts `proof-1`, `proof-2`, … and retries once on a 401 carrying a nonce, as createDpop's does. */
function countingSender() {
  const requests: Pick<DpopRequest<unknown>, 'method' | 'url' | 'authorization'>[] = [];
  let proofs = 0;
  const sender: DpopSender = {
    async send<R>(request: DpopRequest<R>): Promise<R> {
      requests.push({ method: request.method, url: request.url, authorization: request.authorization });
      const first = await request.attempt(`proof-${++proofs}`);
      const answer = request.answerOf(first);
      if (answer.status !== 401 || answer.header('dpop-nonce') === undefined) return first;
      request.discard?.(first);
      return request.attempt(`proof-${++proofs}`);
    },
  };
  return { sender, requests };
}

describe('attachDpop', () => {
  it('signs every attempt as it is sent, with the Authorization the request carries, and answers with the retry', async () => {
    const transport = challengingTransport();
    const { sender, requests } = countingSender();
    const api = axios.create({ baseURL: API, adapter: transport.adapter, headers: { Authorization: 'DPoP at-1' } });
    attachDpop(api, sender);

    const response: AxiosResponse = await api.post('/items?page=2', { name: 'x' });

    expect(response.data).toBe('ok');
    expect(transport.sent).toEqual([
      { dpop: 'proof-1', authorization: 'DPoP at-1' },
      { dpop: 'proof-2', authorization: 'DPoP at-1' },
    ]);
    expect(requests).toEqual([{ method: 'post', url: `${API}/items?page=2`, authorization: 'DPoP at-1' }]);
  });

  it('rejects as axios does when the answer it keeps is a failure', async () => {
    const { adapter } = challengingTransport();
    const api = axios.create({ baseURL: API, adapter });
    attachDpop(api, { send: (request) => request.attempt('only-proof') });

    const failure: unknown = await api.get('/me').catch((error: unknown) => error);

    expect(axios.isAxiosError(failure) && failure.response?.status).toBe(401);
  });

  it('puts the instance adapter back on detach, and refuses a second attachDpop while attached', async () => {
    const transport = challengingTransport();
    const api = axios.create({ baseURL: API, adapter: transport.adapter });
    const detach = attachDpop(api, countingSender().sender);

    expect(() => attachDpop(api, countingSender().sender)).toThrow(expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR }));
    detach();
    detach();
    expect(api.defaults.adapter).toBe(transport.adapter);
    expect(() => attachDpop(api, countingSender().sender)).not.toThrow();
  });
});
