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
 * One consumer name = one running instance: per-aggregate order across instances would need
 * the server to partition messages, which nats-server 2.10 does not do. Scale a consumer
 * with `concurrency` (parallel lanes across aggregates) or split work across consumer names.
 *
 * This is one of the few files that import `@nats-io/*`.
 */
import type { MsgHdrs, NatsConnection } from '@nats-io/transport-node';
import {
  AckPolicy, DeliverPolicy, JetStreamApiError, jetstream, jetstreamManager,
  type ConsumerConfig, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg,
} from '@nats-io/jetstream';
import { decodeCommitBatch, type EventEnvelope } from './codec.ts';
import { ConsumerStore, DEFAULT_DEDUP_TTL_MS, type ConsumerState } from './consumer-store.ts';
import { DeadLetterQueue, ThresholdAlarm, headersToRecord, type DeadLetterRecord, type DeadLetterStats } from './dlq.ts';
import { InvalidOptionError, NotFoundError, TimeoutError, ValidationError } from './errors.ts';
import { TokenBucket, resolveRetry, type CircuitBreakerPolicy, type RateLimit, type RetryOptions } from './flow.ts';
import { assertServerVersion, connectNats } from './journal.ts';
import { recordDeadLettered, registerConsumerProbe } from './metrics.ts';
import { DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX } from './options.ts';
import {
  Pipeline, defaultIsRetryable, type BatchHandler, type DeliveryHandle, type EventHandler, type EventTransform, type PipelineStats,
} from './pipeline.ts';

export const DEFAULT_MAX_ACK_PENDING = 1000;
export const DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024;
export const DEFAULT_ACK_WAIT_MS = 30_000;
export const DEFAULT_BATCH_SIZE = 100;
const FETCH_EXPIRES_MS = 5_000;
const FETCH_BATCH = 256;
const MAX_RECOVERY_SCAN = 1_000_000;
const NAME = /^[A-Za-z0-9_-]{1,128}$/;

interface CommonOptions {
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
  /** Bytes of messages held in memory at most, beyond which no more are fetched. Default 64 MiB. */
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
  probe?: false | { maxLag?: number; maxDlqDepth?: number };
  /**
   * @internal Projections: the JetStream consumer belongs to this process's checkpoint; it is
   * re-created at every start to deliver from `startAfter + 1`, and deleted at stop.
   */
  startAfter?: number;
  /** @internal Called when the stream turned out to be a new incarnation and the consumer's records were cleared. */
  onStreamReset?: () => Promise<unknown>;
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

export interface ConsumerInfo {
  /** Messages not yet delivered to this consumer. */
  numPending: number;
  /** Messages delivered and not acked (held, or waiting for a retry). */
  numAckPending: number;
  /** Every message up to this stream position is acked. */
  ackFloor: number;
}

export interface ConsumerStats extends PipelineStats {
  name: string;
}

/** Start a consumer; resolves once its JetStream consumer exists and fetching has begun. */
export async function consume(options: ConsumeOptions): Promise<Consumer> {
  const o = validate(options);
  const cleanup: (() => Promise<unknown>)[] = [];
  try {
    let nc = options.nc;
    if (nc === undefined) {
      nc = await connectNats(options.servers ?? process.env.NATS_URL ?? 'nats://127.0.0.1:4222', `troupe-consumer-${options.name}`);
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
    const consumer = new Consumer(options, o, nc, jsm, js, store, state, dlq, cleanup, startAfter);
    await consumer.start();
    return consumer;
  } catch (e) {
    for (const c of cleanup) await c().catch(() => {});
    throw e;
  }
}

interface Resolved {
  stream: string;
  subjectPrefix: string;
  concurrency: number;
  batchSize: number;
  maxAckPending: number;
  maxBufferedBytes: number;
  ackWaitMs: number;
}

function validate(options: ConsumeOptions): Resolved {
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
  return {
    stream: options.stream ?? DEFAULT_STREAM,
    subjectPrefix: options.subjectPrefix ?? DEFAULT_SUBJECT_PREFIX,
    concurrency: int('concurrency', 1, 1),
    batchSize: int('batchSize', options.batch === true ? DEFAULT_BATCH_SIZE : 1, 1),
    maxAckPending: int('maxAckPending', DEFAULT_MAX_ACK_PENDING, 1),
    maxBufferedBytes: int('maxBufferedBytes', DEFAULT_MAX_BUFFERED_BYTES, 1),
    ackWaitMs: int('ackWaitMs', DEFAULT_ACK_WAIT_MS, 1000),
  };
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
  private readonly pipeline: Pipeline;
  private stopped: Promise<void> | null = null;
  private messages: ConsumerMessages | null = null;
  private wake: (() => void) | null = null;
  private readonly timers: NodeJS.Timeout[] = [];
  private loopDone: Promise<void> = Promise.resolve();
  private unprobe: (() => void) | null = null;
  private readonly alarm: ThresholdAlarm | null;
  private readonly onError: (e: unknown) => void;

  /** @internal use consume() */
  constructor(
    private readonly options: ConsumeOptions,
    private readonly o: Resolved,
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
    this.onError = options.onError ?? ((e) => process.emitWarning(`troupe consumer ${options.name}: ${(e as Error)?.message ?? String(e)}`));
    this.alarm = options.deadLetterAlert === undefined ? null : new ThresholdAlarm({ ...options.deadLetterAlert, consumer: options.name });
    const retry = resolveRetry(options.retry);
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
      rateLimit: options.rateLimit === undefined ? null : new TokenBucket(options.rateLimit.perSecond, options.rateLimit.burst),
      breaker: options.breaker ?? null,
      breakerDelayMs: options.breakerDelayMs ?? Math.max(100, retry.initialDelayMs),
      isRetryable: options.isRetryable ?? defaultIsRetryable,
      orderTimeoutMs: options.orderTimeoutMs ?? retry.maxDelayMs + 2 * o.ackWaitMs,
      deadLetter: (r) => this.deadLetter(r),
      onError: this.onError,
    }, state, startAfter ?? 0);
    this.pipeline.onRoom = () => {
      const w = this.wake;
      this.wake = null;
      w?.();
    };
  }

