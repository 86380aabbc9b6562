import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ErrorCode, isTokenRelayError } from './errors.js';
import { fileStore } from './file-store.js';
import { createTokenManager } from './manager.js';
import { settledWithin } from './test-helpers.js';
import type { StoredTokens, TokenSet, TokenStoreSetOptions } from './types.js';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const fileStoreSource = fileURLToPath(new URL('./file-store.ts', import.meta.url));

let directory: string;
let tokenPath: string;
const cleanups: (() => unknown)[] = [];

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), 'tokenrelay-file-store-'));
  tokenPath = join(directory, 'tokens', '_salesforce.json');
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await rm(directory, { recursive: true, force: true });
});

const inAnHour = Date.now() + 3_600_000;
const tokensOf = (n: number): TokenSet => ({ accessToken: `access-${n}`, refreshToken: `refresh-${n}`, expiresAt: inAnHour + n });
const session = (n: number): StoredTokens => ({ revision: n + 1, tokens: tokensOf(n) });

async function expectStoreError(promise: Promise<unknown>, message: RegExp): Promise<Error> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(isTokenRelayError(error) && error.code).toBe(ErrorCode.STORE_ERROR);
  expect((error as Error).message).toMatch(message);
  return error as Error;
}

/**
 * Another Node process running `code` (an ES module; `fileStore` and `path` are in scope). Lines it
 * prints can be awaited; it is killed after the test if still running.
 */
function startChild(code: string) {
  const script = `import { fileStore } from ${JSON.stringify(fileStoreSource)};\nconst path = ${JSON.stringify(tokenPath)};\n${code}`;
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let output = '';
  let errors = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (errors += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    exited,
    /** Waits until the child printed `line`. */
    printed: (line: string, timeout = 10_000) =>
      vi.waitFor(
        () => {
          if (!output.split('\n').includes(line)) throw new Error(`child has not printed "${line}" yet; stderr: ${errors}`);
        },
        { timeout, interval: 20 },
      ),
  };
}

/** A lock left behind by a process that was SIGKILLed while holding it, as after a crash. */
async function lockOfKilledProcess(leaseMs: number): Promise<number> {
  const holder = startChild(`await fileStore(path, { lockLeaseMs: ${leaseMs} }).lock(); console.log('locked'); setInterval(() => {}, 1000);`);
  await holder.printed('locked');
  holder.child.kill('SIGKILL');
  await holder.exited;
  return Date.now();
}

