// Dead letters against a real nats-server: what a dead letter records, a poison event blocking
// only its own aggregate, non-retryable errors, stats, list, discard, replay, and the alert hook.
import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { actorModules } from '../../actors/index.ts';
import type { EventEnvelope } from '../../runtime/journal/codec.ts';
import { consume, type Consumer, type SingleConsumeOptions } from '../../runtime/consumers/consume.ts';
import { DeadLetterQueue, type DeadLetterStats } from '../../runtime/consumers/dlq.ts';
import { ValidationError, isTroupeError } from '../../runtime/errors.ts';
import { Troupe } from '../../runtime/node/system.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { eventually, freshStream, natsConnect, range1, sleep } from '../helpers/troupe.ts';

class EnrichmentDown extends Error {
  override name = 'EnrichmentDown';
  readonly code = 'ENRICHMENT_DOWN';
}

describe('dead letters', () => {
  const nats = useNatsServer();
  const { stream, subjectPrefix } = freshStream('DLQ');
  let node: Troupe;
  let nc: NatsConnection;
  let dlq: DeadLetterQueue;
  const consumers: Consumer[] = [];

  beforeAll(async () => {
    node = await Troupe.start({ actors: [...actorModules], servers: nats.url, dataDir: tempDir(), workers: 1, shards: 4, stream, subjectPrefix });
    nc = await natsConnect(nats.url);
    dlq = await DeadLetterQueue.open({ nc, stream, subjectPrefix });
  });
  afterEach(async () => {
    for (const c of consumers.splice(0)) await c.stop();
  });
  afterAll(async () => {
    await dlq?.close();
    await node?.stop();
    await nc?.close();
  });

  async function start(options: Omit<SingleConsumeOptions, 'nc' | 'stream' | 'subjectPrefix'>): Promise<Consumer> {
    const last = (await (await jetstreamManager(nc)).streams.info(stream)).state.last_seq;
    const c = await consume({ nc, stream, subjectPrefix, dataDir: tempDir(), from: { after: last }, ...options });
    consumers.push(c);
    return c;
  }

  async function account(id: string, deposits: number): Promise<string[]> {
    await node.send('Account', id, 'OpenAccount', {});
    const ids: string[] = [];
    for (const amount of range1(deposits)) ids.push((await node.send('Account', id, 'Deposit', { amount })).events[0]!.eventId);
    return ids;
  }

  it('records the reason, attempts, first and last failure times and original headers, then moves on to the next event', async () => {
    const handled: number[] = [];
    const c = await start({
      name: 'records', aggregateTypes: ['Account'], eventTypes: ['Deposited'], retry: { maxRetries: 2, initialDelayMs: 40, factor: 2, jitter: 0 },
      handler: (e) => {
        if ((e.payload as { amount: number }).amount === 2) throw new EnrichmentDown('enrichment service returned 503');
        handled.push(e.sequence);
      },
    });
    const [, poison] = await account('rec-1', 3);
    await c.caughtUp();
    expect(handled).toEqual([2, 4]);

    const [letter, ...others] = await dlq.list({ consumer: 'records' });
    expect(others).toEqual([]);
    expect(letter).toMatchObject({
      consumer: 'records', reason: 'ENRICHMENT_DOWN', attempts: 3,
      error: { name: 'EnrichmentDown', message: 'enrichment service returned 503', code: 'ENRICHMENT_DOWN' },
      event: { eventId: poison, eventType: 'Deposited', aggregateId: 'rec-1', sequence: 3, payload: { amount: 2 } },
    });
    expect(letter!.subject).toBe(`${subjectPrefix}.log.${letter!.subject.split('.').pop()}`);
    expect(letter!.position).toBe(letter!.event!.position);
    expect(letter!.headers['Nats-Msg-Id']).toHaveLength(1);
    expect(letter!.headers['Troupe-Format']).toEqual(['commit-batch/1']);
    const first = Date.parse(letter!.firstFailureAt);
    const last = Date.parse(letter!.lastFailureAt);
    // Two back-off delays (40 ms, then 80 ms) separate the first and the last failure.
    expect(last - first).toBeGreaterThanOrEqual(120);
    expect(Date.parse(letter!.deadLetteredAt)).toBeGreaterThanOrEqual(last);
    expect(c.stats()).toMatchObject({ failures: 3, deadLettered: 1, handled: 2 });
  });

  it('lets a poison event block only its own aggregate: its later events wait, other aggregates go on', async () => {
    const handled: EventEnvelope[] = [];
    let poisonAttempts = 0;
    const c = await start({
      name: 'poison', eventTypes: ['Deposited'], concurrency: 4, retry: { maxRetries: 3, initialDelayMs: 150, factor: 2, jitter: 0 },
      handler: (e) => {
        if (e.aggregateId === 'poisoned' && e.sequence === 2) {
          poisonAttempts++;
          throw new Error('cannot parse');
        }
        handled.push(e);
      },
    });
    await node.send('Account', 'poisoned', 'OpenAccount', {});
    await Promise.all(range1(5).map((i) => node.send('Account', `healthy-${i}`, 'OpenAccount', {})));
    // Commands to all six accounts in the same turns: messages mix the poisoned account with the others.
    for (const amount of range1(4)) {
      await Promise.all(['poisoned', ...range1(5).map((i) => `healthy-${i}`)].map((id) => node.send('Account', id, 'Deposit', { amount })));
    }

    await eventually(async () => { if (poisonAttempts < 2) throw new Error(`${poisonAttempts} attempts`); }, 5_000);
    // While the poisoned account's first deposit is being retried ...
    for (const i of range1(5)) expect(handled.filter((e) => e.aggregateId === `healthy-${i}`).map((e) => e.sequence)).toEqual([2, 3, 4, 5]);
    expect(handled.filter((e) => e.aggregateId === 'poisoned')).toEqual([]);
    expect(c.stats().inMemory).toBeGreaterThan(0);

    // ... and once it is dead-lettered, the poisoned account's later events follow, in order.
    await c.caughtUp();
    expect(poisonAttempts).toBe(4);
    expect(handled.filter((e) => e.aggregateId === 'poisoned').map((e) => e.sequence)).toEqual([3, 4, 5]);
    expect((await dlq.list({ consumer: 'poison' })).map((d) => [d.event?.aggregateId, d.event?.sequence, d.attempts])).toEqual([['poisoned', 2, 4]]);
  });

  it('dead-letters an event at once when the error says a retry cannot help', async () => {
    let calls = 0;
    const c = await start({
      name: 'fatal', eventTypes: ['AccountOpened'], retry: { maxRetries: 5, initialDelayMs: 40 },
      handler: () => {
        calls++;
        throw new ValidationError('SCHEMA_VIOLATION', 'payload does not match the read model');
      },
    });
    await node.send('Account', 'fatal-1', 'OpenAccount', {});
    await c.caughtUp();
    expect(calls).toBe(1);
    expect((await dlq.list({ consumer: 'fatal' })).map((d) => [d.reason, d.attempts])).toEqual([['SCHEMA_VIOLATION', 1]]);
  });

  it('reports the count, the age of the oldest, and counts by reason and by consumer', async () => {
    const fail = (reason: string) => () => { throw Object.assign(new Error(reason), { code: reason }); };
    const a = await start({ name: 'stats-a', eventTypes: ['AccountOpened'], retry: { maxRetries: 0 }, handler: fail('TIMEOUT_UPSTREAM') });
    const b = await start({ name: 'stats-b', eventTypes: ['Deposited'], retry: { maxRetries: 0 }, handler: fail('BAD_DATA') });
    const before = await dlq.stats();
    await account('stats-1', 1);
    await account('stats-2', 2);
    await a.caughtUp();
    await b.caughtUp();
    const after = await dlq.stats();
    expect(after.count - before.count).toBe(5);
    expect(after.byConsumer['stats-a']).toBe(2);
    expect(after.byConsumer['stats-b']).toBe(3);
    expect((after.byReason.TIMEOUT_UPSTREAM ?? 0) - (before.byReason.TIMEOUT_UPSTREAM ?? 0)).toBe(2);
    expect((after.byReason.BAD_DATA ?? 0) - (before.byReason.BAD_DATA ?? 0)).toBe(3);
    expect(Object.values(after.byConsumer).reduce((x, y) => x + y, 0)).toBe(after.count);
    await sleep(30);
    expect((await dlq.stats()).oldestAgeMs).toBeGreaterThanOrEqual(30);
  });

  it('lists, discards, and replays dead letters into the same handler, one or all', async () => {
    let broken = true;
    const applied: string[] = [];
    const c = await start({
      name: 'replay', eventTypes: ['Deposited'], retry: { maxRetries: 0 },
      handler: (e) => {
        if (broken) throw new Error('read model offline');
        applied.push(e.eventId);
      },
    });
    const ids = await account('rep-1', 4);
    await c.caughtUp();
    const letters = await dlq.list({ consumer: 'replay' });
    expect(letters.map((d) => d.event?.eventId)).toEqual(ids);
    expect(await dlq.list({ consumer: 'replay', limit: 2 })).toHaveLength(2);
    expect((await dlq.list({ consumer: 'replay', afterSeq: letters[1]!.seq })).map((d) => d.seq)).toEqual(letters.slice(2).map((d) => d.seq));

    // Replay while the cause is still there: it fails and the dead letter stays.
    const failed = await c.replayDeadLetter(letters[0]!.seq).then(() => null, (e: unknown) => e);
    expect((failed as Error).message).toBe('read model offline');
    expect(await dlq.list({ consumer: 'replay' })).toHaveLength(4);

    broken = false;
    await c.replayDeadLetter(letters[0]!.seq);
    expect(applied).toEqual([ids[0]]);
    expect(await dlq.discard(letters[1]!.seq)).toBe(true);
    expect(await dlq.discard(letters[1]!.seq)).toBe(false);
    const all = await c.replayDeadLetters();
    expect(all).toEqual({ replayed: 2, failed: [] });
    expect(applied).toEqual([ids[0], ids[2], ids[3]]);
    expect(await dlq.list({ consumer: 'replay' })).toEqual([]);
    expect((await dlq.stats()).byConsumer.replay).toBeUndefined();
    const gone = await dlq.get(letters[0]!.seq).then(() => null, (e: unknown) => e);
    expect(isTroupeError(gone, 'NOT_FOUND')).toBe(true);
    // A replayed event counts as handled: a redelivery of it is skipped.
    expect(c.state.seen(ids[0]!)).toBe(true);
  });

  it('calls the alert hook once when the dead letters cross the threshold', async () => {
    const alerts: DeadLetterStats[] = [];
    const c = await start({
      name: 'alerting', eventTypes: ['Deposited'], retry: { maxRetries: 0 }, deadLetterAlert: { threshold: 2, onAlert: (s) => alerts.push(s) },
      handler: () => { throw new Error('nope'); },
    });
    await account('alert-1', 1);
    await c.caughtUp();
    expect(alerts).toEqual([]);
    await node.send('Account', 'alert-1', 'Deposit', { amount: 9 });
    await c.caughtUp();
    expect(alerts).toHaveLength(1);
    expect(alerts[0]!.byConsumer.alerting).toBe(2);
    await node.send('Account', 'alert-1', 'Deposit', { amount: 10 });
    await c.caughtUp();
    expect(alerts).toHaveLength(1);

    // The polling watcher fires for the same crossing, and again after the queue went below and back up.
    const watched: number[] = [];
    const stop = dlq.watch({ threshold: 3, consumer: 'alerting', intervalMs: 20, onAlert: (s) => watched.push(s.byConsumer.alerting ?? 0) });
    try {
      await eventually(async () => { if (watched.length < 1) throw new Error('no alert yet'); }, 3_000);
      await dlq.discardAll({ consumer: 'alerting' });
      await sleep(100);
      await Promise.all(range1(3).map((amount) => node.send('Account', 'alert-1', 'Deposit', { amount })));
      await c.caughtUp();
      await eventually(async () => { if (watched.length < 2) throw new Error('no second alert'); }, 3_000);
      expect(watched).toEqual([3, 3]);
    } finally {
      stop();
    }
  });
});
