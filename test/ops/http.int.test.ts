// The node's HTTP server: /health with each check, /ready, /metrics, against a real nats-server.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordDeadLettered, registerConsumerProbe, registerHealthCheck } from '../../runtime/ops/metrics.ts';
import type { Troupe } from '../../runtime/node/system.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { freshStream, startNode } from '../helpers/troupe.ts';

async function get(url: string): Promise<{ status: number; type: string; text: string; json: () => Record<string, any> }> {
  const r = await fetch(url);
  const text = await r.text();
  return { status: r.status, type: r.headers.get('content-type') ?? '', text, json: () => JSON.parse(text) as Record<string, any> };
}

/** The value of one sample line of the Prometheus text, or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('HTTP endpoints', () => {
  const nats = useNatsServer();
  let node: Troupe;
  let url: string;

  beforeAll(async () => {
    node = await startNode(nats.url, { ...freshStream('HTTP'), httpPort: 0 });
    url = node.httpUrl!;
  });
  afterAll(async () => {
    await node?.stop();
  });

  it('listens on 127.0.0.1 by default', () => {
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  });

  it('answers /health with 200 and every check when the node is well', async () => {
    const r = await get(`${url}/health`);
    expect(r.status).toBe(200);
    expect(r.type).toMatch(/application\/json/);
    const body = r.json();
    expect(body.status).toBe('ok');
    expect(Object.keys(body.checks).sort()).toEqual(['consumer_lag', 'dlq_depth', 'jetstream', 'lmdb', 'nats', 'workers']);
    for (const [name, check] of Object.entries(body.checks as Record<string, { ok: boolean }>)) expect(check.ok, name).toBe(true);
    expect(body.checks.workers).toMatchObject({ alive: 2, expected: 2 });
    expect(body.checks.jetstream.stream).toBe(node.options.stream);
  });

  it('answers /ready with 200 while the node takes commands', async () => {
    const r = await get(`${url}/ready`);
    expect(r.status).toBe(200);
    expect(r.json()).toMatchObject({ ready: true, phase: 'running' });
  });

  it('exports command, event, failure, latency and batch metrics for Prometheus', async () => {
    await node.send('Account', 'm1', 'OpenAccount', {});
    await Promise.all(Array.from({ length: 20 }, (_, i) => node.send('Account', 'm1', 'Deposit', { amount: i + 1 })));
    await node.send('Account', 'm1', 'Withdraw', { amount: 1_000_000 }).catch(() => {});
    await node.send('Account', 'bad id', 'OpenAccount', {}).catch(() => {});
    const r = await get(`${url}/metrics`);
    expect(r.status).toBe(200);
    expect(r.type).toMatch(/^text\/plain; version=0\.0\.4/);
    const t = r.text;
    expect(sample(t, 'troupe_commands_total{outcome="ok"}')).toBe(21);
    expect(sample(t, 'troupe_command_failures_total{reason="DOMAIN_REJECTION"}')).toBe(1);
    expect(sample(t, 'troupe_command_failures_total{reason="MALFORMED_COMMAND"}')).toBe(1);
    expect(sample(t, 'troupe_events_appended_total')).toBe(21);
    expect(sample(t, 'troupe_commits_appended_total')).toBe(21);
    expect(sample(t, 'troupe_command_duration_seconds_count')).toBe(22);
    expect(sample(t, 'troupe_append_batch_commits_sum')).toBe(21);
    expect(sample(t, 'troupe_append_duration_seconds_count')).toBe(sample(t, 'troupe_append_messages_total'));
    expect(sample(t, 'troupe_workers_alive')).toBe(2);
    expect(sample(t, 'troupe_owned_shards')).toBe(8);
    const active = [0, 1].map((w) => sample(t, `troupe_active_actors{worker="${w}"}`) ?? 0);
    expect(active.reduce((a, b) => a + b, 0)).toBe(1);
    for (const g of ['troupe_mailbox_depth', 'troupe_worker_queue_depth', 'troupe_worker_commands_in_flight', 'troupe_appends_in_flight']) {
      expect(sample(t, `${g}{worker="0"}`), g).toBe(0);
    }
  });

  it('fails /health with 503 when a consumer is over its lag or DLQ threshold, and shows the gauges', async () => {
    const unregister = registerConsumerProbe({ name: 'slow', lag: () => 5_000, maxLag: 100, dlqDepth: () => 3, maxDlqDepth: 10 });
    recordDeadLettered('slow', 3);
    try {
      const r = await get(`${url}/health`);
      expect(r.status).toBe(503);
      const body = r.json();
      expect(body.status).toBe('fail');
      expect(body.checks.consumer_lag).toEqual({ ok: false, failing: ['slow'], consumers: { slow: { ok: false, value: 5_000, max: 100 } } });
      expect(body.checks.dlq_depth).toEqual({ ok: true, consumers: { slow: { ok: true, value: 3, max: 10 } } });
      const m = (await get(`${url}/metrics`)).text;
      expect(sample(m, 'troupe_consumer_lag{consumer="slow"}')).toBe(5_000);
      expect(sample(m, 'troupe_dlq_depth{consumer="slow"}')).toBe(3);
      expect(sample(m, 'troupe_events_dead_lettered_total{consumer="slow"}')).toBe(3);
    } finally {
      unregister();
    }
    expect((await get(`${url}/health`)).status).toBe(200);
  });

  it('uses the node\'s thresholds for a probe without its own', async () => {
    const unregister = registerConsumerProbe({ name: 'dlq-heavy', dlqDepth: () => node.options.maxDlqDepth + 1 });
    try {
      const body = (await get(`${url}/health`)).json();
      expect(body.checks.dlq_depth.consumers['dlq-heavy']).toEqual({ ok: false, value: node.options.maxDlqDepth + 1, max: node.options.maxDlqDepth });
    } finally {
      unregister();
    }
  });

  it('runs registered health checks and reports one that throws or hangs as failed', async () => {
    const a = registerHealthCheck('downstream', () => ({ ok: true, latencyMs: 3 }));
    const b = registerHealthCheck('broken', () => { throw new Error('downstream refused'); });
    try {
      const r = await get(`${url}/health`);
      expect(r.status).toBe(503);
      expect(r.json().checks.downstream).toEqual({ ok: true, latencyMs: 3 });
      expect(r.json().checks.broken).toEqual({ ok: false, error: 'downstream refused' });
    } finally {
      a();
      b();
    }
  });

  it('answers an unknown path with 404 and a write with 405', async () => {
    expect((await get(`${url}/nope`)).status).toBe(404);
    expect((await fetch(`${url}/health`, { method: 'POST' })).status).toBe(405);
  });
});

describe('HTTP server options', () => {
  const nats = useNatsServer();

  it('takes its port from TROUPE_HTTP_PORT, and serves nothing without it', async () => {
    const before = process.env.TROUPE_HTTP_PORT;
    let node: Troupe | undefined;
    try {
      delete process.env.TROUPE_HTTP_PORT;
      node = await startNode(nats.url, freshStream('HTTPENV'));
      expect(node.httpUrl).toBeNull();
      await node.stop();
      process.env.TROUPE_HTTP_PORT = '0';
      node = await startNode(nats.url, freshStream('HTTPENV'));
      expect(node.httpUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    } finally {
      if (before === undefined) delete process.env.TROUPE_HTTP_PORT;
      else process.env.TROUPE_HTTP_PORT = before;
      await node?.stop();
    }
  });

  it('refuses to start on a port that is taken, naming the option', async () => {
    const first = await startNode(nats.url, { ...freshStream('HTTPTAKEN'), httpPort: 0 });
    try {
      const port = Number(new URL(first.httpUrl!).port);
      await expect(startNode(nats.url, { ...freshStream('HTTPTAKEN'), httpPort: port })).rejects.toThrow(/options\.httpPort or TROUPE_HTTP_PORT/);
    } finally {
      await first.stop();
    }
  });

  it('turns /ready and /health to 503 while stopping, and closes the server once stopped', async () => {
    const node = await startNode(nats.url, { ...freshStream('HTTPSTOP'), httpPort: 0 });
    const url = node.httpUrl!;
    const stopping = node.stop();
    expect(node.ready()).toMatchObject({ ready: false, phase: 'stopping' });
    await stopping;
    expect(node.ready()).toMatchObject({ ready: false, phase: 'stopped' });
    await expect(fetch(`${url}/ready`)).rejects.toThrow();
  });
});
