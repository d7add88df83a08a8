/**
 * Traces: spans of a command on the main thread, in the worker and in the client, trace context
 * across threads and NATS, and starting/stopping the OpenTelemetry SDK. With log.ts (pino), the
 * only files that import a telemetry library; /metrics is written by hand (prometheus.ts).
 *
 * The library itself depends on @opentelemetry/api alone. The SDK (@opentelemetry/sdk-node) is
 * loaded with a dynamic import, only when it is used: by the node's entry point (the CLI) and
 * by each worker thread when OTEL_* variables enable tracing.
 *
 * Why one file of ~430 lines: every span below shares the same on/off switch, tracer and the
 * encoding of context into task payloads and NATS headers; split, each part would import the
 * other's internals.
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
  context, trace, ProxyTracerProvider, ROOT_CONTEXT, SpanKind, SpanStatusCode, TraceFlags,
  type Attributes, type Context, type Link, type Span, type SpanContext, type Tracer,
} from '@opentelemetry/api';
import { InvalidOptionError } from '../errors.ts';

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

  /** `origin`: the traceparent the command arrived with (a timer it schedules keeps it: timerFiringTrace). */
  constructor(readonly origin: string, private readonly cmd: CommandLike) {
    this.parent = contextOf(origin);
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
 * A durable timer's firing (node/timers.ts): a `troupe.timer <type>.<command>` span that starts
 * a new trace, linked to the command that scheduled the timer (`scheduled`, its traceparent,
 * when it was traced). Returns the span's traceparent: the firing's command spans are its children.
 */
export function timerFiringTrace(name: string, scheduled: string | null, attributes: Attributes): string {
  const sc = parseTraceparent(scheduled);
  const links: Link[] = sc === null ? [] : [{ context: sc }];
  const span = tracer.startSpan(`troupe.timer ${name}`, { kind: SpanKind.INTERNAL, root: true, links, attributes }, ROOT_CONTEXT);
  const tp = formatTraceparent(span.spanContext());
  span.end();
  return tp;
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

/** The SDK package: an optional peer dependency of Troupe, loaded only when tracing is on. */
const SDK_NODE = '@opentelemetry/sdk-node';

async function loadSdkNode(): Promise<typeof import('@opentelemetry/sdk-node')> {
  try {
    return await import(SDK_NODE) as typeof import('@opentelemetry/sdk-node');
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw e;
    throw new InvalidOptionError(
      `tracing is on (OTEL_TRACES_EXPORTER or OTEL_EXPORTER_OTLP_ENDPOINT is set) but ${SDK_NODE} is not installed: ` +
      `install it in your app (npm i ${SDK_NODE}), or unset those variables (or set OTEL_SDK_DISABLED=true)`,
      { field: 'tracing', package: SDK_NODE },
    );
  }
}

/**
 * Start @opentelemetry/sdk-node in this thread when OTEL_* variables enable tracing (or
 * `force`): traces only (metrics go to /metrics, logs to stdout). Exporter, sampler, endpoint
 * and resource come from the standard variables. Returns whether tracing is on.
 */
export async function startTracingSdk(options: { serviceName?: string; force?: boolean } = {}): Promise<boolean> {
  if (sdk === null && (options.force === true || tracingConfigured())) {
    const { NodeSDK } = await loadSdkNode();
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