describe('fileStore: the token file', () => {
  it('stores the tokens as JSON in a file created with mode 0600 (and its directory) and reads them back', async () => {
    const store = fileStore(tokenPath, { watch: false });
    const tokens: StoredTokens = {
      revision: 2,
      tokens: { ...tokensOf(1), tokenType: 'Bearer', scope: 'api', raw: { instance_url: 'https://example.my.salesforce.com' } },
    };

    expect(await store.set(tokens)).toBe(true);

    expect(await store.get()).toEqual(tokens);
    expect(JSON.parse(await readFile(tokenPath, 'utf8'))).toEqual(tokens);
    expect((await stat(tokenPath)).mode & 0o777).toBe(0o600);
    expect((await stat(join(directory, 'tokens'))).mode & 0o777).toBe(0o700);
    expect(store.path).toBe(tokenPath);
  });

  it('returns undefined when there is no token file yet', async () => {
    expect(await fileStore(tokenPath, { watch: false }).get()).toBeUndefined();
  });

  it('replaces the file atomically: a concurrent reader never sees a partial file, and no temporary file is left', async () => {
    const writer = fileStore(tokenPath, { watch: false });
    const reader = fileStore(tokenPath, { watch: false });
    // Large enough that a non-atomic write would be seen half done.
    const big = (n: number): StoredTokens => ({ revision: n + 1, tokens: { ...tokensOf(n), raw: { padding: String(n).repeat(200_000) } } });
    await writer.set(big(0));

    let writing = true;
    const writes = (async () => {
      for (let n = 1; n <= 40; n++) await writer.set(big(n));
      writing = false;
    })();
    const reads: StoredTokens[] = [];
    while (writing && reads.length < 2_000) {
      const value = await reader.get();
      if (value) reads.push(value);
    }
    await writes;

    expect(reads.length).toBeGreaterThan(0);
    for (const value of reads) {
      const n = Number(value.tokens.accessToken.replace('access-', ''));
      expect(value).toEqual(big(n));
    }
    expect((await readdir(join(directory, 'tokens'))).sort()).toEqual(['_salesforce.json', '_salesforce.json.lock']);
  });

  it.each([
    ['not JSON, quoting a token', 'refresh=secret-refresh-token-value', /is not valid JSON/],
    ['cut off half way', '{"accessToken":"secret-refresh-token-value","refreshTo', /is not valid JSON/],
    ['empty', '', /is empty/],
    ['a JSON array', '[1,2]', /the stored value is not an object/],
    ['without a revision', '{"tokens":{"accessToken":"secret-refresh-token-value"}}', /revision is not a whole number/],
    ['without an access token', '{"revision":1,"tokens":{"refreshToken":"secret-refresh-token-value"}}', /accessToken is not a non-empty string/],
    ['with expiresAt as a string', '{"revision":1,"tokens":{"accessToken":"a","expiresAt":"1700000000000"}}', /expiresAt is not a finite number/],
  ])('reports a token file that is %s as a STORE_ERROR that does not quote it, never as "no tokens"', async (_case, content, message) => {
    await fileStore(tokenPath, { watch: false }).set(session(1));
    await writeFile(tokenPath, content);

    const error = await expectStoreError(fileStore(tokenPath, { watch: false }).get(), message);

    expect(error.message).toContain(tokenPath);
    expect(error.message).not.toContain('secret-refresh-token-value');
    expect(String(error.cause ?? '')).not.toContain('secret-refresh-token-value');
  });

  it('never overwrites a corrupt file while another holder has the lock, and replaces it once the lock is free', async () => {
    const holder = fileStore(tokenPath, { watch: false });
    await holder.set(session(1));
    await writeFile(tokenPath, '{"accessToken":"half-writ');
    const lock = await holder.lock();

    await expectStoreError(fileStore(tokenPath, { watch: false, lockWaitMs: 300 }).set(session(2)), /Gave up waiting for the lock/);
    expect(await readFile(tokenPath, 'utf8')).toBe('{"accessToken":"half-writ');

    await lock.release();
    await fileStore(tokenPath, { watch: false }).set(session(2));
    expect(await holder.get()).toEqual(session(2));
  });

  it('deletes the file on clear()', async () => {
    const store = fileStore(tokenPath, { watch: false });
    await store.set(session(1));
    await store.clear();
    expect(await store.get()).toBeUndefined();
    await store.clear(); // Clearing nothing is fine.
  });

  it('refuses to write an invalid token set', async () => {
    const store = fileStore(tokenPath, { watch: false });
    await expectStoreError(store.set({ revision: 1, tokens: { accessToken: '' } }), /Refusing to write invalid tokens/);
    expect(await store.get()).toBeUndefined();
  });

  it('rejects invalid options with a CONFIGURATION_ERROR', () => {
    for (const make of [
      () => fileStore(''),
      () => fileStore(tokenPath, { lockLeaseMs: 0 }),
      () => fileStore(tokenPath, { lockWaitMs: Number.NaN }),
      () => fileStore(tokenPath, { lockPollMs: -1 }),
      // Longer than a timer keeps: the heartbeat would beat every millisecond, the wait give up at once.
      () => fileStore(tokenPath, { lockLeaseMs: 2 ** 33 }),
      () => fileStore(tokenPath, { watchPollMs: 2 ** 31 }),
      () => fileStore(tokenPath, { watch: 'inotify' as 'auto' }),
      () => fileStore(tokenPath, { newFileFormat: 'oauth' as 'token-response' }),
    ]) {
      expect(make).toThrow(expect.objectContaining({ code: ErrorCode.CONFIGURATION_ERROR }));
    }
  });
});

