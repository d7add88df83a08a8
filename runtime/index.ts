// Troupe's public API. Every export is listed by name.
export { defineActor, isActorDefinition, looksPastTense, ACTOR_DEFINITION } from './define.ts';
export type {
  ActorConfig, ActorDefinition, CommandContext, CommandSpec, Decide, EventContext, EventDraft, EventSpec, Evolve, JsonSchema,
} from './define.ts';
export {
  TroupeError, ValidationError, DomainRejection, DecideFailedError, ConcurrencyError, JournalUnavailableError, OverloadedError,
  NotFoundError, TimeoutError, InvalidOptionError, InvalidDefinitionError, StoppedError, reject, isTroupeError, toWire, fromWire,
} from './errors.ts';
export type { ErrorCode, ErrorData, WireError } from './errors.ts';
export { given, testActor, Given, Scenario, TestActor, msgpackrTestCodec, DEFAULT_TEST_NOW } from './testkit.ts';
export type { TestKitOptions, TestCodec, RecordedEvent, RejectionMatcher, RestartOptions } from './testkit.ts';
