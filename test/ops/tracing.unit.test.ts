// Telemetry without a node: trace context helpers, consumer spans, plain metrics, log flags (Prometheus text: prometheus.unit.test.ts).
import { context, trace } from '@opentelemetry/api';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLog, SILENT_LOG } from '../../runtime/ops/log.ts';
import {
  NodeMetrics, PlainHistogram, WorkerMetrics, registerConsumerProbe, registerHealthCheck,
} from '../../runtime/ops/metrics.ts';
import {
  commitTraces, formatTraceparent, parseTraceparent, refreshTracing, startCommandTrace, traceBatchHeaders,
  tracing, tracingConfigured, withConsumerSpan, WorkerCommandTrace, TRACE_HEADER, TRACEPARENT,
} from '../../runtime/ops/tracing.ts';

class Headers {
  readonly map = new Map<string, string>();
  get(k: string): string { return this.map.get(k) ?? ''; }
  set(k: string, v: string): void { this.map.set(k, v); }
}

const event = {
  eventId: 'ev-1', eventType: 'Deposited', aggregateType: 'Account', aggregateId: 'a1', commandId: 'cmd-1',
  correlationId: 'corr-1', sequence: 2, position: 7, payload: { amount: 5 },
};

describe('telemetry before a tracer provider is registered', () => {
  it('keeps tracing off and runs a consumer handler without a span', () => {
    expect(refreshTracing()).toBe(false);
    expect(withConsumerSpan(event, new Headers(), () => 42)).toBe(42);
    expect(tracing.on).toBe(false);
  });

  it('turns tracing on only when OTEL_* variables name an exporter or an endpoint', () => {
    expect(tracingConfigured({})).toBe(false);
    expect(tracingConfigured({ OTEL_TRACES_EXPORTER: 'otlp' })).toBe(true);
    expect(tracingConfigured({ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' })).toBe(false);
    expect(tracingConfigured({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://127.0.0.1:4318/v1/traces' })).toBe(true);
    expect(tracingConfigured({ OTEL_TRACES_EXPORTER: 'console', OTEL_SDK_DISABLED: 'true' })).toBe(false);
  });
});

describe('traces with an in-memory exporter', () => {
  const exporter = new InMemorySpanExporter();
  let sdk: NodeSDK;
  const byName = (name: string): ReadableSpan => {
    const s = exporter.getFinishedSpans().find((x) => x.name === name);
    if (s === undefined) throw new Error(`no span ${name}; have ${exporter.getFinishedSpans().map((x) => x.name).join(', ')}`);
    return s;
  };

  beforeAll(() => {
    sdk = new NodeSDK({ spanProcessors: [new SimpleSpanProcessor(exporter)], metricReaders: [], logRecordProcessors: [], autoDetectResources: false });
    sdk.start();
    expect(refreshTracing()).toBe(true);
  });
  afterAll(async () => {
    await sdk.shutdown();
    refreshTracing();
  });

  it('round-trips a W3C traceparent and refuses malformed ones', () => {
    const sc = { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', traceFlags: 1 };
    const tp = formatTraceparent(sc);
    expect(tp).toBe('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
    expect(parseTraceparent(tp)).toEqual({ ...sc, isRemote: true });
    expect(parseTraceparent('00-00000000000000000000000000000000-00f067aa0ba902b7-01')).toBeNull();
    expect(parseTraceparent('garbage')).toBeNull();
    expect(parseTraceparent(undefined)).toBeNull();
  });

  it('follows one command from the main thread through decide and append into a consumer', async () => {
    exporter.reset();
    const cmd = { commandId: 'cmd-1', type: 'Deposit', aggregateType: 'Account', aggregateId: 'a1', correlationId: 'corr-1', causationId: null, shard: 3 };
    const main = startCommandTrace(cmd, null, true);
    main.enqueued(1);
    const traceparent = main.routed(); // crosses to the worker in the batch

    const worker = new WorkerCommandTrace(traceparent, cmd);
    worker.decided(performance.now() - 1, [{ eventType: 'Deposited' }], 2);
    const h = new Headers();
    traceBatchHeaders(h, 'troupe.log.3', 'writer.3.6', [{ commandId: 'cmd-1', cmd: { spans: worker } }, { commandId: 'cmd-untraced', cmd: { spans: null } }]);
    const result = { version: 2, position: 7, duplicate: false, events: [{ eventType: 'Deposited' }] };
    worker.replied(null, result);
    main.answered();
    main.end(null, result);

    const handled = await withConsumerSpan(event, h, async () => trace.getSpan(context.active())?.spanContext().spanId, { consumer: 'billing' });

    const command = byName('troupe.command Account.Deposit');
    const route = byName('troupe.route');
    const decide = byName('troupe.decide Account.Deposit');
    const append = byName('troupe.append');
    const reply = byName('troupe.reply');
    const consume = byName('troupe.consume Deposited');
    const traceId = command.spanContext().traceId;
    for (const s of [route, decide, append, reply, consume]) expect(s.spanContext().traceId).toBe(traceId);
    for (const s of [route, decide, append, reply]) expect(s.parentSpanContext?.spanId).toBe(command.spanContext().spanId);
    expect(consume.parentSpanContext?.spanId).toBe(append.spanContext().spanId);
    expect(handled).toBe(consume.spanContext().spanId);

    expect(command.attributes).toMatchObject({
      'messaging.message.id': 'cmd-1', 'troupe.aggregate.type': 'Account', 'troupe.aggregate.id': 'a1', 'troupe.command.type': 'Deposit',
      'troupe.correlation_id': 'corr-1', 'troupe.shard': 3, 'troupe.version': 2, 'troupe.position': 7, 'troupe.event.types': ['Deposited'],
    });
    expect(decide.attributes).toMatchObject({ 'troupe.event.types': ['Deposited'], 'troupe.version': 2, 'troupe.aggregate.id': 'a1' });
    expect(append.attributes).toMatchObject({ 'messaging.destination.name': 'troupe.log.3', 'troupe.batch.message_id': 'writer.3.6', 'messaging.batch.message_count': 2, 'troupe.position': 7 });
    expect(consume.attributes).toMatchObject({
      'messaging.message.id': 'ev-1', 'troupe.event.type': 'Deposited', 'troupe.aggregate.id': 'a1', 'messaging.consumer.group.name': 'billing',
    });
    // The message carries one traceparent, and one context per traced commit.
    expect(h.get(TRACEPARENT)).toBe(worker.traceparent);
    expect(commitTraces(h)).toEqual(new Map([['cmd-1', worker.traceparent!]]));
  });

  it('parents a consumer span on the message traceparent when its commit is not listed, and links it', () => {
    exporter.reset();
    const h = new Headers();
    h.set(TRACEPARENT, '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
    h.set(TRACE_HEADER, 'other-cmd 00-11111111111111111111111111111111-2222222222222222-01');
    withConsumerSpan(event, h, () => undefined);
    const span = byName('troupe.consume Deposited');
    expect(span.spanContext().traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(span.parentSpanContext?.spanId).toBe('00f067aa0ba902b7');
  });

  it('marks the consumer span failed and rethrows when the handler throws', async () => {
    exporter.reset();
    await expect(withConsumerSpan(event, null, async () => { throw Object.assign(new Error('boom'), { code: 'HANDLER' }); })).rejects.toThrow('boom');
    const span = byName('troupe.consume Deposited');
    expect(span.status.code).toBe(2);
    expect(span.attributes['troupe.error.code']).toBe('HANDLER');
    expect(span.events.map((e) => e.name)).toContain('exception');
  });

  it('records a rejected command on its decide span and opens no append span', () => {
    exporter.reset();
    const cmd = { commandId: 'cmd-2', type: 'Withdraw', aggregateType: 'Account', aggregateId: 'a1' };
    const t = new WorkerCommandTrace('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', cmd);
    t.replied({ code: 'DOMAIN_REJECTION', message: 'insufficient-funds', retryable: false }, null); // replied inside decide
    t.decided(performance.now(), null, 1);
    expect(t.traceparent).toBeNull();
    const decide = byName('troupe.decide Account.Withdraw');
    expect(decide.status.code).toBe(2);
    expect(decide.attributes).toMatchObject({ 'troupe.error.code': 'DOMAIN_REJECTION', 'troupe.error.retryable': false });
    expect(exporter.getFinishedSpans().some((s) => s.name === 'troupe.append')).toBe(false);
  });
});

describe('metrics', () => {
  it('counts n observations at once in the bucket of their value', () => {
    const h = new PlainHistogram([1, 10]);
    h.observe(0.5);
    h.observe(10, 3);
    h.observe(11, 2);
    expect(h.snapshot()).toEqual({ bounds: [1, 10], counts: [1, 3, 2], sum: 0.5 + 30 + 22, count: 6 });
  });

  it('keeps counters monotonic when a worker dies: its last snapshot is retired, not dropped', () => {
    const node = new NodeMetrics();
    const w = new WorkerMetrics();
    w.appended(10, 12, 3);
    node.lastByThread.set(7, w.snapshot());
    node.workerLost(7);
    expect(node.workerRestarts).toBe(1);
    expect(node.retired).toMatchObject({ commitsAppended: 10, eventsAppended: 12, messagesAppended: 1 });
    expect(node.lastByThread.has(7)).toBe(false);
  });

  it('refuses a probe or check without a name', () => {
    expect(() => registerConsumerProbe({ name: '' })).toThrow(/name/);
    expect(() => registerHealthCheck('', () => ({ ok: true }))).toThrow(/name/);
  });
});

describe('logs', () => {
  it('exposes one flag per level so that hot paths skip lines that are switched off', () => {
    const warn = createLog('warn');
    expect([warn.error, warn.warn, warn.info, warn.debug]).toEqual([true, true, false, false]);
    const debug = createLog('debug');
    expect([debug.info, debug.debug]).toEqual([true, true]);
    expect([SILENT_LOG.error, SILENT_LOG.warn, SILENT_LOG.info, SILENT_LOG.debug]).toEqual([false, false, false, false]);
  });
});
