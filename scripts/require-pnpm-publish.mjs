// prepublishOnly of every package: only pnpm (which `changeset publish` runs here) replaces the
// `workspace:*` dependency specifiers with real versions when it packs; `npm publish` would ship
// them as they are, and installing such a package fails.
const userAgent = process.env.npm_config_user_agent ?? '';
if (!userAgent.startsWith('pnpm/')) {
  console.error(
    `Refusing to publish with ${userAgent.split(' ')[0] || 'this tool'}: it would leave "workspace:*" in the published package.json.\n` +
      'Publish through pnpm: `npx -y pnpm@10.34.8 build && npx -y pnpm@10.34.8 changeset publish` (see docs/publishing.md).',
  );
  process.exit(1);
}
