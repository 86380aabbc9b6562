import { createHash } from 'node:crypto';
import { ErrorCode, createTokenManager, refreshTokenGrant } from '@tokenrelay/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createDpop } from './dpop.js';
import { generateDpopKey } from './proof.js';
import { sessionDpopKey } from './session-key.js';

interface Sent {
  url: string;
  method: string;
  headers: Headers;
  body: string;
}

interface DecodedProof {
  header: { typ: string; alg: string; jwk: JsonWebKey };
  claims: { jti: string; htm: string; htu: string; iat: number; ath?: string; nonce?: string };
}

const decode = (part: string): unknown => JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));

/** Decodes a proof and checks its signature with the key in its own header, as a server does. */
async function verifiedProof(proof: string | null): Promise<DecodedProof> {
  const [header, payload, signature] = (proof ?? '').split('.') as [string, string, string];
  const decoded = { header: decode(header), claims: decode(payload) } as DecodedProof;
  const algorithm = decoded.header.alg === 'ES256' ? { name: 'ECDSA', namedCurve: 'P-256' } : { name: 'Ed25519' };
  const key = await crypto.subtle.importKey('jwk', decoded.header.jwk, algorithm, false, ['verify']);
  const valid = await crypto.subtle.verify(
    decoded.header.alg === 'ES256' ? { name: 'ECDSA', hash: 'SHA-256' } : { name: 'Ed25519' },
    key,
    Buffer.from(signature, 'base64url'),
    new TextEncoder().encode(`${header}.${payload}`),
  );
  expect(valid).toBe(true);
  return decoded;
}

/** A fetch that records what it was sent and answers with `answer` (by call index). */
function recordingFetch(answer: (sent: Sent, index: number) => Response = () => new Response('{}')) {
  const sent: Sent[] = [];
  const fetchImpl = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const request = new Request(input, init);
    const record = { url: request.url, method: request.method, headers: request.headers, body: await request.text() };
    sent.push(record);
    return answer(record, sent.length - 1);
  });
  return { fetch: fetchImpl as unknown as typeof fetch, sent };
}

const nonceChallenge401 = (nonce: string) =>
  new Response(null, { status: 401, headers: { 'www-authenticate': 'DPoP algs="ES256", error="use_dpop_nonce"', 'dpop-nonce': nonce } });
const nonceChallenge400 = (nonce: string) =>
  Response.json({ error: 'use_dpop_nonce' }, { status: 400, headers: { 'dpop-nonce': nonce } });

afterEach(() => {
  vi.restoreAllMocks();
});

