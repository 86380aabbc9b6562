import type { Plugin } from 'esbuild';

/** Resolves `./name.js` to a sibling `name.browser.ts` when there is one (browser builds). */
export declare const browserVariants: Plugin;
