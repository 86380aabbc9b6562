/*
 * The interceptor people write by hand: set the bearer on every request; on a 401, call the token
 * endpoint, keep the new tokens and retry the request once. No single flight, no queue, no
 * knowledge of expiry.
 */
import axios, { isAxiosError, type InternalAxiosRequestConfig } from 'axios';
import { axiosOutcome } from './outcome.js';
import { postRefreshTokenGrant, type BearerTokens } from './token-request.js';
import type { Contender } from './types.js';

type RetriedConfig = InternalAxiosRequestConfig & { retried?: boolean };

export const naiveAxios: Contender = {
  id: 'naive-axios',
  name: 'naive axios interceptor',
  client: 'axios',
  isTokenRelay: false,
  connect(setup) {
    const api = axios.create({ baseURL: setup.apiOrigin, adapter: setup.axiosAdapter });
    const tokenClient = axios.create();
    let tokens: BearerTokens = { accessToken: setup.tokens.accessToken, refreshToken: setup.tokens.refreshToken };

    api.interceptors.request.use((config) => {
      config.headers.Authorization = `Bearer ${tokens.accessToken}`;
      return config;
    });
    api.interceptors.response.use(undefined, async (error: unknown) => {
      const config = isAxiosError(error) ? (error.config as RetriedConfig | undefined) : undefined;
      if (!isAxiosError(error) || error.response?.status !== 401 || !config || config.retried) throw error;
      config.retried = true;
      tokens = await postRefreshTokenGrant(tokenClient, setup, tokens.refreshToken);
      return api.request(config);
    });
    return { send: (path) => axiosOutcome(api.get(path)) };
  },
};
