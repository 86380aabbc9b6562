/*
 * What a browser ships (esbuild, minified, gzip -9) with size-limit, configured in
 * bench/size-limit.config.js, which also holds tokenrelay's CI budgets (`limit`). The issue's
 * goal (both tokenrelay bundles smaller than the smallest peer that ships a grant) is stricter
 * than the budget and is reported, not enforced: the budget stops growth, the goal is where to
 * get to.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The bundle sizes' id in `--only` and `Contender.measuredIn`. */
export const BUNDLE_SIZE_ID = 'bundle-size';

/** One size-limit check. */
export interface BundleSize {
  readonly name: string;
  readonly bytes: number;
  /** The CI budget, when the check has one. */
  readonly budgetBytes?: number;
  readonly withinBudget?: boolean;
}

export interface BundleReport {
  readonly checks: readonly BundleSize[];
  /** Which check stands for which contender in the table. */
  readonly byContender: Readonly<Record<string, string>>;
  /**
   * The goal: each of tokenrelay's `checks` smaller than the `below` check, the smallest
   * peer that ships a grant (@badgateway's OAuth2Client + OAuth2Fetch).
   */
  readonly goal: { readonly checks: readonly string[]; readonly below: string };
  /** Checks of libraries that ship no token request: their users write (and ship) that themselves. */
  readonly withoutGrant: readonly string[];
}

/** The goal's bound in bytes (the `below` check's size), when that check was measured. */
export const goalBytes = (bundle: BundleReport) => bundle.checks.find((check) => check.name === bundle.goal.below)?.bytes;

const root = fileURLToPath(new URL('../../', import.meta.url));
const SIZE_LIMIT_TIMEOUT_MS = 120_000;

/** The check of `@tokenrelay/dpop`'s entry: what a DPoP app ships on top of core + adapter. */
export const DPOP_CHECK = 'tokenrelay dpop (createDpop, browserDpopKey)';

/** The check names in size-limit.config.js that correspond to each contender. */
const byContender: Record<string, string> = {
  'tokenrelay-axios': 'tokenrelay core+axios',
  'tokenrelay-fetch': 'tokenrelay core+fetch',
  'axios-auth-refresh': 'axios-auth-refresh',
  'axios-auth-refresh-no-dedupe': 'axios-auth-refresh',
  'badgateway-oauth2-client': '@badgateway/oauth2-client',
};

/** Runs size-limit (its CLI, from the repository root) and returns every check's size. */
export async function measureBundleSizes(): Promise<BundleReport> {
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(
      process.execPath,
      [`${root}node_modules/size-limit/bin.js`, '--config', 'bench/size-limit.config.js', '--json'],
      { cwd: root, timeout: SIZE_LIMIT_TIMEOUT_MS, maxBuffer: 1_048_576 },
      // size-limit exits with 1 when a check is over its limit; its JSON still tells which.
      (error, out, stderr) => (out.trim().startsWith('[') ? resolve(out) : reject(new Error(`size-limit failed: ${stderr || error?.message}`))),
    );
  });
  const parsed = JSON.parse(stdout) as { name: string; size: number; sizeLimit?: number; passed?: boolean }[];
  const checks = parsed.map(({ name, size, sizeLimit, passed }) => ({
    name,
    bytes: size,
    ...(sizeLimit === undefined ? {} : { budgetBytes: sizeLimit, withinBudget: passed ?? size <= sizeLimit }),
  }));
  return {
    checks,
    byContender,
    goal: { checks: [byContender['tokenrelay-fetch'] ?? '', byContender['tokenrelay-axios'] ?? ''], below: '@badgateway/oauth2-client' },
    withoutGrant: ['axios-auth-refresh'],
  };
}

/** "5.74 kB" (1 kB = 1,000 B, as size-limit prints). */
export const kilobytes = (bytes: number) => `${(bytes / 1_000).toFixed(2)} kB`;
