// Projections against a real nats-server: read models in LMDB, read-your-writes, checkpoint and
// restart, rebuild, and a new version taking over from the active one once caught up.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actorModules } from '../../actors/index.ts';
import type { EventEnvelope } from '../../runtime/journal/codec.ts';
import { ConsumerStore } from '../../runtime/consumers/consumer-store.ts';
import { isTroupeError } from '../../runtime/errors.ts';
import { project, ReadModel, type Projection, type ProjectionOptions, type View } from '../../runtime/consumers/projection.ts';
import { Troupe } from '../../runtime/node/system.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { foldAccounts, freshStream, range1, readEvents, sleep } from '../helpers/troupe.ts';

interface Balance {
  balance: number;
  version: number;
}

/** The read model under test: a balance per account, and totals across all accounts. */
function applyBalances(e: EventEnvelope, view: View): void {
  const amount = (e.payload as { amount?: number }).amount ?? 0;
  const delta = e.eventType === 'Deposited' ? amount : e.eventType === 'Withdrawn' ? -amount : 0;
  view.update<Balance>(e.aggregateId, (b) => ({ balance: (b?.balance ?? 0) + delta, version: e.sequence }));
  view.update<number>('#events', (n) => (n ?? 0) + 1);
}

describe('projections', () => {
  const nats = useNatsServer();
  const { stream, subjectPrefix } = freshStream('PROJ');
  let node: Troupe;
  const running: Projection[] = [];

  beforeAll(async () => {
    node = await Troupe.start({ actors: [...actorModules], servers: nats.url, dataDir: tempDir(), workers: 1, shards: 4, stream, subjectPrefix });
  });
  afterAll(async () => {
    for (const p of running) await p.stop().catch(() => {});
    await node?.stop();
  });

  async function start(options: Partial<ProjectionOptions> & Pick<ProjectionOptions, 'name'>): Promise<Projection> {
    const p = await project({ servers: nats.url, stream, subjectPrefix, aggregateTypes: ['Account'], apply: applyBalances, dataDir: tempDir(), ...options });
    running.push(p);
    return p;
  }

  /** What the read model must hold, folded by hand from the whole log. */
  async function expected(): Promise<{ balances: Map<string, number>; events: number }> {
    const accounts = foldAccounts(await readEvents(nats.url, stream));
    let events = 0;
    const balances = new Map<string, number>();
    for (const [id, a] of accounts) {
      balances.set(id, a.balance);
      events += a.sequences.length;
    }
    return { balances, events };
  }

  function expectModel(read: { get<V>(key: string): V | undefined }, want: { balances: Map<string, number>; events: number }): void {
    for (const [id, balance] of want.balances) expect(read.get<Balance>(id)?.balance, id).toBe(balance);
    expect(read.get('#events')).toBe(want.events);
  }

  it('answers read-your-writes: after waitFor(result.position) the view holds the command\'s events', async () => {
    const p = await start({ name: 'ryw' });
    await node.send('Account', 'ryw-1', 'OpenAccount', {});
    let sum = 0;
    for (const amount of range1(15)) {
      const r = await node.send('Account', 'ryw-1', 'Deposit', { amount });
      sum += amount;
      await p.waitFor(r.position, 5_000);
      expect(p.position).toBeGreaterThanOrEqual(r.position);
      expect(p.get<Balance>('ryw-1')).toEqual({ balance: sum, version: amount + 1 });
    }
    const late = await p.waitFor((await p.events!.logEnd()) + 1_000, 150).then(() => null, (e: unknown) => e);
    expect(isTroupeError(late, 'TIMEOUT')).toBe(true);
  });

  it('builds totals across aggregates that match the log, however the events were batched', async () => {
    const ids = range1(20).map((i) => `tot-${i}`);
    await Promise.all(ids.map((id) => node.send('Account', id, 'OpenAccount', {})));
    await Promise.all(ids.flatMap((id) => range1(6).map((amount) => node.send('Account', id, 'Deposit', { amount }))));
    await Promise.all(ids.map((id) => node.send('Account', id, 'Withdraw', { amount: 2 })));
    const p = await start({ name: 'totals', batchSize: 64 });
    await p.caughtUp();
    expectModel(p, await expected());
  });

  it('resumes from its checkpoint after a restart, reading only the log after it and applying nothing twice', async () => {
    const store = ConsumerStore.open(tempDir());
    try {
      await node.send('Account', 'cp-1', 'OpenAccount', {});
      const first = await start({ name: 'checkpoint', store });
      await first.caughtUp();
      await first.stop();

      for (const amount of range1(5)) await node.send('Account', 'cp-1', 'Deposit', { amount });
      const second = await start({ name: 'checkpoint', store });
      await second.caughtUp();
      expectModel(second, await expected());
      // It was handed the five new messages, not the log from its beginning.
      expect(second.events!.stats().delivered).toBe(5);
    } finally {
      for (const p of running.splice(0)) await p.stop();
      await store.close();
    }
  });

  it('rebuilds from the start of the log to the same read model', async () => {
    const p = await start({ name: 'rebuild' });
    await p.caughtUp();
    const want = await expected();
    expectModel(p, want);
    await p.db.put('tot-1', { balance: -999, version: 0 });
    await p.db.put('#events', 1);
    await p.rebuild();
    await p.caughtUp();
    expectModel(p, want);
  });

  it('builds a new version beside the active one and makes it active once it has caught up', async () => {
    const store = ConsumerStore.open(tempDir());
    try {
      const v1 = await start({ name: 'versions', store });
      await v1.activated();
      await v1.caughtUp();
      const reader = new ReadModel(store, 'versions', stream);
      expect(reader.activeVersion()).toBe(1);

      // v2 keeps cents too, and is slow to build.
      const v2 = await start({
        name: 'versions', version: 2, store,
        apply: async (e, view) => {
          await sleep(1);
          applyBalances(e, view);
          const b = view.get<Balance>(e.aggregateId)!;
          view.put(e.aggregateId, { ...b, cents: b.balance * 100 });
        },
      });
      await sleep(50);
      expect(v2.active).toBe(false);
      expect(reader.activeVersion()).toBe(1);
      expect(reader.get<Balance & { cents?: number }>('tot-1')?.cents).toBeUndefined();

      await v2.activated();
      expect(reader.activeVersion()).toBe(2);
      // Active means complete: everything the log held when v2 started is in it.
      const want = await expected();
      expect(v2.position).toBeGreaterThanOrEqual(v1.position);
      expectModel(reader, want);
      expect(reader.get<Balance & { cents: number }>('tot-1')?.cents).toBe(want.balances.get('tot-1')! * 100);

      // The old version can go now; the active one cannot.
      const refused = await v2.drop().then(() => null, (e: unknown) => e);
      expect(isTroupeError(refused, 'INVALID_OPTION')).toBe(true);
      await v1.drop();
      expect(store.dbNames(`view/${stream}/versions/`)).toEqual([`view/${stream}/versions/v2`]);
      await node.send('Account', 'tot-1', 'Deposit', { amount: 1 });
      await v2.caughtUp();
      expect(reader.get<Balance>('tot-1')?.balance).toBe(want.balances.get('tot-1')! + 1);
    } finally {
      for (const p of running.splice(0)) await p.stop();
      await store.close();
    }
  });
});
