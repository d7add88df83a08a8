// The Grafana dashboard (docs/grafana/troupe.json) queries only metrics that exist: every name in
// its PromQL is in the /metrics output of a real node (with a consumer beside it) or of a real
// consumer process, after a few commands, a rejection and a dead letter.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consume, type Consumer } from '../../runtime/consumers/consume.ts';
import type { Troupe } from '../../runtime/node/system.ts';
import { REPO_ROOT } from '../../runtime/testing/nats-server.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { eventually, freshStream, startNode } from '../helpers/troupe.ts';
import { startConsumerProcess, stopProcess } from './consumer-process.ts';

interface Panel { type: string; title: string; targets?: { expr: string }[]; panels?: Panel[] }

const dashboard = JSON.parse(readFileSync(join(REPO_ROOT, 'docs/grafana/troupe.json'), 'utf8')) as { panels: Panel[] };

/** Every metric name in the dashboard's queries, with the panel that asks for it. */
function queriedNames(): Map<string, string> {
  const names = new Map<string, string>();
  const walk = (ps: Panel[]) => {
    for (const p of ps) {
      for (const t of p.targets ?? []) for (const m of t.expr.matchAll(/\b(troupe_[a-z0-9_]+|target_info)\b/g)) names.set(m[1]!, p.title);
      walk(p.panels ?? []);
    }
  };
  walk(dashboard.panels);
  return names;
}

/** The sample names and the declared families (# TYPE lines) of a Prometheus text. */
function exposition(text: string): { samples: Set<string>; families: Set<string> } {
  const samples = new Set<string>();
  const families = new Set<string>();
  for (const line of text.split('\n')) {
    if (line.startsWith('# TYPE ')) families.add(line.split(' ')[2]!);
    else if (line !== '' && !line.startsWith('#')) samples.add(line.split(/[{ ]/, 1)[0]!);
  }
  return { samples, families };
}

// Families that hold a series only once their event happened: an append fenced or refused,
// a request refused by an authorize rule. For these the dashboard needs the declared family.
const EVENT_ONLY = new Set(['troupe_append_failures_total', 'troupe_requests_forbidden_total']);

describe('the Grafana dashboard', () => {
  const nats = useNatsServer();
  const env = freshStream('GRAF');
  let node: Troupe;
  let beside: Consumer;
  let proc: Awaited<ReturnType<typeof startConsumerProcess>>;

  beforeAll(async () => {
    node = await startNode(nats.url, { ...env, httpPort: 0 });
    beside = await consume({ ...env, name: 'beside', servers: nats.url, dataDir: tempDir(), handler: () => {} });
    proc = await startConsumerProcess(nats.url, env, tempDir());
  }, 60_000);
  afterAll(async () => {
    await stopProcess(proc?.child);
    await beside?.stop();
    await node?.stop();
  });

  it('queries only metric names that a node and a consumer process expose', async () => {
    await node.send('Account', 'g1', 'OpenAccount', {});
    for (const amount of [5, 6, 13]) await node.send('Account', 'g1', 'Deposit', { amount });
    await node.send('Account', 'g1', 'Withdraw', { amount: 1_000_000 }).catch(() => {});
    const [nodeText, consumerText] = await eventually(async () => {
      const n = await (await fetch(`${node.httpUrl}/metrics`)).text();
      const c = await (await fetch(`${proc.url}/metrics`)).text();
      // The node's /metrics has the consumer that runs in its process; the consumer process has its dead letter.
      expect(n).toMatch(/^troupe_consumer_events_handled_total\{consumer="beside"\} 4$/m);
      expect(c).toMatch(/^troupe_events_dead_lettered_total\{consumer="billing"\} 1$/m);
      return [n, c];
    }, 20_000);
    const a = exposition(nodeText);
    const b = exposition(consumerText);
    const samples = new Set([...a.samples, ...b.samples]);
    const families = new Set([...a.families, ...b.families]);
    const names = queriedNames();
    expect(names.size).toBeGreaterThan(20);
    const missing: string[] = [];
    for (const [name, panel] of names) {
      const family = name.replace(/_(bucket|count|sum)$/, '');
      const ok = samples.has(name) || (EVENT_ONLY.has(name) && families.has(name));
      if (!ok || !(families.has(name) || families.has(family))) missing.push(`${name} (panel "${panel}")`);
    }
    expect(missing).toEqual([]);
  }, 60_000);
});
