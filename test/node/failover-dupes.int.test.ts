// Exactly once per commandId across a failover: a command re-sent while its first attempt is
// still queued at the new owner (the shard opening, the actor replaying its log) is answered
// with the first attempt's result, never decided again; and after a node is killed with
// SIGKILL under a retrying TroupeClient load, no commandId is in the log twice.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { shardOf } from '../../runtime/envelope.ts';
import { TroupeClient } from '../../runtime/remote/client.ts';
import type { ClusterStatus } from '../../runtime/node/membership.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { countByCommandId, freshStream, range1, readEvents, sleep, startNode } from '../helpers/troupe.ts';

const nodeScript = fileURLToPath(new URL('../fixtures/serving-node.ts', import.meta.url));
const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

interface NodeProc {
  name: string;
  child: ChildProcessWithoutNullStreams;
  url: string;
  exited: Promise<NodeJS.Signals | number | null>;
  output(): string;
}

describe('failover duplicates', () => {
  const nats = useNatsServer();
  const procs: NodeProc[] = [];
  afterEach(async () => {
    for (const p of procs.splice(0)) {
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
      await p.exited;
    }
  });

  async function startProc(name: string, stream: string, subjectPrefix: string, ttl: number, shards: number): Promise<NodeProc> {
    const child = spawn(process.execPath, ['--import', 'tsx', nodeScript, nats.url, tempDir(), stream, subjectPrefix, name, String(ttl), '300', String(shards)], { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code)));
    const p: NodeProc = { name, child, url: '', exited, output: () => out };
    procs.push(p);
    const until = Date.now() + 40_000;
    for (;;) {
      const m = /\{"event":"started","url":"([^"]+)"\}/.exec(out);
      if (m !== null) return Object.assign(p, { url: m[1]! });
      if (Date.now() > until || child.exitCode !== null) throw new Error(`node ${name} did not start:\n${out}`);
      await sleep(25);
    }
  }

  async function leases(p: NodeProc): Promise<Map<number, string>> {
    const st = await (await fetch(`${p.url}/cluster`)).json() as ClusterStatus;
    return new Map(st.leases.map((l) => [l.shard, l.node]));
  }

  it('decides a commandId sent three times while its actor replays its log once: one commit, one version in every answer', async () => {
    const { stream, subjectPrefix } = freshStream('DUPA');
    const first = await startNode(nats.url, { stream, subjectPrefix, shards: 4, ownership: 'none' });
    const accounts = range1(6).map((i) => `replayed-${i}`);
    try {
      await Promise.all(accounts.map((a) => first.send('Account', a, 'OpenAccount', {})));
      await Promise.all(accounts.flatMap((a) => range1(30).map((amount) => first.send('Account', a, 'Deposit', { amount }))));
    } finally {
      await first.stop();
    }
    // Another node, its cache empty (and no checkpoint shared: ownership 'none'): each shard
    // catches up from the log on first use and each actor replays its commits from the log,
    // while each commandId arrives three times.
    const second = await startNode(nats.url, { stream, subjectPrefix, shards: 4, ownership: 'none' });
    try {
      const sends = accounts.flatMap((a) => [1, 2, 3].map(() => second.send('Account', a, 'Deposit', { amount: 1000 }, { commandId: `again-${a}` })));
      const results = await Promise.all(sends);
      for (const a of accounts) {
        const mine = results.filter((r) => r.aggregateId === a);
        expect(new Set(mine.map((r) => r.version)), a).toEqual(new Set([32]));
        expect(mine.filter((r) => !r.duplicate), a).toHaveLength(1);
      }
      for (const a of accounts) expect((await second.query('Account', a)).version, a).toBe(32);
    } finally {
      await second.stop();
    }
    const counts = countByCommandId(await readEvents(nats.url, stream));
    expect([...counts].filter(([, n]) => n !== 1)).toEqual([]);
  });

  it('stores every acknowledged command once after the owner of its shard is killed with SIGKILL under a retrying client with a short timeout', async () => {
    const { stream, subjectPrefix } = freshStream('DUPK');
    const SHARDS = 16;
    const TTL = 2_000;
    const [one, two] = [await startProc('node-1', stream, subjectPrefix, TTL, SHARDS), await startProc('node-2', stream, subjectPrefix, TTL, SHARDS)];
    let held = new Map<number, string>();
    for (const until = Date.now() + 30_000; ; await sleep(100)) {
      held = await leases(one!).catch(() => new Map<number, string>());
      const nodes = new Set(held.values());
      if (held.size === SHARDS && nodes.size === 2) break;
      if (Date.now() > until) throw new Error(`no placement over two nodes: ${JSON.stringify([...held])}`);
    }
    const client = await TroupeClient.connect({ servers: nats.url, subjectPrefix, timeoutMs: 200, retry: { attempts: 1000, baseMs: 20, maxMs: 300, totalMs: 60_000 } });
    try {
      // The victim's actors hold some history, so the survivor replays them from the log when they move.
      const accounts = range1(48).map((i) => `acct-${i}`);
      const victim = held.get(shardOf('Account', accounts[0]!, SHARDS)) === 'node-1' ? one! : two!;
      const mine = accounts.filter((a) => held.get(shardOf('Account', a, SHARDS)) === victim.name);
      expect(mine.length).toBeGreaterThan(4);
      await Promise.all(accounts.map((a) => client.send('Account', a, 'OpenAccount', {})));
      for (let round = 0; round < 40; round++) await Promise.all(accounts.map((a) => client.send('Account', a, 'Deposit', { amount: 1 })));

      const acked: string[] = [];
      const failed: unknown[] = [];
      let ackedMineAfterKill = 0;
      let killedAt = 0;
      let stop = false;
      let next = 0;
      const lane = async (): Promise<void> => {
        while (!stop) {
          const a = mine[next++ % mine.length]!;
          try {
            const r = await client.send('Account', a, 'Deposit', { amount: 1 });
            acked.push(r.commandId);
            if (killedAt > 0) ackedMineAfterKill++;
          } catch (e) {
            failed.push(e);
          }
        }
      };
      const lanes = Array.from({ length: 192 }, lane);
      await sleep(1_000);
      killedAt = Date.now();
      victim.child.kill('SIGKILL');
      expect(await victim.exited).toBe('SIGKILL');
      for (const until = Date.now() + 30_000; ackedMineAfterKill < 2_000 && Date.now() < until;) await sleep(100);
      stop = true;
      await Promise.all(lanes);
      expect(failed.map(String).slice(0, 3)).toEqual([]);
      expect(ackedMineAfterKill).toBeGreaterThan(0);

      const counts = countByCommandId(await readEvents(nats.url, stream));
      const notOnce = acked.filter((id) => counts.get(id) !== 1);
      expect(notOnce.slice(0, 5), `${notOnce.length} of ${acked.length} acknowledged commands are not in the log exactly once`).toEqual([]);
      const twice = [...counts].filter(([, n]) => n !== 1);
      expect(twice.slice(0, 5), `${twice.length} commandIds are in the log more than once`).toEqual([]);
    } finally {
      await client.close();
    }
  }, 90_000);
});
