// Planned moves and restarts under load, with `troupe start` node processes and a remote
// client (TroupeClient, automatic retry on) in the test process:
// - a rolling restart (SIGUSR2, then start again with the same name and data dir) moves no shard;
// - a planned move (scale 3 → 4) cuts over fast, loses nothing and answers nothing twice;
// - killing the nats-server that leads the stream (R3) loses no acknowledged commit.
// The leases are read from NATS KV by the test itself (readClusterStatus), the log through JetStream.
import { randomBytes } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import { afterEach, describe, expect, it } from 'vitest';
import { readClusterStatus } from '../../runtime/node/membership.ts';
import { shardsOf } from '../../runtime/placement.ts';
import { shardOf } from '../../runtime/envelope.ts';
import { TroupeClient } from '../../runtime/remote/client.ts';
import { startNatsCluster, tempDir, useNatsServer } from '../helpers/nats.ts';
import { killAll, placed, startNodeProcess, waitFor, type NodeProc } from '../helpers/cluster.ts';
import { freshStream, natsConnect, readEvents } from '../helpers/troupe.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const MASTER_KEY = randomBytes(32).toString('base64');

interface Setup {
  stream: string;
  subjectPrefix: string;
  servers: string;
  shards: number;
  leaseTtlMs: number;
  settleMs: number;
  replicas: number;
  restartGraceMs?: number;
}

/** One JSON log line of a node (pino). */
type LogLine = Record<string, unknown> & { msg?: string };

function logLines(p: NodeProc): LogLine[] {
  const out: LogLine[] = [];
  for (const line of p.output().split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as LogLine);
    } catch { /* a line cut by the buffer */ }
  }
  return out;
}

interface Acked { commandId: string; account: string; version: number; at: number }

/**
 * Deposits from a remote client, `lanes` in flight, over accounts acct-0..n. Every send must
 * resolve (the client's retry absorbs what is retryable); a probe client without retry records
 * the codes it sees, each of which must be retryable.
 */
class Load {
  readonly acked: Acked[] = [];
  readonly failed: string[] = [];
  readonly probeErrors: { code: string; retryable: boolean }[] = [];
  private running = true;
  private done: Promise<unknown> = Promise.resolve();
  private n = 0;

  constructor(private readonly client: TroupeClient, private readonly probe: TroupeClient, private readonly accounts: string[]) {}

  async open(): Promise<void> {
    await Promise.all(this.accounts.map((a) => this.client.send('Account', a, 'OpenAccount', {}, { commandId: `open-${a}` })));
  }

  start(lanes: number): void {
    const lane = async (i: number): Promise<void> => {
      const viaProbe = i === 0;
      while (this.running) {
        const account = this.accounts[this.n % this.accounts.length]!;
        const commandId = `dep-${this.n++}`;
        try {
          const r = await (viaProbe ? this.probe : this.client).send('Account', account, 'Deposit', { amount: 1 }, { commandId });
          this.acked.push({ commandId, account, version: r.version, at: Date.now() });
        } catch (e) {
          if (!viaProbe) {
            this.failed.push(`${commandId}: ${(e as { code?: string }).code ?? ''} ${(e as Error).message}`);
            continue;
          }
          this.probeErrors.push({ code: (e as { code?: string }).code ?? 'none', retryable: (e as { retryable?: boolean }).retryable === true });
          // The probe retries by hand, with the same commandId, until it is acknowledged.
          for (;;) {
            await sleep(50);
            try {
              const r = await this.probe.send('Account', account, 'Deposit', { amount: 1 }, { commandId });
              this.acked.push({ commandId, account, version: r.version, at: Date.now() });
              break;
            } catch (again) {
              this.probeErrors.push({ code: (again as { code?: string }).code ?? 'none', retryable: (again as { retryable?: boolean }).retryable === true });
              if ((again as { retryable?: boolean }).retryable !== true) break;
            }
          }
        }
      }
    };
    this.done = Promise.all(Array.from({ length: lanes }, (_, i) => lane(i)));
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
  }

  /** The longest time without an acknowledgement between `from` and `to`. */
  longestGap(from: number, to: number): number {
    const times = this.acked.map((a) => a.at).filter((t) => t >= from && t <= to).sort((a, b) => a - b);
    let gap = 0;
    for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i]! - times[i - 1]!);
    return gap;
  }
}

