/**
 * The options of `consume()`: types, named defaults, and the check that resolves them.
 */
import type { NatsAuthOptions } from '../connection.ts';
import type { NatsConnection } from '../journal/journal.ts';
import type { ConsumerStore } from './consumer-store.ts';
import type { DeadLetterRecord, DeadLetterStats } from './dlq.ts';
import { InvalidOptionError } from '../errors.ts';
import { resolveRetry, TokenBucket, type CircuitBreakerPolicy, type RateLimit, type ResolvedRetry, type RetryOptions } from './flow.ts';
import type { BatchHandler, EventHandler, EventTransform } from './handler.ts';
import { DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX } from '../options.ts';

export const DEFAULT_MAX_ACK_PENDING = 1000;
export const DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024;
export const DEFAULT_ACK_WAIT_MS = 30_000;
export const DEFAULT_BATCH_SIZE = 100;
const NAME = /^[A-Za-z0-9_-]{1,128}$/;

export interface CommonOptions {
  /** The durable consumer's name (letters, digits, `_`, `-`). Also names its DLQ subject and LMDB records. */
  name: string;
  /** Only these event types reach the handler. Default: all. */
  eventTypes?: readonly string[];
  /** Only events of these actor types reach the handler. Default: all. */
  aggregateTypes?: readonly string[];
  /** Lanes (aggregates) handled at the same time. Default 1. */
  concurrency?: number;
  /** Un-acked messages at most (JetStream `max_ack_pending`). Default 1000. */
  maxAckPending?: number;
  /** Bytes of messages held in memory, about: no fetch asks for more messages than the free bytes hold at the average size. Default 64 MiB. */
  maxBufferedBytes?: number;
  /** Time JetStream waits for an ack before redelivering; held messages are kept alive meanwhile. Default 30 s. */
  ackWaitMs?: number;
  rateLimit?: RateLimit;
  retry?: RetryOptions;
  /** Wrap every handler call in this cockatiel breaker; while it is open events are delayed, not failed. */
  breaker?: CircuitBreakerPolicy;
  /** Delay before an event put off by an open breaker is tried again. Default: retry.initialDelayMs. */
  breakerDelayMs?: number;
  /** Errors worth a retry. Default: all except Troupe errors marked not retryable (validation, rejections). */
  isRetryable?: (error: unknown) => boolean;
  /** Applied to every event before the handler (upcasting and decryption plug in here). */
  transform?: EventTransform;
  /** Where the consumer keeps its LMDB records (`<dataDir>/consumers`), or an open store. */
  dataDir?: string;
  store?: ConsumerStore;
  /** NATS servers to connect to, or an open connection (left open by stop()). */
  servers?: string;
  /** How to authenticate to NATS when `servers` is used (default: the NATS_* environment; see connection.ts). */
  nats?: NatsAuthOptions;
  nc?: NatsConnection;
  stream?: string;
  subjectPrefix?: string;
  /** Where a consumer that does not exist yet starts: the start of the log (default), new events only, or after a position. */
  from?: 'start' | 'new' | { after: number };
  /** How long handled eventIds are remembered. Default 7 days. */
  dedupTtlMs?: number;
  /**
   * How long after its failing event's retry time an aggregate's later events wait for that
   * event to be redelivered before going ahead without it. Default: retry.maxDelayMs + 2 × ackWaitMs.
   */
  orderTimeoutMs?: number;
  onError?: (error: unknown) => void;
  /** Called after an event was stored in the dead-letter queue. */
  onDeadLetter?: (record: DeadLetterRecord) => void;
  /** Call `onAlert` when this consumer's dead letters reach `threshold` (checked after each one). */
  deadLetterAlert?: { threshold: number; onAlert: (stats: DeadLetterStats) => void };
  /**
   * Report lag and DLQ depth to the node's /health and /metrics (metrics.ts consumer probes),
   * with these limits. Default: reported, with the node's default limits. `false`: not reported.
   */
  probe?: false | ProbeOptions;
  /**
   * Serve /health, /ready and /metrics for the consumers of this process on this port (0: any
   * free port), without a node: `serveConsumerOps()` of `troupe/ops`. Consumers given the same
   * port share one server. Beside a node, leave it out: the node's endpoints report them.
   */
  http?: { port: number; host?: string };
  /**
   * Run several instances of this consumer name (in as many processes) that share its work:
   * each instance reads a subset of the log's shards, placed by rendezvous hashing over the
   * live instances, with a lease per (name, shard) in NATS KV. An aggregate's events stay in
   * order and are handled by one instance at a time. Every instance of a name must set it.
   * `true` takes the defaults.
   */
  scaleOut?: true | ScaleOutOptions;
  /** @internal One shard of a scaled-out consumer: JetStream consumer `<name>_s<shard>` on `<prefix>.log.<shard>`. */
  shard?: number;
  /**
   * @internal Projections: the JetStream consumer belongs to this process's checkpoint; it is
   * re-created at every start to deliver from `startAfter + 1`, and deleted at stop.
   */
  startAfter?: number;
  /** @internal Projections: the name and version their metrics and probe are labelled with (the consumer's own name is internal). */
  metricsAs?: { name: string; version: number };
  /** @internal Called when the stream turned out to be a new incarnation and the consumer's records were cleared. */
  onStreamReset?: () => Promise<unknown>;
}