describe('proofs', () => {
  it('signs a dpop+jwt with the public key in its header and htm, htu without query or fragment, iat and a jti', async () => {
    const { fetch, sent } = recordingFetch();
    const dpop = createDpop({ fetch });
    await dpop.fetch('https://api.example.test/v1/me?page=2#top', { method: 'post', body: 'x' });

    const { header, claims } = await verifiedProof(sent[0]!.headers.get('dpop'));
    expect(header).toMatchObject({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty: 'EC', crv: 'P-256' } });
    expect(header.jwk).not.toHaveProperty('d');
    expect(claims).toMatchObject({ htm: 'POST', htu: 'https://api.example.test/v1/me' });
    expect(Math.abs(claims.iat - Date.now() / 1000)).toBeLessThan(60);
    expect(claims).not.toHaveProperty('ath');
    expect(claims).not.toHaveProperty('nonce');
  });

  it('gives every proof its own jti', async () => {
    const dpop = createDpop();
    const proofs = await Promise.all(Array.from({ length: 20 }, () => dpop.proof('GET', 'https://api.example.test/')));
    const jtis = await Promise.all(proofs.map(async (proof) => (await verifiedProof(proof)).claims.jti));
    expect(new Set(jtis).size).toBe(20);
  });

  it('adds ath = base64url(SHA-256(access token)) only to a request that carries Authorization: DPoP', async () => {
    const { fetch, sent } = recordingFetch();
    const dpop = createDpop({ fetch });
    await dpop.fetch('https://api.example.test/me', { headers: { Authorization: 'DPoP at-1' } });
    await dpop.fetch('https://api.example.test/me', { headers: { Authorization: 'Bearer at-1' } });

    const expected = createHash('sha256').update('at-1').digest('base64url');
    expect((await verifiedProof(sent[0]!.headers.get('dpop'))).claims.ath).toBe(expected);
    expect((await verifiedProof(sent[1]!.headers.get('dpop'))).claims).not.toHaveProperty('ath');
    expect(sent[0]!.headers.get('authorization')).toBe('DPoP at-1');
  });

  it('keeps the headers and body of a Request given as input', async () => {
    const { fetch, sent } = recordingFetch();
    const dpop = createDpop({ fetch });
    await dpop.fetch(new Request('https://api.example.test/items', { method: 'PUT', headers: { 'x-trace': '1' }, body: 'payload' }));
    expect(sent[0]).toMatchObject({ method: 'PUT', body: 'payload' });
    expect(sent[0]!.headers.get('x-trace')).toBe('1');
    expect((await verifiedProof(sent[0]!.headers.get('dpop'))).claims.htm).toBe('PUT');
  });

  it('names the RFC 7638 thumbprint of its public key', async () => {
    const keys = await generateDpopKey();
    const { crv, kty, x, y } = await crypto.subtle.exportKey('jwk', keys.publicKey);
    const expected = createHash('sha256').update(JSON.stringify({ crv, kty, x, y })).digest('base64url');
    expect(await createDpop({ key: keys }).thumbprint()).toBe(expected);
  });

  it('signs EdDSA (Ed25519) proofs where the runtime has Ed25519', async () => {
    const dpop = createDpop({ algorithm: 'EdDSA' });
    const { header } = await verifiedProof(await dpop.proof('GET', 'https://api.example.test/'));
    expect(header).toMatchObject({ alg: 'EdDSA', jwk: { kty: 'OKP', crv: 'Ed25519' } });
  });

  it('fails with a CONFIGURATION_ERROR naming ES256 where the runtime lacks Ed25519', async () => {
    vi.spyOn(crypto.subtle, 'generateKey').mockRejectedValue(new DOMException('Unrecognized name.', 'NotSupportedError'));
    const dpop = createDpop({ algorithm: 'EdDSA' });
    await expect(dpop.proof('GET', 'https://api.example.test/')).rejects.toMatchObject({
      code: ErrorCode.CONFIGURATION_ERROR,
      message: expect.stringMatching(/Ed25519.*ES256/),
    });
  });
});

