/**
 * Traces and the Prometheus exposition: with log.ts, the only files that import OpenTelemetry.
 *
 * The library itself depends on @opentelemetry/api alone. The SDK (@opentelemetry/sdk-node)
 * and the Prometheus exporter are loaded with a dynamic import, only when they are used: by
 * the node's entry point (cli.ts), by each worker thread when OTEL_* variables enable tracing,
 * and by the HTTP server for /metrics.
 *
 * One command's trace (only when a tracer provider is registered; otherwise each hook below is
 * one branch on `tracing.on`):
 *
 *   troupe.send Account.Deposit      CLIENT    TroupeClient, in the caller's process
 *   └ troupe.command Account.Deposit SERVER    node main thread: received → replied
 *     ├ troupe.route                 INTERNAL  main: queued for its worker → task posted
 *     ├ troupe.decide                INTERNAL  worker: decide + evolve (event types, version)
 *     ├ troupe.append                PRODUCER  worker: commit buffered → JetStream ack (position)
 *     └ troupe.reply                 INTERNAL  main: outcome back from the worker → reply sent
 *   troupe.consume <EventType>       CONSUMER  withConsumerSpan(), child of troupe.append
 *
 * Context crosses threads in the task (one W3C traceparent string per command) and NATS in
 * headers. A request message and a JetStream message each carry many commands, so:
 * - the client puts one `traceparent` per request message (its first traced command) and one
 *   per command inside the request body;
 * - a JetStream commit batch carries `traceparent` (the append span of its first traced commit)
 *   and `Troupe-Trace`: `<commandId> <traceparent>` pairs, space separated, one per traced
 *   commit (up to TRACE_HEADER_MAX_BYTES), so that a consumer continues the trace of the very
 *   command that produced an event. A commit beyond the cap falls back to the message's.
 */
import {
  context, trace, ProxyTracerProvider, ROOT_CONTEXT, SpanKind, SpanStatusCode, TraceFlags, ValueType,
  type Attributes, type Context, type Link, type Span, type SpanContext, type Tracer,
} from '@opentelemetry/api';
import type { MetricData, MetricProducer, CollectionResult } from '@opentelemetry/sdk-metrics';
import { ops, within, type HistogramSnapshot, type NodeMetrics, type WorkerCounters, type WorkerMetricsSnapshot, addWorkerCounters, emptyWorkerCounters } from './metrics.ts';

// ── tracing state ────────────────────────────────────────────────────────────────────────────

const NOOP_PROVIDER = new ProxyTracerProvider().getDelegate();

/** `on` is true when a tracer provider is registered in this thread (checked by refreshTracing()). */
export const tracing = { on: false };

let tracer: Tracer = trace.getTracer('troupe');

/** Look again whether a tracer provider is registered; the node calls it when it starts. */
export function refreshTracing(): boolean {
  const p = trace.getTracerProvider();
  const delegate = p instanceof ProxyTracerProvider ? p.getDelegate() : p;
  tracing.on = delegate !== NOOP_PROVIDER;
  tracer = trace.getTracer('troupe');
  return tracing.on;
}

/** The header that carries the trace context of each traced commit of a JetStream message. */
export const TRACE_HEADER = 'Troupe-Trace';
export const TRACEPARENT = 'traceparent';
export const TRACE_HEADER_MAX_BYTES = 16 * 1024;

/** Headers as NATS has them (MsgHdrs): `get` returns '' for a missing key. */
export interface HeaderLike {
  get(key: string): string;
  set?(key: string, value: string): void;
}

const TRACEPARENT_RE = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

export function formatTraceparent(sc: SpanContext): string {
  return `00-${sc.traceId}-${sc.spanId}-${sc.traceFlags & TraceFlags.SAMPLED ? '01' : '00'}`;
}

