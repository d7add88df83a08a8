// Durable timers on several nodes: `troupe start` node processes with the Reminder actor
// (test/fixtures/reminder.ts) and a remote client in the test process. Timers fall due while
// their shards move — a node joins (planned hand-off), a node stops with SIGTERM (hand-off), a
// node is killed with kill -9 (its leases expire) — and each still fires exactly once.
// The leases are read from NATS KV (readClusterStatus), the firings from the log.
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeCommits } from '../../runtime/journal/codec.ts';
import { readClusterStatus } from '../../runtime/node/membership.ts';
import { shardOf } from '../../runtime/envelope.ts';
import { shardsOf } from '../../runtime/placement.ts';
import { TroupeClient } from '../../runtime/remote/client.ts';
import { COMMIT, TIMER_OP, type WireTimerOp } from '../../runtime/wire.ts';
import type { Fired } from '../fixtures/reminder.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { killAll, placed, startNodeProcess, type NodeProc } from '../helpers/cluster.ts';
import { freshStream, natsConnect, rawLog, readEvents, sleep } from '../helpers/troupe.ts';

const reminderModule = fileURLToPath(new URL('../fixtures/reminder.ts', import.meta.url));
const MASTER_KEY = randomBytes(32).toString('base64');

interface Setup { stream: string; subjectPrefix: string; servers: string; shards: number; leaseTtlMs: number; settleMs: number }

