/*
 * fast-check commands over a ModelSystem (see model-system.ts). Each command is one event of the
 * outside world: a request starts, the resource server answers one pending request, the clock
 * moves, the token endpoint answers, a caller aborts, the user signs in again or out, a store
 * call fails or hangs once, or (with a shared store) another process takes the store's lock, refreshes, signs in or out. The system checks its
 * invariants after every command.
 */
import fc from 'fast-check';
import type { ModelSystem, OtherProcessAction, ResourceAnswer, StoreCallFault, TokenCallFailure } from './model-system.js';

type ModelCommand = fc.AsyncCommand<ModelSystem, ModelSystem>;

/** Builds a command from its description, precondition and action. */
function command(
  description: string,
  check: (system: ModelSystem) => boolean,
  run: (system: ModelSystem) => Promise<void>,
): ModelCommand {
  return { check, run: (_model, system) => run(system), toString: () => description };
}

const always = () => true;

/** Token lifetimes that exercise both margins: a quarter of a short lifetime, and the 30 s margin of a long one. */
const lifetimeMs = fc.option(fc.constantFrom(1_000, 8_000, 45_000, 600_000), { nil: undefined });

const showLifetime = (ms: number | undefined) => (ms === undefined ? 'no expiry' : `${ms} ms`);

const startRequest = fc.constant(command('startRequest', always, (system) => system.startRequest()));

const respond = fc
  .tuple(fc.nat(), fc.constantFrom<ResourceAnswer>('by_token', 'by_token', 'by_token', 'insufficient_scope'))
  .map(([pick, answer]) =>
    command(
      `respond(${pick}, ${answer})`,
      (system) => system.pendingSendCount > 0,
      (system) => system.respond(pick, answer),
    ),
  );

const revokeAccessTokens = fc.constant(command('revokeAccessTokens', always, (system) => system.revokeAccessTokens()));

const advanceClock = fc
  .constantFrom(50, 250, 1_000, 5_000, 20_000, 60_000)
  .map((ms) => command(`advanceClock(${ms})`, always, (system) => system.advanceClock(ms)));

const succeedTokenCall = fc
  .tuple(fc.boolean(), lifetimeMs)
  .map(([rotate, lifetime]) =>
    command(
      `succeedTokenCall(${rotate ? 'rotate' : 'keep refresh token'}, ${showLifetime(lifetime)})`,
      (system) => system.hasTokenCall,
      (system) => system.succeedTokenCall(rotate, lifetime),
    ),
  );

const failTokenCall = fc
  .constantFrom<TokenCallFailure>('invalid_grant', 'unavailable', 'invalid_client', 'handler_crash')
  .map((failure) =>
    command(
      `failTokenCall(${failure})`,
      (system) => system.hasTokenCall,
      (system) => system.failTokenCall(failure),
    ),
  );

const abortRequest = fc
  .nat()
  .map((pick) =>
    command(
      `abortRequest(${pick})`,
      (system) => system.unsettledRequests.length > 0,
      (system) => system.abortRequest(pick),
    ),
  );

const signIn = lifetimeMs.map((lifetime) =>
  command(`signIn(${showLifetime(lifetime)})`, always, (system) => system.signIn(lifetime)),
);

const otherProcessTakesLock = fc.constant(
  command('otherProcessTakesLock', (system) => system.lockIsFree, (system) => system.otherProcessTakesLock()),
);

const otherProcessReleases = fc.constant(
  command('otherProcessReleases', (system) => system.otherProcessHoldsLock, (system) => system.otherProcessReleases()),
);

const otherProcessAction: fc.Arbitrary<OtherProcessAction> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant('refresh' as const), rotate: fc.boolean(), lifetimeMs, announce: fc.boolean() }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('signIn' as const), lifetimeMs }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'signOut' as const }) },
);

const otherProcessActs = otherProcessAction.map((action) =>
  command(
    `otherProcessActs(${JSON.stringify(action)})`,
    (system) => system.otherProcessCanAct,
    (system) => system.otherProcessActs(action),
  ),
);

const otherProcessReplacesSession = fc
  .oneof(
    fc.record({ kind: fc.constant('signIn' as const), lifetimeMs }),
    fc.constant({ kind: 'signOut' as const }),
  )
  .map((action) =>
    command(
      `otherProcessReplacesSession(${JSON.stringify(action)})`,
      (system) => system.otherProcessCanReplaceSession,
      (system) => system.otherProcessReplacesSession(action),
    ),
  );

const loseLock = fc.constant(command('loseLock', (system) => system.managerHoldsLock, (system) => system.loseLock()));

const failNextStoreWrite = fc.constant(command('failNextStoreWrite', always, (system) => system.failNextStoreWrite()));

const failNextStoreCall = fc
  .record<StoreCallFault>({ call: fc.constantFrom('get', 'set', 'clear', 'lock'), mode: fc.constantFrom('reject', 'hang') })
  .map((fault) =>
    command(`failNextStoreCall(${fault.call}, ${fault.mode})`, always, (system) => system.failNextStoreCall(fault)),
  );

const signOut = fc.constant(command('signOut', always, (system) => system.signOut()));

/**
 * The command mix. Frequent events (requests, answers) appear more than once so that runs build
 * up queues; rare ones (sign-in) once.
 */
export function modelCommands(maxCommands: number): fc.Arbitrary<Iterable<ModelCommand>> {
  return fc.commands(
    [
      startRequest,
      startRequest,
      startRequest,
      respond,
      respond,
      respond,
      revokeAccessTokens,
      revokeAccessTokens,
      advanceClock,
      advanceClock,
      succeedTokenCall,
      succeedTokenCall,
      failTokenCall,
      failTokenCall,
      abortRequest,
      // A sign-out ends the interesting part of a run (requests go out without a bearer): rarer than a sign-in.
      fc.oneof({ weight: 2, arbitrary: signIn }, { weight: 1, arbitrary: signOut }),
      // A failed write, or any store call failing or hanging once.
      fc.oneof(failNextStoreWrite, failNextStoreCall),
      // Shared-store runs only (their preconditions fail otherwise): the other process.
      otherProcessTakesLock,
      otherProcessReleases,
      otherProcessActs,
      otherProcessActs,
      otherProcessReplacesSession,
      loseLock,
    ],
    { maxCommands, size: 'max' },
  );
}

/**
 * The configuration of a run: the first token's lifetime, whether the store is shared with another
 * process, whether its writes are slow, and whether a foreign client around the adapter retries.
 */
export const modelRunConfig = fc.record({
  initialLifetimeMs: lifetimeMs,
  sharedStore: fc.boolean(),
  slowStore: fc.boolean(),
  foreignRetries: fc.boolean(),
});