/** A remote span context from a W3C traceparent, or null when it is missing or malformed. */
export function parseTraceparent(value: string | null | undefined): SpanContext | null {
  if (typeof value !== 'string' || value.length !== 55) return null;
  const m = TRACEPARENT_RE.exec(value);
  if (m === null || m[1] === '00000000000000000000000000000000' || m[2] === '0000000000000000') return null;
  return { traceId: m[1]!, spanId: m[2]!, traceFlags: Number.parseInt(m[3]!, 16), isRemote: true };
}

function contextOf(parent: Context | string | null | undefined): Context {
  if (parent === null || parent === undefined) return context.active();
  if (typeof parent !== 'string') return parent;
  const sc = parseTraceparent(parent);
  return sc === null ? context.active() : trace.setSpanContext(ROOT_CONTEXT, sc);
}

function now(): number {
  return performance.now();
}

function fail(span: Span, error: { code?: unknown; message?: unknown; retryable?: unknown }): void {
  span.setAttribute('troupe.error.code', String(error.code ?? 'INTERNAL'));
  if (typeof error.retryable === 'boolean') span.setAttribute('troupe.error.retryable', error.retryable);
  span.setStatus({ code: SpanStatusCode.ERROR, message: String(error.message ?? error.code ?? 'error') });
}

interface CommandLike {
  commandId: string;
  type: string;
  aggregateType: string;
  aggregateId: string;
  correlationId?: string;
  causationId?: string | null;
  shard?: number;
}

function commandAttributes(c: CommandLike): Attributes {
  const a: Attributes = {
    'messaging.message.id': c.commandId,
    'troupe.command.id': c.commandId,
    'troupe.command.type': c.type,
    'troupe.aggregate.type': c.aggregateType,
    'troupe.aggregate.id': c.aggregateId,
  };
  if (c.correlationId !== undefined) a['troupe.correlation_id'] = c.correlationId;
  if (c.causationId !== undefined && c.causationId !== null) a['troupe.causation_id'] = c.causationId;
  if (c.shard !== undefined) a['troupe.shard'] = c.shard;
  return a;
}

interface ResultLike {
  version: number;
  position: number;
  duplicate: boolean;
  events: readonly { eventType: string }[];
}

function resultAttributes(span: Span, r: ResultLike): void {
  span.setAttribute('troupe.version', r.version);
  span.setAttribute('troupe.position', r.position);
  span.setAttribute('troupe.duplicate', r.duplicate);
  span.setAttribute('troupe.event.types', r.events.map((e) => e.eventType));
}

// ── main thread: one command ─────────────────────────────────────────────────────────────────

/** The spans of one command on the node's main thread. Created only when `tracing.on`. */
export class CommandTrace {
  readonly span: Span;
  private route: Span | null = null;
  private replying: Span | null = null;
  private readonly ctx: Context;

  constructor(cmd: CommandLike, parent: Context | string | null | undefined, remote: boolean) {
    this.span = tracer.startSpan(`troupe.command ${cmd.aggregateType}.${cmd.type}`, {
      kind: remote ? SpanKind.SERVER : SpanKind.INTERNAL, attributes: commandAttributes(cmd),
    }, contextOf(parent));
    this.ctx = trace.setSpan(ROOT_CONTEXT, this.span);
  }

  /** Queued for the worker that hosts its shard. */
  enqueued(slot: number): void {
    this.route = tracer.startSpan('troupe.route', { attributes: { 'troupe.worker.slot': slot } }, this.ctx);
  }

  /** Handed to the worker: the traceparent its spans continue. */
  routed(): string {
    this.route?.end();
    this.route = null;
    return formatTraceparent(this.span.spanContext());
  }

  /** The worker answered; the reply is on its way to the caller. */
  answered(): void {
    this.replying ??= tracer.startSpan('troupe.reply', undefined, this.ctx);
  }

  end(error: unknown, result: ResultLike | null): void {
    this.route?.end();
    const span = this.span;
    if (result !== null) resultAttributes(span, result);
    else fail(span, (error ?? {}) as { code?: unknown; message?: unknown });
    this.replying?.end();
    span.end();
  }
}

