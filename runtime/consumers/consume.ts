/**
 * `consume()`: a durable JetStream pull consumer over Troupe's log that hands decoded events
 * to a handler, in per-aggregate order, effectively once.
 *
 *   JetStream ──fetch(room)──▶ decode (one message = many commits) ──▶ Pipeline (pipeline.ts)
 *       ▲                                                                  │
 *       └──────────── ack (all its events handled) / nak(delay) ◀─────────┘
 *
 * - The consumer filters `<prefix>.log.>`; a message carries many event types and
 *   aggregates, so eventTypes/aggregateTypes are applied after decoding.
 * - Backpressure: at most `maxAckPending` messages are un-acked (the server enforces it) and
 *   at most `maxBufferedBytes` are held here; the fetcher asks only for what fits, so a slow
 *   handler never grows memory without bound.
 * - A checkpoint is an ack after success: a restarted consumer resumes where it left off, and
 *   the events of a redelivered message that were handled before are skipped by eventId.
 * - Retries are delayed naks (back-off with jitter); after maxRetries an event goes to the
 *   dead-letter stream (dlq.ts) and the consumer moves on.
 *
 * One consumer name = one running instance, unless `scaleOut` is set: then the instances of a
 * name split the log's shards (scaled.ts), one JetStream consumer per shard, so each
 * aggregate's events stay in order on one instance at a time.
 *
 * This is one of the few files that import `@nats-io/*`.
 *
 * Why one file of ~600 lines: it has one job, the NATS side of a consumer (create or check the
 * durable consumer, its one-instance lease, recover, the fetch loop with its backpressure, acks and naks, dead letters
 * and replay, stop), and its methods share the fetch loop's state. What could stand alone
 * already does: options (consume-options.ts), the engine (pipeline.ts), the DLQ (dlq.ts), and
 * what operators read of it in JetStream: lag, durable names, the health probe (durables.ts).
 */
import { resolveNatsAuth } from '../connection.ts';
import type { MsgHdrs, NatsConnection } from '@nats-io/transport-node';
import {
  AckPolicy, DeliverPolicy, JetStreamApiError, jetstream, jetstreamManager,
  type ConsumerConfig, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg,
} from '@nats-io/jetstream';
import { decodeCommitBatch, type EventEnvelope } from '../journal/codec.ts';
import { DEFAULT_LEASE_TTL_MS, validateConsumeOptions, type ConsumeOptions, type ResolvedConsumeOptions, type ScaleOutOptions } from './consume-options.ts';
import { ConsumerStore, DEFAULT_DEDUP_TTL_MS, type ConsumerState } from './consumer-store.ts';
import { DeadLetterQueue, ThresholdAlarm, headersToRecord, serveReplays, type DeadLetterRecord } from './dlq.ts';
import { ConcurrencyError, NotFoundError, TimeoutError, ValidationError } from '../errors.ts';
import { ExclusiveLease } from '../journal/leases.ts';
import { serveConsumerStatus } from './overview.ts';
import { hostname } from 'node:os';
import { defaultIsRetryable, type DeliveryHandle } from './handler.ts';
import { assertServerVersion, connectNats, SHARDS_METADATA } from '../journal/journal.ts';
import { ScaledConsumer } from './scaled.ts';
import { consumerMetrics, type ConsumerGauges, type ConsumerMetrics, type HealthCheckResult } from '../ops/metrics.ts';
import { serveConsumerOps, type ConsumerOpsServer } from '../ops/consumer-ops.ts';
import { Pipeline, type PipelineStats } from './pipeline.ts';
import { breakerState, consumerLeaseBucket, oldestAfter, registerProbe, shardDurable, type ConsumerInfo, type ConsumerLag } from './durables.ts';

export { DEFAULT_MAX_ACK_PENDING, DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_ACK_WAIT_MS, DEFAULT_BATCH_SIZE } from './consume-options.ts';
export type { ConsumeOptions, SingleConsumeOptions, BatchConsumeOptions, ScaleOutOptions, ProbeOptions } from './consume-options.ts';
export { ScaledConsumer, consumerStatus } from './scaled.ts';
export type { ConsumerInfo, ConsumerLag } from './durables.ts';

