// Observability of a running node: one trace from a client process through the node's main
// thread and workers into a consumer; metrics and health through a worker crash under load.
//
// Spans of this process (the node's main thread, the consumer) go to an in-memory exporter.
// Worker threads and the client process set up their own SDK from OTEL_* variables and export
// OTLP/HTTP JSON to a small collector in this test, as they would to a real one.
import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { jetstreamManager } from '@nats-io/jetstream';
import { context, propagation, trace } from '@opentelemetry/api';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consume } from '../../runtime/consumers/consume.ts';
import { shardOf, type CommandResult } from '../../runtime/envelope.ts';
import { isTroupeError } from '../../runtime/errors.ts';
import { REPO_ROOT } from '../../runtime/testing/nats-server.ts';
import type { Troupe } from '../../runtime/node/system.ts';
import { refreshTracing } from '../../runtime/ops/tracing.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { allSettled, eventually, freshStream, natsConnect, range1, sleep, startNode, track, type Outcome } from '../helpers/troupe.ts';

const execFileAsync = promisify(execFile);
const tracedClient = fileURLToPath(new URL('../fixtures/traced-client.ts', import.meta.url));

/** A span as this test compares them, from either exporter. */
interface SpanRecord {
  name: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  attributes: Record<string, unknown>;
  source: string;
}

type OtlpValue = { stringValue?: string; intValue?: string | number; doubleValue?: number; boolValue?: boolean; arrayValue?: { values?: OtlpValue[] } };

function otlpValue(v: OtlpValue): unknown {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.arrayValue !== undefined) return (v.arrayValue.values ?? []).map(otlpValue);
  return undefined;
}

/** Receives OTLP/HTTP JSON trace exports (POST /v1/traces). */
async function startCollector(): Promise<{ url: string; spans: SpanRecord[]; server: Server }> {
  const spans: SpanRecord[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
          resourceSpans?: { resource?: { attributes?: { key: string; value: OtlpValue }[] }; scopeSpans?: { spans?: { name: string; traceId: string; spanId: string; parentSpanId?: string; attributes?: { key: string; value: OtlpValue }[] }[] }[] }[];
        };
        for (const rs of body.resourceSpans ?? []) {
          const service = String(otlpValue(rs.resource?.attributes?.find((a) => a.key === 'service.name')?.value ?? {}) ?? '');
          for (const ss of rs.scopeSpans ?? []) {
            for (const s of ss.spans ?? []) {
              spans.push({
                name: s.name, traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId ?? '', source: service,
                attributes: Object.fromEntries((s.attributes ?? []).map((a) => [a.key, otlpValue(a.value)])),
              });
            }
          }
        }
      } catch { /* not JSON: ignore */ }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, spans, server };
}

