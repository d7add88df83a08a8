// The parts of consumers that need no server: back-off, the token bucket, the version check,
// write sets over LMDB (rollback, pending overlay), the DLQ threshold alarm, the query bus, and the scaleOut options.
import { afterAll, describe, expect, it } from 'vitest';
import { ConsumerStore, PendingWrites, WriteSet } from '../../runtime/consumers/consumer-store.ts';
import { ThresholdAlarm, reasonOf, subjectToken, type DeadLetterStats } from '../../runtime/consumers/dlq.ts';
import { ValidationError, isTroupeError } from '../../runtime/errors.ts';
import { TokenBucket, backoffDelay, resolveRetry } from '../../runtime/consumers/flow.ts';
import { checkVersion, defaultIsRetryable } from '../../runtime/consumers/pipeline.ts';
import { QueryBus, stableKey } from '../../runtime/consumers/query.ts';
import { validateConsumeOptions, type ConsumeOptions } from '../../runtime/consumers/consume-options.ts';
import { tempDir } from '../helpers/nats.ts';

describe('back-off', () => {
  it('grows by the factor from the initial delay up to the maximum', () => {
    const r = resolveRetry({ initialDelayMs: 100, factor: 3, maxDelayMs: 1000, jitter: 0 });
    expect([1, 2, 3, 4, 5].map((a) => backoffDelay(r, a))).toEqual([100, 300, 900, 1000, 1000]);
  });

  it('spreads each delay by the jitter fraction, never past the maximum', () => {
    const r = resolveRetry({ initialDelayMs: 1000, factor: 2, maxDelayMs: 1500, jitter: 0.2 });
    expect(backoffDelay(r, 1, () => 0)).toBe(800);
    expect(backoffDelay(r, 1, () => 1)).toBe(1200);
    expect(backoffDelay(r, 2, () => 1)).toBe(1500);
  });

  it('refuses retry options that cannot work, naming the field', () => {
    for (const [bad, field] of [[{ maxRetries: -1 }, 'retry.maxRetries'], [{ factor: 0 }, 'retry.factor'], [{ jitter: 2 }, 'retry.jitter'], [{ initialDelayMs: 500, maxDelayMs: 100 }, 'retry.maxDelayMs']] as const) {
      let e: unknown;
      try { resolveRetry(bad); } catch (err) { e = err; }
      expect(isTroupeError(e, 'INVALID_OPTION')).toBe(true);
      expect((e as { data: { field: string } }).data.field).toBe(field);
    }
  });
});

describe('TokenBucket', () => {
  it('lets a burst go at once, then one token per 1/rate seconds', () => {
    let now = 0;
    const b = new TokenBucket(10, 3, () => now);
    expect(b.waitFor(3)).toBe(0);
    void b.take(3);
    return Promise.resolve().then(async () => {
      await b.take(0);
      expect(b.waitFor(1)).toBe(100);
      now += 250;
      expect(b.waitFor(2)).toBe(0);
      expect(b.waitFor(3)).toBe(50);
    });
  });
});

describe('checkVersion', () => {
  it('says apply for the next event, duplicate for one applied, gap when some are missing', () => {
    expect(checkVersion(4, { sequence: 5 })).toBe('apply');
    expect(checkVersion(4, { sequence: 4 })).toBe('duplicate');
    expect(checkVersion(4, { sequence: 2 })).toBe('duplicate');
    expect(checkVersion(4, { sequence: 7 })).toBe('gap');
    expect(checkVersion(0, { sequence: 1 })).toBe('apply');
  });
});

describe('retryable errors', () => {
  it('treats Troupe errors marked not retryable as final, everything else as worth a retry', () => {
    expect(defaultIsRetryable(new ValidationError('SCHEMA_VIOLATION', 'bad'))).toBe(false);
    expect(defaultIsRetryable(new Error('socket hang up'))).toBe(true);
    expect(reasonOf(Object.assign(new Error('x'), { code: 'ECONNRESET' }))).toBe('ECONNRESET');
    expect(reasonOf(new TypeError('x'))).toBe('TypeError');
    expect(subjectToken('a.b c*>')).toBe('a_b_c__');
  });
});

