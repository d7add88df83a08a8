// `troupe/internal`: engine parts that Troupe's own tests and benchmarks use. Not the public
// surface: no promise of stability, no documentation beyond the code. Users import `troupe`,
// `troupe/testing` and `troupe/ops`.

// Errors across threads and NATS; the code-to-class table.
export { toWire, fromWire, ERROR_CLASSES, errorClassOf } from './errors.ts';
export type { WireError, TroupeErrorClass } from './errors.ts';

// Definitions as the loader sees them.
export { ACTOR_DEFINITION, isActorDefinition, looksPastTense, definedActors } from './define.ts';
export type { NormalizedSensitive, NormalizedGuard } from './define.ts';
export { Registry, loadRegistry } from './contracts/registry.ts';

// Options, placement, commands as they travel.
export { resolveOptions } from './options.ts';
export type { ResolvedOptions } from './options.ts';
export { shardOf } from './envelope.ts';
export type { CommandEnvelope } from './envelope.ts';

// The log's encoding.
export { decodeCommitBatch, decodeCommits, FORMAT as COMMIT_BATCH_FORMAT } from './journal/codec.ts';
export type { WireCommit, WireEvent } from './journal/codec.ts';
export { readLogMessage } from './consumers/reader.ts';

// Keys and encrypted values.
export { KeyRing, MasterKey, MasterKeys, MemoryKeyBackend, parseMasterKey, parseMasterKeys, resolveMasterKey, resolveMasterKeys } from './contracts/crypto.ts';
export { masterKeyStatus } from './contracts/master-rotation.ts';
export type { KeyBackend, KeyRingOptions, MasterKeySource, StoredKey, KeyLookup } from './contracts/crypto.ts';
export { keyBucketName, NatsKeyBackend } from './contracts/keystore.ts';
export { isEncrypted, isSealed } from './contracts/sensitive.ts';

// Consumer storage: one LMDB store shared by consumers, projections read from another process.
export { ConsumerStore } from './consumers/consumer-store.ts';
export { ReadModel } from './consumers/projection.ts';
// A scaled-out projection's reader on its own connection (an instance gives one with `reader()`).

// Tracing switched on or off after start (tests).
export { refreshTracing } from './ops/tracing.ts';

// Where `troupe start` keeps data, and the `troupe init` scaffold (the package tests use them).
export { dataPaths, DATA_DIR_ENV, DEFAULT_DATA_ROOT } from './cli/paths.ts';
export type { DataPaths } from './cli/paths.ts';
export { scaffold } from './cli/init.ts';
export type { ScaffoldOptions } from './cli/init.ts';
