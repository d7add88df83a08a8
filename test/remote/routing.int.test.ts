// Owner-addressed requests: each command, query and history request goes to its shard's
// subject, which only the node holding the shard's lease subscribes to; the client retries
// what fails retryably while a shard has no owner or moves.
import { Kvm } from '@nats-io/kv';
import { afterEach, describe, expect, it } from 'vitest';
import { shardOf } from '../../runtime/envelope.ts';
import { isTroupeError, type TroupeError } from '../../runtime/errors.ts';
import type { Troupe } from '../../runtime/node/system.ts';
import { TroupeClient } from '../../runtime/remote/client.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { countByCommandId, freshStream, natsConnect, readEvents, startNode } from '../helpers/troupe.ts';

const SHARDS = 8;

/** An Account id whose actor lives on `shard`. */
function idOnShard(shard: number, label: string): string {
  for (let i = 0; ; i++) if (shardOf('Account', `${label}-${i}`, SHARDS) === shard) return `${label}-${i}`;
}

describe('owner-addressed requests', () => {
  const nats = useNatsServer();
  const nodes: Troupe[] = [];
  const clients: TroupeClient[] = [];
  afterEach(async () => {
    while (clients.length > 0) await clients.pop()!.close().catch(() => {});
    while (nodes.length > 0) await nodes.pop()!.stop().catch(() => {});
  });
  async function start(options: Parameters<typeof startNode>[1]): Promise<Troupe> {
    const node = await startNode(nats.url, { shards: SHARDS, ...options });
    nodes.push(node);
    return node;
  }
  async function client(subjectPrefix: string, options: Partial<Parameters<typeof TroupeClient.connect>[0]> = {}): Promise<TroupeClient> {
    const c = await TroupeClient.connect({ servers: nats.url, subjectPrefix, timeoutMs: 10_000, ...options });
    clients.push(c);
    return c;
  }

  it('reads right after an acknowledged write always see it, with a second node that owns no shard beside the owner', async () => {
    const s = freshStream('OWNREAD');
    const a = await start({ ...s, nodeName: 'node-a' });
    const b = await start({ ...s, nodeName: 'node-b' });
    expect(a.ownedShards).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(b.ownedShards).toEqual([]);
    const c = await client(s.subjectPrefix);
    const ids = Array.from({ length: 8 }, (_, shard) => idOnShard(shard, 'fresh'));
    for (const id of ids) await c.send('Account', id, 'OpenAccount', {});
    // Read each actor on node-b first, so that a node serving reads it does not own would hold a copy.
    for (const id of ids) {
      const e = await b.query('Account', id).then(() => null, (err: unknown) => err);
      expect(isTroupeError(e, 'SHARD_NOT_OWNED')).toBe(true);
    }
    for (let round = 1; round <= 6; round++) {
      const written = await Promise.all(ids.map((id) => c.send('Account', id, 'Deposit', { amount: round })));
      const [states, histories] = await Promise.all([Promise.all(ids.map((id) => c.query('Account', id))), Promise.all(ids.map((id) => c.history('Account', id)))]);
      expect(states.map((q) => q.version)).toEqual(written.map((w) => w.version));
      expect(histories.map((h) => h.at(-1)?.commandId)).toEqual(written.map((w) => w.commandId));
    }
    expect(await c.query('Account', ids[0]!)).toEqual({ state: { opened: true, balance: 21 }, version: 7 });
  });

  it('absorbs a move in its retries when the owner stops and another node takes over: no error, every command appended once', async () => {
    const s = freshStream('MOVE');
    const a = await start({ ...s, nodeName: 'node-a', leaseTtlMs: 1500 });
    const b = await start({ ...s, nodeName: 'node-b', leaseTtlMs: 1500 });
    expect(b.ownedShards).toEqual([]);
    const c = await client(s.subjectPrefix);
    const ids = Array.from({ length: 8 }, (_, shard) => idOnShard(shard, 'mover'));
    await Promise.all(ids.map((id) => c.send('Account', id, 'OpenAccount', {})));

    // Four deposits per actor in flight at a time, for about 2.5 s; node-a stops after 0.5 s.
    const acknowledged: string[] = [];
    const errors: unknown[] = [];
    const until = Date.now() + 2_500;
    const load = Promise.all(ids.flatMap((id) => [0, 1, 2, 3].map(async () => {
      while (Date.now() < until) {
        await c.send('Account', id, 'Deposit', { amount: 1 }).then((r) => { acknowledged.push(r.commandId); }, (e: unknown) => { errors.push(e); });
      }
    })));
    await new Promise((r) => setTimeout(r, 500));
    const before = acknowledged.length;
    await a.stop();
    await load;

    expect(errors.map((e) => (e as TroupeError).code)).toEqual([]);
    expect(before).toBeGreaterThan(0);
    expect(acknowledged.length).toBeGreaterThan(before);
    expect(b.ownedShards).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    const events = await readEvents(nats.url, s.stream);
    const counts = countByCommandId(events);
    expect(acknowledged.filter((id) => counts.get(id) !== 1)).toEqual([]);
    // Nothing but what was acknowledged was appended, and each actor's versions form one line.
    const deposits = events.filter((e) => e.eventType === 'Deposited');
    expect(deposits.length).toBe(acknowledged.length);
    for (const id of ids) {
      expect(events.filter((e) => e.aggregateId === id).map((e) => e.sequence)).toEqual(Array.from({ length: events.filter((e) => e.aggregateId === id).length }, (_, i) => i + 1));
    }
    // node-b now answers the reads, with every acknowledged deposit.
    const states = await Promise.all(ids.map((id) => c.query<{ balance: number }>('Account', id)));
    expect(states.reduce((sum, q) => sum + q.state.balance, 0)).toBe(acknowledged.length);
  });

  it('fails a request for a shard no node serves with a retryable error, after a bounded number of tries', async () => {
    const s = freshStream('NOOWNER');
    const ttl = 60_000;
    // A node that is gone holds shard 3's lease (until it expires, long after this test).
    const nc = await natsConnect(nats.url);
    try {
      const kv = await new Kvm(nc).create(`${s.stream}_shards`, { history: 1, ttl, replicas: 1 });
      await kv.create('shard.3', new TextEncoder().encode(JSON.stringify({ node: 'node-gone', since: Date.now() })));
      const a = await start({ ...s, nodeName: 'node-a', leaseTtlMs: ttl });
      expect(a.ownedShards).toEqual([0, 1, 2, 4, 5, 6, 7]);

      const c = await client(s.subjectPrefix, { timeoutMs: 300, retry: { attempts: 3, baseMs: 20, maxMs: 100, totalMs: 5_000 } });
      const orphan = idOnShard(3, 'orphan');
      // Nobody subscribes to shard 3's subjects: NATS answers "no responders" at once, each try.
      const unserved = await c.history('Account', orphan).then(() => null, (err: unknown) => err);
      expect(isTroupeError(unserved, 'JOURNAL_UNAVAILABLE')).toBe(true);
      expect((unserved as TroupeError).retryable).toBe(true);
      expect((unserved as TroupeError).message).toContain('no node serves shard 3');

      const tries = { q: 0, cmd: 0 };
      nc.subscribe(`${s.subjectPrefix}.q.3`, { callback: () => { tries.q++; } });
      nc.subscribe(`${s.subjectPrefix}.cmd.3`, { callback: () => { tries.cmd++; } });
      await nc.flush();
      // To count the tries, a watcher that answers nothing: each try now waits out timeoutMs.
      const started = Date.now();
      const read = await c.query('Account', orphan).then(() => null, (err: unknown) => err);
      expect(isTroupeError(read, 'JOURNAL_UNAVAILABLE')).toBe(true);
      expect((read as TroupeError).retryable).toBe(true);
      expect((read as TroupeError).data).toMatchObject({ aggregateId: orphan, shard: 3 });
      expect(tries.q).toBe(3);
      expect(Date.now() - started).toBeLessThan(5_000);

      const sent = await c.send('Account', orphan, 'OpenAccount', {}, { commandId: 'orphan-open' }).then(() => null, (err: unknown) => err);
      expect((sent as TroupeError).retryable).toBe(true);
      expect((sent as TroupeError).data.commandId).toBe('orphan-open');
      expect(tries.cmd).toBe(3);
      expect((await readEvents(nats.url, s.stream)).some((e) => e.commandId === 'orphan-open')).toBe(false);

      // The other shards are served.
      const other = idOnShard(4, 'served');
      await expect(c.send('Account', other, 'OpenAccount', {})).resolves.toMatchObject({ version: 1 });
      expect(await c.query('Account', other)).toMatchObject({ version: 1 });
    } finally {
      await nc.close();
    }
  });
});