describe('WriteSet', () => {
  const store = ConsumerStore.open(tempDir());
  afterAll(() => store.close());

  it('reads its own writes, forgets those after a mark on rollback, and commits the rest in one transaction', async () => {
    const db = store.db<number, string>('ws-a');
    await db.put('x', 1);
    const ws = new WriteSet();
    ws.put(db, 'y', 2);
    const mark = ws.mark();
    ws.put(db, 'x', 10);
    ws.remove(db, 'y');
    expect([ws.get(db, 'x'), ws.get(db, 'y')]).toEqual([10, undefined]);
    ws.rollback(mark);
    expect([ws.get(db, 'x'), ws.get(db, 'y')]).toEqual([1, 2]);
    expect(db.get('y')).toBeUndefined();
    await store.transaction(() => ws.applyInTransaction());
    expect([db.get('x'), db.get('y')]).toEqual([1, 2]);
  });

  it('sees writes handed to the committer before LMDB has them, until they are committed', async () => {
    const db = store.db<number, string>('ws-b');
    const pending = new PendingWrites();
    const first = new WriteSet(pending);
    first.put(db, 'n', 1);
    pending.add(first, 1);
    const second = new WriteSet(pending);
    expect(second.get(db, 'n')).toBe(1);
    second.put(db, 'n', 2);
    pending.add(second, 2);
    await store.transaction(() => first.applyInTransaction());
    pending.committed(first, 1);
    // The later write is still pending and still wins.
    expect(new WriteSet(pending).get(db, 'n')).toBe(2);
    await store.transaction(() => second.applyInTransaction());
    pending.committed(second, 2);
    expect(new WriteSet(pending).get(db, 'n')).toBe(2);
    expect(db.get('n')).toBe(2);
  });
});

describe('ThresholdAlarm', () => {
  const stats = (n: number): DeadLetterStats => ({ count: n, oldestAgeMs: 0, byReason: {}, byConsumer: { c: n } });

  it('fires once per upward crossing', () => {
    const fired: number[] = [];
    const alarm = new ThresholdAlarm({ threshold: 3, consumer: 'c', onAlert: (s) => fired.push(s.count) });
    for (const n of [1, 2, 3, 4, 5, 2, 3, 9]) alarm.check(stats(n));
    expect(fired).toEqual([3, 3]);
  });
});

describe('QueryBus', () => {
  it('caches per query and params, and drops entries of the aggregates that changed', async () => {
    const bus = new QueryBus();
    let calls = 0;
    bus.register<{ id: string }, string>('one', { ttlMs: 60_000, dependsOn: (p) => [{ aggregateType: 'T', aggregateId: p.id }], handler: (p) => `${p.id}:${++calls}` });
    bus.register('all-of-T', { ttlMs: 60_000, dependsOn: () => [{ aggregateType: 'T' }], handler: () => ++calls });
    expect(await bus.query('one', { id: 'a' })).toBe('a:1');
    expect(await bus.query('one', { id: 'b' })).toBe('b:2');
    expect(await bus.query('all-of-T')).toBe(3);
    expect(await bus.query('one', { id: 'a' })).toBe('a:1');
    bus.invalidate([{ aggregateType: 'T', aggregateId: 'a' }]);
    expect(await bus.query('one', { id: 'a' })).toBe('a:4');
    expect(await bus.query('one', { id: 'b' })).toBe('b:2');
    expect(await bus.query('all-of-T')).toBe(5);
    bus.invalidate([{ aggregateType: 'U', aggregateId: 'a' }]);
    expect(await bus.query('one', { id: 'a' })).toBe('a:4');
  });

  it('does not cache a result computed while an invalidation happened', async () => {
    const bus = new QueryBus();
    let calls = 0;
    bus.register('slow', {
      ttlMs: 60_000,
      handler: async () => {
        const n = ++calls;
        await new Promise((r) => setTimeout(r, 10));
        return n;
      },
    });
    const p = bus.query('slow');
    bus.invalidate([{ aggregateType: 'T', aggregateId: 'x' }]);
    expect(await p).toBe(1);
    expect(await bus.query('slow')).toBe(2);
    expect(await bus.query('slow')).toBe(2);
  });

  it('keeps at most maxEntries results, dropping the oldest', async () => {
    const bus = new QueryBus({ maxEntries: 2 });
    let calls = 0;
    bus.register<number, number>('q', { ttlMs: 60_000, handler: () => ++calls });
    for (const p of [1, 2, 3]) await bus.query('q', p);
    expect(bus.stats().entries).toBe(2);
    await bus.query('q', 1);
    expect(calls).toBe(4);
    expect(stableKey({ b: 1, a: [1, { d: 2, c: 3 }] })).toBe(stableKey({ a: [1, { c: 3, d: 2 }], b: 1 }));
  });
});

describe('scaleOut options', () => {
  const base = { name: 'c', dataDir: '/tmp/unused', handler: () => {} };
  it('refuses an instance name or a lease ttl that cannot work, naming the field, and a projection scaled out', () => {
    const fieldOf = (o: object) => { try { validateConsumeOptions({ ...base, ...o } as ConsumeOptions); return null; } catch (e) { return (e as { data?: { field?: string } }).data?.field; } };
    expect(fieldOf({ scaleOut: true })).toBeNull();
    expect(fieldOf({ scaleOut: { instance: 'node-1_a', leaseTtlMs: 3_000 } })).toBeNull();
    expect(fieldOf({ scaleOut: { instance: 'a.b' } })).toBe('scaleOut.instance');
    expect(fieldOf({ scaleOut: { leaseTtlMs: 10 } })).toBe('scaleOut.leaseTtlMs');
    expect(fieldOf({ scaleOut: 'yes' })).toBe('scaleOut');
    expect(fieldOf({ scaleOut: true, startAfter: 0 })).toBe('scaleOut');
  });
});
