/**
 * The consumer's engine, without NATS: deliveries in, handler calls, commits, acks and naks out.
 *
 * Why one file of ~650 lines: it is one state machine. Intake, scheduling, the failure path and
 * settling a message all read and change the same lanes, in-flight counts and failure records,
 * and the ordering rules below hold only if they change together. The parts that stand alone
 * already have their files: lanes and the restart gate (lanes.ts), the handler's context and
 * checks (handler.ts), the LMDB commit (committer.ts), retry, rate limit and breaker (flow.ts).
 *
 *   delivery (one log message) ──decode──▶ items (its matching events)
 *        │                                   │ one lane per aggregate, sorted by sequence
 *        │                                   ▼
 *        │          lane: [e5][e6][e9]  ── ready? ──▶ task (≤ batchSize events, from ≤ many lanes)
 *        │                                                 │ transform → handler → WriteSet
 *        │                                                 ▼
 *        │                               one LMDB transaction: handler writes + de-dup marks
 *        ▼                                                 │
 *   all items settled ──▶ ack   (or nak(delay) when one of its events must be retried)
 *
 * Order: a lane runs one task at a time, so an aggregate's events are handled in sequence
 * order; lanes run in parallel up to `concurrency`. When an event fails, a failure record
 * is written for its aggregate (LMDB); while it exists, later events of that aggregate wait
 * (in memory, their messages un-acked), and the failing event's own message is nak'd with
 * the back-off delay — so a poison event blocks only its own aggregate. The record also
 * survives a crash, so after a restart the aggregate's later events still wait for it.
 * After maxRetries the event goes to the dead-letter queue and the aggregate moves on.
 *
 * A message is acked only after every matching event in it was handled and committed; on
 * redelivery, the events already handled are skipped by their eventId (ConsumerState.seen).
 *
 */
import type { EventEnvelope } from '../journal/codec.ts';
import { Committer } from './committer.ts';
import type { CommitEntry, ConsumerState, FailureRecord } from './consumer-store.ts';
import { WriteSet } from './consumer-store.ts';
import { reasonOf, type DeadLetterRecord } from './dlq.ts';
import { backoffDelay, isCircuitOpen, type CircuitBreakerPolicy, type ResolvedRetry, type TokenBucket } from './flow.ts';
import { TaskContext, type BatchHandler, type DeliveryHandle, type EventHandler, type EventTransform } from './handler.ts';
import { RestartGate, insertSorted, laneKey, type Delivery, type Item, type Lane, type Segment } from './lanes.ts';
import { withConsumerSpan } from '../ops/tracing.ts';
import { ConsumerMetrics } from '../ops/metrics.ts';

export { checkVersion, defaultIsRetryable } from './handler.ts';
export type { BatchHandler, DeliveryHandle, EventHandler, EventTransform, HandlerContext } from './handler.ts';

export interface PipelineConfig {
  name: string;
  handler: EventHandler | BatchHandler;
  batch: boolean;
  batchSize: number;
  concurrency: number;
  eventTypes: ReadonlySet<string> | null;
  aggregateTypes: ReadonlySet<string> | null;
  retry: ResolvedRetry;
  transform: EventTransform | null;
  rateLimit: TokenBucket | null;
  breaker: CircuitBreakerPolicy | null;
  /** Delay before an event deferred by an open breaker is tried again. */
  breakerDelayMs: number;
  isRetryable: (e: unknown) => boolean;
  /** How long past its failing event's next attempt a waiting aggregate waits before giving up on it. */
  orderTimeoutMs: number;
  deadLetter: (record: DeadLetterRecord) => Promise<void>;
  onError: (e: unknown) => void;
  /** Where the process-wide per-consumer metrics are counted (dead letters are counted by the caller of deadLetter). Default: counters of its own. */
  metrics?: ConsumerMetrics;
}

export interface PipelineStats {
  /** Messages received (deliveries, redeliveries included). */
  delivered: number;
  acked: number;
  nakked: number;
  /** Events the handler completed. */
  handled: number;
  /** Events skipped because they were handled before (redeliveries). */
  duplicates: number;
  /** Failed attempts. */
  failures: number;
  /** Events put off while a circuit breaker was open. */
  deferred: number;
  deadLettered: number;
  /** Messages held in memory, and their bytes. */
  inMemory: number;
  bufferedBytes: number;
  lanes: number;
  running: number;
}

const STRIP_STACK = /\n\s+at [\s\S]*$/;
const NO_ERROR = Symbol('no error');

