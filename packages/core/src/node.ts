/*
 * @tokenrelay/core/node: the parts of core that need Node built-ins (node:fs). The main entry
 * stays free of node:* imports, because it also runs in browsers.
 */
export { fileStore, type FileStoreOptions, type FileTokenStore } from './file-store.js';
export type { TokenFileFormat } from './token-file-format.js';