const FETCH_EXPIRES_MS = 5_000;
const FETCH_BATCH = 256;
const MAX_RECOVERY_SCAN = 1_000_000;

export interface ConsumerStats extends PipelineStats {
  name: string;
}

/** How many shards route into the stream (its metadata, written by the first node). */
export async function streamShardCount(nc: NatsConnection, stream: string): Promise<number> {
  const jsm = await jetstreamManager(nc, { timeout: 10_000 });
  let info;
  try {
    info = await jsm.streams.info(stream);
  } catch (e) {
    if (e instanceof JetStreamApiError && e.code === 10059) {
      throw new NotFoundError(`stream ${stream} does not exist; start a Troupe node on it first (or set options.stream)`, { stream });
    }
    throw e;
  }
  const n = Number(info.config.metadata?.[SHARDS_METADATA]);
  if (!Number.isInteger(n) || n < 1) {
    throw new NotFoundError(`stream ${stream} does not record its shard count (metadata ${SHARDS_METADATA}); start a Troupe node on it once, then the scaled-out consumer`, { stream });
  }
  return n;
}

/**
 * The instance name of a consumer that is not scaled out: its host and data dir, so that the
 * same process restarted (after a crash, too) takes its lease back at once.
 */
function instanceOfStore(store: ConsumerStore): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < store.path.length; i++) h = Math.imul(h ^ store.path.charCodeAt(i), 0x01000193);
  return `${hostname()}-${(h >>> 0).toString(36)}`.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 128);
}

/**
 * Start a consumer; resolves once its JetStream consumer exists and fetching has begun. With
 * `scaleOut`, resolves once the instance joined its name's group (it may own no shard yet).
 */
export function consume(options: ConsumeOptions & { scaleOut: true | ScaleOutOptions }): Promise<ScaledConsumer>;
export function consume(options: ConsumeOptions): Promise<Consumer>;
export function consume(options: ConsumeOptions): Promise<Consumer | ScaledConsumer> {
  if (options.scaleOut !== undefined && options.shard === undefined) {
    validateConsumeOptions(options);
    return ScaledConsumer.start(options);
  }
  return consumeOne(options);
}

async function consumeOne(options: ConsumeOptions): Promise<Consumer> {
  const o = validateConsumeOptions(options);
  const cleanup: (() => Promise<unknown>)[] = [];
  try {
    let nc = options.nc;
    if (nc === undefined) {
      nc = await connectNats(options.servers ?? process.env.NATS_URL ?? 'nats://127.0.0.1:4222', `troupe-consumer-${options.name}`, resolveNatsAuth(options.nats));
      const own = nc;
      cleanup.push(() => own.drain());
    }
    assertServerVersion(nc);
    let store = options.store;
    if (store === undefined) {
      store = ConsumerStore.open(options.dataDir!);
      const own = store;
      cleanup.unshift(() => own.close());
    }
    const jsm = await jetstreamManager(nc, { timeout: 10_000 });
    const js = jetstream(nc, { timeout: 10_000 });
    let created: string;
    try {
      created = (await jsm.streams.info(o.stream)).created;
    } catch (e) {
      if (e instanceof JetStreamApiError && e.code === 10059) {
        throw new NotFoundError(`stream ${o.stream} does not exist; start a Troupe node on it first (or set options.stream)`, { stream: o.stream });
      }
      throw e;
    }
    let consumer: Consumer | null = null;
    if (options.shard === undefined && options.startAfter === undefined) {
      // One running instance per name: a second one fails here instead of splitting aggregates.
      const taken = await ExclusiveLease.take(nc, {
        bucket: consumerLeaseBucket(o.stream, options.name), group: options.name, member: instanceOfStore(store), ttlMs: DEFAULT_LEASE_TTL_MS,
        onLost: () => {
          consumer?.onError(new ConcurrencyError('CONCURRENCY', `consumer ${options.name} lost its lease to another instance; it stops`, { consumer: options.name }));
          void consumer?.stop(0);
        },
      });
      if (!(taken instanceof ExclusiveLease)) {
        throw new ConcurrencyError('CONCURRENCY',
          `consumer ${options.name} already runs as instance ${taken.heldBy}: a name runs once, unless every instance sets options.scaleOut to share the work. ` +
          `Stop the other instance, or wait for its lease to expire (${DEFAULT_LEASE_TTL_MS} ms after it died)`,
          { consumer: options.name, heldBy: taken.heldBy });
      }
      cleanup.unshift(() => taken.release());
    }
    const state = store.state(o.stream, options.name, options.dedupTtlMs ?? DEFAULT_DEDUP_TTL_MS);
    let startAfter = options.startAfter;
    const known = state.getMeta<string>('stream');
    if (known !== created) {
      // A new incarnation of the stream: sequences and eventIds of the old one mean nothing.
      await state.clear();
      await state.putMeta('stream', created);
      if (known !== undefined) await options.onStreamReset?.();
      if (startAfter !== undefined) startAfter = 0;
    }
    const dlq = await DeadLetterQueue.open({ nc, stream: o.stream, subjectPrefix: o.subjectPrefix });
    consumer = new Consumer(options, o, nc, jsm, js, store, state, dlq, cleanup, startAfter);
    await consumer.start();
    if (options.http !== undefined && options.shard === undefined) {
      const http = await serveConsumerOps(options.http).catch(async (e: unknown) => {
        await consumer!.stop(0);
        throw e;
      });
      consumer.served(http);
    }
    return consumer;
  } catch (e) {
    for (const c of cleanup) await c().catch(() => {});
    throw e;
  }
}

