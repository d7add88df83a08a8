// Single writer per shard: leases keep a second node from writing, and log fencing (expected
// last subject sequence) refuses a stale writer when there are no leases at all.
import { afterEach, describe, expect, it } from 'vitest';
import { shardOf } from '../../runtime/envelope.ts';
import { ConcurrencyError, isTroupeError } from '../../runtime/errors.ts';
import type { Troupe } from '../../runtime/node/system.ts';
import { TroupeClient } from '../../runtime/remote/client.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { freshStream, messageCount, readEvents, readLog, startNode } from '../helpers/troupe.ts';

describe('single writer', () => {
  const nats = useNatsServer();
  const nodes: Troupe[] = [];
  afterEach(async () => {
    while (nodes.length > 0) await nodes.pop()!.stop().catch(() => {});
  });
  async function start(options: Parameters<typeof startNode>[1]): Promise<Troupe> {
    const node = await startNode(nats.url, options);
    nodes.push(node);
    return node;
  }

  it('gives a second node no shards while the first holds their leases, and its sends fail with SHARD_NOT_OWNED', async () => {
    const s = freshStream('LEASE');
    // Placement would hand node-b its share after the settle window; this test is about leases, so the window is long.
    const a = await start({ ...s, nodeName: 'node-a', settleMs: 600_000 });
    expect(a.ownedShards).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    await a.send('Account', 'x', 'OpenAccount', {});
    await a.send('Account', 'x', 'Deposit', { amount: 10 });

    const b = await start({ ...s, nodeName: 'node-b', settleMs: 600_000 });
    expect(b.ownedShards).toEqual([]);
    const before = await messageCount(nats.url, s.stream);
    const e = await b.send('Account', 'x', 'Deposit', { amount: 1 }, { commandId: 'from-b' }).then(() => null, (err: unknown) => err);
    expect(e).toBeInstanceOf(ConcurrencyError);
    expect(isTroupeError(e, 'SHARD_NOT_OWNED')).toBe(true);
    expect((e as ConcurrencyError).retryable).toBe(true);
    expect((e as ConcurrencyError).data).toMatchObject({ owner: 'node-a', shard: shardOf('Account', 'x', 8), aggregateId: 'x' });
    const other = await b.send('Account', 'y', 'OpenAccount', {}).then(() => null, (err: unknown) => err);
    expect(isTroupeError(other, 'SHARD_NOT_OWNED')).toBe(true);

    expect(await messageCount(nats.url, s.stream)).toBe(before);
    expect((await readEvents(nats.url, s.stream)).some((ev) => ev.commandId === 'from-b')).toBe(false);
    await expect(a.send('Account', 'x', 'Deposit', { amount: 5 })).resolves.toMatchObject({ version: 3 });
    expect(await a.query('Account', 'x')).toMatchObject({ state: { balance: 15 }, version: 3 });
  });

  it('refuses a stale writer through the log when there are no leases, and its retry decides on the state the log holds', async () => {
    const s = freshStream('FENCE');
    const a = await start({ ...s, ownership: 'none', nodeName: 'node-a' });
    await a.send('Account', 'x', 'OpenAccount', {});
    await a.send('Account', 'x', 'Deposit', { amount: 100 });

    // B starts later, catches up from the log, and writes to the same actor.
    const b = await start({ ...s, ownership: 'none', nodeName: 'node-b' });
    expect(await b.query('Account', 'x')).toEqual({ state: { opened: true, balance: 100 }, version: 2 });
    await expect(b.send('Account', 'x', 'Deposit', { amount: 50 })).resolves.toMatchObject({ version: 3 });

    // A still believes x is at version 2 with 100: its append is refused, nothing of it stored.
    const e = await a.send('Account', 'x', 'Deposit', { amount: 7 }, { commandId: 'stale-a' }).then(() => null, (err: unknown) => err);
    expect(e).toBeInstanceOf(ConcurrencyError);
    expect(isTroupeError(e, 'CONCURRENCY')).toBe(true);
    expect((e as ConcurrencyError).retryable).toBe(true);
    expect((await readEvents(nats.url, s.stream)).some((ev) => ev.commandId === 'stale-a')).toBe(false);

    // The retry (same commandId) is decided against 150, B's write included.
    const retry = await a.send('Account', 'x', 'Deposit', { amount: 7 }, { commandId: 'stale-a' });
    expect(retry).toMatchObject({ version: 4, duplicate: false });
    expect(await a.query('Account', 'x')).toEqual({ state: { opened: true, balance: 157 }, version: 4 });
    // A withdrawal only B's deposit makes possible now succeeds on A.
    await expect(a.send('Account', 'x', 'Withdraw', { amount: 157 })).resolves.toMatchObject({ version: 5 });

    // The shard's log holds one line of versions for x: no fork.
    const subject = `${s.subjectPrefix}.log.${shardOf('Account', 'x', 8)}`;
    const xEvents = (await readLog(nats.url, s.stream)).filter((m) => m.subject === subject).flatMap((m) => m.events).filter((ev) => ev.aggregateId === 'x');
    expect(xEvents.map((ev) => [ev.sequence, ev.eventType, (ev.payload as { amount?: number }).amount])).toEqual([
      [1, 'AccountOpened', undefined], [2, 'Deposited', 100], [3, 'Deposited', 50], [4, 'Deposited', 7], [5, 'Withdrawn', 157],
    ]);
  });

  it('forwards a client command that reaches a node without its shard to the node that leases it', async () => {
    const s = freshStream('FWD');
    // A long settle window keeps every shard on node-a (placement would give node-b its share).
    const a = await start({ ...s, nodeName: 'node-a', settleMs: 600_000 });
    const b = await start({ ...s, nodeName: 'node-b', settleMs: 600_000 });
    expect(b.ownedShards).toEqual([]);
    const client = await TroupeClient.connect({ servers: nats.url, subjectPrefix: s.subjectPrefix, timeoutMs: 20_000 });
    try {
      // Twenty requests, one at a time: both nodes serve the command subject in one queue group,
      // so node-b takes about half of them (all twenty going to node-a has odds of 1 in 2^20).
      await client.send('Account', 'fwd', 'OpenAccount', {});
      for (let i = 0; i < 20; i++) {
        const r = await client.send('Account', 'fwd', 'Deposit', { amount: 1 }, { commandId: `fwd-${i}` });
        expect(r).toMatchObject({ commandId: `fwd-${i}`, version: i + 2, duplicate: false });
      }
      // A re-sent commandId is answered once, whichever node takes it.
      for (let i = 0; i < 6; i++) {
        await expect(client.send('Account', 'fwd', 'Deposit', { amount: 1 }, { commandId: 'fwd-3' })).resolves.toMatchObject({ duplicate: true, version: 5 });
      }
    } finally {
      await client.close();
    }
    expect(await a.query('Account', 'fwd')).toEqual({ state: { opened: true, balance: 20 }, version: 21 });
    const events = (await readEvents(nats.url, s.stream)).filter((e) => e.aggregateId === 'fwd');
    expect(events.map((e) => e.sequence)).toEqual(Array.from({ length: 21 }, (_, i) => i + 1));
  });
});