describe('planned moves and restarts', () => {
  const nats = useNatsServer();
  const procs: NodeProc[] = [];
  const closers: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    await killAll(procs);
    for (const c of closers.splice(0)) await c().catch(() => {});
  });

  /** `troupe start` with a config file for the cluster options; resolves once /ready answers 200. */
  /** The `_count` of a histogram on a node's /metrics. */
  async function metricCount(p: NodeProc, name: string): Promise<number> {
    const text = await (await fetch(`${p.url}/metrics`)).text();
    return Number(new RegExp(`^${name}_count (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
  }

  function startNode(name: string, s: Setup, dataDir = tempDir()): Promise<NodeProc> {
    return startNodeProcess(name, {
      config: {
        stream: s.stream, subjectPrefix: s.subjectPrefix, shards: s.shards, workers: 1, replicas: s.replicas,
        leaseTtlMs: s.leaseTtlMs, settleMs: s.settleMs, ...(s.restartGraceMs !== undefined ? { restartGraceMs: s.restartGraceMs } : {}),
      },
      // One master key for the deployment, so a shard's sealed snapshots read on every node.
      servers: s.servers, dataDir, logLevel: 'info', env: { TROUPE_MASTER_KEY: MASTER_KEY },
    }, procs);
  }


  async function clients(s: Setup): Promise<{ client: TroupeClient; probe: TroupeClient }> {
    // A request lost with a killed nats-server (on the way to a node, or its reply) is retried after
    // the client's timeoutMs (default 30 s): a write-availability target needs a timeout below it.
    const opts = { servers: s.servers, subjectPrefix: s.subjectPrefix, stream: s.stream, timeoutMs: 3_000 };
    // The retry budget covers a node's restart (its shards are unserved while it is away).
    const client = await TroupeClient.connect({ ...opts, retry: { attempts: 200, maxMs: 500, totalMs: 90_000 } });
    const probe = await TroupeClient.connect({ ...opts, retry: false });
    closers.push(() => client.close(), () => probe.close());
    return { client, probe };
  }

  /**
   * What a user observes of the load: every send acknowledged (retries absorbed every failure),
   * the probe saw only retryable errors, each acknowledged commandId is in the log exactly once
   * with the version it was acknowledged with, and each account's versions run 1..n.
   */
  async function expectLoadWhole(s: Setup, load: Load): Promise<void> {
    expect(load.failed.slice(0, 5), `${load.failed.length} sends failed`).toEqual([]);
    expect(load.probeErrors.filter((e) => !e.retryable)).toEqual([]);
    const events = await readEvents(s.servers, s.stream);
    const byId = new Map<string, { n: number; version: number }>();
    for (const e of events) {
      const b = byId.get(e.commandId);
      byId.set(e.commandId, { n: (b?.n ?? 0) + 1, version: e.sequence });
    }
    const wrong = load.acked.filter((a) => byId.get(a.commandId)?.n !== 1 || byId.get(a.commandId)?.version !== a.version);
    expect(wrong.slice(0, 5), `${wrong.length} acknowledged commands are not in the log once with their version`).toEqual([]);
    expect([...byId].filter(([, b]) => b.n !== 1)).toEqual([]);
    const byAccount = new Map<string, number[]>();
    for (const e of events) byAccount.set(e.aggregateId, [...(byAccount.get(e.aggregateId) ?? []), e.sequence]);
    for (const [account, seqs] of byAccount) expect(seqs, account).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
  }

  const accounts = Array.from({ length: 32 }, (_, i) => `acct-${i}`);

  it('moves no shard in a rolling restart of three nodes under load: each stopped with SIGUSR2 takes its leases back and reads only its log tail', async () => {
    const s: Setup = { ...freshStream('ROLL'), servers: nats.url, shards: 16, leaseTtlMs: 1_500, settleMs: 300, replicas: 1, restartGraceMs: 30_000 };
    const names = ['node-1', 'node-2', 'node-3'];
    const nodes = await Promise.all(names.map((n) => startNode(n, s)));
    const nc = await natsConnect(s.servers);
    closers.push(() => nc.close());
    const before = await waitFor('placement over three nodes', 30_000, async () => {
      const st = await readClusterStatus(nc, s.stream);
      return placed(st, names, { ready: true }) ? st : undefined;
    });
    const holder = new Map(before.leases.map((l) => [l.shard, l.node]));

    const { client, probe } = await clients(s);
    const load = new Load(client, probe, accounts);
    await load.open();
    load.start(8);

    // Sample the leases in KV all along: a lease held by another node, or a node seen restarting.
    let sampling = true;
    const moved = new Set<string>();
    const restarting = new Set<string>();
    let samples = 0;
    const sampler = (async () => {
      while (sampling) {
        const st = await readClusterStatus(nc, s.stream).catch(() => null);
        if (st !== null) {
          samples++;
          for (const l of st.leases) if (holder.get(l.shard) !== l.node) moved.add(`${l.shard}@${l.node}`);
          for (const n of st.nodes) if (n.state === 'restarting') restarting.add(n.node);
        }
        await sleep(50);
      }
    })();

    await sleep(1_000);
    for (const [i, name] of names.entries()) {
      const old = nodes[i]!;
      const shards = before.leases.filter((l) => l.node === name).map((l) => l.shard);
      const acksBefore = load.acked.length;
      old.child.kill('SIGUSR2');
      expect(await old.exited).toBe(0);
      expect(old.output()).toContain('SIGUSR2: stopping to restart');
      // Away longer than its heartbeat and lease TTL: only the restart grace keeps its shards in place.
      await sleep(s.leaseTtlMs + s.settleMs + 500);
      const stoppedAt = Date.now();
      const again = await startNode(name, s, old.dataDir);
      nodes[i] = again;
      console.log(JSON.stringify({ restarted: name, startMs: Date.now() - stoppedAt }));
      await waitFor(`${name} to serve its shards again`, 20_000, async () => {
        const st = await readClusterStatus(nc, s.stream);
        const served = new Set(load.acked.slice(acksBefore).map((a) => shardOf('Account', a.account, s.shards)));
        return placed(st, names, { ready: true }) && shards.filter((sh) => accounts.some((a) => shardOf('Account', a, s.shards) === sh)).every((sh) => served.has(sh)) ? true : undefined;
      });
      // It opened its shards from its own LMDB checkpoints: no shared checkpoint restored, the log read from past its start.
      const opened = logLines(again).filter((l) => l.msg === 'shards opened: caught up with the log');
      const catchUps = opened.flatMap((l) => (l.catchUps as { restored: number; from: number; to: number }[] | undefined) ?? []);
      expect(catchUps.length).toBe(shards.length);
      for (const c of catchUps.filter((c) => c.to > 0)) {
        expect(c.restored).toBe(0);
        expect(c.from).toBeGreaterThan(1);
      }
    }
    await sleep(500);
    await load.stop();
    sampling = false;
    await sampler;

    expect(samples).toBeGreaterThan(50);
    expect([...restarting].sort()).toEqual(names);
    expect([...moved]).toEqual([]);
    expect(load.acked.length).toBeGreaterThan(100);
    for (const p of nodes) p.child.kill('SIGTERM');
    await Promise.all(nodes.map((p) => p.exited));
    await expectLoadWhole(s, load);
  }, 180_000);

  it('cuts a planned move over in well under a second (old owner unsubscribed → new owner subscribed), losing nothing and answering nothing twice', async () => {
    const s: Setup = { ...freshStream('MOVE'), servers: nats.url, shards: 32, leaseTtlMs: 3_000, settleMs: 300, replicas: 1 };
    const three = ['node-1', 'node-2', 'node-3'];
    const nodes = await Promise.all(three.map((n) => startNode(n, s)));
    const nc = await natsConnect(s.servers);
    closers.push(() => nc.close());
    const before = await waitFor('placement over three nodes', 30_000, async () => {
      const st = await readClusterStatus(nc, s.stream);
      return placed(st, three, { ready: true }) ? st : undefined;
    });
    const { client, probe } = await clients(s);
    const load = new Load(client, probe, accounts);
    await load.open();
    load.start(8);
    await sleep(1_500);

    const handOffsOf = async (ps: NodeProc[]) => {
      let n = 0;
      for (const p of ps) n += await metricCount(p, 'troupe_shard_handoff_duration_seconds');
      return n;
    };
    const handOffsBefore = await handOffsOf(nodes);
    const four = [...three, 'node-4'];
    const joinedAt = Date.now();
    nodes.push(await startNode('node-4', s));
    expect((await readClusterStatus(nc, s.stream)).leases.filter((l) => l.node !== before.leases.find((b) => b.shard === l.shard)?.node && l.node !== 'node-4')).toEqual([]);
    const after = await waitFor('placement over four nodes', 30_000, async () => {
      const st = await readClusterStatus(nc, s.stream);
      return placed(st, four, { ready: true }) ? st : undefined;
    });
    await sleep(1_000);
    await load.stop();
    const settledAt = Date.now();

    const movedShards = after.leases.filter((l) => before.leases.find((b) => b.shard === l.shard)?.node !== l.node).map((l) => l.shard);
    expect(movedShards).toEqual(shardsOf('node-4', four, s.shards));
    // Cut-over of a shard: from the old owner dropping the shard's subscription (droppedAt, in
    // its "handed off a shard" line) to the new owner subscribed to it (servingAt, "serving shards taken over").
    const dropped = new Map<number, number>();
    for (const p of nodes.slice(0, 3)) {
      // Hand-offs of the move, not those of the first placement (the nodes started together).
      for (const l of logLines(p)) if (l.msg === 'handed off a shard' && (l.droppedAt as number) >= joinedAt) dropped.set(l.shard as number, l.droppedAt as number);
    }
    const released = new Map<number, number>();
    for (const p of nodes.slice(0, 3)) for (const l of logLines(p)) if (l.msg === 'handed off a shard' && (l.droppedAt as number) >= joinedAt) released.set(l.shard as number, l.releasedAt as number);
    const serving = new Map<number, number>();
    const leased = new Map<number, number>();
    for (const l of logLines(nodes[3]!)) {
      if (l.msg !== 'serving shards taken over') continue;
      for (const sh of l.shards as number[]) {
        if (serving.has(sh)) continue;
        serving.set(sh, l.servingAt as number);
        leased.set(sh, (l.servingAt as number) - (l.ms as number));
      }
    }
    expect([...dropped.keys()].sort((a, b) => a - b)).toEqual(movedShards);
    const cutovers = movedShards.map((sh) => serving.get(sh)! - dropped.get(sh)!).sort((a, b) => a - b);
    for (const c of cutovers) expect(c).toBeGreaterThanOrEqual(0);
    const median = cutovers[Math.floor(cutovers.length / 2)]!;
    // Where the time goes: the old owner's hand-off (unsubscribed → lease deleted), the lease free → taken, then opened and subscribed.
    const parts = movedShards.map((sh) => [released.get(sh)! - dropped.get(sh)!, leased.get(sh)! - released.get(sh)!, serving.get(sh)! - leased.get(sh)!]);
    console.log(JSON.stringify({ cutoverMs: { median, max: cutovers.at(-1), all: cutovers }, handOffLeaseServe: parts, longestAckGapMs: load.longestGap(joinedAt, settledAt), acked: load.acked.length, probeErrors: load.probeErrors.length }));
    // No cold start: node-4 restored each moved shard's checkpoint while the old owner still
    // served it (node/handoff.ts), so its catch-up after the lease read only the log's tail.
    const aheadOf = new Set(logLines(nodes[3]!).filter((l) => l.msg === 'restored a shard checkpoint ahead of its hand-off').map((l) => l.shard as number));
    const caughtUp = logLines(nodes[3]!).filter((l) => l.msg === 'shards opened: caught up with the log')
      .flatMap((l) => (l.shards as number[]).map((sh, i) => ({ sh, c: (l.catchUps as ({ to: number } | null)[])[i] })));
    const withLog = caughtUp.filter((x) => movedShards.includes(x.sh) && (x.c?.to ?? 0) > 0).map((x) => x.sh);
    expect(withLog.length).toBeGreaterThan(0);
    expect(withLog.filter((sh) => !aheadOf.has(sh))).toEqual([]);
    // The same moves on /metrics: node-4's take-overs, and the old owners' hand-offs.
    expect(await metricCount(nodes[3]!, 'troupe_shard_takeover_duration_seconds')).toBe(movedShards.length);
    expect(await handOffsOf(nodes.slice(0, 3)) - handOffsBefore).toBe(movedShards.length);
    // The goal is a median under 100 ms: measured here and printed above (90 ms on a quiet 2-core
    // machine, 140–300 ms while other work loads it), and reported in docs/performance.md. Speed
    // is not asserted at that precision in a test on a shared machine; this bound catches the
    // regressions of the kind this test found (cut-overs of 1.3–1.8 s: a released lease taken one
    // round late, a checkpoint written inside the cut-over).
    expect(median).toBeLessThan(1000);

    for (const p of nodes) p.child.kill('SIGTERM');
    await Promise.all(nodes.map((p) => p.exited));
    expect(load.acked.length).toBeGreaterThan(100);
    await expectLoadWhole(s, load);
  }, 180_000);

  it('loses no acknowledged commit when the nats-server leading the stream is killed, and writes again within 10 s', async () => {
    const cluster = await startNatsCluster();
    closers.push(() => cluster.stop());
    const s: Setup = { ...freshStream('LEADER'), servers: cluster.urls.join(','), shards: 16, leaseTtlMs: 6_000, settleMs: 500, replicas: 3 };
    const names = ['node-1', 'node-2', 'node-3'];
    const nodes = await Promise.all(names.map((n) => startNode(n, s)));
    const nc = await natsConnect(s.servers);
    closers.push(() => nc.close());
    await waitFor('placement over three nodes', 30_000, async () => (placed(await readClusterStatus(nc, s.stream), names, { ready: true }) ? true : undefined));
    const { client, probe } = await clients(s);
    const load = new Load(client, probe, accounts);
    await load.open();
    load.start(8);
    await sleep(1_500);

    const jsm = await jetstreamManager(nc);
    const leaderName = (await jsm.streams.info(s.stream)).cluster?.leader;
    const leader = cluster.servers.find((x) => x.name === leaderName);
    expect(leader, `the stream leader ${leaderName ?? '(none)'} is one of the cluster's servers`).toBeDefined();
    const ackedBeforeKill = load.acked.length;
    // When the stream's Raft group elects the next leader (nats-server waits 4–9 s for it).
    let electedAt = 0;
    const elections = nc.subscribe(`$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.${s.stream}`, { callback: () => { electedAt ||= Date.now(); } });
    closers.push(async () => elections.unsubscribe());
    const killedAt = Date.now();
    await leader!.kill();
    // Writes are back when a 250 ms window after the kill holds at least a quarter of the
    // acknowledgements of an average window in the second before it (not one straggler
    // acknowledged on its way out: windows start 500 ms after the kill).
    const WINDOW = 250;
    const perWindow = load.acked.filter((a) => a.at > killedAt - 1_000 && a.at <= killedAt).length / (1_000 / WINDOW);
    expect(perWindow).toBeGreaterThan(4);
    const backAt = await waitFor('writes back at a quarter of their rate before the kill', 20_000, async () => {
      for (let t = killedAt + 500; t + WINDOW <= Date.now(); t += WINDOW) {
        if (load.acked.filter((a) => a.at > t && a.at <= t + WINDOW).length >= perWindow / 4) return t + WINDOW;
      }
      return undefined;
    });
    await sleep(2_000);
    await load.stop();
    const newLeader = (await jsm.streams.info(s.stream)).cluster?.leader;
    console.log(JSON.stringify({ leaderKilled: leaderName, newLeader, electedAfterMs: electedAt - killedAt, writesBackAfterMs: backAt - killedAt, ackedBeforeKill, acked: load.acked.length, probeErrors: [...new Set(load.probeErrors.map((e) => e.code))] }));
    expect(newLeader).not.toBe(leaderName);
    expect(electedAt).toBeGreaterThan(killedAt);
    // Troupe's part: writes resume within 1.5 s of the new leader (appends in flight fail at once,
    // reads ask again; before, a stalled read or an append waited out its 5–10 s timeout).
    expect(backAt - electedAt).toBeLessThan(1_500);
    expect(backAt - killedAt).toBeLessThan(10_000);
    expect(load.acked.length).toBeGreaterThan(ackedBeforeKill);

    for (const p of nodes) p.child.kill('SIGTERM');
    await Promise.all(nodes.map((p) => p.exited));
    // The log as the cluster holds it once the killed server is back (what it missed, it copies from the others).
    await leader!.restart();
    await expectLoadWhole(s, load);
  }, 180_000);
});