/** A JetStream delivery as the pipeline sees it. */
class JsDelivery implements DeliveryHandle {
  constructor(private readonly m: JsMsg) {}
  get seq(): number { return this.m.seq; }
  get subject(): string { return this.m.subject; }
  get deliveryCount(): number { return this.m.info.deliveryCount; }
  get rawHeaders(): MsgHdrs | undefined { return this.m.headers; }
  ack(): void { this.m.ack(); }
  nak(delayMs: number): void { this.m.nak(delayMs > 0 ? delayMs : undefined); }
  working(): void { this.m.working(); }
  headers(): Record<string, string[]> { return headersToRecord(this.m.headers); }
}

export class Consumer {
  readonly name: string;
  /** The JetStream consumer: the name, or `<name>_s<shard>` for one shard of a scaled-out consumer. */
  readonly durable: string;
  /** The log subjects this consumer reads: every shard, or one. */
  private readonly filter: string;
  private readonly pipeline: Pipeline;
  private stopped: Promise<void> | null = null;
  /** Set at once by stop(): a fetch that returns after it is stopped at once. */
  private stopping = false;
  private messages: ConsumerMessages | null = null;
  private wake: (() => void) | null = null;
  private readonly timers: NodeJS.Timeout[] = [];
  private loopDone: Promise<void> = Promise.resolve();
  private unprobe: (() => void) | null = null;
  private unserveReplays: (() => void) | null = null;
  private unserveStatus: (() => void) | null = null;
  private averageBytes = 4096;
  private readonly alarm: ThresholdAlarm | null;
  private readonly metrics: ConsumerMetrics;
  private http: ConsumerOpsServer | null = null;
  /** @internal */
  readonly onError: (e: unknown) => void;

