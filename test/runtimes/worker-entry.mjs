// workerd: a Worker that runs the scenarios on GET / and answers the result as JSON. The config
// comes from the CONFIG binding (the driver's env variable).
import { runScenarios } from './scenarios.mjs';

/** An error and its causes, one per line: workerd's own log shows only the outermost message. */
const describe = (error) => (error ? `${String(error)}${error.cause ? `\ncaused by ${describe(error.cause)}` : ''}` : '');

export default {
  async fetch(_request, env) {
    try {
      return Response.json(await runScenarios(JSON.parse(env.CONFIG)));
    } catch (error) {
      return new Response(describe(error), { status: 500 });
    }
  },
};
