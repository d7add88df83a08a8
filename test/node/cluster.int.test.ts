// Many nodes: membership, placement by rendezvous hashing, failover, stale owners, restarts.
// Each node runs in its own process (test/fixtures/cluster-node.ts) against one nats-server;
// the test reads the cluster through a node's GET /cluster and the log through JetStream.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { ClusterStatus } from '../../runtime/node/membership.ts';
import { shardsOf } from '../../runtime/placement.ts';
import { startNatsCluster, tempDir, useNatsServer } from '../helpers/nats.ts';
import { placed, waitFor } from '../helpers/cluster.ts';
import { freshStream, readEvents, startNode as startInProcess } from '../helpers/troupe.ts';
import { shardOf } from '../../runtime/envelope.ts';
import type { Troupe } from '../../runtime/node/system.ts';

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const nodeScript = join(REPO_ROOT, 'test', 'fixtures', 'cluster-node.ts');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Run the `troupe` command line the way runtime/bin/troupe.mjs does. */
function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [join(REPO_ROOT, 'runtime', 'bin', 'run-ts.cjs'), join(REPO_ROOT, 'runtime', 'cli', 'main.ts'), ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, stdout, stderr })));
}

interface NodeProc {
  name: string;
  child: ChildProcessWithoutNullStreams;
  url: string;
  output(): string;
  exited: Promise<NodeJS.Signals | number | null>;
  ackFile: string;
  dataDir: string;
}

interface Ack {
  commandId: string;
  account: string;
  version: number;
  shard: number;
}

