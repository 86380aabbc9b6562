/*
 * Type tests, checked by `tsc -p tsconfig.json`: withTokenRelay accepts any fetch-shaped function
 * without a cast and returns a function of the same type.
 */
import { createTokenManager } from '@tokenrelay/core';
import { fetch as undici6Fetch } from 'undici';
import { fetch as undici7Fetch } from 'undici7';
import { expectTypeOf, test } from 'vitest';
import { withTokenRelay } from './index.js';

const manager = createTokenManager({ tokens: { accessToken: 'a' }, refresh: async () => ({ accessToken: 'b' }) });
const options = { origins: ['https://api.example.com'] };

test("wraps undici's fetch (6 and 7) without a cast and keeps its type", () => {
  expectTypeOf(withTokenRelay(undici6Fetch, manager, options)).toEqualTypeOf<typeof undici6Fetch>();
  expectTypeOf(withTokenRelay(undici7Fetch, manager, options)).toEqualTypeOf<typeof undici7Fetch>();
});

test('wraps the global fetch and keeps its type', () => {
  expectTypeOf(withTokenRelay(fetch, manager, options)).toEqualTypeOf<typeof fetch>();
});

test('refuses a function that does not return a response', () => {
  // @ts-expect-error a fetch resolves to a response
  withTokenRelay(async (_url: string) => 'not a response', manager, options);
});
