import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', '.tmp/**', 'bench/results/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: { console: 'readonly', process: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', URL: 'readonly' },
    },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-console': ['error', { allow: ['error', 'warn'] }],
    },
  },
  {
    // Examples, the demo, benchmarks and the runtime checks are programs that report to the terminal.
    files: ['examples/**', 'bench/**', 'scripts/**', 'test/runtimes/**'],
    rules: { 'no-console': 'off' },
  },
  {
    // Plain JavaScript that Bun, Deno and workerd run as it is: the web platform's globals.
    files: ['test/runtimes/**/*.mjs'],
    languageOptions: { globals: { fetch: 'readonly', Response: 'readonly' } },
  },
);