/** A token file as Salesforce samples save it: the raw token response, `issued_at` a string of epoch milliseconds. */
const salesforceSample = {
  access_token: '00D000000000001!AQ0AQ-first-access',
  refresh_token: '5Aep861-first-refresh',
  signature: 'c2lnbmF0dXJlLTE=',
  scope: 'refresh_token api',
  instance_url: 'https://acme.my.salesforce.com',
  id: 'https://login.salesforce.com/id/00D000000000001AAA/005000000000001AAA',
  token_type: 'Bearer',
  issued_at: '1764630000000',
};
const readJson = async () => JSON.parse(await readFile(tokenPath, 'utf8')) as Record<string, unknown>;
const writeJson = async (document: unknown) => {
  await mkdir(dirname(tokenPath), { recursive: true });
  await writeFile(tokenPath, JSON.stringify(document, null, 2));
};
/** What a Salesforce refresh answers (no refresh token unless rotation is on), as the grant returns it. */
const salesforceRefresh = (n: number, extra: Partial<TokenSet> = {}): TokenSet => ({
  accessToken: `00D000000000001!AQ0AQ-access-${n}`,
  tokenType: 'Bearer',
  scope: 'refresh_token api',
  raw: { signature: `c2lnbmF0dXJl-${n}`, instance_url: salesforceSample.instance_url, id: salesforceSample.id, issued_at: String(1764630000000 + n * 1000) },
  ...extra,
});

