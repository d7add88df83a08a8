/**
 * The facade of a Troupe node: start, send, query, history, stop.
 *
 * start: load actor modules → connect NATS (2.10+, JetStream on) → ensure the stream → check
 * the LMDB cache describes this stream → take shard leases → start the worker pool → open the
 * owned shards (catch-up from checkpoint) → serve commands over NATS.
 */
import { estimateSize, type EventEnvelope } from '../journal/codec.ts';
import type { Command, CommandEnvelope, CommandMetadata, CommandResult, OutcomeSink } from '../envelope.ts';
import { IdGenerator, IdUse, isPlainPayload, payloadRefusal, shardOf } from '../envelope.ts';
import { ConcurrencyError, StoppedError, ValidationError, fromWire, type WireError } from '../errors.ts';
import { assertServerVersion, connectNats, ensureStream, openJournal, type Journal, type NatsConnection } from '../journal/journal.ts';
import { resolveOptions, type ResolvedOptions, type TroupeOptions } from '../options.ts';
import { Ownership } from './ownership.ts';
import { WorkerPool } from './pool.ts';
import { resolveMasterKeys } from '../contracts/crypto.ts';
import { loadRegistry, type Registry } from '../contracts/registry.ts';
import { CommandService, type ServedNode } from '../remote/service.ts';
import { Store, STORE_LAYOUT } from '../journal/store.ts';
import type { WorkerStats } from './worker.ts';
import type { HealthReport } from '../ops/http.ts';
import { createLog, errorFields, type Log } from '../ops/log.ts';
import { NodeOps } from './health.ts';
import { refreshTracing, startCommandTrace, tracing } from '../ops/tracing.ts';

export type { Command };

export interface NodeStats {
  nodeName: string;
  ownedShards: number;
  queuedCommands: number;
  workers: WorkerStats[];
}

const ID = /^[\x21-\x7e]{1,256}$/;

export class Troupe implements ServedNode {
  private stopping: Promise<void> | null = null;
  private readonly ids = new IdGenerator();
  private readonly expiry: NodeJS.Timeout;
  private phase: 'starting' | 'running' | 'stopping' | 'stopped' = 'starting';
  /** The node's logger (pino; options.logLevel). */
  readonly log: Log;
  private readonly ops: NodeOps;

  private constructor(
    readonly options: ResolvedOptions,
    private readonly registry: Registry,
    private readonly nc: NatsConnection,
    readonly journal: Journal,
    private readonly store: Store,
    private readonly pool: WorkerPool,
    private readonly ownership: Ownership | null,
    private service: CommandService | null,
  ) {
    this.expiry = setInterval(() => void this.store.expireCommands().catch(() => {}), Math.min(options.commandIdTtlMs, 3_600_000));
    this.expiry.unref();
    this.log = createLog(options.logLevel, { node: options.nodeName });
    this.ops = new NodeOps({
      options, nc, journal, store, pool, log: this.log, ownedShards: () => this.ownedShards.length, phase: () => this.phase,
    });
    pool.onWorkerLost = (threadId) => this.workerLost(threadId);
  }

  static async start(input: TroupeOptions): Promise<Troupe> {
    const options = resolveOptions(input);
    const registry = await loadRegistry(options.actors);
    if (registry.needsKeys) resolveMasterKeys(); // refuse a missing or exposed master key here, before any worker starts
    const nc = await connectNats(options.servers, `troupe-${options.nodeName}`, options.nats);
    const cleanup: (() => Promise<unknown>)[] = [() => nc.close()];
    try {
      assertServerVersion(nc);
      const journal = await openJournal(nc, {
        servers: options.servers, stream: options.stream, subjectPrefix: options.subjectPrefix, replicas: options.replicas,
        maxMessageBytes: Math.max(options.maxBatchBytes + 1024, 1024 * 1024), duplicateWindowMs: options.duplicateWindowMs, shards: options.shards,
      });
      const info = await ensureStream(journal);
      const store = new Store(options.dataDir, options.stream, options.commandIdTtlMs);
      cleanup.unshift(() => store.close());
      const identity = `${info.created} layout ${STORE_LAYOUT}`;
      if (store.getStreamIdentity() !== identity) await store.resetFor(identity);

      let ownership: Ownership | null = null;
      if (options.ownership === 'lease') {
        ownership = await Ownership.open(nc, options.stream, options.nodeName, options.shards, options.leaseTtlMs, options.replicas);
        await ownership.start();
        const o = ownership;
        cleanup.unshift(() => o.release());
      }
      const pool = new WorkerPool(options);
      cleanup.unshift(() => pool.destroy());
      await pool.ready();
      const node = new Troupe(options, registry, nc, journal, store, pool, ownership, null);
      if (ownership !== null) {
        ownership.onLost = (shard) => void node.releaseShards([shard]);
        ownership.onGained = (shards) => void node.openShards(shards).catch(() => {});
      }
      await node.openShards(ownership?.owned ?? Array.from({ length: options.shards }, (_, i) => i));
      if (options.serve) node.service = await CommandService.start(nc, options, node);
      cleanup.unshift(() => node.ops.close());
      await node.ops.startHttp();
      refreshTracing();
      node.phase = 'running';
      if (node.log.info) {
        node.log.logger.info({ workers: options.workers, shards: node.ownedShards.length, stream: options.stream, actors: registry.names(), tracing: tracing.on, http: node.ops.url },
          'node started');
      }
      return node;
    } catch (e) {
      for (const c of cleanup) await c().catch(() => {});
      throw e;
    }
  }

