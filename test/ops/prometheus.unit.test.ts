// /metrics without a node: the hand-written Prometheus text format (0.0.4).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { NodeMetrics, WorkerMetrics, ops, recordDeadLettered, registerConsumerProbe } from '../../runtime/ops/metrics.ts';
import { createMetricsRenderer, PrometheusText, renderNodeMetrics, type NodeView } from '../../runtime/ops/prometheus.ts';
import { parseImports } from '../helpers/wings.ts';

// What the OpenTelemetry Prometheus exporter wrote for the view below, before /metrics was
// written by hand: dashboards and alerts depend on these names, labels and buckets.
const EXPOSITION = readFileSync(fileURLToPath(new URL('../fixtures/metrics-exposition.txt', import.meta.url)), 'utf8');

const unregister: (() => void)[] = [];
afterEach(() => {
  for (const f of unregister.splice(0)) f();
  delete ops.deadLettered.billing;
});

function busyView(): NodeView {
  const nm = new NodeMetrics();
  nm.answered(0.7, null);
  nm.answered(3, null);
  nm.answered(120, { code: 'DOMAIN_REJECTION' });
  nm.failed('MALFORMED_COMMAND', 2);
  nm.answered(1e6, null);
  const w0 = new WorkerMetrics();
  w0.flushed(3, 1234);
  w0.appended(3, 5, 1.5);
  w0.flushed(5000, 99999);
  w0.appended(5000, 7000, 20000);
  w0.appendFailed('CONCURRENCY', 2);
  w0.mailboxDepth = 4;
  w0.timerFired(30);
  w0.timerFired(2500);
  w0.timersPending = 7;
  const w1 = new WorkerMetrics();
  w1.flushed(1, 10);
  w1.appended(1, 1, 0.2);
  w1.appendFailed('JOURNAL_UNAVAILABLE', 1);
  nm.workerLost(99);
  recordDeadLettered('billing', 3);
  unregister.push(registerConsumerProbe({ name: 'billing', lag: async () => 12, dlqDepth: async () => 3 }));
  // A probe that never answers is reported as NaN; its name needs escaping.
  unregister.push(registerConsumerProbe({ name: 'slow "q"\\x', lag: () => new Promise(() => {}) }));
  return {
    nodeName: 'n1', metrics: nm, ownedShards: 16, probeTimeoutMs: 50,
    workers: [
      { slot: 0, threadId: 1, alive: true, residentActors: 10, inFlightAppends: 2, queued: 3, inFlight: 5, metrics: w0.snapshot() },
      { slot: 1, threadId: 2, alive: false, residentActors: 0, inFlightAppends: 0, queued: 0, inFlight: 0, metrics: null },
      { slot: 2, threadId: 3, alive: true, residentActors: 1.5, inFlightAppends: 0, queued: 0, inFlight: 0, metrics: w1.snapshot() },
    ],
  };
}

