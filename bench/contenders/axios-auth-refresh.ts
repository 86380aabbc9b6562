/*
 * axios-auth-refresh 5, as its README recommends: createAuthRefresh(instance, refreshAuthLogic)
 * with the default options (statusCodes [401], deduplicateRefresh: true, maxRetries 3), a
 * refreshAuthLogic that posts to the token endpoint, stores the new tokens and sets the header on
 * the failed request, and a request interceptor that sets the current token. The token call goes
 * through a separate axios instance, so it never carries the bearer or meets the interceptors.
 *
 * With the default, a 401 that arrives while a refresh runs is rejected, not queued (the instance
 * is "skipped" during the refresh; reported upstream as Flyrell/axios-auth-refresh#307). The
 * second contender sets `deduplicateRefresh: false`, the workaround from that report: those 401s
 * then wait for the running refresh too.
 */
import axios, { type AxiosError } from 'axios';
import { createAuthRefresh, type AxiosAuthRefreshOptions } from 'axios-auth-refresh';
import { axiosOutcome } from './outcome.js';
import { postRefreshTokenGrant, type BearerTokens } from './token-request.js';
import type { Contender } from './types.js';

function axiosAuthRefreshContender(id: string, name: string, options: AxiosAuthRefreshOptions): Contender {
  return {
    id,
    name,
    client: 'axios',
    isTokenRelay: false,
    connect(setup) {
      const api = axios.create({ baseURL: setup.apiOrigin, adapter: setup.axiosAdapter });
      const tokenClient = axios.create();
      let tokens: BearerTokens = { accessToken: setup.tokens.accessToken, refreshToken: setup.tokens.refreshToken };

      const refreshAuthLogic = async (failedRequest: AxiosError) => {
        tokens = await postRefreshTokenGrant(tokenClient, setup, tokens.refreshToken);
        if (failedRequest.response) failedRequest.response.config.headers.Authorization = `Bearer ${tokens.accessToken}`;
      };
      // Its .d.ts sees axios's CommonJS typings; the instance is the same object.
      createAuthRefresh(api as Parameters<typeof createAuthRefresh>[0], refreshAuthLogic, options);
      api.interceptors.request.use((request) => {
        request.headers.Authorization = `Bearer ${tokens.accessToken}`;
        return request;
      });
      return { send: (path) => axiosOutcome(api.get(path)) };
    },
  };
}

export const axiosAuthRefresh = axiosAuthRefreshContender('axios-auth-refresh', 'axios-auth-refresh', {});

export const axiosAuthRefreshWithoutDeduplication = axiosAuthRefreshContender(
  'axios-auth-refresh-no-dedupe',
  'axios-auth-refresh (deduplicateRefresh: false)',
  { deduplicateRefresh: false },
);