export class Pipeline {
  private readonly deliveries = new Map<number, Delivery>();
  private readonly lanes = new Map<string, Lane>();
  private readonly candidates = new Set<Lane>();
  private readonly blocked = new Set<Lane>();
  private readonly nakked = new Set<number>();
  private readonly restart: RestartGate;
  private readonly abort = new AbortController();
  private blockedTimer: NodeJS.Timeout | null = null;
  private blockedWakeAt = Infinity;
  private running = 0;
  private bytes = 0;
  private maxSeen: number;
  private stopping = false;
  private readonly committer: Committer;
  private readonly positionWaiters: { position: number; resolve: () => void }[] = [];
  private readonly idleWaiters: (() => void)[] = [];
  private readonly commitListeners: ((events: EventEnvelope[]) => void)[] = [];
  /** Called when memory was freed or the pipeline stalled: the fetcher may pull more. */
  onRoom: () => void = () => {};
  readonly counters = { delivered: 0, acked: 0, nakked: 0, handled: 0, duplicates: 0, failures: 0, deferred: 0, deadLettered: 0 };
  private readonly metrics: ConsumerMetrics;

  constructor(readonly config: PipelineConfig, private readonly state: ConsumerState, startAfter = 0) {
    this.maxSeen = startAfter;
    this.metrics = config.metrics ?? new ConsumerMetrics(config.name);
    this.restart = new RestartGate(config.name, config.orderTimeoutMs, config.onError);
    this.committer = new Committer(state, (e) => {
      this.stopping = true;
      config.onError(new Error(`consumer ${config.name}: LMDB refused a commit, so nothing more is handled or acked; fix the store and restart the consumer: ${(e as Error)?.message ?? String(e)}`));
    });
  }

  private commit(entry: CommitEntry): Promise<void> {
    return this.committer.commit(entry);
  }

  get inMemory(): number {
    return this.deliveries.size;
  }

  get bufferedBytes(): number {
    return this.bytes;
  }

  /** True when messages are held but none can make progress (all wait for a redelivery). */
  get stalled(): boolean {
    return this.running === 0 && !this.committer.busy && this.deliveries.size > 0;
  }

  /** True once a refused LMDB commit stopped the pipeline (or stop() was called): nothing more is handled. */
  get halted(): boolean {
    return this.stopping;
  }

  get signal(): AbortSignal {
    return this.abort.signal;
  }

  stats(): PipelineStats {
    return { ...this.counters, inMemory: this.deliveries.size, bufferedBytes: this.bytes, lanes: this.lanes.size, running: this.running };
  }

  /**
   * Every message up to this stream position that reached this pipeline is handled. Exact when
   * this pipeline has seen every delivery since `startAfter` (a consumer recreated at start).
   */
  get position(): number {
    let min = Infinity;
    for (const s of this.deliveries.keys()) if (s < min) min = s;
    for (const s of this.nakked) if (s < min) min = s;
    return min === Infinity ? this.maxSeen : Math.min(this.maxSeen, min - 1);
  }

  /** Resolves once `position` reached `p`. */
  reached(p: number): Promise<void> {
    if (this.position >= p) return Promise.resolve();
    return new Promise((resolve) => this.positionWaiters.push({ position: p, resolve }));
  }

  /** Listen to the events of each committed task (after the commit). */
  onCommitted(listener: (events: EventEnvelope[]) => void): () => void {
    this.commitListeners.push(listener);
    return () => {
      const i = this.commitListeners.indexOf(listener);
      if (i >= 0) this.commitListeners.splice(i, 1);
    };
  }