describe('Prometheus text', () => {
  it('writes the same exposition as the OpenTelemetry exporter did: names, HELP, UNIT, TYPE, labels, cumulative buckets', async () => {
    expect(await renderNodeMetrics(busyView())).toBe(EXPOSITION);
  });

  it('writes every metric with its HELP and TYPE when nothing was counted yet', async () => {
    const text = await renderNodeMetrics({ nodeName: 'n2', metrics: new NodeMetrics(), ownedShards: 0, probeTimeoutMs: 50, workers: [] });
    expect(text).toContain('target_info{service_name="troupe",service_instance_id="n2"} 1\n');
    expect(text).toContain('# TYPE troupe_command_failures_total counter\n# HELP troupe_events_appended_total');
    expect(text).toContain('troupe_command_duration_seconds_count 0\n');
    expect(text).toContain('troupe_command_duration_seconds_bucket{le="+Inf"} 0\n');
    expect(text).toContain('# TYPE troupe_dlq_depth gauge\n');
    expect(text.endsWith('\n')).toBe(true);
  });

  it('counts authorize refusals by kind: commands answered or refused at the door with FORBIDDEN, and refused reads', async () => {
    const nm = new NodeMetrics();
    nm.answered(2, { code: 'FORBIDDEN' });
    nm.failed('FORBIDDEN');
    nm.failed('DOMAIN_REJECTION');
    nm.forbiddenRead('query');
    const text = await renderNodeMetrics({ nodeName: 'n3', metrics: nm, ownedShards: 0, probeTimeoutMs: 50, workers: [] });
    expect(text).toContain('troupe_requests_forbidden_total{kind="command"} 2\ntroupe_requests_forbidden_total{kind="query"} 1\n');
    expect(text).toContain('troupe_command_failures_total{reason="FORBIDDEN"} 2\n');
  });

  it('escapes label values and HELP text, and writes NaN and infinities as Prometheus reads them', () => {
    const text = new PrometheusText()
      .gauge('g', 'line one\nback\\slash', [[{ a: 'x"y\\z\nw' }, NaN], [{}, Infinity], [{ b: '1' }, -Infinity]])
      .histogram('h', 'a histogram', { bounds: [1, 2], counts: [1, 0, 2], sum: 7.5, count: 3 }, '', { k: 'v' })
      .text();
    expect(text).toBe([
      '# HELP g line one\\nback\\\\slash',
      '# TYPE g gauge',
      'g{a="x\\"y\\\\z\\nw"} NaN',
      'g +Inf',
      'g{b="1"} -Inf',
      '# HELP h a histogram',
      '# TYPE h histogram',
      'h_count{k="v"} 3',
      'h_sum{k="v"} 7.5',
      'h_bucket{k="v",le="1"} 1',
      'h_bucket{k="v",le="2"} 1',
      'h_bucket{k="v",le="+Inf"} 3',
      '',
    ].join('\n'));
  });

  it('renders Prometheus text: counters, histograms, per-worker gauges and consumer probes', async () => {
    const node = new NodeMetrics();
    node.answered(2, null);
    node.answered(3, { code: 'DOMAIN_REJECTION' });
    const w = new WorkerMetrics();
    w.flushed(2, 300);
    w.appended(2, 3, 4);
    w.appendFailed('CONCURRENCY', 5);
    w.mailboxDepth = 9;
    const unregister = registerConsumerProbe({ name: 'billing', lag: () => 17, dlqDepth: async () => 2 });
    recordDeadLettered('billing', 2);
    const view = async (): Promise<NodeView> => ({
      nodeName: 'n1', metrics: node, ownedShards: 8, probeTimeoutMs: 500,
      workers: [{ slot: 0, threadId: 1, alive: true, residentActors: 4, inFlightAppends: 1, queued: 6, inFlight: 3, metrics: w.snapshot() }],
    });
    const renderer = await createMetricsRenderer(view, 'n1');
    try {
      const text = await renderer.render();
      expect(text).toContain('troupe_commands_total{outcome="ok"} 1');
      expect(text).toContain('troupe_commands_total{outcome="error"} 1');
      expect(text).toContain('troupe_command_failures_total{reason="DOMAIN_REJECTION"} 1');
      expect(text).toContain('troupe_events_appended_total 3');
      expect(text).toContain('troupe_append_failures_total{reason="CONCURRENCY"} 5');
      expect(text).toContain('troupe_events_dead_lettered_total{consumer="billing"} 2');
      expect(text).toMatch(/# TYPE troupe_command_duration_seconds histogram\n/);
      expect(text).toContain('troupe_command_duration_seconds_bucket{le="0.0025"} 1');
      expect(text).toContain('troupe_command_duration_seconds_count 2');
      expect(text).toContain('troupe_append_batch_commits_bucket{le="2"} 1');
      expect(text).toContain('troupe_append_duration_seconds_bucket{le="0.005"} 1');
      expect(text).toContain('troupe_mailbox_depth{worker="0"} 9');
      expect(text).toContain('troupe_worker_queue_depth{worker="0"} 6');
      expect(text).toContain('troupe_active_actors{worker="0"} 4');
      expect(text).toContain('troupe_consumer_lag{consumer="billing"} 17');
      expect(text).toContain('troupe_dlq_depth{consumer="billing"} 2');
      expect(text).toContain('troupe_workers_alive 1');
    } finally {
      unregister();
      delete ops.deadLettered.billing;
      await renderer.shutdown();
    }
    expect(ops.consumers.has('billing')).toBe(false);
  });

  it('needs no OpenTelemetry package to render', () => {
    for (const file of ['prometheus.ts', 'metrics.ts']) {
      const text = readFileSync(fileURLToPath(new URL(`../../runtime/ops/${file}`, import.meta.url)), 'utf8');
      expect(parseImports(text).map((r) => r.specifier).filter((s) => !s.startsWith('.'))).toEqual([]);
    }
  });
});
