// Shard checkpoints shared on hand-off: a node with a fresh data dir that takes shards over
// restores what the previous owner shared and reads only the log after it, serves the same
// state and history, and answers a commandId sent before the move as a duplicate.
import { describe, expect, it } from 'vitest';
import { shardOf } from '../../runtime/envelope.ts';
import type { Troupe } from '../../runtime/node/system.ts';
import { shardsOf } from '../../runtime/placement.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { freshStream, readEvents, readLog, startNode } from '../helpers/troupe.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const ACCOUNTS = Array.from({ length: 24 }, (_, i) => `acct-${i}`);
const DEPOSITS = 6;

/** Open every account and deposit 1..DEPOSITS into each, every command with a commandId. */
async function load(node: Troupe, ids: readonly string[]): Promise<void> {
  await Promise.all(ids.map(async (id) => {
    await node.send('Account', id, 'OpenAccount', {}, { commandId: `open-${id}` });
    for (let d = 1; d <= DEPOSITS; d++) await node.send('Account', id, 'Deposit', { amount: d }, { commandId: `dep-${id}-${d}` });
  }));
}

async function catchUps(node: Troupe): Promise<{ restored: number; messages: number }> {
  const stats = await node.stats();
  return {
    restored: stats.workers.reduce((n, w) => n + w.restoredCheckpoints, 0),
    messages: stats.workers.reduce((n, w) => n + w.catchUpMessages, 0),
  };
}

/** What the new owner must serve for the accounts it took over, and what the log must hold. */
async function expectServedAfterMove(servers: string, stream: string, owner: Troupe, ids: readonly string[], messagesBefore: number): Promise<void> {
  const balance = (DEPOSITS * (DEPOSITS + 1)) / 2;
  for (const id of ids) {
    expect(await owner.query('Account', id)).toEqual({ state: { opened: true, balance }, version: DEPOSITS + 1 });
    expect((await owner.history('Account', id)).map((e) => e.sequence)).toEqual(Array.from({ length: DEPOSITS + 1 }, (_, i) => i + 1));
    await expect(owner.send('Account', id, 'Deposit', { amount: 3 }, { commandId: `dep-${id}-3` }))
      .resolves.toMatchObject({ duplicate: true, version: 4 });
    await expect(owner.send('Account', id, 'OpenAccount', {}, { commandId: `open-${id}` }))
      .resolves.toMatchObject({ duplicate: true, version: 1 });
  }
  const log = await readLog(servers, stream);
  expect(log).toHaveLength(messagesBefore);
  const events = await readEvents(servers, stream);
  for (const id of ids) {
    for (let d = 1; d <= DEPOSITS; d++) expect(events.filter((e) => e.commandId === `dep-${id}-${d}`)).toHaveLength(1);
  }
}