  get nodeName(): string {
    return this.options.nodeName;
  }

  /** The URL of the node's HTTP server (/health, /ready, /metrics), or null when it serves none. */
  get httpUrl(): string | null {
    return this.ops.url;
  }

  /** Every health check with its detail; `status` is 'ok' only when all pass (GET /health). */
  health(): Promise<HealthReport> {
    return this.ops.health();
  }

  /** Whether the node takes commands (GET /ready). */
  ready(): { ready: boolean; phase: string; reason?: string } {
    return this.ops.ready();
  }

  /** The node's metrics in the Prometheus text format (GET /metrics). */
  metrics(): Promise<string> {
    return this.ops.metrics();
  }

  /** A worker thread died: Piscina starts another; re-open its shards now, from snapshot and log. */
  private workerLost(threadId: number): void {
    if (this.phase !== 'running') return;
    const slots = new Set(this.pool.threadIds.flatMap((id, slot) => (id === 0 ? [slot] : [])));
    const shards = this.ownedShards.filter((s) => slots.has(this.pool.slotOf(s)));
    this.log.logger.error({ threadId, slots: [...slots], shards: shards.length },
      'a worker thread died: its in-flight commands failed with WORKER_LOST (retryable); a new worker re-opens its shards from snapshot and log');
    const started = Date.now();
    this.openShards(shards).then(
      () => { if (this.log.info) this.log.logger.info({ shards: shards.length, ms: Date.now() - started }, 'replacement worker serves the lost shards'); },
      (e: unknown) => { if (this.phase === 'running') this.log.logger.warn(errorFields(e), 're-opening the lost shards failed; they re-open on their next command'); },
    );
  }

  /** Shards this node writes. */
  get ownedShards(): number[] {
    return this.ownership?.owned ?? Array.from({ length: this.options.shards }, (_, i) => i);
  }

  private async openShards(shards: number[]): Promise<void> {
    const bySlot = new Map<number, number[]>();
    for (const s of shards) {
      const slot = this.pool.slotOf(s);
      bySlot.set(slot, [...(bySlot.get(slot) ?? []), s]);
    }
    await Promise.all([...bySlot].map(([slot, list]) => this.pool.runOn(slot, { kind: 'open', shards: list })));
  }

  private async releaseShards(shards: number[]): Promise<void> {
    await Promise.all(shards.map((s) => this.pool.runOn(this.pool.slotOf(s), { kind: 'release', shards: [s] }).catch(() => {})));
  }

  /**
   * Send a command to an actor. Resolves once JetStream has stored the events it decided,
   * with their sequence numbers and the actor's new version. Rejects with a typed error.
   */
  send(aggregateType: string, aggregateId: string, command: Command): Promise<CommandResult>;
  send(aggregateType: string, aggregateId: string, commandType: string, payload?: unknown, metadata?: CommandMetadata): Promise<CommandResult>;
  send(aggregateType: string, aggregateId: string, command: string | Command, payload?: unknown, metadata?: CommandMetadata): Promise<CommandResult> {
    let envelope: CommandEnvelope;
    try {
      envelope = this.envelope(aggregateType, aggregateId, command, payload, metadata);
    } catch (e) {
      this.pool.metrics.failed((e as { code?: string }).code ?? 'INTERNAL');
      return Promise.reject(e);
    }
    if (tracing.on) return this.submitTraced(envelope, null, false);
    return this.pool.submit(envelope);
  }

