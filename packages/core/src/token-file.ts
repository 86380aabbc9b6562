/*
 * The token file of fileStore: one JSON document, in tokenrelay's layout or an OAuth token response
 * (token-file-format.ts), created with mode 0600 (its directory, when created, 0700) and replaced
 * atomically: a temporary file in the same directory is written and fsynced, renamed over the
 * file, and the directory is fsynced. A write keeps the layout the file had.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { storeError } from './errors.js';
import { errnoCode } from './file-lock.js';
import { isRecord } from './token-set.js';
import { parseTokenFile, tokenFileFormatOf, tokenResponseDocument, type TokenFileFormat } from './token-file-format.js';
import type { StoredTokens } from './types.js';

/** Reads and replaces one token file. */
export interface TokenFile {
  /**
   * What the file holds, in either layout; `undefined` when it does not exist.
   * @throws TokenRelayError `STORE_ERROR` when it is unreadable, empty, not JSON or not stored tokens.
   */
  read(): Promise<StoredTokens | undefined>;
  /**
   * Replaces the file with `value` atomically, or deletes it (`undefined`). A token-response file
   * stays one, keeping the fields the new tokens lack when they continue its session (`continues`:
   * a refresh; a sign-in is a new session, written alone); a file that does not exist or cannot be
   * parsed is written as `newFileFormat`; any other in tokenrelay's layout. `beforeCommit` runs
   * right before the rename or unlink and may throw to cancel it (the lock check).
   */
  write(value: StoredTokens | undefined, beforeCommit: () => Promise<void>, continues?: boolean): Promise<void>;
}

/** fsync a directory so a rename in it survives power loss; not every platform can (Windows), and that is fine. */
async function syncDirectory(path: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(path, 'r');
    await handle.sync();
  } catch {
    // The rename itself is atomic either way; only its durability across power loss is weaker.
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

/**
 * The JSON written for `value` over the document the file held (`undefined`: none, or unparseable);
 * its fields are kept only when `value` `continues` its session.
 */
function serialise(value: StoredTokens, previous: unknown, newFileFormat: TokenFileFormat, continues: boolean): string {
  const format = previous === undefined ? newFileFormat : tokenFileFormatOf(previous);
  const document =
    format === 'token-response'
      ? tokenResponseDocument(value, continues && isRecord(previous) ? previous : {}, Date.now())
      : value.sessionExpired
        ? { revision: value.revision, sessionExpired: true, tokens: value.tokens }
        : { revision: value.revision, tokens: value.tokens };
  return `${JSON.stringify(document, null, 2)}\n`;
}

/** The file's text; `undefined` when it does not exist. */
async function readText(filePath: string): Promise<string | undefined> {
  try {
    return await readFile(filePath, 'utf8');
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return undefined;
    throw storeError(`Cannot read the token file ${filePath}`, error);
  }
}

/**
 * The parsed document, or `undefined` when there is none or it cannot be read or parsed: a write
 * then replaces it as a new file, as a sign-in replaces a corrupt one.
 */
async function readDocument(filePath: string): Promise<unknown> {
  try {
    const text = await readText(filePath);
    return text === undefined ? undefined : (JSON.parse(text) as unknown);
  } catch {
    return undefined;
  }
}

/**
 * The token file at the absolute path `filePath`; `newFileFormat` is the layout of a file it creates.
 */
export function tokenFile(filePath: string, newFileFormat: TokenFileFormat = 'tokenrelay'): TokenFile {
  const directory = dirname(filePath);
  const fileName = basename(filePath);

  return {
    async read() {
      const text = await readText(filePath);
      if (text === undefined) return undefined;
      const corrupt = (what: string) =>
        storeError(
          `The token file ${filePath} ${what}. It was left as it is: fix or delete it, or sign in again (setTokens() replaces it under the lock)`,
        );
      if (text.trim() === '') throw corrupt('is empty (half-written?)');
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        // The parser's own message quotes the file, which holds tokens: it is not kept as the cause.
        throw corrupt('is not valid JSON (corrupt or half-written)');
      }
      return parseTokenFile(value, (problem) => corrupt(`does not hold stored tokens: ${problem}`));
    },

    async write(value, beforeCommit, continues = false) {
      if (value === undefined) {
        await beforeCommit();
        await unlink(filePath).catch((error: unknown) => {
          if (errnoCode(error) !== 'ENOENT') throw error;
        });
        await syncDirectory(directory);
        return;
      }
      const text = serialise(value, await readDocument(filePath), newFileFormat, continues);
      await mkdir(directory, { recursive: true, mode: 0o700 });
      // A dot name in the same directory: rename is atomic only within one file system, and watchers ignore it.
      const temporary = join(directory, `.${fileName}.${randomBytes(6).toString('hex')}.tmp`);
      try {
        const handle = await open(temporary, 'wx', 0o600);
        try {
          await handle.writeFile(text, 'utf8');
          await handle.sync();
        } finally {
          await handle.close();
        }
        await beforeCommit();
        await rename(temporary, filePath);
      } catch (error) {
        await unlink(temporary).catch(() => undefined);
        throw error;
      }
      await syncDirectory(directory);
    },
  };
}