describe('fileStore: a token file holding an OAuth token response', () => {
  it('reads the token response another tool saved (Salesforce\'s sample) as revision 1, every other field in raw, the expiry unknown', async () => {
    await writeJson(salesforceSample);

    expect(await fileStore(tokenPath, { watch: false }).get()).toEqual({
      revision: 1,
      tokens: {
        accessToken: salesforceSample.access_token,
        refreshToken: salesforceSample.refresh_token,
        tokenType: 'Bearer',
        scope: salesforceSample.scope,
        raw: { signature: salesforceSample.signature, instance_url: salesforceSample.instance_url, id: salesforceSample.id, issued_at: salesforceSample.issued_at },
      },
    });
  });

  it('writes refreshes back as a token response: the new access_token, signature and issued_at, the kept refresh token, every other field of the old file, expires_at and tokenrelay_revision', async () => {
    await writeJson({ ...salesforceSample, saved_by: 'nightly-export.py' });
    const expiresAt = 1_900_000_000_123;
    const answers = [salesforceRefresh(1, { expiresAt }), salesforceRefresh(2, { refreshToken: '5Aep861-rotated' })];
    const manager = createTokenManager({ store: fileStore(tokenPath, { watch: false }), refresh: async () => answers.shift() as TokenSet });

    await manager.refresh({ staleAccessToken: salesforceSample.access_token });
    const first = await readJson();
    expect(first).toEqual({
      ...salesforceSample,
      access_token: '00D000000000001!AQ0AQ-access-1',
      signature: 'c2lnbmF0dXJl-1',
      issued_at: '1764630001000',
      saved_by: 'nightly-export.py',
      expires_in: expect.any(Number),
      expires_at: expiresAt / 1000,
      tokenrelay_revision: 2,
    });
    // The old file's fields keep their place: another tool's diff shows changed values only.
    expect(Object.keys(first).slice(0, 9)).toEqual([...Object.keys(salesforceSample), 'saved_by']);
    expect((await fileStore(tokenPath, { watch: false }).get())?.tokens).toMatchObject({ expiresAt, refreshToken: salesforceSample.refresh_token });

    await manager.refresh({ staleAccessToken: '00D000000000001!AQ0AQ-access-1' });
    const second = await readJson();
    // The second answer dates nothing: the first one's expiry is not carried over to the new token.
    expect(second).toEqual({
      ...salesforceSample,
      access_token: '00D000000000001!AQ0AQ-access-2',
      refresh_token: '5Aep861-rotated',
      signature: 'c2lnbmF0dXJl-2',
      issued_at: '1764630002000',
      saved_by: 'nightly-export.py',
      tokenrelay_revision: 3,
    });
  });

  it('keeps the compare-and-set contract: the revision survives in tokenrelay_revision and a write over a stale one is refused', async () => {
    await writeJson(salesforceSample);
    const [a, b] = [fileStore(tokenPath, { watch: false }), fileStore(tokenPath, { watch: false })];

    expect(await a.set({ revision: 2, tokens: salesforceRefresh(1) }, { expectedRevision: 1 })).toBe(true);
    expect(await b.set({ revision: 2, tokens: salesforceRefresh(9) }, { expectedRevision: 1 })).toBe(false);
    expect(await b.set({ revision: 2, tokens: salesforceRefresh(9) }, { expectedRevision: 0 })).toBe(false);

    expect(await b.get()).toMatchObject({ revision: 2, tokens: { accessToken: '00D000000000001!AQ0AQ-access-1' } });
    expect(await readJson()).toMatchObject({ access_token: '00D000000000001!AQ0AQ-access-1', tokenrelay_revision: 2 });
  });

  it("lets another tool's new sign-in that raises tokenrelay_revision win over a refresh in flight from a file without it", async () => {
    await writeJson(salesforceSample);
    let answer!: (tokens: TokenSet) => void;
    const manager = createTokenManager({
      store: fileStore(tokenPath, { watch: false }),
      refresh: () => new Promise<TokenSet>((resolve) => (answer = resolve)),
    });
    const refreshing = manager.refresh({ staleAccessToken: salesforceSample.access_token });
    await vi.waitFor(() => expect(answer).toBeDefined());

    // The tool signs in anew while the token call is out, as docs/stores.md asks: tokenrelay_revision raised.
    const signIn = { ...salesforceSample, access_token: '00D000000000001!AQ0AQ-tool', refresh_token: '5Aep861-tool', tokenrelay_revision: Date.now() };
    await writeJson(signIn);
    answer(salesforceRefresh(1));
    await refreshing.catch(() => undefined);

    expect(await readJson()).toMatchObject({ access_token: signIn.access_token, refresh_token: signIn.refresh_token });
    expect((await manager.getTokens())?.refreshToken).toBe(signIn.refresh_token);
  });

  it('marks an expired session with tokenrelay_session_expired and removes the mark with the next sign-in', async () => {
    await writeJson(salesforceSample);
    const store = fileStore(tokenPath, { watch: false });
    const read = await store.get();

    await store.set({ ...read!, revision: 2, sessionExpired: true });
    expect(await readJson()).toMatchObject({ tokenrelay_session_expired: true, tokenrelay_revision: 2 });
    expect(await fileStore(tokenPath, { watch: false }).get()).toMatchObject({ revision: 2, sessionExpired: true });

    await store.set({ revision: 3, tokens: salesforceRefresh(3, { refreshToken: 'signed-in-again' }) });
    expect(await readJson()).not.toHaveProperty('tokenrelay_session_expired');
    expect(await store.get()).not.toHaveProperty('sessionExpired');
  });

  it('writes a new sign-in as that session alone: no field of the file it replaces (another user\'s id, signature, issued_at) stays', async () => {
    await writeJson({ ...salesforceSample, saved_by: 'nightly-export.py' });
    const manager = createTokenManager({ store: fileStore(tokenPath, { watch: false }), refresh: async () => salesforceRefresh(9) });
    await manager.getTokens();
    const signedIn: TokenSet = { accessToken: 'other-user-access', refreshToken: 'other-user-refresh', raw: { instance_url: 'https://other.my.salesforce.com' } };

    await manager.setTokens(signedIn);

    expect(await readJson()).toEqual({
      access_token: 'other-user-access',
      refresh_token: 'other-user-refresh',
      token_type: 'Bearer',
      instance_url: 'https://other.my.salesforce.com',
      tokenrelay_revision: expect.any(Number),
    });
    // Every store gives back what the sign-in wrote, and only that.
    expect((await fileStore(tokenPath, { watch: false }).get())?.tokens).toEqual({ ...signedIn, tokenType: 'Bearer' });
  });

  it("takes a plain set(value), without expectedRevision, for a new session: a login script's write keeps no field of the old user's file", async () => {
    await writeJson({ ...salesforceSample, saved_by: 'nightly-export.py' });
    const store = fileStore(tokenPath, { watch: false });
    cleanups.push(() => store.close());
    const before = await store.get();
    const tokens: TokenSet = { accessToken: 'script-access', refreshToken: 'script-refresh', raw: { instance_url: 'https://script.my.salesforce.com' } };

    await store.set({ tokens, revision: (before?.revision ?? 0) + 1 });

    expect(await readJson()).toEqual({
      access_token: 'script-access',
      refresh_token: 'script-refresh',
      token_type: 'Bearer',
      instance_url: 'https://script.my.salesforce.com',
      tokenrelay_revision: expect.any(Number),
    });
  });

  it("writes a sign-in whose own write failed as that session alone when the next refresh writes it first: no field of the old user's file stays", async () => {
    await writeJson({ ...salesforceSample, saved_by: 'nightly-export.py' });
    const inner = fileStore(tokenPath, { watch: false });
    cleanups.push(() => inner.close());
    const failing = { writes: 0 };
    // The sign-in's write fails once (a full disk); the refresh then finds the store missed it and writes it first.
    const store = { ...inner, set: (value: StoredTokens, options?: TokenStoreSetOptions) => (failing.writes-- > 0 ? Promise.reject(new Error('disk full')) : inner.set(value, options)) };
    const presented: (string | undefined)[] = [];
    const manager = createTokenManager({
      store,
      refresh: async ({ tokens }) => {
        presented.push(tokens?.refreshToken);
        return { accessToken: 'other-user-access-2', expiresAt: inAnHour };
      },
    });
    await manager.getTokens();
    const signedIn: TokenSet = { accessToken: 'other-user-access', refreshToken: 'other-user-refresh', raw: { instance_url: 'https://other.my.salesforce.com' } };
    failing.writes = 1;
    await expect(manager.setTokens(signedIn)).rejects.toMatchObject({ code: ErrorCode.STORE_ERROR });

    await manager.refresh({ staleAccessToken: 'other-user-access' });

    expect(presented).toEqual(['other-user-refresh']);
    expect(await readJson()).toEqual({
      access_token: 'other-user-access-2',
      refresh_token: 'other-user-refresh',
      token_type: 'Bearer',
      instance_url: 'https://other.my.salesforce.com',
      expires_at: expect.any(Number),
      expires_in: expect.any(Number),
      tokenrelay_revision: expect.any(Number),
    });
  });

  it('does not date a token by an expires_in it cannot date, and drops an old expiry when the new token has none', async () => {
    await writeJson({ ...salesforceSample, expires_in: 3600, expires_at: 1_764_633_600 });
    const store = fileStore(tokenPath, { watch: false });
    expect((await store.get())?.tokens.expiresAt).toBe(1_764_633_600_000);

    await store.set({ revision: 2, tokens: salesforceRefresh(1) });
    const written = await readJson();
    expect(written).not.toHaveProperty('expires_in');
    expect(written).not.toHaveProperty('expires_at');

    await writeJson({ access_token: 'from-a-script', expires_in: 3600 });
    expect((await store.get())?.tokens).toEqual({ accessToken: 'from-a-script', tokenType: 'Bearer', raw: {} });
  });

  it('creates a new file in tokenrelay\'s own format, or as a token response with newFileFormat: \'token-response\', also after clear()', async () => {
    await fileStore(tokenPath, { watch: false }).set({ revision: 1, tokens: salesforceRefresh(1) });
    expect(await readJson()).toEqual({ revision: 1, tokens: salesforceRefresh(1) });

    const store = fileStore(tokenPath, { watch: false, newFileFormat: 'token-response' });
    // An existing file keeps its layout, whatever newFileFormat says.
    await store.set({ revision: 2, tokens: salesforceRefresh(2) });
    expect(await readJson()).toHaveProperty('tokens');

    await store.clear();
    await store.set({ revision: 3, tokens: salesforceRefresh(3, { refreshToken: 'r3' }) });
    expect(await readJson()).toEqual({
      access_token: '00D000000000001!AQ0AQ-access-3',
      refresh_token: 'r3',
      token_type: 'Bearer',
      scope: 'refresh_token api',
      ...salesforceRefresh(3).raw,
      tokenrelay_revision: 3,
    });
    expect(await store.get()).toEqual({ revision: 3, tokens: salesforceRefresh(3, { refreshToken: 'r3' }) });
  });

  it('refuses a token response it cannot use with a STORE_ERROR that names the field and shows no token', async () => {
    const store = fileStore(tokenPath, { watch: false });
    await writeJson({ ...salesforceSample, access_token: 'leaked token with spaces' });
    const error = await expectStoreError(store.get(), /token response: unusable tokens: accessToken is not visible ASCII \(HTTP header\)/);
    expect(error.message).not.toContain('leaked');

    await writeJson({ ...salesforceSample, expires_at: 'tomorrow' });
    await expectStoreError(store.get(), /expires_at is not a number of epoch seconds/);
    await writeJson({ ...salesforceSample, tokenrelay_revision: 0 });
    await expectStoreError(store.get(), /tokenrelay_revision is not a whole number/);
    await writeJson({ ...salesforceSample, token_type: 'MAC' });
    await expectStoreError(store.get(), /token_type "MAC", not Bearer or DPoP/);
  });
});

