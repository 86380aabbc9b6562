import type { FailedResponse } from '@tokenrelay/core';

/**
 * 401s that say INVALID_SESSION_ID but that a new token cannot cure (the connected app or the
 * session type is not allowed for the API). jsforce skips the same two, or it loops.
 */
const notCuredByRefresh = ['Connected app is not attached to Agent', 'This session is not valid for use with the REST API'];

/** Session-expiry answers are tiny; a larger body is not one, and is not read past this. */
const MAX_INSPECTED_CHARS = 16_384;

const soapInvalidSession = /<(?:\w+:)?faultcode>\s*[A-Za-z][\w.-]*:INVALID_SESSION_ID\s*<\/(?:\w+:)?faultcode>/;
const bulkInvalidSession = /<exceptionCode>\s*InvalidSessionId\s*<\/exceptionCode>|"exceptionCode"\s*:\s*"InvalidSessionId"/;

/**
 * Whether a status and body are Salesforce's "session expired or invalid" answer, by API:
 * REST, Apex REST and Bulk 2.0 answer 401 with `INVALID_SESSION_ID`, Bulk 1.0 answers 400 with
 * the `InvalidSessionId` exception code (XML or JSON), SOAP answers 500 with a
 * `sf:INVALID_SESSION_ID` fault.
 */
export function isSessionExpiryAnswer(status: number, body: string): boolean {
  switch (status) {
    case 401:
      return body.includes('INVALID_SESSION_ID') && !notCuredByRefresh.some((phrase) => body.includes(phrase));
    case 400:
      return bulkInvalidSession.test(body);
    case 500:
      return soapInvalidSession.test(body);
    default:
      return false;
  }
}

/**
 * The `shouldRefresh` for Salesforce APIs, for `attachTokenRelay` (axios) or `withTokenRelay`
 * (fetch): true for an expired or invalid session, which Salesforce reports without the
 * `WWW-Authenticate` header the default check reads:
 *
 * - REST, Apex REST, Bulk 2.0: 401 whose body has `INVALID_SESSION_ID`
 *   (`[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]`);
 * - Bulk 1.0: 400 with `<exceptionCode>InvalidSessionId</exceptionCode>` (or its JSON form);
 * - SOAP: 500 with a `<faultcode>sf:INVALID_SESSION_ID</faultcode>` fault.
 *
 * False for every other answer, and for the 401s a new token cannot cure ("Connected app is not
 * attached to Agent", "This session is not valid for use with the REST API"): refreshing on those
 * would only repeat the failure. The body is read only for those three statuses, only when it is
 * declared no larger than 16 KiB, and only its first 16 KiB are inspected.
 *
 * Takes what the adapters pass (`FailedResponse`) or a fetch `Response` from your own code; a
 * `Response`'s body is read from a clone, so you can still read it afterwards.
 *
 * @example
 * ```ts
 * attachTokenRelay(api, manager, { origins: [instanceUrl], shouldRefresh: isSalesforceSessionExpired })
 * const response = await fetch(url, init)
 * if (await isSalesforceSessionExpired(response)) await manager.refresh({ staleAccessToken })
 * ```
 */
export async function isSalesforceSessionExpired(response: FailedResponse | Response): Promise<boolean> {
  const { status } = response;
  if (status !== 401 && status !== 400 && status !== 500) return false;
  const isFailedResponse = 'header' in response && typeof response.header === 'function';
  const declaredLength = Number(isFailedResponse ? response.header('content-length') : (response as Response).headers.get('content-length'));
  if (declaredLength > MAX_INSPECTED_CHARS) return false;
  const text = isFailedResponse ? await response.text() : await (response as Response).clone().text();
  return isSessionExpiryAnswer(status, text.slice(0, MAX_INSPECTED_CHARS));
}