describe('shard checkpoints', () => {
  const nats = useNatsServer();

  it('restores the checkpoints a stopped node shared and reads none of the log they cover', async () => {
    const s = freshStream('CKPT');
    const opts = { ...s, leaseTtlMs: 3_000, settleMs: 200, workers: 1 };
    const running: Troupe[] = [];
    try {
      const a = await startNode(nats.url, { ...opts, nodeName: 'node-1', dataDir: tempDir() });
      running.push(a);
      await load(a, ACCOUNTS);
      const before = await readLog(nats.url, s.stream);
      const usedShards = new Set(before.map((m) => m.subject));
      expect(before.flatMap((m) => m.events)).toHaveLength(ACCOUNTS.length * (DEPOSITS + 1));
      await a.stop();
      running.splice(0);

      const b = await startNode(nats.url, { ...opts, nodeName: 'node-2', dataDir: tempDir() });
      running.push(b);
      expect(b.ownedShards).toHaveLength(8);
      // A fresh data dir without a shared checkpoint would read every message of the log.
      expect(await catchUps(b)).toEqual({ restored: usedShards.size, messages: 0 });
      await expectServedAfterMove(nats.url, s.stream, b, ACCOUNTS, before.length);
      // The new owner writes on from where the log is: its next command appends once.
      await expect(b.send('Account', ACCOUNTS[0]!, 'Deposit', { amount: 1 })).resolves.toMatchObject({ duplicate: false, version: DEPOSITS + 2 });
    } finally {
      for (const n of running) await n.stop().catch(() => {});
    }
  });

  it('restores the checkpoint shared on a planned hand-off and reads only the log after it', async () => {
    const s = freshStream('CKPTMOVE');
    const opts = { ...s, leaseTtlMs: 3_000, settleMs: 200, workers: 1 };
    const running: Troupe[] = [];
    try {
      const a = await startNode(nats.url, { ...opts, nodeName: 'node-1', dataDir: tempDir() });
      running.push(a);
      await load(a, ACCOUNTS);
      const before = await readLog(nats.url, s.stream);

      const b = await startNode(nats.url, { ...opts, nodeName: 'node-2', dataDir: tempDir() });
      running.push(b);
      const nodes = ['node-1', 'node-2'];
      const toB = shardsOf('node-2', nodes, 8);
      await waitFor('placement over two nodes', 20_000, async () => (
        JSON.stringify(a.ownedShards) === JSON.stringify(shardsOf('node-1', nodes, 8)) && JSON.stringify(b.ownedShards) === JSON.stringify(toB) ? true : undefined));
      const moved = ACCOUNTS.filter((id) => toB.includes(shardOf('Account', id, 8)));
      expect(moved.length).toBeGreaterThan(0);
      const movedMessages = before.filter((m) => toB.some((sh) => m.subject.endsWith(`.${sh}`))).length;
      expect(movedMessages).toBeGreaterThan(0);

      // A lease is held (ownedShards) a moment before its shard is opened: wait for the opens.
      const want = new Set(moved.map((id) => shardOf('Account', id, 8))).size;
      const c = await waitFor('node-2 to open the shards it took', 10_000, async () => {
        const v = await catchUps(b);
        return v.restored >= want ? v : undefined;
      }).catch(async () => catchUps(b));
      expect(c.restored).toBe(want);
      expect(c.messages).toBe(0);
      await expectServedAfterMove(nats.url, s.stream, b, moved, before.length);
    } finally {
      for (const n of running) await n.stop().catch(() => {});
    }
  });

  it('reads the log written after the shared checkpoint, and keeps a local cache that is not behind it', async () => {
    const s = freshStream('CKPTTAIL');
    const opts = { ...s, leaseTtlMs: 3_000, settleMs: 200, workers: 1 };
    const running: Troupe[] = [];
    try {
      const dataDir = tempDir();
      const a = await startNode(nats.url, { ...opts, nodeName: 'node-1', dataDir });
      running.push(a);
      await load(a, ACCOUNTS);
      await a.stop();
      running.splice(0);
      const covered = (await readLog(nats.url, s.stream)).length;

      // Restarted with the same name and data dir: its own cache is as new as the shared one.
      const again = await startNode(nats.url, { ...opts, nodeName: 'node-1', dataDir });
      running.push(again);
      expect(await catchUps(again)).toEqual({ restored: 0, messages: 0 });
      await again.stop();
      running.splice(0);

      // A writer without leases shares no checkpoint: what it appends is the log's tail.
      const tailWriter = await startNode(nats.url, { ...opts, nodeName: 'node-3', ownership: 'none', dataDir: tempDir() });
      running.push(tailWriter);
      for (const id of ACCOUNTS) await tailWriter.send('Account', id, 'Deposit', { amount: 100 }, { commandId: `tail-${id}` });
      await tailWriter.stop();
      running.splice(0);
      const log = await readLog(nats.url, s.stream);
      const tail = log.length - covered;
      expect(tail).toBeGreaterThan(0);

      const b = await startNode(nats.url, { ...opts, nodeName: 'node-2', dataDir: tempDir() });
      running.push(b);
      const c = await catchUps(b);
      expect(c.restored).toBeGreaterThan(0);
      expect(c.messages).toBe(tail);
      const balance = (DEPOSITS * (DEPOSITS + 1)) / 2 + 100;
      for (const id of ACCOUNTS) {
        expect(await b.query('Account', id)).toEqual({ state: { opened: true, balance }, version: DEPOSITS + 2 });
        await expect(b.send('Account', id, 'Deposit', { amount: 100 }, { commandId: `tail-${id}` })).resolves.toMatchObject({ duplicate: true, version: DEPOSITS + 2 });
        await expect(b.send('Account', id, 'Deposit', { amount: 1 }, { commandId: `dep-${id}-1` })).resolves.toMatchObject({ duplicate: true, version: 2 });
      }
      expect(await readLog(nats.url, s.stream)).toHaveLength(log.length);
    } finally {
      for (const n of running) await n.stop().catch(() => {});
    }
  });
});
