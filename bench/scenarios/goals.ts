/*
 * The correctness goals, as checks on a scenario result. A scenario lists the problems
 * it finds; the run fails only on tokenrelay's, but every contender is marked against the goal.
 */
import type { ScenarioResult } from './harness.js';

/** Exactly one token call per expiry (`extraCalls`: failed attempts the scenario injected itself). */
export function oneTokenCallPerExpiry(result: ScenarioResult, extraCalls = 0): string[] {
  const wanted = result.expiries + extraCalls;
  return result.tokenCalls === wanted ? [] : [`${result.tokenCalls} token calls, wanted ${wanted}`];
}

/**
 * Every request settled, none failed. Broken connections are shown in the cell but not held
 * against the goal: they come from the machine's load, and on a shared CI machine they would make
 * the gate flaky without saying anything about token handling.
 */
export function noFailedRequests(result: ScenarioResult): string[] {
  const failed = result.failed - result.connectionErrors;
  return [...(failed === 0 ? [] : [`${failed} of ${result.requests} requests failed`]), ...noHungRequests(result)];
}

/** Every request settled within the bound. */
export function noHungRequests(result: ScenarioResult): string[] {
  return result.hung === 0 ? [] : [`${result.hung} requests hung`];
}

/** The refresh-token family survived (no refresh token was presented twice). */
export function familyIntact(result: ScenarioResult): string[] {
  return result.familiesRevoked === 0 ? [] : ['the refresh-token family was revoked (a refresh token was used twice)'];
}
