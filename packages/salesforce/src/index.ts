export {
  salesforceRefreshGrant,
  salesforceJwtBearerGrant,
  salesforceClientCredentialsGrant,
  revokeSalesforceToken,
  readSalesforceSession,
  type RevokeSalesforceTokenOptions,
  type SalesforceClientCredentialsGrantOptions,
  type SalesforceJwtBearerGrantOptions,
  type SalesforceRefreshGrantOptions,
  type SalesforceSession,
} from './grant.js';
export { isSalesforceSessionExpired } from './session-expired.js';
export {
  createJsforceConnection,
  jsforceRefreshFn,
  type JsforceConnectionOptions,
  type JsforceConnection,
  type JsforceHttpResponse,
  type JsforceRefreshCallback,
  type JsforceRefreshFn,
  type SalesforceTokenResponse,
} from './jsforce.js';