describe('fileStore: the lock', () => {
  it('lets one holder in at a time: lock() waits until the holder releases', async () => {
    const first = await fileStore(tokenPath, { watch: false }).lock();
    const second = fileStore(tokenPath, { watch: false }).lock();

    expect(await settledWithin(second, 200)).toBe('pending');
    await first.release();
    await (await second).release();
  });

  it('gives up after lockWaitMs with a STORE_ERROR that names the holding process', async () => {
    const lock = await fileStore(tokenPath, { watch: false }).lock();
    cleanups.push(() => lock.release());
    const startedAt = Date.now();

    await expectStoreError(
      fileStore(tokenPath, { watch: false, lockWaitMs: 250 }).lock(),
      new RegExp(`after 250 ms: process ${process.pid} on .+ holds it`),
    );
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(240);
  });

  it('stops waiting with the signal reason when the signal aborts', async () => {
    const lock = await fileStore(tokenPath, { watch: false }).lock();
    cleanups.push(() => lock.release());
    const controller = new AbortController();
    const waiting = fileStore(tokenPath, { watch: false }).lock({ signal: controller.signal });
    const reason = new Error('session replaced');

    controller.abort(reason);

    await expect(waiting).rejects.toBe(reason);
  });

  it('renews the lease while held, so a refresh that outlives the lease is not taken over', async () => {
    const lock = await fileStore(tokenPath, { watch: false, lockLeaseMs: 600 }).lock();
    // Without renewal this waiter would take the lock after 600 ms.
    const waiter = fileStore(tokenPath, { watch: false, lockLeaseMs: 600, lockWaitMs: 1_800 }).lock();

    expect(await settledWithin(waiter, 1_500)).toBe('pending');
    await lock.release();
    await (await waiter).release();
  });

  it('takes over the lock of a holder that was killed (SIGKILL), once its lease has run out', async () => {
    const killedAt = await lockOfKilledProcess(1_500);

    const lock = await fileStore(tokenPath, { watch: false, lockWaitMs: 10_000 }).lock();
    const waited = Date.now() - killedAt;
    await lock.release();

    // The child's last heartbeat was at most a third of the lease before it died.
    expect(waited).toBeGreaterThanOrEqual(900);
    expect(waited).toBeLessThan(10_000);
  });

  it('lets exactly one of many waiters racing for a dead holder\'s lock in at a time', async () => {
    await lockOfKilledProcess(800);
    let inside = 0;
    let mostInside = 0;
    let entered = 0;

    await Promise.all(
      Array.from({ length: 8 }, async () => {
        const lock = await fileStore(tokenPath, { watch: false, lockPollMs: 5 }).lock();
        inside++;
        entered++;
        mostInside = Math.max(mostInside, inside);
        await new Promise((resolve) => setTimeout(resolve, 20));
        inside--;
        await lock.release();
      }),
    );

    expect(entered).toBe(8);
    expect(mostInside).toBe(1);
    // The winners tidied up: only the newest generation is left.
    expect(await readdir(`${tokenPath}.lock`)).toHaveLength(1);
  });

  it('writes inside its own lock without waiting for itself (the manager\'s set() during a refresh)', async () => {
    const store = fileStore(tokenPath, { watch: false });
    const lock = await store.lock();

    expect(await settledWithin(store.set(session(1)), 2_000)).toBe('resolved');
    await lock.release();
    expect(await store.get()).toEqual(session(1));
  });

  it('aborts the lock\'s signal and refuses to write after another process took over a lock this one held frozen past its lease', async () => {
    const store = fileStore(tokenPath, { watch: false, lockLeaseMs: 400 });
    const lock = await store.lock();
    const other = startChild(
      `const store = fileStore(path, { watch: false });
       console.log('waiting');
       const lock = await store.lock();
       await store.set({ revision: 7, tokens: { accessToken: 'from-the-other-process' } });
       await lock.release();
       console.log('done');`,
    );
    await other.printed('waiting');

    // Freeze this process's event loop, as a long synchronous task would: no heartbeat gets out.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1_500);
    await other.printed('done');

    await vi.waitFor(() => expect(lock.signal.aborted).toBe(true), { timeout: 3_000 });
    expect(lock.signal.reason).toMatchObject({ code: ErrorCode.STORE_ERROR });
    await expectStoreError(store.set(session(1), { expectedRevision: 7 }), /Lost the lock/);
    await lock.release();
    expect(await store.get()).toEqual({ revision: 7, tokens: { accessToken: 'from-the-other-process' } });
  });
});