/** Start a command's trace, as a child of `parent` (a context, a traceparent, or the active context). */
export function startCommandTrace(cmd: CommandLike, parent?: Context | string | null, remote = false): CommandTrace {
  return new CommandTrace(cmd, parent, remote);
}

/** For pool.ts: the traceparents of a batch's commands (ends their route spans), or undefined when none is traced. */
export function taskTraces(batch: readonly { trace?: { routed(): string } | undefined }[]): (string | null)[] | undefined {
  let out: (string | null)[] | undefined;
  for (let i = 0; i < batch.length; i++) {
    const t = batch[i]!.trace;
    if (t === undefined) continue;
    out ??= new Array<string | null>(batch.length).fill(null);
    out[i] = t.routed();
  }
  return out;
}

// ── worker thread: one command ───────────────────────────────────────────────────────────────

/** The spans of one command in the worker: decide, then append until JetStream acknowledges. */
export class WorkerCommandTrace {
  private readonly parent: Context;
  private append: Span | null = null;
  private error: { code?: unknown; message?: unknown; retryable?: unknown } | null = null;
  private decided_ = false;
  traceparent: string | null = null;

  constructor(traceparent: string, private readonly cmd: CommandLike) {
    this.parent = contextOf(traceparent);
  }

  /**
   * decide() ran from `start` to now. `events` are the decided events (null when the command
   * was answered without a commit: rejected, a no-op, or failed).
   */
  decided(start: number, events: readonly { eventType: string }[] | null, version: number): void {
    this.decided_ = true;
    const end = now();
    const span = tracer.startSpan(`troupe.decide ${this.cmd.aggregateType}.${this.cmd.type}`, { startTime: start, attributes: commandAttributes(this.cmd) }, this.parent);
    span.setAttribute('troupe.version', version);
    if (events !== null) span.setAttribute('troupe.event.types', events.map((e) => e.eventType));
    if (this.error !== null) fail(span, this.error);
    span.end(end);
    if (events !== null && this.error === null) {
      this.append = tracer.startSpan('troupe.append', {
        kind: SpanKind.PRODUCER, startTime: end,
        attributes: { ...commandAttributes(this.cmd), 'messaging.system': 'nats', 'messaging.operation.type': 'send', 'troupe.event.types': events.map((e) => e.eventType) },
      }, this.parent);
      this.traceparent = formatTraceparent(this.append.spanContext());
    }
  }

  /** Its commit left in a JetStream message. */
  flushed(subject: string, msgId: string, commits: number): void {
    const a = this.append;
    if (a === null) return;
    a.setAttribute('messaging.destination.name', subject);
    a.setAttribute('troupe.batch.message_id', msgId);
    a.setAttribute('messaging.batch.message_count', commits);
  }

  /** The command's outcome (in WorkerCommand.reply). */
  replied(error: { code?: unknown; message?: unknown; retryable?: unknown } | null, result: ResultLike | null): void {
    if (error !== null && !this.decided_) this.error = error;
    const a = this.append;
    if (a === null) return;
    this.append = null;
    if (result !== null) resultAttributes(a, result);
    else if (error !== null) fail(a, error);
    a.end(now());
  }
}

/**
 * For shard.ts, once per flush when tracing is on: `traceparent` and `Troupe-Trace` headers of
 * the message, and the message's attributes on each traced commit's append span.
 */
