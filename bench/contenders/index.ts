import { axiosAuthRefresh, axiosAuthRefreshWithoutDeduplication } from './axios-auth-refresh.js';
import { badgatewayOAuth2Client } from './badgateway-oauth2-client.js';
import { kyOnTokenRelay } from './ky.js';
import { naiveAxios } from './naive-axios.js';
import { ofetchOnTokenRelay } from './ofetch.js';
import { tokenRelayAxios, tokenRelayFetch } from './tokenrelay.js';
import type { Contender } from './types.js';

/** Every contender, in table column order. */
export const contenders: readonly Contender[] = [
  tokenRelayAxios,
  tokenRelayFetch,
  axiosAuthRefresh,
  axiosAuthRefreshWithoutDeduplication,
  badgatewayOAuth2Client,
  naiveAxios,
  kyOnTokenRelay,
  ofetchOnTokenRelay,
];

export { bareAxios, bareFetch } from './bare.js';
export { tokenRelayAxios, tokenRelayFetch } from './tokenrelay.js';
export { takesPart, type Contender, type ContenderSetup, type Outcome, type Session } from './types.js';
