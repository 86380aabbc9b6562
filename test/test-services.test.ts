import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { chromium, findTestService, missingServicesMessage, redisServer } from './helpers/test-services.js';

describe('finding the programs the integration tests need', () => {
  let dir: string;
  const program = async (name: string) => {
    const path = join(dir, name);
    await writeFile(path, '#!/bin/sh\n');
    await chmod(path, 0o755);
    return path;
  };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tokenrelay-services-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('finds redis-server on the PATH', async () => {
    const path = await program('redis-server');
    expect(findTestService(redisServer, { PATH: `/nonexistent:${dir}` })).toBe(path);
  });

  it('finds Chromium under the names distributions give it', async () => {
    const path = await program('chromium-browser');
    expect(findTestService(chromium, { PATH: dir })).toBe(path);
  });

  it('prefers the path in the env variable over the PATH', async () => {
    await program('redis-server');
    const configured = await program('my-redis');
    expect(findTestService(redisServer, { PATH: dir, TOKENRELAY_REDIS_SERVER: configured })).toBe(configured);
  });

  it('refuses an env variable that points at no executable, naming the variable', async () => {
    await writeFile(join(dir, 'not-executable'), '');
    expect(() => findTestService(chromium, { TOKENRELAY_CHROMIUM: join(dir, 'missing') })).toThrow(/TOKENRELAY_CHROMIUM=/);
    expect(() => findTestService(chromium, { TOKENRELAY_CHROMIUM: join(dir, 'not-executable') })).toThrow(/TOKENRELAY_CHROMIUM=/);
  });

  it('finds nothing when the program is neither on the PATH nor configured', () => {
    expect(findTestService(redisServer, { PATH: dir })).toBeUndefined();
  });

  it('says exactly what to install on Debian and macOS, and which env variable gives a path', () => {
    const message = missingServicesMessage([redisServer, chromium]);
    expect(message).toContain('sudo apt-get install -y redis-server chromium');
    expect(message).toContain('brew install redis && brew install --cask chromium');
    expect(message).toContain('TOKENRELAY_REDIS_SERVER=/absolute/path/to/redis-server');
    expect(message).toContain('TOKENRELAY_CHROMIUM=/absolute/path/to/chromium');
  });
});
