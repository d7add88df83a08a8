// consume(): durable pull consumers over the log against a real nats-server — order, batches,
// transform, retries, de-dup of redeliveries, backpressure, rate limit, circuit breaker, and a
// consumer process killed with SIGKILL in the middle of a batch.
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { actorModules } from '../../actors/index.ts';
import type { EventEnvelope } from '../../runtime/journal/codec.ts';
import { consume, type BatchConsumeOptions, type Consumer, type ConsumeOptions, type SingleConsumeOptions } from '../../runtime/consumers/consume.ts';
import { ConsumerStore } from '../../runtime/consumers/consumer-store.ts';
import { shardOf } from '../../runtime/envelope.ts';
import { isTroupeError } from '../../runtime/errors.ts';
import { circuitBreaker } from '../../runtime/consumers/flow.ts';
import { REPO_ROOT } from '../../runtime/testing/nats-server.ts';
import { Troupe } from '../../runtime/node/system.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { freshStream, natsConnect, range1, sleep } from '../helpers/troupe.ts';

const childScript = fileURLToPath(new URL('../fixtures/consumer-child.ts', import.meta.url));
const SHARDS = 4;
type Local<T> = Omit<T, 'nc' | 'stream' | 'subjectPrefix'>;

describe('consume', () => {
  const nats = useNatsServer();
  const { stream, subjectPrefix } = freshStream('CONS');
  let node: Troupe;
  let nc: NatsConnection;
  const consumers: Consumer[] = [];

  beforeAll(async () => {
    node = await Troupe.start({ actors: [...actorModules], servers: nats.url, dataDir: tempDir(), workers: 1, shards: SHARDS, stream, subjectPrefix });
    nc = await natsConnect(nats.url);
  });
  afterEach(async () => {
    for (const c of consumers.splice(0)) await c.stop();
  });
  afterAll(async () => {
    await node?.stop();
    await nc?.close();
  });

  async function lastSeq(): Promise<number> {
    return (await (await jetstreamManager(nc)).streams.info(stream)).state.last_seq;
  }

  /** A consumer of this suite's stream that sees only events appended from now on. */
  async function start(options: Local<SingleConsumeOptions> | Local<BatchConsumeOptions>): Promise<Consumer> {
    const c = await consume({
      nc, stream, subjectPrefix, dataDir: tempDir(), from: { after: await lastSeq() }, retry: { initialDelayMs: 50, maxDelayMs: 200 },
      ...options,
    } as ConsumeOptions);
    consumers.push(c);
    return c;
  }

  async function openAccounts(ids: readonly string[]): Promise<void> {
    await Promise.all(ids.map((id) => node.send('Account', id, 'OpenAccount', {})));
  }

  /** Ids whose actors live on the same shard, so that one flush puts their commits in one message. */
  function sameShardIds(prefix: string, n: number): string[] {
    const out: string[] = [];
    const target = shardOf('Account', `${prefix}-0`, SHARDS);
    for (let i = 0; out.length < n; i++) if (shardOf('Account', `${prefix}-${i}`, SHARDS) === target) out.push(`${prefix}-${i}`);
    return out;
  }

  it('hands every matching event to the handler once, decoded, in per-aggregate order, never two of one aggregate at once', async () => {
    const seen: EventEnvelope[] = [];
    const active = new Map<string, number>();
    let overlaps = 0;
    let inFlight = 0;
    let maxInFlight = 0;
    const c = await start({
      name: 'order', concurrency: 4, eventTypes: ['Deposited', 'Withdrawn'],
      handler: async (e) => {
        const n = (active.get(e.aggregateId) ?? 0) + 1;
        active.set(e.aggregateId, n);
        if (n > 1) overlaps++;
        maxInFlight = Math.max(maxInFlight, ++inFlight);
        await sleep(2);
        seen.push(e);
        inFlight--;
        active.set(e.aggregateId, n - 1);
      },
    });
    const ids = range1(12).map((i) => `ord-${i}`);
    await openAccounts(ids);
    const sent = await Promise.all(ids.flatMap((id) => range1(8).map((amount) => node.send('Account', id, 'Deposit', { amount }))));
    await Promise.all(ids.map((id) => node.send('Account', id, 'Withdraw', { amount: 1 })));
    await c.caughtUp();

    expect(seen).toHaveLength(12 * 9);
    expect(new Set(seen.map((e) => e.eventId)).size).toBe(seen.length);
    for (const id of ids) {
      const mine = seen.filter((e) => e.aggregateId === id);
      expect(mine.map((e) => e.sequence)).toEqual(range1(9).map((n) => n + 1));
      expect(mine.map((e) => e.eventType)).toEqual([...Array(8).fill('Deposited'), 'Withdrawn']);
      expect(mine.slice(0, 8).map((e) => (e.payload as { amount: number }).amount)).toEqual(range1(8));
    }
    const first = sent[0]!;
    expect(seen.find((e) => e.commandId === first.commandId)).toMatchObject({
      eventId: first.events[0]!.eventId, aggregateType: 'Account', aggregateId: first.aggregateId, position: first.position,
      correlationId: first.commandId, version: expect.any(Number), timestamp: expect.any(String),
    });
    // Messages carried several aggregates' events, lanes ran side by side, one aggregate never twice at once.
    expect(new Set(seen.map((e) => e.position)).size).toBeLessThan(seen.length);
    expect(maxInFlight).toBeGreaterThan(1);
    expect(overlaps).toBe(0);
  });

  it('resumes after a restart at the first message it did not ack', async () => {
    const dataDir = tempDir();
    const from = { after: await lastSeq() };
    const first: string[] = [];
    let c = await consume({ nc, stream, subjectPrefix, dataDir, from, name: 'resume', aggregateTypes: ['Account'], handler: (e) => { first.push(e.eventId); } });
    await openAccounts(['res-1', 'res-2']);
    await c.caughtUp();
    await c.stop();
    expect(first).toHaveLength(2);

    await Promise.all(['res-1', 'res-2'].map((id) => node.send('Account', id, 'Deposit', { amount: 5 })));
    const second: EventEnvelope[] = [];
    c = await consume({ nc, stream, subjectPrefix, dataDir, from, name: 'resume', aggregateTypes: ['Account'], handler: (e) => { second.push(e); } });
    consumers.push(c);
    await c.caughtUp();
    expect(second.map((e) => [e.aggregateId, e.eventType, e.sequence]).sort()).toEqual([['res-1', 'Deposited', 2], ['res-2', 'Deposited', 2]]);
  });

  it('gives a batch handler arrays of up to batchSize events, each aggregate in order', async () => {
    const batches: EventEnvelope[][] = [];
    const c = await start({ name: 'batches', batch: true, batchSize: 10, handler: (events) => { batches.push(events); } });
    const ids = range1(6).map((i) => `bat-${i}`);
    await openAccounts(ids);
    await Promise.all(ids.flatMap((id) => range1(5).map((amount) => node.send('Account', id, 'Deposit', { amount }))));
    await c.caughtUp();

    const all = batches.flat();
    expect(all).toHaveLength(36);
    expect(new Set(all.map((e) => e.eventId)).size).toBe(36);
    expect(Math.max(...batches.map((b) => b.length))).toBeGreaterThan(1);
    expect(Math.max(...batches.map((b) => b.length))).toBeLessThanOrEqual(10);
    for (const id of ids) expect(all.filter((e) => e.aggregateId === id).map((e) => e.sequence)).toEqual(range1(6));
  });

  it('applies transform to every event before the handler sees it', async () => {
    const seen: EventEnvelope[] = [];
    const c = await start({
      name: 'transform', eventTypes: ['Deposited'],
      transform: async (e) => ({ ...e, version: 2, payload: { ...(e.payload as object), cents: (e.payload as { amount: number }).amount * 100 } }),
      handler: (e) => { seen.push(e); },
    });
    await openAccounts(['tr-1']);
    await node.send('Account', 'tr-1', 'Deposit', { amount: 7 });
    await c.caughtUp();
    expect(seen.map((e) => [e.version, e.payload])).toEqual([[2, { amount: 7, cents: 700 }]]);
  });

  it('retries a failed event after delayed naks that grow by the back-off factor, and counts its attempts', async () => {
    const attempts: { attempt: number; at: number }[] = [];
    const handled: string[] = [];
    const c = await start({
      name: 'retry', eventTypes: ['Deposited'], retry: { maxRetries: 5, initialDelayMs: 150, factor: 2, maxDelayMs: 1000, jitter: 0 },
      handler: (e, ctx) => {
        attempts.push({ attempt: ctx.attempt, at: Date.now() });
        if (ctx.attempt < 3) throw new Error('downstream said no');
        handled.push(e.eventId);
      },
    });
    await openAccounts(['re-1']);
    const r = await node.send('Account', 're-1', 'Deposit', { amount: 1 });
    await c.caughtUp();
    expect(attempts.map((a) => a.attempt)).toEqual([1, 2, 3]);
    expect(handled).toEqual([r.events[0]!.eventId]);
    expect(attempts[1]!.at - attempts[0]!.at).toBeGreaterThanOrEqual(150);
    expect(attempts[2]!.at - attempts[1]!.at).toBeGreaterThanOrEqual(300);
    expect(c.state.failure('Account', 're-1')).toBeUndefined();
    expect(c.stats()).toMatchObject({ failures: 2, handled: 1, deadLettered: 0 });
  });

  it('skips, on redelivery, the events of a message that were handled before', async () => {
    const ids = sameShardIds('dup', 3);
    await openAccounts(ids);
    const calls = new Map<string, number>();
    let failedOnce = false;
    const c = await start({
      name: 'dedup', eventTypes: ['Deposited'], concurrency: 3,
      handler: (e) => {
        calls.set(e.eventId, (calls.get(e.eventId) ?? 0) + 1);
        if (e.aggregateId === ids[0] && !failedOnce) {
          failedOnce = true;
          throw new Error('first try fails');
        }
      },
    });
    const results = await Promise.all(ids.map((id) => node.send('Account', id, 'Deposit', { amount: 2 })));
    // The premise: one message carries the three deposits.
    expect(new Set(results.map((r) => r.position)).size).toBe(1);
    await c.caughtUp();
    const [failing, ...others] = results.map((r) => r.events[0]!.eventId);
    expect(calls.get(failing!)).toBe(2);
    for (const id of others) expect(calls.get(id!)).toBe(1);
    expect(c.stats().duplicates).toBe(2);
    expect(c.stats().nakked).toBe(1);
  });

  it('never holds more than maxAckPending messages un-acked while the handler is slow', async () => {
    let maxHeld = 0;
    let maxServerPending = 0;
    let handled = 0;
    const c = await start({ name: 'backpressure', maxAckPending: 4, eventTypes: ['AccountOpened'], handler: async () => { await sleep(15); handled++; } });
    // One command at a time: one message each.
    for (const i of range1(40)) await node.send('Account', `bp-${i}`, 'OpenAccount', {});
    while (handled < 40) {
      maxHeld = Math.max(maxHeld, c.stats().inMemory);
      maxServerPending = Math.max(maxServerPending, (await c.info()).numAckPending);
      await sleep(10);
    }
    await c.caughtUp();
    expect(handled).toBe(40);
    expect(maxHeld).toBeGreaterThan(0);
    expect(maxHeld).toBeLessThanOrEqual(4);
    expect(maxServerPending).toBeLessThanOrEqual(4);
  });

  it('fetches no more once the messages it holds reach maxBufferedBytes', async () => {
    let maxHeld = 0;
    let handled = 0;
    const c = await start({ name: 'bytes', maxBufferedBytes: 1, eventTypes: ['AccountOpened'], handler: async () => { await sleep(5); handled++; } });
    for (const i of range1(15)) await node.send('Account', `bb-${i}`, 'OpenAccount', {});
    while (handled < 15) {
      maxHeld = Math.max(maxHeld, c.stats().inMemory);
      await sleep(2);
    }
    await c.caughtUp();
    expect(maxHeld).toBe(1);
  });

  it('hands events to the handler no faster than the token bucket allows', async () => {
    const times: number[] = [];
    const c = await start({ name: 'ratelimit', eventTypes: ['AccountOpened'], rateLimit: { perSecond: 40, burst: 5 }, handler: () => { times.push(Date.now()); } });
    await openAccounts(range1(30).map((i) => `rl-${i}`));
    await c.caughtUp();
    expect(times).toHaveLength(30);
    // Any window of w ms holds at most burst + 40/s × w events.
    for (let i = 0; i < times.length; i++) {
      for (let j = i; j < times.length; j++) {
        const w = times[j]! - times[i]!;
        expect(j - i + 1).toBeLessThanOrEqual(5 + Math.ceil((40 * w) / 1000) + 1);
      }
    }
  });

  it('delays events while the circuit breaker is open instead of counting them as failed attempts', async () => {
    const breaker = circuitBreaker({ consecutiveFailures: 1, halfOpenAfterMs: 600 });
    const downUntil = { t: Infinity };
    let calls = 0;
    const done: string[] = [];
    const c = await start({
      name: 'breaker', eventTypes: ['Deposited'], retry: { maxRetries: 1, initialDelayMs: 50, jitter: 0 }, breakerDelayMs: 50,
      handler: async (e) => {
        await breaker.execute(async () => {
          calls++;
          if (Date.now() < downUntil.t) throw new Error('service unavailable');
        });
        done.push(e.eventId);
      },
    });
    await openAccounts(['cb-1']);
    downUntil.t = Date.now() + 300;
    const r = await node.send('Account', 'cb-1', 'Deposit', { amount: 3 });
    await c.caughtUp();
    // One real failure opened the breaker; the retries that met it open were deferrals; the
    // trial call after halfOpenAfter found the service back. maxRetries 1 was never exceeded.
    expect(done).toEqual([r.events[0]!.eventId]);
    expect(calls).toBe(2);
    expect(c.stats().deferred).toBeGreaterThan(0);
    expect(c.stats()).toMatchObject({ failures: 1, deadLettered: 0 });
    expect((await c.deadLetters.stats()).byConsumer.breaker).toBeUndefined();
  });

  it('refuses options that cannot work, naming the option', async () => {
    const base = { nc, stream, subjectPrefix, dataDir: tempDir(), handler: () => {} };
    for (const [bad, field] of [
      [{ ...base, name: 'has space' }, 'name'],
      [{ ...base, name: 'ok', handler: undefined }, 'handler'],
      [{ ...base, name: 'ok', dataDir: undefined }, 'dataDir'],
      [{ ...base, name: 'ok', concurrency: 0 }, 'concurrency'],
      [{ ...base, name: 'ok', retry: { factor: 0.5 } }, 'retry.factor'],
    ] as const) {
      const e = await consume(bad as unknown as ConsumeOptions).then(() => null, (err: unknown) => err);
      expect(isTroupeError(e, 'INVALID_OPTION')).toBe(true);
      expect((e as { data: { field: string } }).data.field).toBe(field);
    }
  });

  it('applies no event twice and loses none when its process is killed in the middle of a batch and restarted', async () => {
    const dataDir = tempDir();
    const deliveries = join(tempDir(), 'deliveries.txt');
    writeFileSync(deliveries, '');
    const ids = range1(30).map((i) => `kill-${i}`);
    await openAccounts(ids);
    await Promise.all(ids.flatMap((id) => range1(10).map((amount) => node.send('Account', id, 'Deposit', { amount }))));

    const run = (slowMs: number, killAfterBatches: number | null) => new Promise<{ code: number | null; signal: string | null; out: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', childScript, nats.url, stream, subjectPrefix, dataDir, 'killed', String(slowMs), deliveries], { cwd: REPO_ROOT });
      let out = '';
      let batches = 0;
      child.stdout.on('data', (b: Buffer) => {
        out += b.toString();
        batches = (out.match(/^batch /gm) ?? []).length;
        if (killAfterBatches !== null && batches >= killAfterBatches) child.kill('SIGKILL');
      });
      child.stderr.on('data', (b: Buffer) => { out += b.toString(); });
      child.on('error', reject);
      child.on('exit', (code, signal) => resolve({ code, signal, out }));
    });

    // The first run starts from the beginning of the log; it is killed while its third batch is in the handler.
    const killed = await run(400, 3);
    expect(killed.signal).toBe('SIGKILL');
    // While it is down, more events arrive: the restarted consumer gets them before the
    // redeliveries of what the killed one held, and must still keep each account in order.
    await Promise.all(ids.map((id) => node.send('Account', id, 'Withdraw', { amount: 1 })));
    const restarted = await run(0, null);
    expect(restarted.out).toContain('caught-up');
    expect(restarted.code).toBe(0);

    const store = ConsumerStore.open(dataDir);
    try {
      const applied = store.db<number, string>('applied');
      const violations = store.db<number, string>('order-violations');
      const counts = new Map<string, number>();
      for (const { key, value } of applied.getRange({})) counts.set(key, value);
      // Every event of the accounts was applied exactly once ...
      const history = (await Promise.all(ids.map((id) => node.history('Account', id)))).flat();
      expect(history).toHaveLength(ids.length * 12);
      expect(history.filter((e) => counts.get(e.eventId) !== 1).map((e) => [e.aggregateId, e.sequence, counts.get(e.eventId)])).toEqual([]);
      // (and so was every other event of the log: the consumer started at its beginning)
      expect([...counts.values()].filter((n) => n !== 1)).toEqual([]);
      // ... in per-aggregate order ...
      expect([...violations.getKeys({})]).toEqual([]);
      // ... although some were handed to a handler twice: the batch the kill interrupted.
      const delivered = readFileSync(deliveries, 'utf8').trim().split('\n');
      expect(delivered.length).toBeGreaterThan(new Set(delivered).size);
    } finally {
      await store.close();
    }
  });
});