/** The thresholds of a consumer's /health checks (ops/consumer-ops.ts). */
export interface ProbeOptions {
  /** /health fails when more log messages than this are left to handle. Default: the node's `maxConsumerLag` (100,000). */
  maxLag?: number;
  /** /health fails when the oldest unhandled log message is older than this (ms). Default: not checked. */
  maxLagAgeMs?: number;
  /** /health fails when the dead-letter queue holds more of this consumer's events than this. Default: the node's `maxDlqDepth` (1,000). */
  maxDlqDepth?: number;
}

export const DEFAULT_LEASE_TTL_MS = 10_000;

export interface ScaleOutOptions {
  /**
   * This instance's name among the instances of the consumer (letters, digits, `_`, `-`).
   * An instance restarted with the same name takes its shards back at once. Default: host, pid and a random suffix.
   */
  instance?: string;
  /** How long the shards of an instance that died stay with it before the others take them. Default 10 s. */
  leaseTtlMs?: number;
  /**
   * The actor definitions this instance reads events with (those of its `transform`, e.g.
   * `eventReader({ actors })`). During a rolling upgrade, a shard whose log holds an event
   * version these definitions cannot read is not placed on this instance; it goes to one that
   * can, or waits. Default: none announced (the instance is taken to read everything).
   */
  actors?: readonly { readonly type: string; readonly events: ReadonlyMap<string, { readonly version: number }> }[];
}

export interface SingleConsumeOptions extends CommonOptions {
  batch?: false;
  handler: EventHandler;
  /** Events one lane task takes (handled one by one, committed together). Default 1. */
  batchSize?: number;
}

export interface BatchConsumeOptions extends CommonOptions {
  batch: true;
  handler: BatchHandler;
  /** Events per handler call at most. Default 100. */
  batchSize?: number;
}

export type ConsumeOptions = SingleConsumeOptions | BatchConsumeOptions;

export interface ResolvedConsumeOptions {
  stream: string;
  subjectPrefix: string;
  concurrency: number;
  batchSize: number;
  maxAckPending: number;
  maxBufferedBytes: number;
  ackWaitMs: number;
  retry: ResolvedRetry;
  rateLimit: TokenBucket | null;
}

/** Check `scaleOut` of a consumer or projection (`owner` names it in the message). */
export function validateScaleOut(owner: string, scaleOut: unknown): void {
  if (scaleOut === undefined || scaleOut === true) return;
  if (typeof scaleOut !== 'object' || scaleOut === null) throw new InvalidOptionError(`options.scaleOut of ${owner} must be true or an object, got ${JSON.stringify(scaleOut)}`, { field: 'scaleOut' });
  const { instance, leaseTtlMs } = scaleOut as ScaleOutOptions;
  if (instance !== undefined && (typeof instance !== 'string' || !NAME.test(instance))) {
    throw new InvalidOptionError(`options.scaleOut.instance must be 1-128 letters, digits, _ or -, got ${JSON.stringify(instance)}`, { field: 'scaleOut.instance' });
  }
  if (leaseTtlMs !== undefined && (typeof leaseTtlMs !== 'number' || !Number.isInteger(leaseTtlMs) || leaseTtlMs < 300)) {
    throw new InvalidOptionError(`options.scaleOut.leaseTtlMs must be an integer >= 300, got ${JSON.stringify(leaseTtlMs)}`, { field: 'scaleOut.leaseTtlMs' });
  }
}

