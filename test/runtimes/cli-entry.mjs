// Bun and Deno: `<runtime> cli-entry.mjs '<ScenarioConfig as JSON>'`; prints the result as JSON.
import { runScenarios } from './scenarios.mjs';

const [config] = globalThis.Deno ? globalThis.Deno.args : globalThis.process.argv.slice(2);
console.log(JSON.stringify(await runScenarios(JSON.parse(config))));
