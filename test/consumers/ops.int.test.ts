// A consumer process on its own (test/fixtures/ops-consumer.ts, a child process with no node)
// serves /health, /ready and /metrics with its per-consumer series; /health turns 503 naming
// the consumer and the check when its DLQ depth or its lag passes the threshold.
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Troupe } from '../../runtime/node/system.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { eventually, freshStream, startNode } from '../helpers/troupe.ts';
import { startConsumerProcess, stopProcess } from '../ops/consumer-process.ts';

async function get(url: string): Promise<{ status: number; text: string; json: () => Record<string, any> }> {
  const r = await fetch(url);
  const text = await r.text();
  return { status: r.status, text, json: () => JSON.parse(text) as Record<string, any> };
}

/** The value of one sample line of the Prometheus text, or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('a consumer process on its own', () => {
  const nats = useNatsServer();
  const env = freshStream('CONOPS');
  const dataDir = tempDir();
  const hold = join(dataDir, 'hold');
  let node: Troupe;
  let proc: Awaited<ReturnType<typeof startConsumerProcess>>;

  beforeAll(async () => {
    node = await startNode(nats.url, env);
    proc = await startConsumerProcess(nats.url, env, dataDir);
  }, 60_000);
  afterAll(async () => {
    await stopProcess(proc?.child);
    await node?.stop();
  });

  it('serves /health, /ready and /metrics with the series of each consumer, on one port shared by its consumers', async () => {
    expect(proc.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(proc.shared).toBe(true);
    await node.send('Account', 'a1', 'OpenAccount', {});
    await node.send('Account', 'a1', 'Deposit', { amount: 5 });
    await node.send('Account', 'a1', 'Deposit', { amount: 7 });
    const t = await eventually(async () => {
      const m = await get(`${proc.url}/metrics`);
      expect(sample(m.text, 'troupe_consumer_events_handled_total{consumer="billing"}')).toBe(2);
      expect(sample(m.text, 'troupe_consumer_events_handled_total{consumer="laggard"}')).toBe(3);
      expect(sample(m.text, 'troupe_consumer_events_handled_total{consumer="balances",version="2"}')).toBe(2);
      expect(sample(m.text, 'troupe_consumer_lag{consumer="laggard"}')).toBe(0);
      return m.text;
    }, 15_000);
    expect(t).toMatch(/^target_info\{service_name="troupe-consumers",service_instance_id="[^"]+"\} 1$/m);
    expect(sample(t, 'troupe_consumer_handler_duration_seconds_count{consumer="billing"}')).toBe(2);
    expect(sample(t, 'troupe_consumer_handler_duration_seconds_bucket{consumer="billing",le="+Inf"}')).toBe(2);
    expect(sample(t, 'troupe_consumer_events_failed_total{consumer="billing"}')).toBe(0);
    expect(sample(t, 'troupe_events_dead_lettered_total{consumer="billing"}')).toBe(0);
    expect(sample(t, 'troupe_dlq_depth{consumer="billing"}')).toBe(0);
    expect(sample(t, 'troupe_consumer_lag_seconds{consumer="billing"}')).toBe(0);
    expect(sample(t, 'troupe_consumer_buffered_bytes{consumer="billing"}')).toBe(0);
    expect(sample(t, 'troupe_consumer_breaker_state{consumer="billing"}')).toBe(0);
    expect(sample(t, 'troupe_dlq_depth{consumer="balances",version="2"}')).toBe(0);

    const h = await get(`${proc.url}/health`);
    expect(h.status).toBe(200);
    const body = h.json();
    expect(body.status).toBe('ok');
    expect(Object.keys(body.checks).sort()).toEqual(['consumer_lag', 'consumers', 'dlq_depth']);
    expect(Object.keys(body.checks.consumers.consumers).sort()).toEqual(['balances@v2', 'billing', 'laggard']);
    expect(body.checks.dlq_depth.consumers.billing).toMatchObject({ ok: true, value: 0, max: 1 });
    expect((await get(`${proc.url}/ready`)).status).toBe(200);
  }, 30_000);

  it('turns /health to 503 naming consumer_lag and the consumer when it falls behind by age, then by count, and back to 200 once it catches up', async () => {
    writeFileSync(hold, '');
    try {
      await node.send('Account', 'a1', 'Deposit', { amount: 1 });
      const byAge = await eventually(async () => {
        const h = await get(`${proc.url}/health`);
        expect(h.status).toBe(503);
        return h.json();
      }, 10_000);
      expect(byAge.failing).toEqual(['consumer_lag']);
      expect(byAge.checks.consumer_lag.failing).toEqual(['laggard']);
      const lag = byAge.checks.consumer_lag.consumers.laggard;
      expect(lag.value).toBe(1);
      expect(lag.max).toBe(3);
      expect(lag.ageMs).toBeGreaterThan(1_500);
      expect(lag.maxAgeMs).toBe(1_500);
      expect(byAge.checks.consumer_lag.consumers.billing.ok).toBe(true);
      const m = await get(`${proc.url}/metrics`);
      expect(sample(m.text, 'troupe_consumer_lag_seconds{consumer="laggard"}')).toBeGreaterThan(1.5);
      expect(sample(m.text, 'troupe_consumer_buffered_messages{consumer="laggard"}')).toBe(1);

      for (let i = 0; i < 4; i++) await node.send('Account', 'a1', 'Deposit', { amount: 2 });
      const byCount = await eventually(async () => {
        const b = (await get(`${proc.url}/health`)).json();
        expect(b.checks.consumer_lag.consumers.laggard.value).toBe(5);
        return b;
      }, 10_000);
      expect(byCount.checks.consumer_lag.failing).toEqual(['laggard']);
      expect(sample((await get(`${proc.url}/metrics`)).text, 'troupe_consumer_lag{consumer="laggard"}')).toBe(5);
    } finally {
      rmSync(hold, { force: true });
    }
    const healed = await eventually(async () => {
      const h = await get(`${proc.url}/health`);
      expect(h.status).toBe(200);
      return h.json();
    }, 15_000);
    expect(healed.checks.consumer_lag.consumers.laggard).toMatchObject({ ok: true, value: 0, ageMs: 0 });
  }, 40_000);

  it('turns /health to 503 naming dlq_depth and the consumer when its dead letters pass the threshold', async () => {
    await node.send('Account', 'a1', 'Deposit', { amount: 13 });
    await eventually(async () => {
      const m = await get(`${proc.url}/metrics`);
      expect(sample(m.text, 'troupe_dlq_depth{consumer="billing"}')).toBe(1);
    }, 15_000);
    // At the threshold (1), not past it.
    expect((await get(`${proc.url}/health`)).status).toBe(200);

    await node.send('Account', 'a2', 'OpenAccount', {});
    await node.send('Account', 'a2', 'Deposit', { amount: 13 });
    const body = await eventually(async () => {
      const h = await get(`${proc.url}/health`);
      expect(h.status).toBe(503);
      return h.json();
    }, 15_000);
    expect(body.status).toBe('fail');
    expect(body.failing).toEqual(['dlq_depth']);
    expect(body.checks.dlq_depth.failing).toEqual(['billing']);
    expect(body.checks.dlq_depth.consumers.billing).toEqual({ ok: false, max: 1, value: 2 });
    expect(body.checks.consumer_lag.ok).toBe(true);

    const t = (await get(`${proc.url}/metrics`)).text;
    // Each poison event: one failed attempt retried, a second one dead-lettered.
    expect(sample(t, 'troupe_consumer_events_failed_total{consumer="billing"}')).toBe(4);
    expect(sample(t, 'troupe_consumer_events_retried_total{consumer="billing"}')).toBe(2);
    expect(sample(t, 'troupe_events_dead_lettered_total{consumer="billing"}')).toBe(2);
    expect(sample(t, 'troupe_dlq_depth{consumer="billing"}')).toBe(2);
    // The other consumers are not affected.
    expect(sample(t, 'troupe_dlq_depth{consumer="laggard"}')).toBe(0);
  }, 40_000);
});
