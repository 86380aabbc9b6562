/*
 * The programs the integration tests need besides Node: redis-server, redis-cli and Chromium. One place
 * finds them (an env variable, else the PATH), installs Debian's packages when they are missing
 * and apt-get can be used, and otherwise says exactly what to install. The tests never skip.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';

/** A program the integration tests run. */
export interface TestService {
  /** What it is called in messages. */
  readonly name: string;
  /** The env variable that gives its path, overriding the PATH search. */
  readonly envVariable: string;
  /** Program names searched for on the PATH, in order. */
  readonly programs: readonly string[];
  /** The Debian package that installs it. */
  readonly debianPackage: string;
  /** The Homebrew command that installs it on macOS. */
  readonly brewInstall: string;
  /** Which tests need it. */
  readonly neededBy: string;
}

export const redisServer: TestService = {
  name: 'redis-server',
  envVariable: 'TOKENRELAY_REDIS_SERVER',
  programs: ['redis-server'],
  debianPackage: 'redis-server',
  brewInstall: 'brew install redis',
  neededBy: 'the Redis store tests',
};

export const redisCli: TestService = {
  name: 'redis-cli',
  envVariable: 'TOKENRELAY_REDIS_CLI',
  programs: ['redis-cli'],
  debianPackage: 'redis-tools',
  brewInstall: 'brew install redis',
  neededBy: 'the Redis Cluster tests (redis-cli --cluster create)',
};

export const chromium: TestService = {
  name: 'Chromium',
  envVariable: 'TOKENRELAY_CHROMIUM',
  programs: ['chromium', 'chromium-browser', 'google-chrome-stable', 'google-chrome'],
  debianPackage: 'chromium',
  brewInstall: 'brew install --cask chromium',
  neededBy: 'the browser (cross-tab) tests',
};

export const testServices: readonly TestService[] = [redisServer, redisCli, chromium];

function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** Where `service` is: `undefined` when it is not installed. An env variable pointing at nothing is an error. */
export function findTestService(service: TestService, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const configured = env[service.envVariable];
  if (configured) {
    if (isAbsolute(configured) && isExecutableFile(configured)) return configured;
    throw new Error(`${service.envVariable}=${configured} is not an executable file: give the absolute path of ${service.name}.`);
  }
  const directories = (env.PATH ?? '').split(delimiter).filter((directory) => directory !== '');
  for (const program of service.programs) {
    for (const directory of directories) {
      const path = join(directory, program);
      if (isExecutableFile(path)) return path;
    }
  }
  return undefined;
}

/** The message for services that are missing: what needs them and the exact install command per OS. */
export function missingServicesMessage(missing: readonly TestService[]): string {
  const lines = [
    `The integration tests need ${missing.map((service) => `${service.name} (${service.neededBy})`).join(' and ')}, ` +
      `and could not find or install ${missing.length > 1 ? 'them' : 'it'}. They are never skipped. Install:`,
    `  Debian/Ubuntu:  sudo apt-get install -y ${missing.map((service) => service.debianPackage).join(' ')}`,
    `  macOS:          ${missing.map((service) => service.brewInstall).join(' && ')}`,
    `  elsewhere, or installed outside the PATH: ${missing.map((service) => `${service.envVariable}=/absolute/path/to/${service.programs[0] ?? service.name}`).join(' ')}`,
  ];
  return lines.join('\n');
}

/** The path of `service`, or an error that says how to install it. */
export function requireTestService(service: TestService): string {
  const path = findTestService(service);
  if (path === undefined) throw new Error(missingServicesMessage([service]));
  return path;
}

/** True when this process may install Debian packages: root, with apt-get on the PATH. */
function canInstallWithAptGet(): boolean {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return false;
  return spawnSync('apt-get', ['--version'], { stdio: 'ignore' }).status === 0;
}

function aptGet(args: readonly string[]): void {
  const result = spawnSync('apt-get', args, {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    // A slow mirror must not hang the test run forever.
    timeout: 15 * 60_000,
  });
  if (result.status !== 0) {
    throw new Error(`apt-get ${args.join(' ')} failed (${result.error?.message ?? `exit status ${String(result.status)}`})`);
  }
}

/**
 * Makes sure every test service is there: installs the missing ones with apt-get when running as
 * root on Debian/Ubuntu, and otherwise throws the install commands.
 */
export function ensureTestServices(): void {
  const missing = testServices.filter((service) => findTestService(service) === undefined);
  if (missing.length > 0 && canInstallWithAptGet()) {
    const packages = missing.map((service) => service.debianPackage);
    process.stdout.write(`Installing ${packages.join(' ')} with apt-get for the integration tests…\n`);
    aptGet(['update', '-qq']);
    aptGet(['install', '-y', '-qq', ...packages]);
  }
  const stillMissing = testServices.filter((service) => findTestService(service) === undefined);
  if (stillMissing.length > 0) throw new Error(missingServicesMessage(stillMissing));
}