  /** Resolves when nothing is held in memory and no task runs. */
  idle(): Promise<void> {
    if (this.deliveries.size === 0 && this.running === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Take a delivered message and its decoded events (in log order). */
  offer(handle: DeliveryHandle, events: readonly EventEnvelope[], bytes: number): void {
    this.counters.delivered++;
    const existing = this.deliveries.get(handle.seq);
    if (existing !== undefined) {
      // Redelivered while still held (its ack wait ran out): answer on the newest delivery.
      existing.handle = handle;
      return;
    }
    const d: Delivery = { seq: handle.seq, handle, bytes, open: 0, retryAt: 0 };
    this.deliveries.set(d.seq, d);
    this.bytes += bytes;
    if (d.seq > this.maxSeen) this.maxSeen = d.seq;
    for (const e of events) {
      if (!this.matches(e)) continue;
      const key = laneKey(e.aggregateType, e.aggregateId);
      let lane = this.lanes.get(key);
      if (lane === undefined) {
        lane = { key, type: e.aggregateType, id: e.aggregateId, items: [], busy: false, failure: this.state.failure(e.aggregateType, e.aggregateId), solo: false, committing: 0 };
        this.lanes.set(key, lane);
      }
      if (!insertSorted(lane.items, { e, d })) continue;
      d.open++;
      if (!lane.busy) this.candidates.add(lane);
    }
    if (d.open === 0) this.finish(d);
    else this.schedule();
  }

  /**
   * After a restart, before the first fetch: the events of the messages a previous instance
   * received and did not ack, in log order (see RestartGate).
   */
  expectUnacked(events: readonly EventEnvelope[]): void {
    const now = Date.now();
    this.restart.arm(now);
    for (const e of events) if (this.matches(e) && !this.state.seen(e.eventId, now)) this.restart.expect(e);
  }

  private matches(e: EventEnvelope): boolean {
    const { eventTypes, aggregateTypes } = this.config;
    return (aggregateTypes === null || aggregateTypes.has(e.aggregateType)) && (eventTypes === null || eventTypes.has(e.eventType));
  }

  /** Keep held messages from being redelivered while they wait (call every ackWait/3). */
  heartbeat(): void {
    for (const d of this.deliveries.values()) d.handle.working();
  }

  private schedule(): void {
    if (this.stopping) return;
    while (this.running < this.config.concurrency && this.candidates.size > 0) {
      const task = this.nextTask();
      if (task === null) break;
      this.running++;
      void this.run(task).catch((e: unknown) => this.config.onError(e)).finally(() => {
        this.running--;
        this.schedule();
        this.checkIdle();
      });
    }
    if (this.stalled) this.onRoom();
  }

  private nextTask(): Segment[] | null {
    const segments: Segment[] = [];
    let budget = this.config.batchSize;
    const now = Date.now();
    for (const lane of this.candidates) {
      if (budget === 0) break;
      if (lane.busy || !this.headReady(lane, now)) {
        this.candidates.delete(lane);
        continue;
      }
      const f = lane.failure;
      const solo = lane.solo || (f !== undefined && f.attempts > 0 && f.eventId === lane.items[0]!.e.eventId);
      if (solo && segments.length > 0) continue; // gets a task of its own next
      this.candidates.delete(lane);
      lane.busy = true;
      const n = solo ? 1 : this.restart.runnablePrefix(lane, budget);
      segments.push({ lane, n });
      budget -= n;
      if (solo) break;
    }
    return segments.length === 0 ? null : segments;
  }

  /** Whether the lane's first item may run now; drops items already handled. */
  private headReady(lane: Lane, now: number): boolean {
    for (;;) {
      const head = lane.items[0];
      if (head === undefined) {
        this.dropLaneIfDone(lane);
        return false;
      }
      if (this.state.seen(head.e.eventId, now)) {
        lane.items.shift();
        this.restart.handled(lane.key, head.e.sequence);
        this.counters.duplicates++;
        this.settle(head, 0);
        continue;
      }
      const f = lane.failure;
      if (this.restart.first(lane.key, now) < head.e.sequence) {
        // Events of this aggregate un-acked before a restart come first.
        this.block(lane, this.restart.until + 1);
        return false;
      }
      if (f === undefined || head.e.sequence < f.sequence) return true;
      if (head.e.eventId === f.eventId) {
        if (now >= f.nextAttemptAt) return true;
        // Redelivered before its time (its message was nak'd for another event): send it back.
        this.abandon(lane, head.d, f.nextAttemptAt);
        continue;
      }
      // A later event of a failing aggregate: wait for the failing one to come back.
      if (now > f.nextAttemptAt + this.config.orderTimeoutMs) {
        // It never came back (deleted from the log, or taken by another instance): stop waiting.
        lane.failure = undefined;
        void this.commit({ writes: null, done: [], resolved: [{ aggregateType: lane.type, aggregateId: lane.id }], failures: [] }).catch(() => {});
        this.config.onError(new Error(`consumer ${this.config.name}: the failing event ${f.eventId} of ${lane.type} ${lane.id} was not redelivered within ${this.config.orderTimeoutMs} ms after its retry time; later events of the aggregate go ahead`));
        continue;
      }
      this.block(lane, f.nextAttemptAt + this.config.orderTimeoutMs + 1);
      return false;
    }
  }

  private block(lane: Lane, until: number): void {
    this.blocked.add(lane);
    if (until < this.blockedWakeAt) {
      this.blockedWakeAt = until;
      if (this.blockedTimer !== null) clearTimeout(this.blockedTimer);
      this.blockedTimer = setTimeout(() => {
        this.blockedTimer = null;
        this.blockedWakeAt = Infinity;
        for (const l of this.blocked) this.candidates.add(l);
        this.blocked.clear();
        this.schedule();
      }, Math.max(0, until - Date.now()));
      this.blockedTimer.unref();
    }
  }

  private dropLaneIfDone(lane: Lane): void {
    if (lane.items.length === 0 && !lane.busy && lane.committing === 0 && this.lanes.get(lane.key) === lane) {
      this.lanes.delete(lane.key);
      this.candidates.delete(lane);
      this.blocked.delete(lane);
    }
  }

  private async run(segments: Segment[]): Promise<void> {
    const { config } = this;
    if (config.rateLimit !== null) await config.rateLimit.take(segments.reduce((a, s) => a + s.n, 0));
    const ws = new WriteSet(this.committer.pending);
    const ctx = new TaskContext(this.config.name, this.abort.signal, this.state, ws);
    // How many items at the front of each segment were handled, and the error of the next one.
    const handled = new Array<number>(segments.length).fill(0);
    const errors = new Array<unknown>(segments.length).fill(NO_ERROR);

    if (config.batch) {
      const events: EventEnvelope[] = [];
      let attempt = 1;
      for (const s of segments) for (let i = 0; i < s.n; i++) {
        const e = s.lane.items[i]!.e;
        events.push(e);
        if (s.lane.failure?.eventId === e.eventId) attempt = Math.max(attempt, s.lane.failure.attempts + 1);
      }
      ctx.attempt = attempt;
      try {
        const input = config.transform === null ? events : await Promise.all(events.map(config.transform));
        const t0 = performance.now();
        try {
          await this.call(() => (config.handler as BatchHandler)(input, ctx));
        } finally {
          this.metrics.handlerSeconds.observe((performance.now() - t0) / 1000);
        }
        for (let j = 0; j < segments.length; j++) handled[j] = segments[j]!.n;
      } catch (error) {
        ws.rollback(0);
        if (events.length > 1 && !isCircuitOpen(error)) {
          // Find the event at fault: run each lane's head alone, now, without counting an attempt.
          for (const s of segments) s.lane.solo = true;
          this.release(segments);
          return;
        }
        errors.fill(error);
      }
    } else {
      for (let j = 0; j < segments.length; j++) {
        const s = segments[j]!;
        for (let i = 0; i < s.n; i++) {
          const item = s.lane.items[i]!;
          const e = item.e;
          const f = s.lane.failure;
          ctx.attempt = f?.eventId === e.eventId ? f.attempts + 1 : 1;
          const mark = ws.mark();
          try {
            const input = config.transform === null ? e : await config.transform(e);
            const t0 = performance.now();
            try {
              await this.call(() => withConsumerSpan(input, item.d.handle.rawHeaders, () => (config.handler as EventHandler)(input, ctx), { consumer: config.name }));
            } finally {
              this.metrics.handlerSeconds.observe((performance.now() - t0) / 1000);
            }
            handled[j] = i + 1;
          } catch (error) {
            ws.rollback(mark);
            errors[j] = error;
            break;
          }
        }
      }
    }

    const done: EventEnvelope[] = [];
    const resolved: EventEnvelope[] = [];
    const settled: Item[] = [];
    const lanes: Lane[] = [];
    for (let j = 0; j < segments.length; j++) {
      const lane = segments[j]!.lane;
      const n = handled[j]!;
      if (n === 0) continue;
      // Kept in memory until the commit is written: a lane made afresh would read its failure
      // record from LMDB, where a removal still queued has not happened yet.
      lane.committing++;
      lanes.push(lane);
      if (lane.failure?.eventId === lane.items[0]!.e.eventId) {
        resolved.push(lane.items[0]!.e);
        lane.failure = undefined;
      }
      lane.solo = false;
      // Out of the lane now: its next events may run while this task's commit is written
      // (they read its writes through the pending overlay); acks wait for the commit.
      for (let i = 0; i < n; i++) {
        const item = lane.items.shift()!;
        done.push(item.e);
        settled.push(item);
        this.restart.handled(lane.key, item.e.sequence);
      }
    }
    if (done.length > 0) {
      const written = () => {
        for (const lane of lanes) {
          lane.committing--;
          this.dropLaneIfDone(lane);
        }
      };
      void this.commit({ writes: ws, done, resolved, failures: [] }).then(() => {
        written();
        this.counters.handled += settled.length;
        this.metrics.handled += settled.length;
        for (const item of settled) this.settle(item, 0);
        for (const l of this.commitListeners) l(done);
      }, written /* reported by the committer; the messages stay un-acked */);
    }
    const failing: Promise<void>[] = [];
    for (let j = 0; j < segments.length; j++) {
      if (errors[j] !== NO_ERROR) failing.push(this.fail(segments[j]!.lane, segments[j]!.lane.items[0]!, errors[j]));
    }
    await Promise.all(failing);
    this.release(segments);
  }

  private call(fn: () => unknown): Promise<unknown> {
    const b = this.config.breaker;
    return b === null ? Promise.resolve(fn()) : b.execute(fn);
  }

  /** A task ended: its lanes may run again. */
  private release(segments: Segment[]): void {
    for (const s of segments) {
      const lane = s.lane;
      lane.busy = false;
      if (lane.items.length > 0) this.candidates.add(lane);
      else this.dropLaneIfDone(lane);
    }
  }

  /** The head of `lane` failed with `error`. */
  private async fail(lane: Lane, item: Item, error: unknown): Promise<void> {
    const { config } = this;
    const e = item.e;
    const now = Date.now();
    const gate = lane.failure?.eventId === e.eventId ? lane.failure : undefined;
    // A record left by a circuit-breaker deferral (attempts 0) carries no failure history.
    const prev = gate !== undefined && gate.attempts > 0 ? gate : undefined;
    const message = errorText(error);
    if (isCircuitOpen(error)) {
      this.counters.deferred++;
      this.metrics.deferred++;
      const f: FailureRecord = {
        eventId: e.eventId, sequence: e.sequence, position: e.position, attempts: prev?.attempts ?? 0,
        firstFailureAt: prev?.firstFailureAt ?? now, lastFailureAt: prev?.lastFailureAt ?? now,
        nextAttemptAt: now + config.breakerDelayMs, reason: prev?.reason ?? 'circuit-open', error: prev?.error ?? message,
      };
      await this.recordFailure(lane, item, f);
      return;
    }
    this.counters.failures++;
    this.metrics.failed++;
    const attempts = (prev?.attempts ?? 0) + 1;
    const reason = reasonOf(error);
    if (!config.isRetryable(error) || attempts > config.retry.maxRetries) {
      const record: DeadLetterRecord = {
        consumer: config.name, reason,
        error: { name: error instanceof Error ? error.name : typeof error, message, ...(typeof (error as { code?: unknown })?.code === 'string' ? { code: (error as { code: string }).code } : {}), ...(error instanceof Error && error.stack ? { stack: error.stack } : {}) },
        attempts, firstFailureAt: new Date(prev?.firstFailureAt ?? now).toISOString(), lastFailureAt: new Date(now).toISOString(),
        deadLetteredAt: new Date().toISOString(), subject: item.d.handle.subject, position: e.position, headers: item.d.handle.headers(), event: e,
      };
      try {
        await config.deadLetter(record);
      } catch (dlqError) {
        // The DLQ is unreachable: keep the event and try again later (the attempts stay counted).
        config.onError(dlqError);
        this.metrics.retried++;
        await this.recordFailure(lane, item, { ...failureOf(e, prev, now, attempts, reason, message), nextAttemptAt: now + backoffDelay(config.retry, attempts) });
        return;
      }
      this.counters.deadLettered++;
      lane.failure = undefined;
      lane.solo = false;
      lane.items.shift();
      this.restart.handled(lane.key, e.sequence);
      try {
        await this.commit({ writes: null, done: [e], resolved: gate === undefined ? [] : [e], failures: [] });
      } catch {
        return; // reported by the committer
      }
      this.settle(item, 0);
      return;
    }
    this.metrics.retried++;
    await this.recordFailure(lane, item, { ...failureOf(e, prev, now, attempts, reason, message), nextAttemptAt: now + backoffDelay(config.retry, attempts) });
  }

  private async recordFailure(lane: Lane, item: Item, f: FailureRecord): Promise<void> {
    lane.failure = f;
    lane.solo = false;
    try {
      await this.commit({ writes: null, done: [], resolved: [], failures: [[item.e, f]] });
    } catch {
      return; // reported by the committer; the message stays un-acked
    }
    this.abandon(lane, item.d, f.nextAttemptAt);
  }

  /** Take every item of delivery `d` out of `lane`: they come back with the redelivery at `retryAt`. */
  private abandon(lane: Lane, d: Delivery, retryAt: number): void {
    let kept = 0;
    const items = lane.items;
    const gone: Item[] = [];
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!;
      if (it.d === d) gone.push(it);
      else items[kept++] = it;
    }
    items.length = kept;
    for (const it of gone) this.settle(it, retryAt);
  }

  private settle(item: Item, retryAt: number): void {
    const d = item.d;
    if (retryAt > 0 && (d.retryAt === 0 || retryAt < d.retryAt)) d.retryAt = retryAt;
    if (--d.open === 0) this.finish(d);
  }

  private finish(d: Delivery): void {
    if (this.deliveries.get(d.seq) !== d) return;
    this.deliveries.delete(d.seq);
    this.bytes -= d.bytes;
    if (d.retryAt > 0) {
      d.handle.nak(Math.max(0, d.retryAt - Date.now()));
      this.nakked.add(d.seq);
      this.counters.nakked++;
    } else {
      d.handle.ack();
      this.nakked.delete(d.seq);
      this.counters.acked++;
    }
    this.notifyPosition();
    this.onRoom();
    this.checkIdle();
  }

  private notifyPosition(): void {
    if (this.positionWaiters.length === 0) return;
    const p = this.position;
    for (let i = this.positionWaiters.length - 1; i >= 0; i--) {
      const w = this.positionWaiters[i]!;
      if (w.position <= p) {
        this.positionWaiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  private checkIdle(): void {
    if (this.deliveries.size === 0 && this.running === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  /**
   * Run one dead-lettered event through the handler again (after the aggregate's current task,
   * never beside it), and record it handled. Throws what the handler threw.
   */
  async replay(event: EventEnvelope): Promise<void> {
    const key = laneKey(event.aggregateType, event.aggregateId);
    let lane = this.lanes.get(key);
    while (lane?.busy === true) {
      await new Promise((r) => setTimeout(r, 5));
      lane = this.lanes.get(key);
    }
    const own: Lane = lane ?? { key, type: event.aggregateType, id: event.aggregateId, items: [], busy: false, failure: undefined, solo: false, committing: 0 };
    if (lane === undefined) this.lanes.set(key, own);
    own.busy = true;
    try {
      const ws = new WriteSet(this.committer.pending);
      const ctx = new TaskContext(this.config.name, this.abort.signal, this.state, ws);
      const input = this.config.transform === null ? event : await this.config.transform(event);
      if (this.config.batch) await this.call(() => (this.config.handler as BatchHandler)([input], ctx));
      else await this.call(() => (this.config.handler as EventHandler)(input, ctx));
      await this.commit({ writes: ws, done: [event], resolved: [], failures: [] });
      this.metrics.handled++;
      for (const l of this.commitListeners) l([event]);
    } finally {
      own.busy = false;
      if (own.items.length > 0) this.candidates.add(own);
      else this.dropLaneIfDone(own);
      this.schedule();
    }
  }

  /** Stop starting tasks; wait up to `timeoutMs` for running ones; nak what is still held. */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    const until = Date.now() + timeoutMs;
    while ((this.running > 0 || this.committer.busy) && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    this.abort.abort();
    if (this.blockedTimer !== null) clearTimeout(this.blockedTimer);
    for (const d of [...this.deliveries.values()]) {
      this.deliveries.delete(d.seq);
      // Back to the server at once, for the next instance; attempts are counted in LMDB, not here.
      d.handle.nak(0);
    }
    this.bytes = 0;
    this.lanes.clear();
    this.candidates.clear();
    this.blocked.clear();
    for (const w of this.idleWaiters.splice(0)) w();
  }

}

function failureOf(e: EventEnvelope, prev: FailureRecord | undefined, now: number, attempts: number, reason: string, error: string): FailureRecord {
  return {
    eventId: e.eventId, sequence: e.sequence, position: e.position, attempts,
    firstFailureAt: prev?.firstFailureAt ?? now, lastFailureAt: now, nextAttemptAt: now, reason, error,
  };
}

function errorText(e: unknown): string {
  if (e instanceof Error) return e.message.replace(STRIP_STACK, '').slice(0, 2000);
  return String(e).slice(0, 2000);
}

