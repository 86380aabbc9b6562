/*
 * @tokenrelay/dpop: DPoP (RFC 9449) for tokenrelay. Its own package, so apps without DPoP ship
 * none of it; core only knows that a `DPoP` token goes as `Authorization: DPoP <token>`.
 */
export { createDpop, type Dpop, type DpopOptions } from './dpop.js';
export { browserDpopKey, type BrowserDpopKeyOptions } from './browser-key.js';
export { sessionDpopKey, SESSION_DPOP_KEY, type SessionDpopKey } from './session-key.js';
export { generateDpopKey, type DpopAlgorithm, type DpopKeySource } from './proof.js';
