import { describe, expect, it } from 'vitest';
import { covers, eligibleOwnerOf, mergeReads, ownerOf, placeShards, placeShardsReading, shardsReading, unreadable, type Candidate, type Reads } from '../runtime/placement.ts';
import { defineActor, upcast, addField } from '../runtime/index.ts';
import { Registry, readsOf } from '../runtime/contracts/registry.ts';
import { LogNeeds } from '../runtime/node/log-needs.ts';
import { isTroupeError } from '../runtime/errors.ts';
import { COMMIT, type WireCommit } from '../runtime/wire.ts';

const v1: Reads = { 'Account.Opened': 1, 'Account.Deposited': 1 };
const v2: Reads = { 'Account.Opened': 1, 'Account.Deposited': 2 };
const cands = (...list: [string, Reads | undefined][]): Candidate[] => list.map(([node, reads]) => ({ node, reads }));

describe('placement with event versions', () => {
  it('lets a process read a log only when it knows every event type of it at the version written or newer', () => {
    expect(covers(v2, { 'Account.Deposited': 2 })).toBe(true);
    expect(covers(v2, { 'Account.Deposited': 1 })).toBe(true);
    expect(covers(v1, { 'Account.Deposited': 2 })).toBe(false);
    expect(covers(v1, { 'Ticket.Opened': 1 })).toBe(false);
    expect(covers(v1, undefined)).toBe(true);
    // A node of an older Troupe announces nothing: taken to read everything (as it does itself).
    expect(covers(undefined, { 'Account.Deposited': 9 })).toBe(true);
    expect(unreadable(v1, { 'Account.Deposited': 2, 'Account.Opened': 1, 'Ticket.Opened': 1 })).toEqual(['Account.Deposited v2', 'Ticket.Opened v1']);
  });

  it('merges records upwards and returns the same object when nothing is raised', () => {
    expect(mergeReads(v1, { 'Account.Deposited': 2, 'Ticket.Opened': 1 })).toEqual({ ...v1, 'Account.Deposited': 2, 'Ticket.Opened': 1 });
    expect(mergeReads(v2, v1)).toBe(v2);
  });

  it('never places a shard whose log needs v2 on a node that reads only v1', () => {
    const needs = (s: number): Reads | undefined => (s % 2 === 0 ? { 'Account.Deposited': 2 } : undefined);
    const nodes = cands(['a', v2], ['b', v1], ['c', v1]);
    const { byNode, blocked } = placeShardsReading(nodes, 64, needs);
    expect(blocked).toEqual([]);
    for (const s of [...byNode.get('b')!, ...byNode.get('c')!]) expect(s % 2).toBe(1);
    expect([...byNode.values()].flat().sort((x, y) => x - y)).toEqual(Array.from({ length: 64 }, (_, i) => i));
    for (let s = 0; s < 64; s += 2) expect(eligibleOwnerOf(s, nodes, needs(s))).toBe('a');
  });

  it('places shards whose logs need nothing new exactly as plain rendezvous placement does', () => {
    const nodes = cands(['a', v2], ['b', v1], ['c', v1]);
    const plain = placeShards(['a', 'b', 'c'], 64);
    const needs = (s: number): Reads | undefined => (s < 32 ? { 'Account.Deposited': 2 } : { 'Account.Deposited': 1 });
    const { byNode } = placeShardsReading(nodes, 64, needs);
    for (const [n, shards] of plain) for (const s of shards) if (s >= 32) expect(byNode.get(n)).toContain(s);
    for (let s = 32; s < 64; s++) expect(shardsReading(ownerOf(s, ['a', 'b', 'c'])!, nodes, 64, needs)).toContain(s);
  });

  it('spreads a v2 shard over the nodes that read v2, by rendezvous among them', () => {
    const nodes = cands(['a', v2], ['b', v1], ['c', v2]);
    const needs = () => ({ 'Account.Deposited': 2 });
    const { byNode } = placeShardsReading(nodes, 64, needs);
    expect(byNode.get('b')).toEqual([]);
    const plain = placeShards(['a', 'c'], 64);
    expect(byNode.get('a')).toEqual(plain.get('a'));
    expect(byNode.get('c')).toEqual(plain.get('c'));
  });

  it('blocks a shard that no live node can read, naming what each lacks', () => {
    const nodes = cands(['b', v1], ['c', v1]);
    const { byNode, blocked } = placeShardsReading(nodes, 16, (s) => (s === 3 ? { 'Account.Deposited': 2 } : undefined));
    expect([...byNode.values()].flat()).not.toContain(3);
    expect(blocked).toEqual([{ shard: 3, needs: { 'Account.Deposited': 2 }, reason: 'b cannot read Account.Deposited v2; c cannot read Account.Deposited v2' }]);
    expect(shardsReading('b', nodes, 16, (s) => (s === 3 ? { 'Account.Deposited': 2 } : undefined))).not.toContain(3);
  });

  it('reports what a registry reads: each event type at its current version', () => {
    const account = defineActor({
      type: 'Account',
      initialState: () => ({ balance: 0 }),
      commands: { Deposit: (_s, c: { amount: number }) => [{ type: 'Deposited', payload: { amount: c.amount, currency: 'EUR' } }] },
      events: {
        Deposited: { version: 2, upcasters: [upcast(1, 2, addField('currency', 'EUR'))], evolve: (s: { balance: number }, e: { amount: number }) => ({ balance: s.balance + e.amount }) },
        Closed: (s: { balance: number }) => s,
      },
    });
    expect(readsOf([account])).toEqual({ 'Account.Deposited': 2, 'Account.Closed': 1 });
    const r = new Registry();
    r.add(account as never);
    expect(r.reads()).toEqual({ 'Account.Deposited': 2, 'Account.Closed': 1 });
    expect(r.actorVersions()).toEqual({ Account: 1 });
  });
});