  /**
   * Submit with the command's spans (ops/tracing.ts), as a child of `parent` (a traceparent, or
   * the active context when null). The spans end when the command is answered.
   */
  submitTraced(envelope: CommandEnvelope, parent: string | null, remote: boolean): Promise<CommandResult> {
    const t = envelope.trace = startCommandTrace(envelope, parent, remote);
    return this.pool.submit(envelope).then((r) => { t.end(null, r); return r; }, (e: unknown) => { t.end(e, null); throw e; });
  }

  /** Count a command refused at the door (metrics: troupe_command_failures_total). */
  refused(e: unknown): void {
    this.pool.metrics.failed((e as { code?: string }).code ?? 'INTERNAL');
  }

  /** Validate at the door and build the envelope; throws typed errors. */
  envelope(aggregateType: string, aggregateId: string, command: string | Command, payload?: unknown, metadata?: CommandMetadata): CommandEnvelope {
    if (this.stopping !== null) throw new StoppedError();
    let type: unknown = command;
    let meta: CommandMetadata | undefined = metadata;
    if (typeof command === 'object' && command !== null) {
      type = command.type;
      payload = command.payload;
      meta = command;
    }
    if (typeof aggregateType !== 'string' || aggregateType.length === 0) throw new ValidationError('MALFORMED_COMMAND', 'the actor type is missing: send(type, id, command)', {});
    if (typeof aggregateId !== 'string' || !ID.test(aggregateId)) {
      throw new ValidationError('MALFORMED_COMMAND', `the actor id must be 1-256 printable characters without spaces, got ${JSON.stringify(aggregateId)}`, { aggregateType });
    }
    if (typeof type !== 'string' || type.length === 0) throw new ValidationError('MALFORMED_COMMAND', 'the command type is missing', { aggregateType, aggregateId });
    const commandId = meta?.commandId ?? this.ids.next();
    if (meta?.commandId !== undefined && (typeof commandId !== 'string' || !ID.test(commandId))) throw new ValidationError('MALFORMED_COMMAND', `commandId must be 1-256 printable characters, got ${JSON.stringify(commandId)}`, { aggregateType, aggregateId });
    if (payload === undefined) payload = {};
    if (!isPlainPayload(payload)) {
      throw new ValidationError('MALFORMED_COMMAND', payloadRefusal(aggregateType, type, payload), { aggregateType, aggregateId, commandId, commandType: type });
    }
    const size = estimateSize(payload, this.options.maxCommandBytes);
    if (size > this.options.maxCommandBytes) {
      throw new ValidationError('COMMAND_TOO_LARGE', `the payload of ${aggregateType}.${type} is over options.maxCommandBytes (${this.options.maxCommandBytes} bytes)`, { aggregateType, aggregateId, commandId, commandType: type });
    }
    this.registry.check(aggregateType, type, payload, { aggregateId, commandId });
    const shard = shardOf(aggregateType, aggregateId, this.options.shards);
    if (this.ownership !== null && !this.ownership.owns(shard)) {
      throw new ConcurrencyError('SHARD_NOT_OWNED', `shard ${shard} of ${aggregateType} ${aggregateId} is owned by node ${this.ownership.holderOf(shard) ?? 'unknown'}, not ${this.options.nodeName}; send it there`, { aggregateType, aggregateId, commandId, shard, owner: this.ownership.holderOf(shard) });
    }
    return {
      commandId, type, aggregateType, aggregateId, payload,
      userId: meta?.userId ?? null,
      correlationId: meta?.correlationId ?? commandId,
      causationId: meta?.causationId ?? null,
      shard,
      idUse: meta?.commandId === undefined ? IdUse.GENERATED : IdUse.GIVEN,
    };
  }

  /** Submit an already-validated envelope (the NATS service uses this). */
  submit(envelope: CommandEnvelope): Promise<CommandResult> {
    return this.pool.submit(envelope);
  }

  /** The same, answered through a sink that takes the worker's outcome as it is (pool.ts). */
  submitTo(envelope: CommandEnvelope, sink: OutcomeSink): void {
    this.pool.submitTo(envelope, sink, sink);
  }