export function traceBatchHeaders(h: HeaderLike, subject: string, msgId: string, batch: readonly { commandId: string; cmd: { spans?: WorkerCommandTrace | null } }[]): void {
  let pairs = '';
  let first: string | null = null;
  for (const pc of batch) {
    const t = pc.cmd.spans;
    if (t === undefined || t === null) continue;
    t.flushed(subject, msgId, batch.length);
    const tp = t.traceparent;
    if (tp === null) continue;
    first ??= tp;
    if (pairs.length + pc.commandId.length + 57 > TRACE_HEADER_MAX_BYTES) continue;
    pairs += pairs === '' ? `${pc.commandId} ${tp}` : ` ${pc.commandId} ${tp}`;
  }
  if (first === null) return;
  h.set?.(TRACEPARENT, first);
  h.set?.(TRACE_HEADER, pairs);
}

/** The per-commit contexts of a message's `Troupe-Trace` header, by commandId. */
export function commitTraces(headers: HeaderLike | undefined | null): Map<string, string> {
  const out = new Map<string, string>();
  const v = headers?.get(TRACE_HEADER) ?? '';
  if (v === '') return out;
  const parts = v.split(' ');
  for (let i = 0; i + 1 < parts.length; i += 2) out.set(parts[i]!, parts[i + 1]!);
  return out;
}

// ── consumers ────────────────────────────────────────────────────────────────────────────────

interface EventLike {
  eventId: string;
  eventType: string;
  aggregateType: string;
  aggregateId: string;
  commandId: string;
  correlationId?: string;
  sequence?: number;
  position?: number;
}

const parsedHeaders = new WeakMap<object, Map<string, string>>();
/** withConsumerSpan() looks for a tracer provider on its first call; consumers call refreshTracing() when they start. */
let consumerChecked = false;

/**
 * Run a consumer's handling of one event inside a `troupe.consume <EventType>` span (CONSUMER),
 * child of the append span of the commit that stored the event (from the message's
 * Troupe-Trace header), else of the message's traceparent; linked to the message's context.
 * Spans `fn` starts are its children. When tracing is off it only calls `fn`.
 *
 *   await withConsumerSpan(event, msg.headers, () => handle(event), { consumer: 'billing' });
 */
export function withConsumerSpan<T>(event: EventLike, headers: HeaderLike | undefined | null, fn: () => T, options: { consumer?: string } = {}): T {
  if (!tracing.on) {
    if (consumerChecked) return fn();
    consumerChecked = true;
    if (!refreshTracing()) return fn();
  }
  let traces: Map<string, string> | undefined;
  if (headers !== undefined && headers !== null) {
    traces = parsedHeaders.get(headers);
    if (traces === undefined) parsedHeaders.set(headers, (traces = commitTraces(headers)));
  }
  const own = parseTraceparent(traces?.get(event.commandId));
  const message = parseTraceparent(headers?.get(TRACEPARENT));
  const parent = own ?? message;
  const links: Link[] = message !== null && message !== parent ? [{ context: message }] : [];
  const attributes: Attributes = {
    'messaging.system': 'nats', 'messaging.operation.type': 'process', 'messaging.message.id': event.eventId,
    'troupe.event.id': event.eventId, 'troupe.event.type': event.eventType, 'troupe.aggregate.type': event.aggregateType,
    'troupe.aggregate.id': event.aggregateId, 'troupe.command.id': event.commandId,
  };
  if (options.consumer !== undefined) attributes['messaging.consumer.group.name'] = options.consumer;
  if (event.correlationId !== undefined) attributes['troupe.correlation_id'] = event.correlationId;
  if (event.sequence !== undefined) attributes['troupe.sequence'] = event.sequence;
  if (event.position !== undefined) attributes['troupe.position'] = event.position;
  const span = tracer.startSpan(`troupe.consume ${event.eventType}`, { kind: SpanKind.CONSUMER, attributes, links },
    parent === null ? context.active() : trace.setSpanContext(ROOT_CONTEXT, parent));
  const done = (e?: unknown) => {
    if (e !== undefined) {
      span.recordException(e instanceof Error ? e : String(e));
      fail(span, (typeof e === 'object' && e !== null ? e : { message: String(e) }) as { code?: unknown; message?: unknown });
    }
    span.end();
  };
  let out: T;
  try {
    out = context.with(trace.setSpan(context.active(), span), fn);
  } catch (e) {
    done(e);
    throw e;
  }
  if (out instanceof Promise) {
    return out.then((v) => { done(); return v; }, (e: unknown) => { done(e ?? new Error('rejected')); throw e; }) as T;
  }
  done();
  return out;
}

