import type { FailedResponse } from '@tokenrelay/core';
import { describe, expect, it } from 'vitest';
import { isSalesforceSessionExpired } from './session-expired.js';

function failed(status: number, body: string, headers: Record<string, string> = {}) {
  let reads = 0;
  const response: FailedResponse = {
    status,
    url: 'https://acme.my.salesforce.com/services/data/v62.0/query',
    header: (name) => headers[name.toLowerCase()],
    text: async () => {
      reads++;
      return body;
    },
  };
  return { response, reads: () => reads };
}

const restExpired = '[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]';
const soapFault = (code: string) =>
  '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" ' +
  'xmlns:sf="urn:fault.partner.soap.sforce.com"><soapenv:Body><soapenv:Fault>' +
  `<faultcode>${code}</faultcode><faultstring>INVALID_SESSION_ID: Invalid Session ID found in SessionHeader</faultstring>` +
  '</soapenv:Fault></soapenv:Body></soapenv:Envelope>';
const bulkXml =
  '<?xml version="1.0" encoding="UTF-8"?><error xmlns="http://www.force.com/2009/06/asyncapi/dataload">' +
  '<exceptionCode>InvalidSessionId</exceptionCode><exceptionMessage>Invalid session id</exceptionMessage></error>';

describe('isSalesforceSessionExpired', () => {
  it.each([
    ['a REST 401 INVALID_SESSION_ID', 401, restExpired],
    ['a Bulk 2.0 401 INVALID_SESSION_ID', 401, '[{"errorCode":"INVALID_SESSION_ID","message":"Session expired or invalid"}]'],
    ['a Bulk 1.0 400 InvalidSessionId (XML)', 400, bulkXml],
    ['a Bulk 1.0 400 InvalidSessionId (JSON)', 400, '{"exceptionCode":"InvalidSessionId","exceptionMessage":"Invalid session id"}'],
    ['a SOAP 500 sf:INVALID_SESSION_ID fault', 500, soapFault('sf:INVALID_SESSION_ID')],
    ['a SOAP 500 fault with another namespace prefix', 500, soapFault('fns:INVALID_SESSION_ID')],
  ])('is true for %s', async (_case, status, body) => {
    expect(await isSalesforceSessionExpired(failed(status, body).response)).toBe(true);
  });

  it.each([
    [
      'a 401 a refresh cannot cure: connected app not attached to Agent',
      401,
      '[{"message":"Connected app is not attached to Agent","errorCode":"INVALID_SESSION_ID"}]',
    ],
    [
      'a 401 a refresh cannot cure: session not valid for the REST API',
      401,
      '[{"message":"This session is not valid for use with the REST API","errorCode":"INVALID_SESSION_ID"}]',
    ],
    ['a 401 without INVALID_SESSION_ID', 401, '{"error":"invalid_token"}'],
    ['a 403 INSUFFICIENT_ACCESS', 403, '[{"message":"insufficient access rights","errorCode":"INSUFFICIENT_ACCESS"}]'],
    ['a 400 MALFORMED_QUERY', 400, '[{"message":"unexpected token","errorCode":"MALFORMED_QUERY"}]'],
    ['a 400 naming INVALID_SESSION_ID outside Bulk 1.0', 400, restExpired],
    ['a SOAP 500 fault of another kind', 500, soapFault('sf:INVALID_FIELD')],
    ['a 500 that only mentions INVALID_SESSION_ID in its text', 500, 'INVALID_SESSION_ID'],
    ['a 404', 404, restExpired],
  ])('is false for %s', async (_case, status, body) => {
    expect(await isSalesforceSessionExpired(failed(status, body).response)).toBe(false);
  });

  it('does not read the body of any other status', async () => {
    for (const status of [403, 404, 409, 429, 502, 503]) {
      const { response, reads } = failed(status, restExpired);
      expect(await isSalesforceSessionExpired(response)).toBe(false);
      expect(reads()).toBe(0);
    }
  });

  it('does not read a body declared larger than 16 KiB, and inspects only the first 16 KiB of one that is not declared', async () => {
    const declared = failed(401, restExpired, { 'content-length': String(64 * 1024) });
    expect(await isSalesforceSessionExpired(declared.response)).toBe(false);
    expect(declared.reads()).toBe(0);

    const padded = failed(401, ' '.repeat(20_000) + restExpired);
    expect(await isSalesforceSessionExpired(padded.response)).toBe(false);
  });

  it('accepts a fetch Response and leaves its body readable for the caller', async () => {
    const expired = new Response(restExpired, { status: 401, headers: { 'content-type': 'application/json' } });
    expect(await isSalesforceSessionExpired(expired)).toBe(true);
    expect(await expired.text()).toBe(restExpired);
    expect(await isSalesforceSessionExpired(new Response('[{"errorCode":"NOT_FOUND"}]', { status: 404 }))).toBe(false);
    expect(await isSalesforceSessionExpired(new Response(soapFault('sf:INVALID_SESSION_ID'), { status: 500 }))).toBe(true);
    const huge = new Response(restExpired, { status: 401, headers: { 'content-length': '20000' } });
    expect(await isSalesforceSessionExpired(huge)).toBe(false);
  });
});