  /** @internal use consume() */
  constructor(
    private readonly options: ConsumeOptions,
    private readonly o: ResolvedConsumeOptions,
    readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly js: JetStreamClient,
    readonly store: ConsumerStore,
    readonly state: ConsumerState,
    /** The dead-letter queue this consumer writes to: stats, list, discard. */
    readonly deadLetters: DeadLetterQueue,
    private readonly cleanup: (() => Promise<unknown>)[],
    private readonly startAfter: number | undefined,
  ) {
    this.name = options.name;
    this.durable = options.shard === undefined ? options.name : shardDurable(options.name, options.shard);
    this.filter = options.shard === undefined ? `${o.subjectPrefix}.log.>` : `${o.subjectPrefix}.log.${options.shard}`;
    this.onError = options.onError ?? ((e) => process.emitWarning(`troupe consumer ${options.name}: ${(e as Error)?.message ?? String(e)}`));
    this.alarm = options.deadLetterAlert === undefined ? null : new ThresholdAlarm({ ...options.deadLetterAlert, consumer: options.name });
    const retry = o.retry;
    this.metrics = consumerMetrics(options.metricsAs?.name ?? options.name, options.metricsAs?.version);
    this.pipeline = new Pipeline({
      name: options.name,
      handler: options.handler,
      batch: options.batch === true,
      batchSize: o.batchSize,
      concurrency: o.concurrency,
      eventTypes: options.eventTypes === undefined ? null : new Set(options.eventTypes),
      aggregateTypes: options.aggregateTypes === undefined ? null : new Set(options.aggregateTypes),
      retry,
      transform: options.transform ?? null,
      rateLimit: o.rateLimit,
      breaker: options.breaker ?? null,
      breakerDelayMs: options.breakerDelayMs ?? Math.max(100, retry.initialDelayMs),
      isRetryable: options.isRetryable ?? defaultIsRetryable,
      orderTimeoutMs: options.orderTimeoutMs ?? retry.maxDelayMs + 2 * o.ackWaitMs,
      deadLetter: (r) => this.deadLetter(r),
      onError: this.onError,
      metrics: this.metrics,
    }, state, startAfter ?? 0);
    this.pipeline.onRoom = () => {
      const w = this.wake;
      this.wake = null;
      w?.();
    };
  }

  private get config(): Partial<ConsumerConfig> {
    return {
      durable_name: this.durable,
      ack_policy: AckPolicy.Explicit,
      filter_subject: this.filter,
      ack_wait: this.o.ackWaitMs * 1_000_000,
      max_deliver: -1,
      max_ack_pending: this.o.maxAckPending,
    };
  }