describe('nonces', () => {
  it('keeps the nonce of each origin and sends it only to that origin', async () => {
    const { fetch, sent } = recordingFetch((record) =>
      new Response('{}', { headers: record.url.startsWith('https://a.example.test') ? { 'dpop-nonce': 'nonce-a' } : {} }),
    );
    const dpop = createDpop({ fetch });
    await dpop.fetch('https://a.example.test/one');
    await dpop.fetch('https://a.example.test/two');
    await dpop.fetch('https://b.example.test/one');

    const nonces = await Promise.all(sent.map(async (record) => (await verifiedProof(record.headers.get('dpop'))).claims.nonce));
    expect(nonces).toEqual([undefined, 'nonce-a', undefined]);
  });

  it('retries an API request once with a new proof carrying the nonce of a 401 use_dpop_nonce', async () => {
    const { fetch, sent } = recordingFetch((_record, index) => (index === 0 ? nonceChallenge401('n-1') : Response.json({ ok: true })));
    const dpop = createDpop({ fetch });
    const response = await dpop.fetch('https://api.example.test/me', { method: 'POST', body: 'same bytes', headers: { authorization: 'DPoP at' } });

    expect(response.status).toBe(200);
    expect(sent.map((record) => record.body)).toEqual(['same bytes', 'same bytes']);
    const [first, second] = await Promise.all(sent.map((record) => verifiedProof(record.headers.get('dpop'))));
    expect(second!.claims.nonce).toBe('n-1');
    expect(second!.claims.jti).not.toBe(first!.claims.jti);
    expect(second!.claims.ath).toBe(first!.claims.ath);
  });

  it('retries a token request once on a 400 use_dpop_nonce', async () => {
    const { fetch, sent } = recordingFetch((_record, index) => (index === 0 ? nonceChallenge400('n-1') : Response.json({ access_token: 'at' })));
    const dpop = createDpop({ fetch });
    const body = new URLSearchParams({ grant_type: 'authorization_code', code: 'c' });
    expect((await dpop.fetch('https://auth.example.test/token', { method: 'POST', body })).status).toBe(200);
    expect(sent).toHaveLength(2);
    expect((await verifiedProof(sent[1]!.headers.get('dpop'))).claims.nonce).toBe('n-1');
  });

  it('retries only once: a second nonce challenge goes back to the caller', async () => {
    const { fetch, sent } = recordingFetch((_record, index) => nonceChallenge401(`n-${index}`));
    const dpop = createDpop({ fetch });
    expect((await dpop.fetch('https://api.example.test/me')).status).toBe(401);
    expect(sent).toHaveLength(2);
  });

  it('never sends a streamed body twice: a nonce challenge to it goes back to the caller', async () => {
    const { fetch, sent } = recordingFetch(() => nonceChallenge401('n-1'));
    const dpop = createDpop({ fetch });
    const body = new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('once'));
        controller.close();
      },
    });
    const response = await dpop.fetch('https://api.example.test/upload', { method: 'POST', body, duplex: 'half' } as RequestInit);
    expect(response.status).toBe(401);
    expect(sent).toHaveLength(1);
    // ...but the nonce is learned for the next request.
    await dpop.fetch('https://api.example.test/me');
    expect((await verifiedProof(sent[1]!.headers.get('dpop'))).claims.nonce).toBe('n-1');
  });

  it('does not retry a 400 or 401 that is no nonce challenge', async () => {
    const { fetch, sent } = recordingFetch((_record, index) =>
      index === 0
        ? Response.json({ error: 'invalid_grant' }, { status: 400, headers: { 'dpop-nonce': 'n-1' } })
        : new Response(null, { status: 401, headers: { 'www-authenticate': 'DPoP error="invalid_token"' } }),
    );
    const dpop = createDpop({ fetch });
    expect((await dpop.fetch('https://auth.example.test/token', { method: 'POST', body: 'grant_type=authorization_code' })).status).toBe(400);
    expect((await dpop.fetch('https://api.example.test/me')).status).toBe(401);
    expect(sent).toHaveLength(2);
  });
});

describe('send, for doors that are not a fetch', () => {
  /** A door's answer, as axios or got would hold it. */
  interface DoorAnswer {
    status: number;
    headers: Record<string, string>;
    body: string;
  }
  const answerOf = (answer: DoorAnswer) => ({
    status: answer.status,
    header: (name: string) => answer.headers[name.toLowerCase()],
    text: async () => answer.body,
  });

  it('signs every attempt anew with ath, and retries once on a nonce challenge with the nonce it carries', async () => {
    const dpop = createDpop();
    const proofs: string[] = [];
    const discarded: DoorAnswer[] = [];
    const result = await dpop.send<DoorAnswer>({
      method: 'post',
      url: 'https://api.example.test/items?page=2',
      authorization: 'DPoP at',
      body: '{"name":"x"}',
      attempt: async (proof): Promise<DoorAnswer> => {
        proofs.push(proof);
        return proofs.length === 1
          ? { status: 401, headers: { 'www-authenticate': 'DPoP error="use_dpop_nonce"', 'dpop-nonce': 'n-1' }, body: '' }
          : { status: 200, headers: {}, body: 'ok' };
      },
      answerOf,
      discard: (answer) => discarded.push(answer),
    });

    expect(result.body).toBe('ok');
    expect(discarded.map((answer) => answer.status)).toEqual([401]);
    const [first, second] = await Promise.all(proofs.map(verifiedProof));
    expect(first!.claims).toMatchObject({ htm: 'POST', htu: 'https://api.example.test/items', ath: createHash('sha256').update('at').digest('base64url') });
    expect(first!.claims.nonce).toBeUndefined();
    expect(second!.claims).toMatchObject({ nonce: 'n-1', ath: first!.claims.ath });
    expect(second!.claims.jti).not.toBe(first!.claims.jti);
  });

  it('keeps nonces in the same book as dpop.fetch, both ways', async () => {
    const { fetch, sent } = recordingFetch(() => new Response('{}', { headers: { 'dpop-nonce': 'from-fetch' } }));
    const dpop = createDpop({ fetch });
    await dpop.fetch('https://api.example.test/one');
    const proofs: string[] = [];
    await dpop.send({
      method: 'GET',
      url: 'https://api.example.test/two',
      authorization: undefined,
      attempt: async (proof) => {
        proofs.push(proof);
        return { status: 200, headers: { 'dpop-nonce': 'from-send' }, body: '' };
      },
      answerOf,
    });
    await dpop.fetch('https://api.example.test/three');

    expect((await verifiedProof(proofs[0]!)).claims.nonce).toBe('from-fetch');
    expect((await verifiedProof(sent[1]!.headers.get('dpop'))).claims.nonce).toBe('from-send');
  });

  it('never sends a stream body twice: the nonce challenge goes back to the door', async () => {
    const dpop = createDpop();
    let attempts = 0;
    const result = await dpop.send({
      method: 'PUT',
      url: 'https://api.example.test/upload',
      authorization: 'DPoP at',
      body: new ReadableStream(),
      attempt: async () => {
        attempts++;
        return { status: 401, headers: { 'www-authenticate': 'DPoP error="use_dpop_nonce"', 'dpop-nonce': 'n-1' }, body: '' };
      },
      answerOf,
    });
    expect(result.status).toBe(401);
    expect(attempts).toBe(1);
  });
});