  private get config(): Partial<ConsumerConfig> {
    return {
      durable_name: this.name,
      ack_policy: AckPolicy.Explicit,
      filter_subject: `${this.o.subjectPrefix}.log.>`,
      ack_wait: this.o.ackWaitMs * 1_000_000,
      max_deliver: -1,
      max_ack_pending: this.o.maxAckPending,
    };
  }

  /** Create (or update) the JetStream consumer. */
  private async ensureConsumer(): Promise<void> {
    const { jsm, o } = this;
    if (this.startAfter !== undefined) {
      await jsm.consumers.delete(o.stream, this.name).catch(() => false);
      await jsm.consumers.add(o.stream, {
        ...this.config, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: this.pipeline.position + 1,
        inactive_threshold: Math.max(5 * 60_000, 4 * o.ackWaitMs) * 1_000_000,
      });
      return;
    }
    let exists = true;
    try {
      const info = await jsm.consumers.info(o.stream, this.name);
      if (info.config.ack_wait !== this.config.ack_wait || info.config.max_ack_pending !== o.maxAckPending || info.config.filter_subject !== this.config.filter_subject) {
        await jsm.consumers.update(o.stream, this.name, { ack_wait: this.config.ack_wait, max_ack_pending: o.maxAckPending, filter_subject: this.config.filter_subject });
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
    if (this.options.probe !== false) {
      this.unprobe = registerConsumerProbe({
        name: this.name,
        lag: async () => { const i = await this.info(); return i.numPending + i.numAckPending; },
        dlqDepth: async () => (await this.deadLetters.stats()).byConsumer[this.name] ?? 0,
        ...(this.options.probe?.maxLag === undefined ? {} : { maxLag: this.options.probe.maxLag }),
        ...(this.options.probe?.maxDlqDepth === undefined ? {} : { maxDlqDepth: this.options.probe.maxDlqDepth }),
      });
    }
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
    const i = await this.jsm.consumers.info(this.o.stream, this.name);
    const from = i.ack_floor.stream_seq + 1;
    const to = i.delivered.stream_seq;
    if (i.num_ack_pending === 0 || to < from) return;
    if (to - from > MAX_RECOVERY_SCAN) {
      this.onError(new Error(`consumer ${this.name}: ${to - from + 1} messages between its ack floor and its last delivery, more than ${MAX_RECOVERY_SCAN}; per-aggregate order is not enforced for the ones redelivered after a restart`));
      return;
    }
    const reader = await this.js.consumers.get(this.o.stream, {
      filter_subjects: [`${this.o.subjectPrefix}.log.>`], deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from,
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
        if (m.seq >= to) break;
      }
    } finally {
      clearTimeout(guard);
      messages.stop();
    }
  }

  private async loop(): Promise<void> {
    let failures = 0;
    while (this.stopped === null) {
      const p = this.pipeline;
      let room = Math.min(FETCH_BATCH, this.o.maxAckPending - p.inMemory);
      if (p.bufferedBytes >= this.o.maxBufferedBytes) room = 0;
      if (room <= 0) {
        // Full. Unless everything held waits for a redelivery, wait for room.
        if (!p.stalled) {
          await new Promise<void>((r) => { this.wake = r; });
          continue;
        }
        room = 1;
      }
      try {
        const c = await this.js.consumers.get(this.o.stream, this.name);
        const messages = await c.fetch({ max_messages: room, expires: FETCH_EXPIRES_MS });
        this.messages = messages;
        for await (const m of messages) this.onMessage(m);
        failures = 0;
      } catch (e) {
        if (this.stopped !== null) break;
        this.onError(e);
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
    recordDeadLettered(this.name);
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
    const i = await this.jsm.consumers.info(this.o.stream, this.name);
    return { numPending: i.num_pending, numAckPending: i.num_ack_pending, ackFloor: i.ack_floor.stream_seq };
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
    this.stopped ??= (async () => {
      for (const t of this.timers) clearInterval(t);
      this.unprobe?.();
      this.messages?.stop();
      this.wake?.();
      await this.pipeline.stop(timeoutMs);
      await this.loopDone.catch(() => {});
      if (this.startAfter !== undefined) await this.jsm.consumers.delete(this.o.stream, this.name).catch(() => false);
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