describe('fileStore: change notifications', () => {
  it.each(['auto', 'poll'] as const)(
    'tells subscribers (watch: %s) about tokens another writer stored or cleared, but not about its own writes',
    async (watch) => {
      const store = fileStore(tokenPath, { watch, watchPollMs: 50 });
      const seen: (StoredTokens | undefined)[] = [];
      const unsubscribe = store.subscribe((value) => seen.push(value));
      cleanups.push(unsubscribe);
      const other = fileStore(tokenPath, { watch: false });

      await other.set(session(1));
      await vi.waitFor(() => expect(seen).toEqual([session(1)]), { timeout: 3_000 });

      await store.set(session(2));
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(seen).toEqual([session(1)]);

      await other.clear();
      await vi.waitFor(() => expect(seen).toEqual([session(1), undefined]), { timeout: 3_000 });
    },
  );

  it('stops notifying after the last unsubscribe', async () => {
    const store = fileStore(tokenPath);
    const listener = vi.fn();
    store.subscribe(listener)();

    await fileStore(tokenPath, { watch: false }).set(session(1));
    await new Promise((resolve) => setTimeout(resolve, 300));

    expect(listener).not.toHaveBeenCalled();
  });

  it('does not keep a process alive by watching', async () => {
    const child = startChild(`fileStore(path).subscribe(() => {}); console.log('subscribed');`);
    await child.printed('subscribed');
    expect(await settledWithin(child.exited, 5_000)).toBe('resolved');
  });
});

