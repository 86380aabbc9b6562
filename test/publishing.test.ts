import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const repoRoot = fileURLToPath(new URL('../', import.meta.url));
const guard = fileURLToPath(new URL('../scripts/require-pnpm-publish.mjs', import.meta.url));

/** Runs the prepublishOnly guard as the package manager with this user agent would. */
const runGuard = (userAgent: string | undefined) => {
  const env = { ...process.env };
  delete env.npm_config_user_agent;
  if (userAgent !== undefined) env.npm_config_user_agent = userAgent;
  return spawnSync(process.execPath, [guard], { env, encoding: 'utf8', timeout: 30_000 });
};

describe('publishing goes through pnpm only', () => {
  it('refuses npm publish, which would leave workspace:* in the published package.json', () => {
    const result = runGuard('npm/10.9.2 node/v20.20.2 linux x64 workspaces/false');
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('Refusing to publish with npm/10.9.2');
    expect(result.stderr).toContain('changeset publish');
  });

  it('refuses a publisher it cannot identify', () => {
    expect(runGuard(undefined).status).toBe(1);
    expect(runGuard('yarn/4.5.0 npm/? node/v20.20.2 linux x64').status).toBe(1);
  });

  it('lets pnpm publish, as changeset publish runs it', () => {
    expect(runGuard('pnpm/10.34.8 npm/? node/v20.20.2 linux x64').status).toBe(0);
  });

  it('guards every package', () => {
    for (const dir of readdirSync(`${repoRoot}packages`)) {
      const manifest = JSON.parse(readFileSync(`${repoRoot}packages/${dir}/package.json`, 'utf8')) as { scripts?: Record<string, string> };
      expect(manifest.scripts?.prepublishOnly, dir).toBe('node ../../scripts/require-pnpm-publish.mjs');
    }
  });
});