// ── client ───────────────────────────────────────────────────────────────────────────────────

/** The span of one send from a TroupeClient (child of the caller's active span). */
export class SendTrace {
  private readonly span: Span;
  readonly traceparent: string;
  constructor(cmd: CommandLike) {
    this.span = tracer.startSpan(`troupe.send ${cmd.aggregateType}.${cmd.type}`, { kind: SpanKind.CLIENT, attributes: commandAttributes(cmd) }, context.active());
    this.traceparent = formatTraceparent(this.span.spanContext());
  }

  end(error: unknown, result: ResultLike | null): void {
    if (result !== null) resultAttributes(this.span, result);
    else fail(this.span, (error ?? {}) as { code?: unknown });
    this.span.end();
  }
}

// ── SDK setup (entry points and worker threads) ─────────────────────────────────────────────

/**
 * Whether the standard OTEL_* variables ask for traces: OTEL_TRACES_EXPORTER names an exporter
 * (otlp, console, zipkin), or an OTLP endpoint is set; never when OTEL_SDK_DISABLED=true or
 * OTEL_TRACES_EXPORTER=none. Off by default.
 */
export function tracingConfigured(env: NodeJS.ProcessEnv = process.env): boolean {
  if ((env.OTEL_SDK_DISABLED ?? '').toLowerCase() === 'true') return false;
  const exporters = (env.OTEL_TRACES_EXPORTER ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (exporters.includes('none')) return false;
  if (exporters.length > 0) return true;
  return Boolean(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT);
}

interface Sdk { shutdown(): Promise<void> }
let sdk: Sdk | null = null;

/**
 * Start @opentelemetry/sdk-node in this thread when OTEL_* variables enable tracing (or
 * `force`): traces only (metrics go to /metrics, logs to stdout). Exporter, sampler, endpoint
 * and resource come from the standard variables. Returns whether tracing is on.
 */
export async function startTracingSdk(options: { serviceName?: string; force?: boolean } = {}): Promise<boolean> {
  if (sdk === null && (options.force === true || tracingConfigured())) {
    const { NodeSDK } = await import('@opentelemetry/sdk-node');
    const s = new NodeSDK({
      serviceName: process.env.OTEL_SERVICE_NAME ?? options.serviceName ?? 'troupe',
      metricReaders: [],
      logRecordProcessors: [],
      instrumentations: [],
    });
    s.start();
    sdk = s;
  }
  return refreshTracing();
}

/** Flush and stop the SDK this thread started (graceful stop): pending spans are exported. */
export async function shutdownTracingSdk(): Promise<void> {
  const s = sdk;
  sdk = null;
  if (s !== null) await s.shutdown().catch(() => {});
  refreshTracing();
}

// ── Prometheus ──────────────────────────────────────────────────────────────────────────────

export interface WorkerView {
  slot: number;
  threadId: number;
  alive: boolean;
  residentActors: number;
  inFlightAppends: number;
  /** Commands queued on the main thread for this worker. */
  queued: number;
  /** Commands sent to this worker and not answered yet. */
  inFlight: number;
  metrics: WorkerMetricsSnapshot | null;
}

/** What the node hands the exporter at each scrape. */
export interface NodeView {
  nodeName: string;
  metrics: NodeMetrics;
  workers: WorkerView[];
  ownedShards: number;
  /** Consumer probes that do not answer within this are reported as missing. */
  probeTimeoutMs: number;
}

type Dyn = {
  DataPointType: typeof import('@opentelemetry/sdk-metrics').DataPointType;
  AggregationTemporality: typeof import('@opentelemetry/sdk-metrics').AggregationTemporality;
};

function hr(ms: number): [number, number] {
  return [Math.floor(ms / 1000), Math.round((ms % 1000) * 1e6)];
}

/** Builds OTel metric data from plain numbers (the exporter serializes it for Prometheus). */
class NodeMetricProducer implements MetricProducer {
  private readonly started = Date.now();
  constructor(private readonly view: () => Promise<NodeView>, private readonly dyn: Dyn) {}

  async collect(): Promise<CollectionResult> {
    const v = await this.view();
    const { DataPointType, AggregationTemporality } = this.dyn;
    const start = hr(this.started);
    const end = hr(Date.now());
    const cumulative = AggregationTemporality.CUMULATIVE;
    const metrics: MetricData[] = [];
    const point = <T>(attributes: Attributes, value: T) => ({ startTime: start, endTime: end, attributes, value });
    const sum = (name: string, description: string, points: [Attributes, number][], unit = ''): void => {
      metrics.push({ descriptor: { name, description, unit, valueType: ValueType.DOUBLE }, aggregationTemporality: cumulative, dataPointType: DataPointType.SUM, isMonotonic: true, dataPoints: points.map(([a, n]) => point(a, n)) });
    };
    const gauge = (name: string, description: string, points: [Attributes, number][], unit = ''): void => {
      metrics.push({ descriptor: { name, description, unit, valueType: ValueType.DOUBLE }, aggregationTemporality: cumulative, dataPointType: DataPointType.GAUGE, dataPoints: points.map(([a, n]) => point(a, n)) });
    };
    const histogram = (name: string, description: string, h: HistogramSnapshot, unit = ''): void => {
      metrics.push({
        descriptor: { name, description, unit, valueType: ValueType.DOUBLE }, aggregationTemporality: cumulative, dataPointType: DataPointType.HISTOGRAM,
        dataPoints: [point({}, { buckets: { boundaries: h.bounds, counts: h.counts }, sum: h.sum, count: h.count })],
      });
    };

    const m = v.metrics;
    const totals: WorkerCounters = emptyWorkerCounters();
    addWorkerCounters(totals, m.retired);
    for (const w of v.workers) if (w.metrics !== null) addWorkerCounters(totals, w.metrics);
    const failed = Object.values(m.failures).reduce((a, b) => a + b, 0);

    sum('troupe_commands', 'Commands answered by the node, by outcome (ok: stored or a no-op; error: rejected or failed)', [[{ outcome: 'ok' }, m.commandsOk], [{ outcome: 'error' }, failed]]);
    sum('troupe_command_failures', 'Commands that failed, by reason (the error code; DOMAIN_REJECTION is a business rule)', Object.entries(m.failures).map(([reason, n]) => [{ reason }, n]));
    sum('troupe_events_appended', 'Events stored in JetStream', [[{}, totals.eventsAppended]]);
    sum('troupe_commits_appended', 'Commits (the events of one command) stored in JetStream', [[{}, totals.commitsAppended]]);
    sum('troupe_append_messages', 'JetStream messages (commit batches) acknowledged', [[{}, totals.messagesAppended]]);
    sum('troupe_append_bytes', 'Bytes of commit batches sent to JetStream', [[{}, totals.bytesAppended]], 'By');
    sum('troupe_append_failures', 'Commits whose append failed, by reason (CONCURRENCY: fenced by another writer; JOURNAL_UNAVAILABLE: refused or not acknowledged)', Object.entries(totals.appendFailures).map(([reason, n]) => [{ reason }, n]));
    sum('troupe_events_dead_lettered', 'Events consumers moved to a dead-letter queue', Object.entries(ops.deadLettered).map(([consumer, n]) => [{ consumer }, n]));
    sum('troupe_worker_restarts', 'Worker threads that died and were replaced', [[{}, m.workerRestarts]]);

    histogram('troupe_command_duration_seconds', 'Command latency on the node: from when its batch left for the worker (at most one event-loop turn after send) to its answer', m.commandSeconds.snapshot(), 's');
    histogram('troupe_append_batch_commits', 'Commits per JetStream message (batch size)', totals.batchCommits);
    histogram('troupe_append_duration_seconds', 'JetStream append latency, from publish to acknowledgement', totals.appendSeconds, 's');

    const byWorker = (f: (w: WorkerView) => number): [Attributes, number][] => v.workers.map((w) => [{ worker: String(w.slot) }, f(w)]);
    gauge('troupe_mailbox_depth', 'Commands received by a worker and not answered yet (actor mailboxes: stashed, deciding, waiting for the append)', byWorker((w) => w.metrics?.mailboxDepth ?? 0));
    gauge('troupe_worker_queue_depth', 'Commands queued on the main thread for a worker', byWorker((w) => w.queued));
    gauge('troupe_worker_commands_in_flight', 'Commands sent to a worker and not answered yet', byWorker((w) => w.inFlight));
    gauge('troupe_active_actors', 'Actors resident in memory, per worker', byWorker((w) => w.residentActors));
    gauge('troupe_appends_in_flight', 'JetStream messages sent and not acknowledged yet, per worker', byWorker((w) => w.inFlightAppends));
    gauge('troupe_workers_alive', 'Worker threads alive', [[{}, v.workers.filter((w) => w.alive).length]]);
    gauge('troupe_owned_shards', 'Shards this node writes', [[{}, v.ownedShards]]);

    const probes = [...ops.consumers.values()];
    const lag: [Attributes, number][] = [];
    const dlq: [Attributes, number][] = [];
    await Promise.all(probes.map(async (p) => {
      if (p.lag !== undefined) { const n = await within(v.probeTimeoutMs, `consumer ${p.name} lag`, p.lag).catch(() => NaN); lag.push([{ consumer: p.name }, n]); }
      if (p.dlqDepth !== undefined) { const n = await within(v.probeTimeoutMs, `consumer ${p.name} DLQ depth`, p.dlqDepth).catch(() => NaN); dlq.push([{ consumer: p.name }, n]); }
    }));
    gauge('troupe_consumer_lag', 'Log messages a consumer has not processed yet', lag);
    gauge('troupe_dlq_depth', 'Events in a consumer\'s dead-letter queue', dlq);

    return { resourceMetrics: { resource: undefined as never, scopeMetrics: [{ scope: { name: 'troupe' }, metrics }] }, errors: [] };
  }
}

/** Renders the node's metrics in the Prometheus text format (through the OTel Prometheus exporter). */
export interface MetricsRenderer {
  render(): Promise<string>;
  shutdown(): Promise<void>;
}

export async function createMetricsRenderer(view: () => Promise<NodeView>, nodeName: string): Promise<MetricsRenderer> {
  const [sdkMetrics, prom, resources] = await Promise.all([
    import('@opentelemetry/sdk-metrics'), import('@opentelemetry/exporter-prometheus'), import('@opentelemetry/resources'),
  ]);
  const producer = new NodeMetricProducer(view, { DataPointType: sdkMetrics.DataPointType, AggregationTemporality: sdkMetrics.AggregationTemporality });
  const exporter = new prom.PrometheusExporter({ preventServerStart: true, metricProducers: [producer], withoutScopeInfo: true });
  const provider = new sdkMetrics.MeterProvider({
    resource: resources.resourceFromAttributes({ 'service.name': 'troupe', 'service.instance.id': nodeName }),
    readers: [exporter],
  });
  const serializer = new prom.PrometheusSerializer('', false, undefined, false, true);
  return {
    async render() {
      const { resourceMetrics } = await exporter.collect();
      return serializer.serialize(resourceMetrics);
    },
    shutdown: () => provider.shutdown().catch(() => {}),
  };
}