describe('a refresh-token request', () => {
  const refreshBody = () => new URLSearchParams({ grant_type: 'refresh_token', refresh_token: 'rt-secret', client_id: 'app' });

  /** A token endpoint that demands nonce `n-1` before it looks at the refresh token. */
  const nonceDemandingEndpoint = (record: Sent) => {
    const payload = record.headers.get('dpop')?.split('.')[1];
    const claims = payload ? (decode(payload) as { nonce?: string }) : {};
    if (claims.nonce !== 'n-1') return nonceChallenge400('n-1');
    const refreshToken = new URLSearchParams(record.body).get('refresh_token');
    if (refreshToken !== 'rt-secret') return Response.json({ error: 'invalid_grant' }, { status: 400 });
    return Response.json({ access_token: 'at', token_type: 'DPoP' }, { headers: { 'dpop-nonce': 'n-1' } });
  };

  it('learns an unknown nonce first with a request that carries no refresh token, then presents the refresh token once', async () => {
    const { fetch, sent } = recordingFetch(nonceDemandingEndpoint);
    const dpop = createDpop({ fetch });
    const body = refreshBody();
    body.set('client_assertion', 'single-use-jwt');
    const response = await dpop.fetch('https://auth.example.test/token', { method: 'POST', body });

    expect(response.status).toBe(200);
    const presented = sent.map((record) => new URLSearchParams(record.body));
    expect(presented.map((params) => params.get('refresh_token'))).toEqual(['tokenrelay-dpop-nonce-probe', 'rt-secret']);
    expect(presented[0]!.has('client_assertion')).toBe(false);
    expect((await verifiedProof(sent[1]!.headers.get('dpop'))).claims.nonce).toBe('n-1');
  });

  it('sends it at once while the nonce is fresh, and learns it again once it is stale', async () => {
    const { fetch, sent } = recordingFetch(nonceDemandingEndpoint);
    const dpop = createDpop({ fetch, nonceMaxAgeMs: 60_000 });
    await dpop.fetch('https://auth.example.test/token', { method: 'POST', body: refreshBody() });
    expect(sent).toHaveLength(2);

    await dpop.fetch('https://auth.example.test/token', { method: 'POST', body: refreshBody() });
    expect(sent).toHaveLength(3);

    vi.spyOn(Date, 'now').mockReturnValue(Date.now() + 61_000);
    await dpop.fetch('https://auth.example.test/token', { method: 'POST', body: refreshBody() });
    expect(sent.slice(3).map((record) => new URLSearchParams(record.body).get('refresh_token'))).toEqual([
      'tokenrelay-dpop-nonce-probe',
      'rt-secret',
    ]);
  });

  it('goes on after a probe that named no nonce, without probing again while that answer is fresh', async () => {
    const { fetch, sent } = recordingFetch((record) =>
      new URLSearchParams(record.body).get('refresh_token') === 'rt-secret'
        ? Response.json({ access_token: 'at' })
        : Response.json({ error: 'invalid_grant' }, { status: 400 }),
    );
    const dpop = createDpop({ fetch });
    await dpop.fetch('https://auth.example.test/token', { method: 'POST', body: refreshBody() });
    await dpop.fetch('https://auth.example.test/token', { method: 'POST', body: refreshBody() });
    expect(sent.map((record) => new URLSearchParams(record.body).get('refresh_token'))).toEqual([
      'tokenrelay-dpop-nonce-probe',
      'rt-secret',
      'rt-secret',
    ]);
    expect((await verifiedProof(sent[1]!.headers.get('dpop'))).claims).not.toHaveProperty('nonce');
  });

  /** A manager refreshing `rt-secret` through `dpop.fetch` at an endpoint whose probe answer is `probeAnswer`, with one attempt per refresh. */
  const refreshingThrough = (probeAnswer: () => Response) => {
    const { fetch, sent } = recordingFetch((record) =>
      new URLSearchParams(record.body).get('refresh_token') === 'rt-secret'
        ? Response.json({ access_token: 'at-2', token_type: 'DPoP', refresh_token: 'rt-2' })
        : probeAnswer(),
    );
    const manager = createTokenManager({
      tokens: { accessToken: 'at-1', refreshToken: 'rt-secret' },
      refresh: refreshTokenGrant({ tokenEndpoint: 'https://auth.example.test/token', clientId: 'app', fetch: createDpop({ fetch }).fetch }),
      retry: false,
    });
    const presented = () => sent.map((record) => new URLSearchParams(record.body).get('refresh_token'));
    return { manager, presented };
  };

  for (const error of ['invalid_grant', 'server_error', 'invalid_client']) {
    it(`goes on with the refresh after a probe answered 500 {"error":"${error}"} about the stand-in: the server checked the proof and asked for no nonce, so the session neither expires nor fails`, async () => {
      const { manager, presented } = refreshingThrough(() => Response.json({ error }, { status: 500 }));

      expect((await manager.refresh()).accessToken).toBe('at-2');
      expect(presented()).toEqual(['tokenrelay-dpop-nonce-probe', 'rt-secret']);
    });
  }

  const outages: Array<[string, () => Response, { status: number; retryAfterMs?: number }]> = [
    ['429 with Retry-After', () => Response.json({ error: 'temporarily_unavailable' }, { status: 429, headers: { 'retry-after': '7' } }), { status: 429, retryAfterMs: 7_000 }],
    ['502 whatever its body says', () => Response.json({ error: 'invalid_grant' }, { status: 502 }), { status: 502 }],
    ['503 from a load balancer', () => new Response('<h1>503 Service Unavailable</h1>', { status: 503, headers: { 'content-type': 'text/html' } }), { status: 503 }],
    ['500 without an OAuth error', () => new Response('<h1>Internal Server Error</h1>', { status: 500, headers: { 'content-type': 'text/html' } }), { status: 500 }],
  ];
  for (const [what, probeAnswer, failure] of outages) {
    it(`holds the refresh token back after a probe answered ${what}: the refresh fails as an outage, with the server's Retry-After if any, and nothing of the probe's body`, async () => {
      const { manager, presented } = refreshingThrough(probeAnswer);

      const error: unknown = await manager.refresh().catch((thrown: unknown) => thrown);

      expect(error).toMatchObject({ code: ErrorCode.REFRESH_FAILED, transient: true, ...failure });
      expect((error as { oauthError?: unknown }).oauthError).toBeUndefined();
      expect(presented()).toEqual(['tokenrelay-dpop-nonce-probe']);
    });
  }

  it('goes on with the nonce after a probe answered 500 text/html with a DPoP-Nonce: the server itself asked for it (a load balancer names none)', async () => {
    const { fetch, sent } = recordingFetch((record, index) =>
      index === 0
        ? new Response('<h1>Internal Server Error</h1>', { status: 500, headers: { 'content-type': 'text/html', 'dpop-nonce': 'n-5xx' } })
        : Response.json({ access_token: 'at-2', token_type: 'DPoP', refresh_token: 'rt-2' }),
    );
    const manager = createTokenManager({
      tokens: { accessToken: 'at-1', refreshToken: 'rt-secret' },
      refresh: refreshTokenGrant({ tokenEndpoint: 'https://auth.example.test/token', clientId: 'app', fetch: createDpop({ fetch }).fetch }),
      retry: false,
    });

    expect((await manager.refresh()).accessToken).toBe('at-2');
    expect(sent.map((record) => new URLSearchParams(record.body).get('refresh_token'))).toEqual(['tokenrelay-dpop-nonce-probe', 'rt-secret']);
    expect((await verifiedProof(sent[1]!.headers.get('dpop'))).claims.nonce).toBe('n-5xx');
  });

  it('answers a probe answered 503 without Retry-After with no Retry-After header either', async () => {
    const { fetch } = recordingFetch(() => new Response('<h1>503</h1>', { status: 503, headers: { 'content-type': 'text/html' } }));
    const response = await createDpop({ fetch }).fetch('https://auth.example.test/token', { method: 'POST', body: refreshBody() });

    expect(response.status).toBe(503);
    expect(response.headers.has('retry-after')).toBe(false);
  });

  for (const contentType of ['text/html', 'application/json']) {
    it(`takes a probe answered 500 ${contentType} with a 1 MiB body for an outage, and reads no more than 16 KiB of it`, async () => {
      const chunk = new TextEncoder().encode(`{"error":"x${' '.repeat(1012)}`.slice(0, 1024));
      let pulled = 0;
      // Pulled one KiB at a time, only when read: what is pulled is what the probe read.
      const hugeBody = () =>
        new ReadableStream<Uint8Array>(
          {
            pull(controller) {
              if (pulled >= 1024 * 1024) return controller.close();
              pulled += chunk.byteLength;
              controller.enqueue(chunk);
            },
          },
          { highWaterMark: 0 },
        );
      const { manager, presented } = refreshingThrough(() => new Response(hugeBody(), { status: 500, headers: { 'content-type': contentType } }));

      const error: unknown = await manager.refresh().catch((thrown: unknown) => thrown);

      expect(error).toMatchObject({ code: ErrorCode.REFRESH_FAILED, transient: true, status: 500 });
      expect(presented()).toEqual(['tokenrelay-dpop-nonce-probe']);
      expect(pulled).toBeLessThanOrEqual(16 * 1024 + chunk.byteLength);
    });
  }

  it('takes a probe answered 500 whose JSON body fails midway for an outage, not a network error, and never sends the refresh token', async () => {
    const failingBody = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('{"error":'));
        controller.error(new TypeError('terminated'));
      },
    });
    const { manager, presented } = refreshingThrough(() => new Response(failingBody, { status: 500, headers: { 'content-type': 'application/json' } }));

    const error: unknown = await manager.refresh().catch((thrown: unknown) => thrown);

    expect(error).toMatchObject({ code: ErrorCode.REFRESH_FAILED, transient: true, status: 500 });
    expect(presented()).toEqual(['tokenrelay-dpop-nonce-probe']);
  });
});