describe('cluster', () => {
  const nats = useNatsServer();
  const procs: NodeProc[] = [];
  afterEach(async () => {
    for (const p of procs.splice(0)) {
      if (p.child.exitCode === null && p.child.signalCode === null) {
        p.child.kill('SIGCONT');
        p.child.kill('SIGKILL');
      }
      await p.exited;
    }
  });

  interface Setup { stream: string; subjectPrefix: string; ttl: number; settle: number; shards: number; load: boolean; servers?: string; replicas?: number }

  async function startNode(name: string, s: Setup, dataDir = tempDir()): Promise<NodeProc> {
    const ackFile = s.load ? join(tempDir(), `${name}-acks.jsonl`) : '-';
    const child = spawn(process.execPath, ['--import', 'tsx', nodeScript, s.servers ?? nats.url, dataDir, s.stream, s.subjectPrefix, name, String(s.ttl), String(s.settle), String(s.shards), ackFile, String(s.replicas ?? 1)], {
      cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code)));
    const until = Date.now() + 40_000;
    let url: string | undefined;
    while (url === undefined) {
      const m = /\{"event":"started","url":"([^"]+)"\}/.exec(out);
      if (m !== null) url = m[1];
      else if (Date.now() > until || child.exitCode !== null) throw new Error(`node ${name} did not start:\n${out}`);
      else await sleep(25);
    }
    const p: NodeProc = { name, child, url, output: () => out, exited, ackFile, dataDir };
    procs.push(p);
    return p;
  }

  async function status(p: NodeProc): Promise<ClusterStatus> {
    const res = await fetch(`${p.url}/cluster`);
    expect(res.status).toBe(200);
    return await res.json() as ClusterStatus;
  }

  function leaseCounts(st: ClusterStatus): Record<string, number> {
    const out: Record<string, number> = {};
    for (const l of st.leases) out[l.node] = (out[l.node] ?? 0) + 1;
    return out;
  }



  function acks(p: NodeProc): Ack[] {
    if (!existsSync(p.ackFile)) return [];
    return readFileSync(p.ackFile, 'utf8').split('\n').filter((l) => l.endsWith('}')).map((l) => JSON.parse(l) as Ack);
  }

  async function stopAll(): Promise<void> {
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGTERM');
    await Promise.all(procs.map((p) => p.exited));
  }

  /** Every acknowledged Deposit is in the log exactly once, and each account's versions run 1..n (no fork). */
  async function expectLogWhole(s: Setup, nodes: NodeProc[]): Promise<number> {
    const events = await readEvents(s.servers ?? nats.url, s.stream);
    const counts = new Map<string, number>();
    for (const e of events) counts.set(e.commandId, (counts.get(e.commandId) ?? 0) + 1);
    const acked = nodes.flatMap(acks);
    const notOnce = acked.filter((a) => counts.get(a.commandId) !== 1);
    expect(notOnce.slice(0, 5), `${notOnce.length} acknowledged commands are not in the log exactly once`).toEqual([]);
    expect([...counts].filter(([, n]) => n !== 1)).toEqual([]);
    const byAccount = new Map<string, number[]>();
    for (const e of events) byAccount.set(e.aggregateId, [...(byAccount.get(e.aggregateId) ?? []), e.sequence]);
    for (const [account, seqs] of byAccount) expect(seqs, account).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
    return acked.length;
  }

  it('spreads the shards over nodes that join, each within ±25% of an even share, moves only the new node\'s share when a fourth joins, and reports them on /cluster', async () => {
    const s: Setup = { ...freshStream('SPREAD'), ttl: 6_000, settle: 500, shards: 256, load: false };
    const S = s.shards;
    const one = await startNode('node-1', s);
    const alone = await waitFor('node-1 to hold every shard', 15_000, async () => {
      const st = await status(one);
      return placed(st, ['node-1']) && st.nodes[0]?.shardCount === S ? st : undefined;
    });
    expect(alone.nodes.map((n) => [n.node, n.state, n.shardCount])).toEqual([['node-1', 'ready', S]]);

    await Promise.all([startNode('node-2', s), startNode('node-3', s)]);
    const nodes = ['node-1', 'node-2', 'node-3'];
    // Settled: leases as placement says, and each node's heartbeat already reports its shards
    // (a heartbeat lags the leases by up to ttl/3 while the shards spread).
    const st = await waitFor('the shards to spread over three nodes', 30_000, async () => {
      const v = await status(one);
      if (!placed(v, nodes)) return undefined;
      const leases = leaseCounts(v);
      return v.nodes.every((n) => n.shardCount === leases[n.node]) ? v : undefined;
    });
    const counts = leaseCounts(st);
    expect(Object.keys(counts).sort()).toEqual(nodes);
    for (const n of nodes) {
      expect(counts[n]).toBeGreaterThanOrEqual(Math.floor((S / 3) * 0.75));
      expect(counts[n]).toBeLessThanOrEqual(Math.ceil((S / 3) * 1.25));
    }
    const version = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    expect(st.nodes.map((n) => [n.node, n.state, n.version])).toEqual(nodes.map((n) => [n, 'ready', version]));
    for (const l of st.leases) expect(l.ageMs).toBeLessThan(s.ttl);

    // `troupe cluster status` reads the same from NATS KV, with no node of its own.
    const json = await runCli(['cluster', 'status', '--json', '--nats-url', nats.url, '--stream', s.stream]);
    expect(json.code, json.stderr).toBe(0);
    const fromCli = JSON.parse(json.stdout) as ClusterStatus;
    expect(fromCli.shards).toBe(S);
    expect(fromCli.nodes.map((n) => [n.node, n.state, n.shardCount])).toEqual(nodes.map((n) => [n, 'ready', counts[n]]));
    expect(leaseCounts(fromCli)).toEqual(counts);
    const text = await runCli(['cluster', 'status', '--nats-url', nats.url, '--stream', s.stream]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain(`${S} shards, 3 node(s), 0 without an owner, 0 moving`);
    for (const n of nodes) expect(text.stdout).toMatch(new RegExp(`${n}\\s+ready\\s+v${version.replace(/\./g, '\\.')}\\s+${counts[n]} shards`));

    // Scale 3 → 4: only shards that move to the new node move, at most 1.25 × S/4 of them.
    const holderBefore = new Map(st.leases.map((l) => [l.shard, l.node]));
    await startNode('node-4', s);
    const four = [...nodes, 'node-4'];
    const st4 = await waitFor('the shards to spread over four nodes', 30_000, async () => {
      const v = await status(one);
      return placed(v, four) ? v : undefined;
    });
    const moved = st4.leases.filter((l) => holderBefore.get(l.shard) !== l.node);
    expect(moved.length).toBeGreaterThan(0);
    expect(moved.length).toBeLessThanOrEqual(1.25 * (S / 4));
    expect(moved.map((l) => l.shard)).toEqual(shardsOf('node-4', four, S));
  });

  /** Kill -9 the node with the most shards of three: the others serve them within the lease TTL + 5 s; the log stays whole. */
  async function failover(s: Setup): Promise<void> {
    const nodes = ['node-1', 'node-2', 'node-3'];
    const procs3 = await Promise.all(nodes.map((n) => startNode(n, s)));
    await waitFor('placement over three nodes', 30_000, async () => (placed(await status(procs3[0]!), nodes) ? true : undefined));
    await sleep(1_000);
    // The victim is the node that holds the most shards.
    const victimName = [...nodes].sort((a, b) => shardsOf(b, nodes, 8).length - shardsOf(a, nodes, 8).length)[0]!;
    const victim = procs3.find((p) => p.name === victimName)!;
    const survivors = procs3.filter((p) => p !== victim);
    const victimShards = shardsOf(victimName, nodes, 8);
    expect(victimShards.length).toBeGreaterThan(0);
    const ackedBefore = new Map(survivors.map((p) => [p.name, acks(p).length]));

    const killedAt = Date.now();
    victim.child.kill('SIGKILL');
    expect(await victim.exited).toBe('SIGKILL');
    const rest = survivors.map((p) => p.name);
    // Served: the survivors hold the victim's shards by placement and acknowledge commands on each of them.
    const servedAfter = await waitFor('the victim\'s shards to be served by the survivors', s.ttl + 5_000 + 2_000, async () => {
      const st = await status(survivors[0]!);
      if (!placed(st, rest)) return undefined;
      const newAcks = survivors.flatMap((p) => acks(p).slice(ackedBefore.get(p.name)));
      const served = new Set(newAcks.map((a) => a.shard));
      return victimShards.every((sh) => served.has(sh)) ? Date.now() - killedAt : undefined;
    });
    expect(servedAfter).toBeLessThanOrEqual(s.ttl + 5_000);

    await stopAll();
    expect(await expectLogWhole(s, procs3)).toBeGreaterThan(50);
  }

  it('serves the shards of a node killed with SIGKILL elsewhere within the lease TTL + 5 s, and every acknowledged command is in the log once', async () => {
    await failover({ ...freshStream('FAILOVER'), ttl: 2_000, settle: 500, shards: 8, load: true });
  });

  it('fails over the same way on a 3-server NATS cluster with the stream replicated 3 times', async () => {
    const cluster = await startNatsCluster();
    try {
      await failover({ ...freshStream('FAILR3'), ttl: 2_000, settle: 500, shards: 8, load: true, servers: cluster.urls.join(','), replicas: 3 });
    } finally {
      for (const p of procs.splice(0)) {
        if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
        await p.exited;
      }
      await cluster.stop();
    }
  }, 120_000);

  it('makes a node paused past its lease drop its shards when resumed, without forking the log', async () => {
    const s: Setup = { ...freshStream('STALE'), ttl: 2_000, settle: 500, shards: 8, load: true };
    const nodes = ['node-1', 'node-2'];
    const [a, b] = await Promise.all(nodes.map((n) => startNode(n, s)));
    await waitFor('placement over two nodes', 30_000, async () => (placed(await status(a!), nodes) ? true : undefined));
    await sleep(500);
    const victim = shardsOf('node-1', nodes, 8).length >= shardsOf('node-2', nodes, 8).length ? a! : b!;
    const survivor = victim === a ? b! : a!;
    const victimShards = shardsOf(victim.name, nodes, 8);
    expect(victimShards.length).toBeGreaterThan(0);

    victim.child.kill('SIGSTOP');
    const survivorAcks = acks(survivor).length;
    // The survivor takes every shard and writes on the victim's.
    await waitFor('the survivor to take the paused node\'s shards and write on them', s.ttl + 8_000, async () => {
      const st = await status(survivor);
      if (!placed(st, [survivor.name])) return undefined;
      const served = new Set(acks(survivor).slice(survivorAcks).map((x) => x.shard));
      return victimShards.every((sh) => served.has(sh)) ? true : undefined;
    });
    await sleep(500);
    const pausedOut = victim.output().length;
    victim.child.kill('SIGCONT');

    // Resumed, the stale node finds its lease taken (its renewal, or its next append, is refused) and drops the shards.
    await waitFor('the resumed node to drop the shards it lost', 10_000, async () => {
      const said = victim.output().slice(pausedOut);
      const dropped = victimShards.every((sh) => new RegExp(`"shard":${sh},"holder":"${survivor.name}"[^\\n]*lost the lease`).test(said));
      return dropped ? true : undefined;
    });
    // It is healthy again, so placement gives its shards back to it, moved by hand-off.
    await waitFor('placement over both nodes again', 20_000, async () => (placed(await status(survivor), nodes) ? true : undefined));
    await sleep(500);

    await stopAll();
    expect(await expectLogWhole(s, [a!, b!])).toBeGreaterThan(50);
  });

  it('moves no shard when a node restarts with the same name within the settle window', async () => {
    const s: Setup = { ...freshStream('RESTART'), ttl: 3_000, settle: 8_000, shards: 8, load: false };
    const nodes = ['node-1', 'node-2'];
    const [a, b] = await Promise.all(nodes.map((n) => startNode(n, s)));
    const before = await waitFor('placement over two nodes', 30_000, async () => {
      const st = await status(a!);
      return placed(st, nodes) ? st : undefined;
    });
    const heldBefore = before.leases.map((l) => [l.shard, l.node]);

    b!.child.kill('SIGKILL');
    await b!.exited;
    // Away longer than its heartbeat TTL: node-1 no longer sees it, and only the settle window keeps its shards in place.
    // Watch the leases while node-2 is away and back: none is ever held by another node.
    let watching = true;
    const seen: string[] = [];
    const watcher = (async () => {
      while (watching) {
        const st = await status(a!).catch(() => null);
        if (st !== null) for (const l of st.leases) if (!shardsOf(l.node, nodes, 8).includes(l.shard)) seen.push(`${l.shard}@${l.node}`);
        await sleep(100);
      }
    })();
    await sleep(s.ttl + 1_500);
    const away = await status(a!);
    expect(away.nodes.map((n) => n.node)).toEqual(['node-1']);
    const again = await startNode('node-2', s, b!.dataDir);
    const after = await waitFor('node-2 to hold its shards again', 15_000, async () => {
      const st = await status(again);
      return placed(st, nodes) && st.nodes.every((n) => n.state === 'ready') ? st : undefined;
    });
    watching = false;
    await watcher;
    expect(seen).toEqual([]);
    expect(after.leases.map((l) => [l.shard, l.node])).toEqual(heldBefore);
    await stopAll();
  });

  it('hands every shard of a node stopped with SIGTERM to the others at once, not after its lease TTL', async () => {
    const s: Setup = { ...freshStream('DRAIN'), ttl: 8_000, settle: 8_000, shards: 8, load: true };
    const nodes = ['node-1', 'node-2'];
    const [a, b] = await Promise.all(nodes.map((n) => startNode(n, s)));
    await waitFor('placement over two nodes', 30_000, async () => (placed(await status(a!), nodes) ? true : undefined));
    await sleep(500);
    const before = acks(a!).length;

    const stoppedAt = Date.now();
    b!.child.kill('SIGTERM');
    expect(await b!.exited).toBe(0);
    // Draining, node-2 released its leases after finishing its appends: node-1 takes them and writes on them
    // well inside both the lease TTL and the settle window (a node that leaves on purpose is not waited for).
    const tookMs = await waitFor('node-1 to serve every shard', s.ttl, async () => {
      const st = await status(a!);
      if (!placed(st, ['node-1']) || st.nodes.some((n) => n.node === 'node-2')) return undefined;
      const served = new Set(acks(a!).slice(before).map((x) => x.shard));
      return shardsOf('node-2', nodes, 8).every((sh) => served.has(sh)) ? Date.now() - stoppedAt : undefined;
    });
    expect(tookMs).toBeLessThan(s.ttl / 2);

    await stopAll();
    expect(await expectLogWhole(s, [a!, b!])).toBeGreaterThan(50);
  });

  it('answers a commandId re-sent after a planned hand-off once, from the new owner, with the version first acknowledged', async () => {
    const s = freshStream('HANDOFF');
    const opts = { ...s, leaseTtlMs: 3_000, settleMs: 200, workers: 1 };
    const running: Troupe[] = [];
    try {
      const a = await startInProcess(nats.url, { ...opts, nodeName: 'node-1' });
      running.push(a);
      const b = await startInProcess(nats.url, { ...opts, nodeName: 'node-2' });
      running.push(b);
      const nodes = ['node-1', 'node-2'];
      await waitFor('placement over two nodes', 20_000, async () => (
        JSON.stringify(a.ownedShards) === JSON.stringify(shardsOf('node-1', nodes, 8)) && JSON.stringify(b.ownedShards) === JSON.stringify(shardsOf('node-2', nodes, 8)) ? true : undefined));
      const onB = Array.from({ length: 40 }, (_, i) => `acct-${i}`).filter((id) => b.ownedShards.includes(shardOf('Account', id, 8))).slice(0, 4);
      expect(onB.length).toBeGreaterThan(0);
      const first = new Map<string, number>();
      for (const id of onB) {
        await b.send('Account', id, 'OpenAccount', {}, { commandId: `open-${id}` });
        first.set(id, (await b.send('Account', id, 'Deposit', { amount: 5 }, { commandId: `dep-${id}` })).version);
      }

      await b.stop();
      running.splice(running.indexOf(b), 1);
      await waitFor('node-1 to own every shard', 10_000, async () => (a.ownedShards.length === 8 ? true : undefined));
      for (const id of onB) {
        await expect(a.send('Account', id, 'Deposit', { amount: 5 }, { commandId: `dep-${id}` })).resolves.toMatchObject({ duplicate: true, version: first.get(id) });
        await expect(a.send('Account', id, 'Deposit', { amount: 1 })).resolves.toMatchObject({ duplicate: false, version: first.get(id)! + 1 });
        expect(await a.query('Account', id)).toEqual({ state: { opened: true, balance: 6 }, version: 3 });
      }
      const events = await readEvents(nats.url, s.stream);
      for (const id of onB) expect(events.filter((e) => e.commandId === `dep-${id}`)).toHaveLength(1);
    } finally {
      for (const n of running) await n.stop().catch(() => {});
    }
  });
});
