// Troupe's public API. Every export is listed by name.
export { defineActor, isActorDefinition, looksPastTense, ACTOR_DEFINITION } from './define.ts';
export type {
  ActorConfig, ActorDefinition, CommandContext, CommandSpec, Decide, EventContext, EventDraft, EventSpec, Evolve, JsonSchema,
} from './define.ts';
export {
  TroupeError, ValidationError, DomainRejection, DecideFailedError, ConcurrencyError, JournalUnavailableError, OverloadedError,
  NotFoundError, TimeoutError, InvalidOptionError, InvalidDefinitionError, StoppedError, WorkerLostError, reject, isTroupeError, toWire, fromWire,
} from './errors.ts';
export type { ErrorCode, ErrorData, WireError } from './errors.ts';
export { Troupe } from './node/system.ts';
export type { Command, NodeStats } from './node/system.ts';
export { TroupeClient } from './remote/client.ts';
export type { ClientOptions } from './remote/client.ts';
export {
  resolveOptions, DEFAULT_NATS_URL, DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX, DEFAULT_SHARDS, DEFAULT_WORKERS, DEFAULT_DATA_DIR, DEFAULT_MAX_BATCH_BYTES,
  DEFAULT_MAX_BATCH_COMMITS, DEFAULT_LINGER_MS, DEFAULT_MAX_COMMAND_BYTES, DEFAULT_ACK_TIMEOUT_MS, DEFAULT_MAX_QUEUED_COMMANDS,
  DEFAULT_MAX_RESIDENT_ACTORS, DEFAULT_IDLE_ACTOR_MS, DEFAULT_COMMAND_ID_TTL_MS, DEFAULT_DUPLICATE_WINDOW_MS, DEFAULT_LEASE_TTL_MS,
} from './options.ts';
export type { TroupeOptions, ResolvedOptions } from './options.ts';
// Operations: logs, traces, metrics, health (README, "Operations").
export { DEFAULT_LOG_LEVEL, DEFAULT_HTTP_HOST, DEFAULT_MAX_DLQ_DEPTH, DEFAULT_MAX_CONSUMER_LAG } from './options.ts';
export { withConsumerSpan, startTracingSdk, shutdownTracingSdk, tracingConfigured, refreshTracing, TRACE_HEADER } from './ops/tracing.ts';
export { registerConsumerProbe, registerHealthCheck, recordDeadLettered } from './ops/metrics.ts';
export type { ConsumerProbe, HealthCheck, HealthCheckResult } from './ops/metrics.ts';
export type { HealthReport } from './ops/http.ts';
export type { LogLevel } from './ops/log.ts';
export type { CommandEnvelope, CommandMetadata, CommandResult } from './envelope.ts';
export { shardOf } from './envelope.ts';
export { decodeCommitBatch, decodeCommits, FORMAT as COMMIT_BATCH_FORMAT } from './journal/codec.ts';
export type { EventEnvelope, WireCommit, WireEvent } from './journal/codec.ts';
export { given, testActor, Given, Scenario, TestActor, msgpackrTestCodec, DEFAULT_TEST_NOW } from './testing/testkit.ts';
export type { TestKitOptions, TestCodec, RecordedEvent, RejectionMatcher, RestartOptions, GivenEvent } from './testing/testkit.ts';
// Event contracts and evolution: schemas, versions, upcasters, sensitive data (README, "Event contracts").
export { definedActors, REDACTED } from './define.ts';
export type { SensitiveSpec, SubjectContext, NormalizedSensitive, NormalizedGuard } from './define.ts';
export { UpcastError, KeysUnavailableError } from './errors.ts';
export { upcast, addField, renameField, removeField, compose } from './upcast.ts';
export type { Upcaster, UpcastFn, UpcastContext } from './upcast.ts';
export { validateEventSchema, validateCommandSchema, upcastEvent, upcastState } from './contracts/contract.ts';
export type { SchemaCheck, SchemaProblem } from './contracts/contract.ts';
export { eventReader, readLogMessage } from './consumers/reader.ts';
export type { EventReaderOptions, EventTransform } from './consumers/reader.ts';
export { KeyRing, MasterKey, MemoryKeyBackend, parseMasterKey, resolveMasterKey, MASTER_KEY_ENV, MASTER_KEY_FILE_ENV } from './contracts/crypto.ts';
export type { KeyBackend, KeyRingOptions, MasterKeySource, StoredKey, KeyLookup } from './contracts/crypto.ts';
export { openKeyRing, keyBucketName, NatsKeyBackend } from './contracts/keystore.ts';
export type { OpenKeyRingOptions } from './contracts/keystore.ts';
export { isEncrypted, isSealed } from './contracts/sensitive.ts';
export type { EncryptedValue } from './contracts/sensitive.ts';
export { DEFAULT_GUARD_PATTERNS, GUARD_PATTERNS } from './guard.ts';
export type { GuardConfig, GuardPattern } from './guard.ts';
export { Registry, loadRegistry } from './contracts/registry.ts';
// Consumers, dead letters, projections, queries, workflows and sagas (README, "Consumers").
export { consume, Consumer, DEFAULT_MAX_ACK_PENDING, DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_ACK_WAIT_MS, DEFAULT_BATCH_SIZE } from './consumers/consume.ts';
export type { ConsumeOptions, SingleConsumeOptions, BatchConsumeOptions, ConsumerInfo, ConsumerStats } from './consumers/consume.ts';
export { checkVersion, defaultIsRetryable } from './consumers/pipeline.ts';
export type { HandlerContext, EventHandler, BatchHandler, PipelineStats } from './consumers/pipeline.ts';
export { ConsumerStore, ConsumerState, WriteSet, DEFAULT_DEDUP_TTL_MS } from './consumers/consumer-store.ts';
export type { FailureRecord, Key } from './consumers/consumer-store.ts';
export { circuitBreaker, isCircuitOpen, backoffDelay, resolveRetry, TokenBucket, CircuitState, DEFAULT_RETRY } from './consumers/flow.ts';
export type { RetryOptions, RateLimit, BreakerOptions, CircuitBreakerPolicy } from './consumers/flow.ts';
export { DeadLetterQueue, ThresholdAlarm, reasonOf } from './consumers/dlq.ts';
export type { DeadLetter, DeadLetterRecord, DeadLetterStats, DeadLetterQueueOptions, AlertOptions } from './consumers/dlq.ts';
export { project, Projection, ReadModel } from './consumers/projection.ts';
export type { ProjectionOptions, View } from './consumers/projection.ts';
export { QueryBus, stableKey } from './consumers/query.ts';
export type { QueryDefinition, QueryOptions, QueryStats, AggregateRef, PositionSource, EventSource } from './consumers/query.ts';
export { workflow, saga, Saga, CausedCommands, commandIdFor } from './consumers/saga.ts';
export type { CommandSender, WorkflowOptions, SagaDefinition, SagaStep, SagaContext, SagaState, SagaStatus, SagaOptions } from './consumers/saga.ts';