describe('sessionDpopKey', () => {
  it('stores the signing-in key with the tokens, so another holder of the session signs with the same key', async () => {
    const signer = createTokenManager({ refresh: async () => ({ accessToken: 'next' }) });
    const signerKey = sessionDpopKey(signer);
    const before = await createDpop({ key: signerKey }).thumbprint();
    await signer.setTokens(await signerKey.attachTo({ accessToken: 'at', refreshToken: 'rt', tokenType: 'DPoP' }));

    const stored = await signer.getTokens();
    expect(stored?.sessionData?.dpopKey).toMatchObject({ kty: 'EC', crv: 'P-256', d: expect.any(String) });
    const other = createTokenManager({ tokens: JSON.parse(JSON.stringify(stored)), refresh: async () => ({ accessToken: 'next' }) });
    expect(await createDpop({ key: sessionDpopKey(other) }).thumbprint()).toBe(before);
    expect(await createDpop({ key: signerKey }).thumbprint()).toBe(before);
  });

  it('makes a new key for the next sign-in after a sign-out', async () => {
    const manager = createTokenManager({ refresh: async () => ({ accessToken: 'next' }) });
    const key = sessionDpopKey(manager);
    const dpop = createDpop({ key });
    const first = await dpop.thumbprint();
    await manager.setTokens(await key.attachTo({ accessToken: 'at', refreshToken: 'rt' }));
    expect(await dpop.thumbprint()).toBe(first);
    await manager.clear();
    expect(await dpop.thumbprint()).not.toBe(first);
  });
});