export function validateConsumeOptions(options: ConsumeOptions): ResolvedConsumeOptions {
  if (typeof options !== 'object' || options === null) throw new InvalidOptionError('consume(options): options must be an object');
  if (typeof options.name !== 'string' || !NAME.test(options.name)) {
    throw new InvalidOptionError(`options.name must be 1-128 letters, digits, _ or -, got ${JSON.stringify(options.name)}`, { field: 'name' });
  }
  if (typeof options.handler !== 'function') throw new InvalidOptionError(`options.handler of consumer ${options.name} must be a function`, { field: 'handler' });
  if (options.store === undefined && (typeof options.dataDir !== 'string' || options.dataDir.length === 0)) {
    throw new InvalidOptionError(`consumer ${options.name} needs options.dataDir (a folder for its LMDB records) or options.store`, { field: 'dataDir' });
  }
  const int = (name: keyof ConsumeOptions, fallback: number, min: number): number => {
    const v = (options as unknown as Record<string, unknown>)[name] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new InvalidOptionError(`options.${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`, { field: name });
    return v;
  };
  for (const list of ['eventTypes', 'aggregateTypes'] as const) {
    const v = options[list];
    if (v !== undefined && (!Array.isArray(v) || v.length === 0 || v.some((x) => typeof x !== 'string'))) {
      throw new InvalidOptionError(`options.${list} must be a non-empty array of names, got ${JSON.stringify(v)}`, { field: list });
    }
  }
  validateScaleOut(`consumer ${options.name}`, options.scaleOut);
  if (options.http !== undefined) {
    const h = options.http as unknown;
    const port = (h as { port?: unknown } | null)?.port;
    if (typeof h !== 'object' || h === null || typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65_535) {
      throw new InvalidOptionError(`options.http of consumer ${options.name} must be { port } with a port number (0 for any free port), got ${JSON.stringify(h)}`, { field: 'http' });
    }
  }
  if (options.probe !== undefined && options.probe !== false) {
    for (const field of ['maxLag', 'maxLagAgeMs', 'maxDlqDepth'] as const) {
      const v = (options.probe as Record<string, unknown>)[field];
      if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < 0)) {
        throw new InvalidOptionError(`options.probe.${field} of consumer ${options.name} must be an integer >= 0, got ${JSON.stringify(v)}`, { field: `probe.${field}` });
      }
    }
  }
  if (options.scaleOut !== undefined && options.startAfter !== undefined) {
    throw new InvalidOptionError(`consumer ${options.name}: scaleOut and startAfter do not go together (a scaled-out projection is project({ scaleOut }))`, { field: 'scaleOut' });
  }
  return {
    stream: options.stream ?? DEFAULT_STREAM,
    subjectPrefix: options.subjectPrefix ?? DEFAULT_SUBJECT_PREFIX,
    concurrency: int('concurrency', 1, 1),
    batchSize: int('batchSize', options.batch === true ? DEFAULT_BATCH_SIZE : 1, 1),
    maxAckPending: int('maxAckPending', DEFAULT_MAX_ACK_PENDING, 1),
    maxBufferedBytes: int('maxBufferedBytes', DEFAULT_MAX_BUFFERED_BYTES, 1),
    ackWaitMs: int('ackWaitMs', DEFAULT_ACK_WAIT_MS, 1000),
    retry: resolveRetry(options.retry),
    rateLimit: options.rateLimit === undefined ? null : new TokenBucket(options.rateLimit.perSecond, options.rateLimit.burst),
  };
}