describe('fileStore: close()', () => {
  it('stops watching and gives up a lock it still holds, twice without harm, so the process can exit', async () => {
    const child = startChild(
      `const store = fileStore(path);
       store.subscribe(() => {});
       await store.lock();
       await store.close();
       await store.close();
       console.log('closed');`,
    );
    await child.printed('closed');
    expect(await settledWithin(child.exited, 5_000)).toBe('resolved');

    const lock = await fileStore(tokenPath, { watch: false, lockWaitMs: 1_000 }).lock();
    await lock.release();
  });

  it('ends a lock it gives up: its signal aborts, so whoever kept it goes on under it no more', async () => {
    const store = fileStore(tokenPath, { watch: false });
    const lock = await store.lock();

    await store.close();

    expect(lock.signal.aborted).toBe(true);
    const next = await fileStore(tokenPath, { watch: false, lockWaitMs: 1_000 }).lock();
    await next.release();
  });
});

describe('fileStore with the token manager', () => {
  it('lets two managers sharing the file make one refresh call between them', async () => {
    await fileStore(tokenPath, { watch: false }).set(session(0));
    let calls = 0;
    const refresh = async () => {
      calls++;
      await new Promise((resolve) => setTimeout(resolve, 100));
      return tokensOf(calls);
    };
    const managers = [1, 2].map(() => createTokenManager({ store: fileStore(tokenPath, { watch: false }), refresh }));

    const refreshed = await Promise.all(managers.map((manager) => manager.refresh({ staleAccessToken: 'access-0' })));

    expect(calls).toBe(1);
    expect(refreshed).toEqual([tokensOf(1), tokensOf(1)]);
    expect(await fileStore(tokenPath, { watch: false }).get()).toEqual({ revision: 2, tokens: tokensOf(1) });
  });

  it('fails with a STORE_ERROR on a corrupt file, and setTokens() after a new sign-in replaces it', async () => {
    await fileStore(tokenPath, { watch: false }).set(session(0));
    await writeFile(tokenPath, 'garbage');
    const manager = createTokenManager({ store: fileStore(tokenPath, { watch: false }), refresh: async () => tokensOf(9) });

    await expect(manager.getAccessToken()).rejects.toMatchObject({ code: ErrorCode.STORE_ERROR });
    await manager.setTokens(tokensOf(1));

    expect(await manager.getAccessToken()).toBe('access-1');
    expect(await fileStore(tokenPath, { watch: false }).get()).toMatchObject({ tokens: tokensOf(1) });
  });
});