const OTEL_VARS = ['OTEL_TRACES_EXPORTER', 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_BSP_SCHEDULE_DELAY', 'OTEL_METRICS_EXPORTER', 'OTEL_LOGS_EXPORTER'];

describe('one trace from a client process through the node into a consumer', () => {
  const nats = useNatsServer();
  const memory = new InMemorySpanExporter();
  const saved = new Map(OTEL_VARS.map((k) => [k, process.env[k]]));
  let collector: Awaited<ReturnType<typeof startCollector>>;
  let sdk: NodeSDK;
  let node: Troupe | undefined;

  beforeAll(async () => {
    collector = await startCollector();
    Object.assign(process.env, {
      OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${collector.url}/v1/traces`,
      OTEL_BSP_SCHEDULE_DELAY: '50', OTEL_METRICS_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none',
    });
    // This process's SDK (main thread): the in-memory exporter, not the environment's.
    sdk = new NodeSDK({ serviceName: 'troupe-test', spanProcessors: [new SimpleSpanProcessor(memory)], metricReaders: [], logRecordProcessors: [], autoDetectResources: false });
    sdk.start();
  });
  afterAll(async () => {
    await node?.stop();
    await sdk?.shutdown();
    trace.disable();
    context.disable();
    propagation.disable();
    refreshTracing();
    for (const [k, v] of saved) if (v === undefined) delete process.env[k]; else process.env[k] = v;
    await new Promise<void>((r) => collector?.server.close(() => r()));
  });

  it('links client, node main thread, worker and consumer spans by parent, with ids and types as attributes', async () => {
    const s = freshStream('TRACE');
    node = await startNode(nats.url, s);
    const { stdout } = await execFileAsync(process.execPath, ['--import', 'tsx', tracedClient, nats.url, s.subjectPrefix, 'traced-1'], { cwd: REPO_ROOT, timeout: 45_000 });
    const flow = JSON.parse(stdout.trim().split('\n').pop()!) as { traceId: string; spanId: string; deposit: CommandResult };
    const deposit = flow.deposit;
    expect(deposit).toMatchObject({ commandId: 'traced-1-deposit', version: 2, events: [{ eventType: 'Deposited', sequence: 2 }] });

    // A consumer (consume(), runtime/consumers/consume.ts) handles the event: its handler runs inside the consumer span.
    const nc = await natsConnect(nats.url);
    let consumedIn = '';
    try {
      const msg = await (await jetstreamManager(nc)).streams.getMessage(s.stream, { seq: deposit.position });
      expect(msg?.header.get('traceparent')).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      const consumer = await consume({
        nc, stream: s.stream, subjectPrefix: s.subjectPrefix, dataDir: tempDir(), name: 'ledger-projection', eventTypes: ['Deposited'],
        handler: () => { consumedIn = trace.getSpan(context.active())?.spanContext().traceId ?? ''; },
      });
      try {
        await consumer.caughtUp();
      } finally {
        await consumer.stop();
      }
    } finally {
      await nc.close();
    }

    const main = (): SpanRecord[] => memory.getFinishedSpans().map((x) => ({
      name: x.name, traceId: x.spanContext().traceId, spanId: x.spanContext().spanId, parentSpanId: x.parentSpanContext?.spanId ?? '',
      attributes: { ...x.attributes }, source: 'main',
    }));
    const find = (name: string, all: SpanRecord[]) => all.find((x) => x.name === name && x.attributes['troupe.command.id'] === 'traced-1-deposit');
    // Worker and client spans arrive through the collector (batched every 50 ms).
    const all = await eventually(async () => {
      const spans = [...main(), ...collector.spans];
      for (const name of ['troupe.send Account.Deposit', 'troupe.command Account.Deposit', 'troupe.decide Account.Deposit', 'troupe.append', 'troupe.route', 'troupe.reply']) {
        if (name === 'troupe.route' || name === 'troupe.reply') {
          const command = find('troupe.command Account.Deposit', spans);
          if (command === undefined || !spans.some((x) => x.name === name && x.parentSpanId === command.spanId)) throw new Error(`no ${name} yet`);
        } else if (find(name, spans) === undefined) throw new Error(`no ${name} yet; have ${spans.map((x) => x.name).join(', ')}`);
      }
      return spans;
    }, 15_000);

    const send = find('troupe.send Account.Deposit', all)!;
    const command = find('troupe.command Account.Deposit', all)!;
    const decide = find('troupe.decide Account.Deposit', all)!;
    const append = find('troupe.append', all)!;
    const route = all.find((x) => x.name === 'troupe.route' && x.parentSpanId === command.spanId)!;
    const reply = all.find((x) => x.name === 'troupe.reply' && x.parentSpanId === command.spanId)!;
    const consumed = all.find((x) => x.name === 'troupe.consume Deposited')!;

    // One trace, started in the client process.
    for (const x of [send, command, route, decide, append, reply, consumed]) expect(x.traceId, x.name).toBe(flow.traceId);
    expect(consumedIn).toBe(flow.traceId);
    // Parents: client flow → send → command (main thread) → route/decide/append/reply → consume.
    expect(send.parentSpanId).toBe(flow.spanId);
    expect(command.parentSpanId).toBe(send.spanId);
    for (const x of [route, decide, append, reply]) expect(x.parentSpanId, x.name).toBe(command.spanId);
    expect(consumed.parentSpanId).toBe(append.spanId);
    // Where each was recorded: client process, this thread, a worker thread.
    expect([send.source, command.source, decide.source, append.source, consumed.source]).toEqual(['traced-client', 'main', 'troupe', 'troupe', 'main']);

    // Attributes: message ids, the aggregate, event types, the log position.
    expect(command.attributes).toMatchObject({
      'messaging.message.id': 'traced-1-deposit', 'troupe.aggregate.type': 'Account', 'troupe.aggregate.id': 'traced-1',
      'troupe.command.type': 'Deposit', 'troupe.correlation_id': 'flow-42', 'troupe.version': 2, 'troupe.position': deposit.position, 'troupe.event.types': ['Deposited'],
    });
    expect(decide.attributes).toMatchObject({ 'troupe.aggregate.id': 'traced-1', 'troupe.event.types': ['Deposited'], 'troupe.version': 2 });
    expect(append.attributes).toMatchObject({
      'messaging.system': 'nats', 'messaging.destination.name': `${s.subjectPrefix}.log.${command.attributes['troupe.shard']}`, 'troupe.position': deposit.position,
    });
    expect(consumed.attributes).toMatchObject({
      'messaging.message.id': deposit.events[0]!.eventId, 'troupe.event.type': 'Deposited', 'troupe.aggregate.id': 'traced-1',
      'troupe.position': deposit.position, 'messaging.consumer.group.name': 'ledger-projection',
    });
  });
});

describe('metrics and health through a worker crash under load', () => {
  const nats = useNatsServer();
  let node: Troupe | undefined;
  afterAll(async () => {
    await node?.stop();
  });

  it('counts the restart and the lost commands, re-opens the lost shards at once, and reports healthy again', async () => {
    node = await startNode(nats.url, { ...freshStream('CRASHOBS'), httpPort: 0 });
    const n = node;
    const url = n.httpUrl!;
    const accounts = range1(64).map((i) => `obs-${i}`);
    await Promise.all(accounts.map((a) => n.send('Account', a, 'OpenAccount', {})));
    const before = (await n.stats()).workers.map((w) => w.threadId);

    const sent: Outcome<CommandResult>[] = [];
    let stop = false;
    const load = (async () => {
      for (let i = 0; !stop; i++) {
        sent.push(track(n.send('Account', accounts[i % accounts.length]!, 'Deposit', { amount: 1 }, { commandId: `obs-dep-${i}` })));
        if (i % 200 === 199) await sleep(1);
      }
    })();
    await sleep(300);
    // A burst for worker 0's actors in the same turn as the crash: it leaves for worker 0 before
    // the worker learns it must die, and cannot all be acknowledged before it does, so commands
    // are surely lost with the worker.
    const crashed = accounts.filter((a) => shardOf('Account', a, n.options.shards) % n.options.workers === 0);
    for (let k = 0; k < 200; k++) sent.push(track(n.send('Account', crashed[k % crashed.length]!, 'Deposit', { amount: 1 }, { commandId: `obs-burst-${k}` })));
    const inFlight = sent.filter((o) => !o.settled).length;
    await n.crashWorkerOf(0);
    await sleep(300);
    stop = true;
    await load;
    await allSettled(sent, 30_000);

    const lost = sent.filter((o) => o.error !== undefined);
    for (const o of lost) {
      expect(isTroupeError(o.error), String(o.error)).toBe(true);
      expect((o.error as { retryable: boolean }).retryable).toBe(true);
    }
    const workerLost = lost.filter((o) => isTroupeError(o.error, 'WORKER_LOST')).length;
    expect(inFlight).toBeGreaterThan(0);
    expect(workerLost, 'no command was lost with the worker: the crash was not under load').toBeGreaterThan(0);

    // The replacement worker re-opened the lost worker's shards before any command asked for them.
    const stats = await eventually(async () => {
      const st = await n.stats();
      if (st.workers.some((w) => w.shards !== 4)) throw new Error(`shards per worker: ${st.workers.map((w) => w.shards).join(', ')}`);
      return st;
    }, 15_000);
    const after = stats.workers.map((w) => w.threadId);
    expect(after[0]).not.toBe(before[0]);
    expect(after[1]).toBe(before[1]);

    const health = await eventually(async () => {
      const r = await fetch(`${url}/health`);
      const body = await r.json() as { status: string; checks: { workers: { ok: boolean; alive: number } } };
      if (r.status !== 200) throw new Error(JSON.stringify(body));
      return body;
    }, 15_000);
    expect(health.checks.workers).toMatchObject({ ok: true, alive: 2 });
    expect((await fetch(`${url}/ready`)).status).toBe(200);

    const text = await (await fetch(`${url}/metrics`)).text();
    const value = (series: string) => Number(text.split('\n').find((l) => l.startsWith(`${series} `))?.slice(series.length + 1) ?? 'NaN');
    expect(value('troupe_worker_restarts_total')).toBe(1);
    expect(value('troupe_workers_alive')).toBe(2);
    expect(value('troupe_command_failures_total{reason="WORKER_LOST"}')).toBe(workerLost);
    // Counters keep what the dead worker counted at the last scrape and never go down.
    const events = value('troupe_events_appended_total');
    expect(events).toBeGreaterThan(0);
    await n.send('Account', 'obs-1', 'Deposit', { amount: 1 });
    const again = await (await fetch(`${url}/metrics`)).text();
    expect(Number(again.split('\n').find((l) => l.startsWith('troupe_events_appended_total '))!.split(' ')[1])).toBeGreaterThanOrEqual(events + 1);
  });
});