describe('a shard that meets a version it cannot read', () => {
  function fakeStore(initial: Reads = {}) {
    let record: Reads = initial;
    const raised: Reads[] = [];
    return {
      raised,
      get record() { return record; },
      store: {
        read: async () => record,
        raise: async (_shard: number, needs: Reads) => { record = mergeReads(record, needs); raised.push(needs); return record; },
      },
    };
  }
  const commit = (type: string, events: [string, number][]) => {
    const c: unknown[] = [];
    c[COMMIT.type] = type;
    c[COMMIT.events] = events.map(([name, version], i) => [i, name, version, {}]);
    return c as unknown as WireCommit;
  };

  it('raises the record to what its catch-up read and refuses the shard with a retryable SHARD_NOT_OWNED', async () => {
    const f = fakeStore();
    const needs = new LogNeeds(5, { store: f.store as never, reads: { 'Ticket.TicketOpened': 1 } }, () => {});
    needs.catchingUp();
    needs.saw(commit('Ticket', [['TicketOpened', 1]]));
    needs.saw(commit('Ticket', [['TicketOpened', 2]]));
    const e = await needs.caughtUp().then(() => null, (err: unknown) => err);
    expect(isTroupeError(e, 'SHARD_NOT_OWNED')).toBe(true);
    expect((e as { retryable: boolean }).retryable).toBe(true);
    expect((e as Error).message).toContain('Ticket.TicketOpened v2');
    expect(f.record).toEqual({ 'Ticket.TicketOpened': 2 });
  });

  it('refuses a shard whose record names a version it cannot read even when the tail it read holds none', async () => {
    const f = fakeStore({ 'Ticket.TicketOpened': 2 });
    const needs = new LogNeeds(5, { store: f.store as never, reads: { 'Ticket.TicketOpened': 1 } }, () => {});
    needs.catchingUp();
    await expect(needs.caughtUp()).rejects.toThrow(/Ticket.TicketOpened v2/);
    expect(f.raised).toEqual([]);
  });

  it('holds appends until a newer version is recorded, and records each version once', async () => {
    const f = fakeStore({ 'Ticket.TicketOpened': 1 });
    let woken = 0;
    const needs = new LogNeeds(5, { store: f.store as never, reads: { 'Ticket.TicketOpened': 2 } }, () => { woken++; });
    needs.catchingUp();
    await needs.caughtUp();
    const v2 = { aggregateType: 'Ticket', eventType: 'TicketOpened', version: 2 } as never;
    needs.wrote(v2);
    expect(needs.holding).toBe(true);
    await sleep(0);
    await sleep(0);
    expect(needs.holding).toBe(false);
    expect(woken).toBe(1);
    needs.wrote(v2);
    expect(needs.holding).toBe(false);
    expect(f.raised).toEqual([{ 'Ticket.TicketOpened': 2 }]);
    expect(f.record).toEqual({ 'Ticket.TicketOpened': 2 });
  });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
