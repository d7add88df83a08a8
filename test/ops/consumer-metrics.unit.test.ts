// A consumer process's /metrics and /health without NATS: the per-consumer series and the
// threshold checks, from counters and probes registered in this process.
import { afterEach, describe, expect, it } from 'vitest';
import { consumerMetrics, ops, recordDeadLettered, registerConsumerProbe } from '../../runtime/ops/metrics.ts';
import { consumerChecks } from '../../runtime/ops/consumer-ops.ts';
import { renderConsumerMetrics } from '../../runtime/ops/prometheus.ts';

const unregister: (() => void)[] = [];
afterEach(() => {
  for (const f of unregister.splice(0)) f();
  ops.consumerMetrics.clear();
  for (const k of Object.keys(ops.deadLettered)) delete ops.deadLettered[k];
});

describe('consumer metrics', () => {
  it('writes each consumer\'s counters, latency histogram and gauges, a projection with its version label', async () => {
    const billing = consumerMetrics('billing');
    billing.handled = 7;
    billing.failed = 3;
    billing.retried = 2;
    billing.deadLettered = 1;
    billing.handlerSeconds.observe(0.003);
    billing.handlerSeconds.observe(2);
    consumerMetrics('orders', 2).handled = 5;
    unregister.push(registerConsumerProbe({
      name: 'billing', lag: () => 4, lagAgeMs: () => 1500, dlqDepth: () => 1,
      gauges: () => ({ bufferedMessages: 2, bufferedBytes: 300, breakerState: 1 }),
    }));
    unregister.push(registerConsumerProbe({ name: 'orders', version: 2, lag: () => 0, lagAgeMs: () => 0, dlqDepth: () => 0, gauges: () => ({ bufferedMessages: 0, bufferedBytes: 0 }) }));
    const t = await renderConsumerMetrics('c1', 50);
    expect(t).toContain('target_info{service_name="troupe-consumers",service_instance_id="c1"} 1\n');
    expect(t).toContain('troupe_consumer_events_handled_total{consumer="billing"} 7\ntroupe_consumer_events_handled_total{consumer="orders",version="2"} 5\n');
    expect(t).toContain('troupe_consumer_events_failed_total{consumer="billing"} 3\n');
    expect(t).toContain('troupe_consumer_events_retried_total{consumer="billing"} 2\n');
    expect(t).toContain('troupe_events_dead_lettered_total{consumer="billing"} 1\n');
    expect(t).toContain('troupe_consumer_handler_duration_seconds_count{consumer="billing"} 2\n');
    expect(t).toContain('troupe_consumer_handler_duration_seconds_bucket{consumer="billing",le="0.005"} 1\n');
    expect(t).toContain('troupe_consumer_handler_duration_seconds_bucket{consumer="billing",le="+Inf"} 2\n');
    expect(t).toContain('troupe_consumer_lag{consumer="billing"} 4\n');
    expect(t).toContain('troupe_consumer_lag_seconds{consumer="billing"} 1.5\n');
    expect(t).toContain('troupe_dlq_depth{consumer="orders",version="2"} 0\n');
    expect(t).toContain('troupe_consumer_buffered_bytes{consumer="billing"} 300\n');
    expect(t).toContain('troupe_consumer_breaker_state{consumer="billing"} 1\n');
    // No breaker, no breaker series.
    expect(t).not.toContain('troupe_consumer_breaker_state{consumer="orders"');
  });

  it('adds dead letters counted by recordDeadLettered to the consumer\'s own, in one series', async () => {
    consumerMetrics('billing').deadLettered = 2;
    recordDeadLettered('billing', 3);
    recordDeadLettered('other');
    const t = await renderConsumerMetrics('c1', 50);
    expect(t.match(/^troupe_events_dead_lettered_total\{consumer="billing"\}/gm)).toHaveLength(1);
    expect(t).toContain('troupe_events_dead_lettered_total{consumer="billing"} 5\n');
    expect(t).toContain('troupe_events_dead_lettered_total{consumer="other"} 1\n');
  });

  it('fails dlq_depth and consumer_lag naming the consumers above their thresholds', async () => {
    unregister.push(registerConsumerProbe({ name: 'billing', lag: () => 10, lagAgeMs: () => 90_000, dlqDepth: () => 3, maxDlqDepth: 2 }));
    unregister.push(registerConsumerProbe({ name: 'orders', version: 2, lag: () => 10, lagAgeMs: () => 5, dlqDepth: () => 0 }));
    const [dlq, lag] = consumerChecks({ maxDlqDepth: 100, maxConsumerLag: 100, maxLagAgeMs: 60_000 });
    const d = await dlq![1]();
    expect(d).toMatchObject({ ok: false, failing: ['billing'], consumers: { billing: { ok: false, value: 3, max: 2 }, 'orders@v2': { ok: true, value: 0, max: 100 } } });
    const l = await lag![1]();
    expect(l).toMatchObject({ ok: false, failing: ['billing'], consumers: { billing: { ok: false, value: 10, ageMs: 90_000, maxAgeMs: 60_000 }, 'orders@v2': { ok: true } } });
    const [, lagNoAge] = consumerChecks({ maxDlqDepth: 100, maxConsumerLag: 100 });
    expect(await lagNoAge![1]()).toMatchObject({ ok: true });
    const [, lagTight] = consumerChecks({ maxDlqDepth: 100, maxConsumerLag: 9 });
    expect(await lagTight![1]()).toMatchObject({ ok: false, failing: ['billing', 'orders@v2'] });
  });
});
