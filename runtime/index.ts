// `troupe`: what a user writes against. Every export is named; one way to create each object.
// The test kit is `troupe/testing`, the operator's pieces are `troupe/ops`; engine parts are not
// public (`troupe/internal` serves Troupe's own tests and benchmarks, with no promise of stability).

// Actors: definition, rejection, event evolution, the sensitive-data guard.
export { defineActor, REDACTED } from './define.ts';
export type {
  ActorConfig, ActorDefinition, CommandContext, CommandSpec, Decide, EventContext, EventDraft, EventSpec, Evolve, JsonSchema, SensitiveSpec,
  SubjectContext, TimerSpec, TimerFiring,
} from './define.ts';
export { upcast, addField, renameField, removeField, compose } from './upcast.ts';
export type { Upcaster, UpcastFn, UpcastContext } from './upcast.ts';
export { GUARD_PATTERNS, DEFAULT_GUARD_PATTERNS } from './guard.ts';
export type { GuardConfig, GuardPattern } from './guard.ts';

// A node and a client: Troupe.start(options), TroupeClient.connect(options).
export { Troupe } from './node/system.ts';
export type { Command, NodeStats, ReadOptions } from './node/system.ts';
export { TroupeClient } from './remote/client.ts';
export type { ClientOptions, ReadRequestOptions } from './remote/client.ts';

// Who may do what: verified principals (signed tokens at the door) and authorize rules.
export type { Principal, AuthorizeRule, AuthorizeFn, AuthorizeRequest, AuthorizeContext, NodeAuthorize, RequestKind } from './principal.ts';
export type { AuthOptions } from './token.ts';
export type { RateLimits, CommandRateLimit } from './rate-limit.ts';
export type { TroupeOptions } from './options.ts';
export type { CommandMetadata, CommandResult } from './envelope.ts';
export type { EventEnvelope } from './journal/codec.ts';

// Errors: one class per code; branch with isTroupeError(e, code).
export {
  TroupeError, ValidationError, DomainRejection, DecideFailedError, ConcurrencyError, JournalUnavailableError, OverloadedError, NotFoundError,
  TimeoutError, InvalidOptionError, InvalidDefinitionError, UpcastError, KeysUnavailableError, StoppedError, WorkerLostError,
  NatsServerUnsupportedError, UnauthenticatedError, ForbiddenError, RateLimitedError, NatsAuthError, InternalError, reject, isTroupeError,
} from './errors.ts';
export type { ErrorCode, ErrorData, ValidationCode, ConcurrencyCode } from './errors.ts';

// Reading events: upcast and decrypt (a consumer's `transform`); encryption keys.
export { eventReader } from './consumers/reader.ts';
export type { EventReaderOptions, EventTransform } from './consumers/reader.ts';
export { openKeyRing } from './contracts/keystore.ts';
export type { OpenKeyRingOptions } from './contracts/keystore.ts';
export type { KeyRing } from './contracts/crypto.ts';
export type { EncryptedValue } from './contracts/sensitive.ts';

// Consumers, dead letters, projections, queries, workflows, sagas and process managers.
export { consume } from './consumers/consume.ts';
export type {
  Consumer, ConsumeOptions, SingleConsumeOptions, BatchConsumeOptions, ConsumerInfo, ConsumerStats, ScaleOutOptions, ScaledConsumer,
} from './consumers/consume.ts';
export { checkVersion } from './consumers/pipeline.ts';
export type { HandlerContext, EventHandler, BatchHandler, PipelineStats } from './consumers/pipeline.ts';
export type { ConsumerStore } from './consumers/consumer-store.ts';
export { circuitBreaker } from './consumers/flow.ts';
export type { RetryOptions, RateLimit, BreakerOptions, CircuitBreakerPolicy } from './consumers/flow.ts';
export { DeadLetterQueue } from './consumers/dlq.ts';
export type { DeadLetter, DeadLetterRecord, DeadLetterStats, DeadLetterQueueOptions, AlertOptions } from './consumers/dlq.ts';
export { project } from './consumers/projection.ts';
export type { Projection, ProjectionOptions, View } from './consumers/projection.ts';
export type { ScaledProjection, ScaledProjectionStats, PartitionStats } from './consumers/partitions.ts';
export { projectionReader } from './consumers/view-reader.ts';
export type { ProjectionReader, ProjectionReaderOptions, ViewReadOptions, ViewRow } from './consumers/view-reader.ts';
export { QueryBus } from './consumers/query.ts';
export type { QueryDefinition, QueryOptions, QueryStats, AggregateRef, PositionSource, EventSource } from './consumers/query.ts';
export { workflow, saga, commandIdFor } from './consumers/saga.ts';
export { defineProcess } from './process.ts';
export type {
  ProcessConfig, ProcessDefinition, ProcessContext, ProcessInput, ProcessState, Reaction, DeadlineReaction, DeadlineWhen, IssuedCommand, CommandsIssued,
} from './process.ts';
export { processManager } from './consumers/process-manager.ts';
export type { ProcessManager, ProcessManagerOptions } from './consumers/process-manager.ts';
export type {
  Saga, CommandSender, WorkflowOptions, SagaDefinition, SagaStep, SagaContext, SagaState, SagaStatus, SagaOptions,
} from './consumers/saga.ts';
