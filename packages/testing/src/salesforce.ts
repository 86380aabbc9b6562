import { createHmac } from 'node:crypto';

/** The records the Salesforce mode serves: one org, one user, one Account. */
export const salesforceFixtures = {
  /** The org id in the identity URL (`id`) of token responses. */
  organizationId: '00D000000000001AAA',
  /** The user id in the identity URL. */
  userId: '005000000000001AAA',
  /** The user's username: the `sub` a JWT bearer assertion must name (the user is pre-authorized for every app). */
  username: 'integration@acme.example',
  /** The Account every query returns and `sobjects/Account/<Id>` serves. */
  account: { Id: '001000000000001AAA', Name: 'Acme' },
} as const;

/** Salesforce's content type, byte for byte. */
export const SALESFORCE_JSON = 'application/json;charset=UTF-8';

/** The body of Salesforce's REST 401 for an expired or invalid session. */
export const INVALID_SESSION_BODY = JSON.stringify([{ message: 'Session expired or invalid', errorCode: 'INVALID_SESSION_ID' }]);

/** The identity URL of the fixture user, as token responses carry it in `id`. */
export const identityUrl = (serverUrl: string): string =>
  `${serverUrl}/id/${salesforceFixtures.organizationId}/${salesforceFixtures.userId}`;

/** Salesforce's `signature`: base64(HMAC-SHA256(key = client secret, message = id + issued_at)). */
export const salesforceSignature = (clientSecret: string, id: string, issuedAt: string): string =>
  createHmac('sha256', clientSecret).update(id + issuedAt).digest('base64');

const restPath = /^\/services\/data\/v(\d+\.\d+)\/(?:(query|queryAll)\/?|sobjects\/([A-Za-z]\w*)\/([A-Za-z0-9]{15}|[A-Za-z0-9]{18}))$/;

const sfError = (status: number, errorCode: string, message: string) => ({ status, body: [{ errorCode, message }] });

/**
 * Answers an authenticated Salesforce REST request, as jsforce 3 sends them:
 * `GET /services/data/v<ver>/query?q=<soql>` (and `queryAll`), and
 * `GET /services/data/v<ver>/sobjects/<type>/<id>` for the fixture Account.
 */
export function salesforceRest(method: string, pathname: string, search: URLSearchParams): { status: number; body: unknown } {
  const match = restPath.exec(pathname);
  if (!match) return sfError(404, 'NOT_FOUND', 'The requested resource does not exist');
  if (method !== 'GET' && method !== 'HEAD') {
    return sfError(405, 'METHOD_NOT_ALLOWED', `HTTP Method '${method}' not allowed. Allowed are GET,HEAD`);
  }
  const [, version, queryResource, type, id] = match;
  const { account } = salesforceFixtures;
  const record = { attributes: { type: 'Account', url: `/services/data/v${version}/sobjects/Account/${account.Id}` }, ...account };
  if (queryResource) {
    if (!search.get('q')) return sfError(400, 'MALFORMED_QUERY', 'A query string has to be specified');
    return { status: 200, body: { totalSize: 1, done: true, records: [record] } };
  }
  // Salesforce ids are case-sensitive; the 15-character form is the 18-character one without its checksum.
  if (type === 'Account' && id !== undefined && account.Id.startsWith(id)) return { status: 200, body: record };
  return sfError(404, 'NOT_FOUND', 'The requested resource does not exist');
}
