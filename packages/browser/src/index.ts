export { browserStore } from './browser-store.js';
export type { BrowserLockMode, BrowserStorage, BrowserStoreOptions, BrowserTokenStore } from './types.js';
