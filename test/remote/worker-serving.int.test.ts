// Remote commands taken by the worker that hosts their shard (node/serving.ts, opt-in with
// TROUPE_REMOTE_COMMANDS=worker): the same door,
// the same answers and metrics as the main thread's path, and the subscription goes where the
// shard goes (a replacement worker, another node).
import { afterEach, describe, expect, it } from 'vitest';
import { shardOf } from '../../runtime/envelope.ts';
import { isTroupeError } from '../../runtime/errors.ts';
import type { Troupe } from '../../runtime/node/system.ts';
import { TroupeClient } from '../../runtime/remote/client.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { countByCommandId, eventually, freshStream, readEvents, startNode } from '../helpers/troupe.ts';

const SHARDS = 8;

function idOnShard(shard: number, label: string): string {
  for (let i = 0; ; i++) if (shardOf('Account', `${label}-${i}`, SHARDS) === shard) return `${label}-${i}`;
}

function sample(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.slice(name.length + 1));
}

describe('commands served by the worker that hosts their shard', () => {
  const nats = useNatsServer();
  const nodes: Troupe[] = [];
  const clients: TroupeClient[] = [];
  afterEach(async () => {
    while (clients.length > 0) await clients.pop()!.close().catch(() => {});
    while (nodes.length > 0) await nodes.pop()!.stop().catch(() => {});
  });
  async function start(options: Parameters<typeof startNode>[1], path: 'worker' | 'main' = 'worker'): Promise<Troupe> {
    // The worker path is opt-in (node/system.ts commandsInWorkers).
    if (path === 'worker') process.env.TROUPE_REMOTE_COMMANDS = 'worker';
    try {
      const node = await startNode(nats.url, { shards: SHARDS, ...options });
      nodes.push(node);
      return node;
    } finally {
      delete process.env.TROUPE_REMOTE_COMMANDS;
    }
  }
  async function client(subjectPrefix: string, options: Partial<Parameters<typeof TroupeClient.connect>[0]> = {}): Promise<TroupeClient> {
    const c = await TroupeClient.connect({ servers: nats.url, subjectPrefix, timeoutMs: 10_000, ...options });
    clients.push(c);
    return c;
  }

  it('stores and answers remote commands taken by the workers, and counts them in /metrics', async () => {
    const s = freshStream('WSERVE');
    const node = await start({ ...s });
    expect(node.workerCommands).not.toBeNull();
    const c = await client(s.subjectPrefix);
    const ids = Array.from({ length: SHARDS }, (_, shard) => idOnShard(shard, 'w'));
    await Promise.all(ids.map((id) => c.send('Account', id, 'OpenAccount', {})));
    const results = await Promise.all(ids.flatMap((id) => [1, 2, 3].map((amount) => c.send('Account', id, 'Deposit', { amount }))));
    expect(results.every((r) => r.events.length === 1 && r.events[0]!.eventType === 'Deposited')).toBe(true);
    const rejected = await c.send('Account', ids[0]!, 'Withdraw', { amount: 1_000 }).then(() => null, (e: unknown) => e);
    expect(isTroupeError(rejected, 'DOMAIN_REJECTION')).toBe(true);
    expect((await c.query('Account', ids[3]!)).state).toEqual({ opened: true, balance: 6 });
    const events = await readEvents(nats.url, s.stream);
    expect(events).toHaveLength(SHARDS * 4);
    expect([...countByCommandId(events).values()].every((n) => n === 1)).toBe(true);
    await eventually(async () => {
      const t = await node.metrics();
      expect(sample(t, 'troupe_commands_total{outcome="ok"}')).toBe(SHARDS * 4);
      expect(sample(t, 'troupe_command_failures_total{reason="DOMAIN_REJECTION"}')).toBe(1);
    }, 5_000);
  });

  it('refuses at the worker what the main thread refuses, with the same codes', async () => {
    const bad: [string, string, string, unknown][] = [
      ['Account', 'bad id', 'OpenAccount', {}],
      ['Nobody', 'n1', 'OpenAccount', {}],
      ['Account', 'a1', 'Teleport', {}],
      ['Account', 'a1', 'Deposit', { amount: 'ten' }],
      ['Account', 'a1', 'Deposit', { amount: 1, pad: 'x'.repeat(70_000) }],
    ];
    const codes: Record<string, string[]> = {};
    for (const path of ['worker', 'main'] as const) {
      const s = freshStream(`WREFUSE${path}`);
      const node = await start({ ...s }, path);
      expect(node.workerCommands === null).toBe(path === 'main');
      const c = await client(s.subjectPrefix, { retry: false });
      codes[path] = await Promise.all(bad.map(([t, id, type, payload]) => c.send(t, id, type, payload).then(() => 'stored', (e: { code?: string }) => e.code ?? 'none')));
      expect(await readEvents(nats.url, s.stream)).toHaveLength(0);
    }
    expect(codes.worker).toEqual(codes.main);
    expect(codes.worker).not.toContain('stored');
  });

  it('keeps remote commands on the main thread when the node limits rates, and the limit holds per principal', async () => {
    const s = freshStream('WLIMIT');
    const node = await start({ ...s, rateLimits: { perPrincipal: { perSecond: 10, burst: 10 } } });
    expect(node.workerCommands).toBeNull();
    const c = await client(s.subjectPrefix, { retry: false });
    await c.send('Account', 'l1', 'OpenAccount', {}).catch(() => {});
    const out = await Promise.allSettled(Array.from({ length: 60 }, () => c.send('Account', 'l1', 'Deposit', { amount: 1 })));
    const limited = out.filter((r) => r.status === 'rejected' && isTroupeError(r.reason, 'RATE_LIMITED')).length;
    const ok = out.filter((r) => r.status === 'fulfilled').length;
    expect(ok + limited).toBe(60);
    expect(ok).toBeLessThanOrEqual(12);
  });

  it('subscribes again in the replacement of a worker that died: its shards are served with no command lost or doubled', async () => {
    const s = freshStream('WCRASH');
    const node = await start({ ...s });
    const c = await client(s.subjectPrefix);
    const id = idOnShard(1, 'crash');
    await c.send('Account', id, 'OpenAccount', {});
    await node.crashWorkerOf(1);
    // The client's retries absorb the time without a subscriber.
    const after = await Promise.all([1, 2, 3, 4].map((amount) => c.send('Account', id, 'Deposit', { amount })));
    expect(after.map((r) => r.version).sort()).toEqual([2, 3, 4, 5]);
    expect((await c.query('Account', id)).state).toEqual({ opened: true, balance: 10 });
    const counts = countByCommandId(await readEvents(nats.url, s.stream));
    expect(counts.size).toBe(5);
    expect([...counts.values()].every((n) => n === 1)).toBe(true);
  });

  it('moves the command subscription with its shard: after a second node takes shards, their commands are stored by it', async () => {
    const s = freshStream('WMOVE');
    const a = await start({ ...s, nodeName: 'node-a', source: 'node-a', leaseTtlMs: 1500, settleMs: 200 });
    const c = await client(s.subjectPrefix);
    const ids = Array.from({ length: SHARDS }, (_, shard) => idOnShard(shard, 'mv'));
    await Promise.all(ids.map((id) => c.send('Account', id, 'OpenAccount', {})));
    const b = await start({ ...s, nodeName: 'node-b', source: 'node-b', leaseTtlMs: 1500, settleMs: 200 });
    await eventually(async () => {
      expect(b.ownedShards.length).toBeGreaterThan(0);
      expect([...a.ownedShards, ...b.ownedShards].sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    }, 20_000);
    const moved = new Set(b.ownedShards);
    const results = await Promise.all(ids.map((id) => c.send('Account', id, 'Deposit', { amount: 5 })));
    expect(results.map((r) => r.version)).toEqual(ids.map(() => 2));
    const events = await readEvents(nats.url, s.stream);
    for (const [shard, id] of ids.entries()) {
      const deposit = events.find((e) => e.aggregateId === id && e.eventType === 'Deposited');
      expect(deposit?.source, `shard ${shard}`).toBe(moved.has(shard) ? 'node-b' : 'node-a');
    }
    expect([...countByCommandId(events).values()].every((n) => n === 1)).toBe(true);
  });
});
