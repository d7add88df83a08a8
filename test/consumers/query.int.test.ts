// The query side against a real nats-server: named queries over a projection, a TTL cache
// invalidated by the events the projection applies, and read-your-writes through `after`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actorModules } from '../../actors/index.ts';
import type { EventEnvelope } from '../../runtime/journal/codec.ts';
import { isTroupeError } from '../../runtime/errors.ts';
import { project, type Projection, type View } from '../../runtime/consumers/projection.ts';
import { QueryBus } from '../../runtime/consumers/query.ts';
import { Troupe } from '../../runtime/node/system.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { freshStream, range1, sleep } from '../helpers/troupe.ts';

interface Balance {
  balance: number;
}

function applyBalances(e: EventEnvelope, view: View): void {
  const amount = (e.payload as { amount?: number }).amount ?? 0;
  const delta = e.eventType === 'Deposited' ? amount : e.eventType === 'Withdrawn' ? -amount : 0;
  view.update<Balance>(e.aggregateId, (b) => ({ balance: (b?.balance ?? 0) + delta }));
}

describe('queries', () => {
  const nats = useNatsServer();
  const { stream, subjectPrefix } = freshStream('QRY');
  let node: Troupe;
  let balances: Projection;
  const calls = new Map<string, number>();
  let bus: QueryBus;

  beforeAll(async () => {
    node = await Troupe.start({ actors: [...actorModules], servers: nats.url, dataDir: tempDir(), workers: 1, shards: 4, stream, subjectPrefix });
    balances = await project({ name: 'balances', servers: nats.url, stream, subjectPrefix, aggregateTypes: ['Account'], dataDir: tempDir(), apply: applyBalances });
    bus = new QueryBus();
    bus.watch(balances);
    bus.register<{ id: string }, number | null>('balance', {
      projection: balances,
      ttlMs: 60_000,
      dependsOn: (p) => [{ aggregateType: 'Account', aggregateId: p.id }],
      handler: ({ id }) => {
        calls.set(id, (calls.get(id) ?? 0) + 1);
        return balances.get<Balance>(id)?.balance ?? null;
      },
    });
    bus.register<{ id: string }, number | null>('balance-uncached', {
      projection: balances,
      handler: ({ id }) => balances.get<Balance>(id)?.balance ?? null,
    });
  });
  afterAll(async () => {
    await balances?.stop();
    await node?.stop();
  });

  it('answers a registered query by name and refuses an unknown name, listing the registered ones', async () => {
    const r = await node.send('Account', 'q-1', 'OpenAccount', {});
    expect(await bus.query('balance', { id: 'q-1' }, { after: r.position })).toBe(0);
    const e = await bus.query('balances', { id: 'q-1' }).then(() => null, (err: unknown) => err);
    expect(isTroupeError(e, 'NOT_FOUND')).toBe(true);
    expect((e as Error).message).toContain('balance, balance-uncached');
    expect(() => bus.register('balance', { handler: () => 0 })).toThrow(/registered already/);
  });

  it('serves a cached result until events of the aggregate it depends on are applied', async () => {
    await Promise.all(['c-1', 'c-2'].map((id) => node.send('Account', id, 'OpenAccount', {})));
    const r = await node.send('Account', 'c-1', 'Deposit', { amount: 10 });
    await balances.waitFor(r.position);
    expect(await bus.query('balance', { id: 'c-1' })).toBe(10);
    expect(await bus.query('balance', { id: 'c-2' })).toBe(0);
    expect(await bus.query('balance', { id: 'c-1' })).toBe(10);
    expect(calls.get('c-1')).toBe(1);

    // Without a TTL cache the handler sees the change at once; the cache keeps its entry only
    // until the projection applies an event of c-1.
    const d = await node.send('Account', 'c-1', 'Deposit', { amount: 5 });
    await balances.waitFor(d.position);
    expect(await bus.query('balance-uncached', { id: 'c-1' })).toBe(15);
    expect(await bus.query('balance', { id: 'c-1' })).toBe(15);
    expect(calls.get('c-1')).toBe(2);
    // c-2 had no events: still served from the cache.
    expect(await bus.query('balance', { id: 'c-2' })).toBe(0);
    expect(calls.get('c-2')).toBe(1);
    expect(bus.stats().invalidated).toBeGreaterThanOrEqual(1);
  });

  it('drops a cached result when its TTL runs out', async () => {
    const local = new QueryBus();
    let n = 0;
    local.register('now', { ttlMs: 80, handler: () => ++n });
    expect(await local.query('now')).toBe(1);
    expect(await local.query('now')).toBe(1);
    await sleep(120);
    expect(await local.query('now')).toBe(2);
    expect(await local.query('now', undefined, { fresh: true })).toBe(3);
  });

  it('answers after the projection applied the command\'s position: read-your-writes, also past a cached entry', async () => {
    await node.send('Account', 'ryw-q', 'OpenAccount', {});
    let balance = 0;
    for (const amount of range1(12)) {
      // Cache the old value first, then write, then read with `after`.
      await bus.query('balance', { id: 'ryw-q' });
      const r = await node.send('Account', 'ryw-q', 'Deposit', { amount });
      balance += amount;
      expect(await bus.query('balance', { id: 'ryw-q' }, { after: r.position })).toBe(balance);
    }
  });

  it('fails with a TimeoutError when the projection does not reach the position in time', async () => {
    const far = (await balances.events!.logEnd()) + 1_000;
    const e = await bus.query('balance', { id: 'q-1' }, { after: far, timeoutMs: 100 }).then(() => null, (err: unknown) => err);
    expect(isTroupeError(e, 'TIMEOUT')).toBe(true);
    const local = new QueryBus();
    local.register('plain', { handler: () => 1 });
    const refused = await local.query('plain', {}, { after: 1 }).then(() => null, (err: unknown) => err);
    expect(isTroupeError(refused, 'INVALID_OPTION')).toBe(true);
  });
});