  /** Create (or update) the JetStream consumer. */
  private async ensureConsumer(): Promise<void> {
    const { jsm, o } = this;
    if (this.startAfter !== undefined) {
      await jsm.consumers.delete(o.stream, this.durable).catch(() => false);
      await jsm.consumers.add(o.stream, {
        ...this.config, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: this.pipeline.position + 1,
        inactive_threshold: Math.max(5 * 60_000, 4 * o.ackWaitMs) * 1_000_000,
      });
      return;
    }
    let exists = true;
    try {
      const info = await jsm.consumers.info(o.stream, this.durable);
      if (info.config.ack_wait !== this.config.ack_wait || info.config.max_ack_pending !== o.maxAckPending || info.config.filter_subject !== this.config.filter_subject) {
        await jsm.consumers.update(o.stream, this.durable, { ack_wait: this.config.ack_wait, max_ack_pending: o.maxAckPending, filter_subject: this.config.filter_subject });
      }
    } catch (e) {
      if (!(e instanceof JetStreamApiError) || e.code !== 10014) throw e;
      exists = false;
    }
    if (exists) return;
    const from = this.options.from ?? 'start';
    const deliver = from === 'start' ? { deliver_policy: DeliverPolicy.All }
      : from === 'new' ? { deliver_policy: DeliverPolicy.New }
        : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from.after + 1 };
    try {
      await jsm.consumers.add(o.stream, { ...this.config, ...deliver });
    } catch (e) {
      // Created by someone else meanwhile.
      if (!(e instanceof JetStreamApiError) || e.code !== 10148) throw e;
    }
  }

  /** @internal */
  async start(): Promise<void> {
    await this.ensureConsumer();
    await this.recover();
    const heartbeat = setInterval(() => this.pipeline.heartbeat(), Math.max(250, Math.floor(this.o.ackWaitMs / 3)));
    heartbeat.unref();
    const expiry = setInterval(() => void this.state.expire().catch(this.onError), Math.min(this.state.dedupTtlMs, 3_600_000));
    expiry.unref();
    this.timers.push(heartbeat, expiry);
    if (this.options.probe !== false && this.options.shard === undefined) {
      this.unprobe = registerProbe(this, this.options.probe, this.options.metricsAs);
    }
    // `troupe dlq replay` and the dashboard ask a running instance to replay (dlq.ts).
    this.unserveReplays = serveReplays(this.nc, this.o.subjectPrefix, this.name, this.options.shard, (seq) => this.replayDeadLetter(seq));
    // `troupe consumers`: counters and failing aggregates, which only this process knows (overview.ts).
    this.unserveStatus = serveConsumerStatus(this.nc, this.o.subjectPrefix, () => ({
      consumer: this.options.metricsAs?.name ?? this.name, ...(this.options.metricsAs?.version === undefined ? {} : { version: this.options.metricsAs.version }),
      instance: `${hostname()}:${process.pid}`, durable: this.durable,
      handled: this.metrics.handled, failed: this.metrics.failed, retried: this.metrics.retried, deadLettered: this.metrics.deadLettered,
      failing: this.state.failing(),
    }));
    void this.state.expire().catch(this.onError);
    this.loopDone = this.loop();
  }

  /**
   * Messages a previous instance received and did not ack come back only when their ack wait
   * runs out, after newer messages. Read them from the stream now, so that each aggregate's
   * first unhandled event among them goes before the aggregate's later events.
   */
  private async recover(): Promise<void> {
    if (this.startAfter !== undefined) return;
    const i = await this.jsm.consumers.info(this.o.stream, this.durable);
    const from = i.ack_floor.stream_seq + 1;
    const to = i.delivered.stream_seq;
    if (i.num_ack_pending === 0 || to < from) return;
    if (to - from > MAX_RECOVERY_SCAN) {
      this.onError(new Error(`consumer ${this.name}: ${to - from + 1} messages between its ack floor and its last delivery, more than ${MAX_RECOVERY_SCAN}; per-aggregate order is not enforced for the ones redelivered after a restart`));
      return;
    }
    const reader = await this.js.consumers.get(this.o.stream, {
      filter_subjects: [this.filter], deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from,
    });
    const messages = await reader.consume({ max_messages: 256 });
    const guard = setTimeout(() => messages.stop(), 30_000);
    try {
      for await (const m of messages) {
        if (m.seq > to) break;
        try {
          this.pipeline.expectUnacked(decodeCommitBatch(m.data, m.seq));
        } catch {
          // Not a commit batch: nothing to order.
        }
        // A filtered consumer's last delivery may lie past the last message of its subjects.
        if (m.seq >= to || m.info.pending === 0) break;
      }
    } finally {
      clearTimeout(guard);
      messages.stop();
    }
  }

  private async loop(): Promise<void> {
    let failures = 0;
    let pull: Awaited<ReturnType<JetStreamClient['consumers']['get']>> | null = null;
    while (!this.stopping) {
      const p = this.pipeline;
      // A fetch keeps delivering until it has its count, so ask for no more than the bytes
      // left can hold, by the average message size so far.
      const freeBytes = this.o.maxBufferedBytes - p.bufferedBytes;
      let room = Math.min(FETCH_BATCH, this.o.maxAckPending - p.inMemory, freeBytes <= 0 ? 0 : Math.max(1, Math.floor(freeBytes / this.averageBytes)));
      if (room <= 0) {
        // Full. Unless everything held waits for a redelivery, wait for room.
        if (!p.stalled) {
          await new Promise<void>((r) => { this.wake = r; });
          continue;
        }
        room = 1;
      }
      try {
        pull ??= await this.js.consumers.get(this.o.stream, this.durable);
        const messages = await pull.fetch({ max_messages: room, expires: FETCH_EXPIRES_MS });
        this.messages = messages;
        if (this.stopping) messages.stop();
        for await (const m of messages) this.onMessage(m);
        failures = 0;
      } catch (e) {
        if (this.stopping) break;
        this.onError(e);
        pull = null;
        failures++;
        await new Promise((r) => setTimeout(r, Math.min(5_000, 250 * 2 ** Math.min(failures, 5))));
        await this.ensureConsumer().catch(this.onError);
      } finally {
        this.messages = null;
      }
    }
  }

  private onMessage(m: JsMsg): void {
    let events: EventEnvelope[];
    try {
      events = decodeCommitBatch(m.data, m.seq);
    } catch (e) {
      void this.undecodable(m, e);
      return;
    }
    this.averageBytes = 0.8 * this.averageBytes + 0.2 * m.data.length;
    this.pipeline.offer(new JsDelivery(m), events, m.data.length);
  }

  /** A message that is not a commit batch: into the DLQ as raw bytes, then acked. */
  private async undecodable(m: JsMsg, e: unknown): Promise<void> {
    const now = new Date().toISOString();
    try {
      await this.deadLetter({
        consumer: this.name, reason: 'undecodable', error: { name: (e as Error)?.name ?? 'Error', message: (e as Error)?.message ?? String(e) },
        attempts: 1, firstFailureAt: now, lastFailureAt: now, deadLetteredAt: now, subject: m.subject, position: m.seq,
        headers: headersToRecord(m.headers), event: null, data: m.data,
      });
      m.ack();
    } catch (err) {
      this.onError(err);
      m.nak(5_000);
    }
  }

  private async deadLetter(record: DeadLetterRecord): Promise<void> {
    await this.deadLetters.publish(record);
    this.metrics.deadLettered++;
    try {
      this.options.onDeadLetter?.(record);
    } catch (e) {
      this.onError(e);
    }
    if (this.alarm !== null) {
      try {
        this.alarm.check(await this.deadLetters.stats());
      } catch (e) {
        this.onError(e);
      }
    }
  }

  stats(): ConsumerStats {
    return { name: this.name, ...this.pipeline.stats() };
  }

  /** The JetStream consumer's view: what is left to deliver and to ack. */
  async info(): Promise<ConsumerInfo> {
    const i = await this.jsm.consumers.info(this.o.stream, this.durable);
    return { numPending: i.num_pending, numAckPending: i.num_ack_pending, ackFloor: i.ack_floor.stream_seq };
  }

  /** Messages left to handle and the age of the oldest one (for /health and /metrics). */
  async lag(): Promise<ConsumerLag> {
    const i = await this.jsm.consumers.info(this.o.stream, this.durable);
    const messages = i.num_pending + i.num_ack_pending;
    return { messages, oldestAgeMs: messages === 0 ? 0 : await oldestAfter(this.jsm, this.o.stream, this.filter, i.ack_floor.stream_seq) };
  }

  /** Held messages, their bytes, the breaker's state. */
  gauges(): ConsumerGauges {
    const b = this.options.breaker;
    return { bufferedMessages: this.pipeline.inMemory, bufferedBytes: this.pipeline.bufferedBytes, ...(b === undefined ? {} : { breakerState: breakerState(b.state) }) };
  }

  /** Whether it runs: not stopped, not halted by a refused commit, its NATS connection open. */
  status(): HealthCheckResult {
    if (this.stopping) return { ok: false, error: 'stopped' };
    if (this.pipeline.halted) return { ok: false, error: 'halted: LMDB refused a commit; restart the consumer' };
    if (this.nc.isClosed()) return { ok: false, error: 'its NATS connection is closed' };
    return { ok: true, position: this.pipeline.position };
  }

  /** `http://host:port` of the endpoints this consumer serves (options.http), or null. */
  get httpUrl(): string | null {
    return this.http?.url ?? null;
  }

  /** @internal */
  served(http: ConsumerOpsServer): void {
    this.http = http;
  }

  /** The stream position of the last message in the log now. */
  async logEnd(): Promise<number> {
    return (await this.jsm.streams.info(this.o.stream)).state.last_seq;
  }

  /**
   * Every message up to this stream position that this consumer received is handled (exact for
   * projections, whose consumer is re-created from their checkpoint at every start).
   */
  get position(): number {
    return this.pipeline.position;
  }

  /** Resolves once `position` reached `p`; rejects with TimeoutError after `timeoutMs`. */
  waitFor(p: number, timeoutMs = 5_000): Promise<void> {
    return withTimeout(this.pipeline.reached(p), timeoutMs, () => new TimeoutError(
      `consumer ${this.name} did not reach log position ${p} within ${timeoutMs} ms (it is at ${this.pipeline.position})`, { position: p }));
  }

  /** Resolves when nothing is left to deliver, to ack (retries included), or held in memory. */
  async caughtUp(timeoutMs = 30_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const i = await this.info();
      if (i.numPending === 0 && i.numAckPending === 0 && this.pipeline.inMemory === 0) return;
      if (Date.now() > until) {
        throw new TimeoutError(`consumer ${this.name} did not catch up within ${timeoutMs} ms: ${i.numPending} to deliver, ${i.numAckPending} un-acked, ${this.pipeline.inMemory} held`, {});
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Listen to the events handled by each committed task. Returns an unsubscribe function. */
  onCommitted(listener: (events: EventEnvelope[]) => void): () => void {
    return this.pipeline.onCommitted(listener);
  }

  /** What `ctx.setVersion` recorded for an aggregate (0 when nothing). */
  versionOf(aggregateType: string, aggregateId: string): number {
    return this.state.version(aggregateType, aggregateId);
  }

  /**
   * Run one of this consumer's dead letters through its handler again (with `transform`), record
   * the event handled, and delete the dead letter. Rejects with the handler's error, leaving it.
   */
  async replayDeadLetter(seq: number): Promise<void> {
    const dl = await this.deadLetters.get(seq);
    if (dl.consumer !== this.name) {
      throw new ValidationError('VALIDATION', `dead letter ${seq} belongs to consumer ${dl.consumer}, not ${this.name}; replay it there`, { sequence: seq });
    }
    if (dl.event === null) throw new ValidationError('VALIDATION', `dead letter ${seq} is an undecodable message (no event to replay); discard it`, { sequence: seq });
    await this.pipeline.replay(dl.event);
    await this.deadLetters.discard(seq);
  }

  /** Replay every dead letter of this consumer, oldest first. Failed ones stay in the queue. */
  async replayDeadLetters(options: { limit?: number } = {}): Promise<{ replayed: number; failed: { seq: number; error: unknown }[] }> {
    let replayed = 0;
    const failed: { seq: number; error: unknown }[] = [];
    let after = 0;
    let left = options.limit ?? Infinity;
    while (left > 0) {
      const page = await this.deadLetters.list({ consumer: this.name, afterSeq: after, limit: Math.min(100, left) });
      if (page.length === 0) break;
      for (const dl of page) {
        after = dl.seq;
        left--;
        try {
          if (dl.event === null) throw new ValidationError('VALIDATION', `dead letter ${dl.seq} is an undecodable message`, { sequence: dl.seq });
          await this.pipeline.replay(dl.event);
          await this.deadLetters.discard(dl.seq);
          replayed++;
        } catch (error) {
          failed.push({ seq: dl.seq, error });
        }
      }
    }
    return { replayed, failed };
  }

  /**
   * Stop fetching, let running handlers finish (up to `timeoutMs`), give held messages back to
   * JetStream, and close what the consumer opened.
   */
  stop(timeoutMs = 10_000): Promise<void> {
    this.stopping = true;
    this.stopped ??= (async () => {
      for (const t of this.timers) clearInterval(t);
      this.unprobe?.();
      this.unserveReplays?.();
      this.unserveStatus?.();
      await this.http?.close();
      this.messages?.stop();
      this.wake?.();
      await this.pipeline.stop(timeoutMs);
      await this.loopDone.catch(() => {});
      if (this.startAfter !== undefined) await this.jsm.consumers.delete(this.o.stream, this.durable).catch(() => false);
      await this.nc.flush().catch(() => {});
      await this.deadLetters.close();
      for (const c of this.cleanup) await c().catch(() => {});
    })();
    return this.stopped;
  }
}

export function withTimeout<T>(p: Promise<T>, ms: number, error: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(error()), ms);
    p.then((v) => { clearTimeout(t); resolve(v); }, (e: unknown) => { clearTimeout(t); reject(e); });
  });
}