  /** An actor's committed state and version. A never-used actor has its initial state and version 0. */
  async query<S = unknown>(aggregateType: string, aggregateId: string): Promise<{ state: S; version: number }> {
    this.checkRead(aggregateType, aggregateId);
    const shard = shardOf(aggregateType, aggregateId, this.options.shards);
    return unwrap(await this.pool.runOn(this.pool.slotOf(shard), { kind: 'query', shard, aggregateType, aggregateId })) as { state: S; version: number };
  }

  /** Every committed event of an actor, in order, with the full envelope. */
  async history(aggregateType: string, aggregateId: string): Promise<EventEnvelope[]> {
    this.checkRead(aggregateType, aggregateId);
    const shard = shardOf(aggregateType, aggregateId, this.options.shards);
    return unwrap(await this.pool.runOn(this.pool.slotOf(shard), { kind: 'history', shard, aggregateType, aggregateId })) as EventEnvelope[];
  }

  private checkRead(aggregateType: string, aggregateId: string): void {
    if (this.stopping !== null) throw new StoppedError();
    if (this.registry.get(aggregateType) === undefined) {
      throw new ValidationError('UNKNOWN_ACTOR_TYPE', `unknown actor type ${JSON.stringify(aggregateType)}; this node hosts ${this.registry.names().join(', ')}`, { aggregateType, aggregateId });
    }
    if (typeof aggregateId !== 'string' || !ID.test(aggregateId)) throw new ValidationError('MALFORMED_COMMAND', `the actor id must be 1-256 printable characters, got ${JSON.stringify(aggregateId)}`, { aggregateType });
  }

  /** Actor types this node hosts. */
  actorTypes(): string[] {
    return this.registry.names();
  }

  async stats(): Promise<NodeStats> {
    const workers = await this.pool.runOnAll({ kind: 'stats' }) as WorkerStats[];
    return { nodeName: this.options.nodeName, ownedShards: this.ownedShards.length, queuedCommands: this.pool.queuedCommands, workers };
  }

  /** For tests of worker replacement: crash the worker that hosts `shard`. */
  async crashWorkerOf(shard: number): Promise<void> {
    await this.pool.runOn(this.pool.slotOf(shard), { kind: 'crash' });
  }

  /**
   * Graceful stop, in this order:
   *   1. stop taking commands (new ones fail with a retryable STOPPED; /ready turns 503);
   *   2. finish in-flight commits (up to `timeoutMs`; what is still unanswered then fails
   *      with a retryable STOPPED, and a retry with the same commandId is answered once);
   *   3. flush snapshots (LMDB) and telemetry (each worker's span exporter);
   *   4. drain NATS (workers', leases, then the main connection);
   *   5. close LMDB.
   * `troupe start` then exits 0.
   */
  stop(timeoutMs = 10_000): Promise<void> {
    this.stopping ??= (async () => {
      const log = this.log;
      const step = (n: number, what: string, fields: Record<string, unknown> = {}) => {
        if (log.info) log.logger.info({ step: n, ...fields }, what);
      };
      this.phase = 'stopping';
      clearInterval(this.expiry);
      step(1, 'stopping: no new commands', { inProgress: this.pool.queuedCommands });
      await this.service?.stop().catch(() => {});
      await this.pool.idle(timeoutMs);
      const unfinished = this.pool.queuedCommands;
      if (unfinished > 0 && log.warn) log.logger.warn({ unfinished, timeoutMs }, 'stopping: commands not finished in time fail with STOPPED (retryable)');
      this.pool.close();
      step(2, 'stopping: in-flight commits finished', { unfinished });
      // Each worker: drain its shards, write snapshots, flush LMDB and its spans, drain its NATS connection, close LMDB.
      await this.pool.runOnAll({ kind: 'stop' }).catch((e: unknown) => { if (log.warn) log.logger.warn(errorFields(e), 'stopping: a worker did not stop cleanly'); });
      await this.pool.destroy().catch(() => {});
      step(3, 'stopping: snapshots and telemetry flushed');
      await this.ownership?.release().catch(() => {});
      await this.nc.drain().catch(() => {});
      step(4, 'stopping: NATS drained');
      await this.store.close().catch(() => {});
      step(5, 'stopping: LMDB closed');
      await this.ops.close().catch(() => {});
      this.phase = 'stopped';
      if (log.info) log.logger.info('node stopped');
    })();
    return this.stopping;
  }
}

/** A worker read answers `{ value }` or `{ error }` (errors cross threads as data). */
function unwrap(answer: unknown): unknown {
  const a = answer as { value?: unknown; error?: WireError };
  if (a.error !== undefined) throw fromWire(a.error);
  return a.value;
}