describe('durable timers on several nodes', () => {
  const nats = useNatsServer();
  const procs: NodeProc[] = [];
  const closers: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    await killAll(procs);
    for (const c of closers.splice(0)) await c().catch(() => {});
  });

  /** `troupe start` with the Reminder actor; resolves once /ready answers 200. */
  function startNode(name: string, s: Setup): Promise<NodeProc> {
    return startNodeProcess(name, {
      config: { actors: [reminderModule], stream: s.stream, subjectPrefix: s.subjectPrefix, shards: s.shards, workers: 1, leaseTtlMs: s.leaseTtlMs, settleMs: s.settleMs },
      servers: s.servers, env: { TROUPE_MASTER_KEY: MASTER_KEY }, readyTimeoutMs: 60_000,
    }, procs);
  }


  it('fires each timer exactly once while its shard moves: a node joining, a node stopped with SIGTERM, a node killed with kill -9', async () => {
    const s: Setup = { ...freshStream('TIMMV'), servers: nats.url, shards: 16, leaseTtlMs: 1_500, settleMs: 300 };
    const nc = await natsConnect(s.servers);
    closers.push(() => nc.close());
    /** Resolves with the time placement over `nodes` is first seen. */
    const settled = async (what: string, nodes: string[]): Promise<number> => {
      const until = Date.now() + 30_000;
      for (;;) {
        const st = await readClusterStatus(nc, s.stream).catch(() => null);
        if (st !== null && placed(st, nodes)) return Date.now();
        if (Date.now() > until) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(st)}`);
        await sleep(50);
      }
    };

    const nodes = new Map<string, NodeProc>();
    for (const p of await Promise.all(['node-1', 'node-2'].map((n) => startNode(n, s)))) nodes.set(p.name, p);
    await settled('placement over two nodes', ['node-1', 'node-2']);
    // Retries absorb the moments a shard is unserved (a send keeps its commandId across retries).
    const client = await TroupeClient.connect({ servers: s.servers, subjectPrefix: s.subjectPrefix, stream: s.stream, timeoutMs: 3_000, retry: { attempts: 200, maxMs: 300, totalMs: 60_000 } });
    closers.push(() => client.close());

    // Each wave: `n` actors, one timer each, due over [from, from + spread] ms from now.
    const scheduled = new Map<string, number>();
    let next = 0;
    const wave = async (n: number, from: number, spread: number): Promise<void> => {
      const now = Date.now();
      await Promise.all(Array.from({ length: n }, async (_, k) => {
        const id = `r-${next + k}`;
        const at = now + from + Math.floor((k * spread) / n);
        await client.send('Reminder', id, 'Remind', { key: 'due', at, note: id }, { commandId: `remind-${id}` });
        scheduled.set(id, at);
      }));
      next += n;
    };
    // A move's window: from its start until placement settles; `moved`: the shards it moved.
    const windows: { move: string; from: number; to: number; moved: number[] }[] = [];

    // 1. A third node joins: a third of the shards are handed off while these fall due.
    await wave(90, 1_000, 8_000);
    let from = Date.now();
    nodes.set('node-3', await startNode('node-3', s));
    windows.push({ move: 'join', from, to: await settled('placement over three nodes', ['node-1', 'node-2', 'node-3']), moved: shardsOf('node-3', ['node-1', 'node-2', 'node-3'], s.shards) });

    // 2. node-1 stops with SIGTERM: it hands its shards off to the others.
    await wave(50, 300, 2_500);
    from = Date.now();
    nodes.get('node-1')!.child.kill('SIGTERM');
    expect(await nodes.get('node-1')!.exited).toBe(0);
    windows.push({ move: 'SIGTERM', from, to: await settled('placement over two nodes after SIGTERM', ['node-2', 'node-3']), moved: shardsOf('node-1', ['node-1', 'node-2', 'node-3'], s.shards) });

    // 3. node-2 is killed with kill -9: its shards wait for its leases to expire.
    await wave(50, 300, 2_500);
    from = Date.now();
    nodes.get('node-2')!.child.kill('SIGKILL');
    expect(await nodes.get('node-2')!.exited).toBe('SIGKILL');
    windows.push({ move: 'kill -9', from, to: await settled('placement on node-3 after kill -9', ['node-3']), moved: shardsOf('node-2', ['node-2', 'node-3'], s.shards) });

    // Every timer fired: one ReminderFired per actor. Then a while longer, for a second firing to show.
    const firedOf = async () => (await readEvents(s.servers, s.stream)).filter((e) => e.eventType === 'ReminderFired');
    const end = Date.now() + 30_000;
    while (new Set((await firedOf()).map((e) => e.aggregateId)).size < scheduled.size && Date.now() < end) await sleep(200);
    await sleep(2_000);

    const fired = await firedOf();
    const byActor = new Map<string, Fired[]>();
    for (const e of fired) byActor.set(e.aggregateId, [...(byActor.get(e.aggregateId) ?? []), e.payload as Fired]);
    const missing = [...scheduled.keys()].filter((id) => !byActor.has(id));
    const twice = [...byActor].filter(([, f]) => f.length !== 1).map(([id, f]) => `${id}×${f.length}`);
    expect(missing, `${missing.length} of ${scheduled.size} timers never fired`).toEqual([]);
    expect(twice, 'timers fired more than once').toEqual([]);
    for (const [id, at] of scheduled) expect(byActor.get(id), id).toEqual([{ key: 'due', dueAt: at, missed: 0, scheduledBy: `remind-${id}`, note: id }]);

    // The log holds one firing commit per timer (deterministic commandId), each with one FIRED record.
    const firings = (await rawLog(s.servers, s.stream)).flatMap((m) => decodeCommits(m.data)).filter((c) => c[COMMIT.commandId].startsWith('timer:'));
    const firedOps = firings.flatMap((c) => ((c[COMMIT.timers] ?? []) as WireTimerOp[]).filter((op) => op[0] === TIMER_OP.FIRED).map(() => c[COMMIT.id]));
    expect(firings).toHaveLength(scheduled.size);
    expect(new Set(firings.map((c) => c[COMMIT.commandId])).size).toBe(scheduled.size);
    expect(firedOps.sort()).toEqual([...scheduled.keys()].sort());

    // The moves happened while timers were due: in each move's window, timers of the shards it moved fell due.
    const dueIn = windows.map((w) => ({
      ...w, due: [...scheduled].filter(([id, at]) => at >= w.from && at <= w.to && w.moved.includes(shardOf('Reminder', id, s.shards))).length,
    }));
    console.log(JSON.stringify({ timers: scheduled.size, windows: dueIn.map((w) => ({ move: w.move, ms: w.to - w.from, due: w.due })) }));
    for (const w of dueIn) expect(w.due, `timers due during the ${w.move} move`).toBeGreaterThan(0);

    nodes.get('node-3')!.child.kill('SIGTERM');
    await nodes.get('node-3')!.exited;
  }, 120_000);
});
