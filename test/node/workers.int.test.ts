// A worker thread dies under load: its commands fail with a retryable WORKER_LOST (or were
// answered before), the node keeps serving on every shard, and the log stays exact.
import { afterAll, describe, expect, it } from 'vitest';
import type { CommandResult } from '../../runtime/envelope.ts';
import { shardOf } from '../../runtime/envelope.ts';
import { isTroupeError } from '../../runtime/errors.ts';
import type { Troupe } from '../../runtime/node/system.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { allSettled, countByCommandId, describeError, eventually, foldAccounts, freshStream, range1, readEvents, sleep, startNode, track, type Outcome } from '../helpers/troupe.ts';

interface Sent {
  commandId: string;
  account: string;
  amount: number;
  shard: number;
  outcome: Outcome<CommandResult>;
}

const SHARDS = 8;

describe('worker crash', () => {
  const nats = useNatsServer();
  let node: Troupe | undefined;
  afterAll(async () => {
    await node?.stop();
  });

  it('fails only the lost worker\'s in-flight commands, retryably, and keeps serving every shard with an exact log', async () => {
    const s = freshStream('CRASH');
    node = await startNode(nats.url, { ...s, shards: SHARDS, workers: 2 });
    const n = node;
    const accounts = range1(200).map((i) => `acct-${i}`);
    const shardOfAccount = new Map(accounts.map((a) => [a, shardOf('Account', a, SHARDS)]));
    // The accounts cover every shard, so both workers carry load.
    expect(new Set(shardOfAccount.values()).size).toBe(SHARDS);
    await Promise.all(accounts.map((a) => n.send('Account', a, 'OpenAccount', {}, { commandId: `open-${a}` })));

    const sent: Sent[] = [];
    let firing = true;
    let next = 0;
    const lanes = Array.from({ length: 128 }, async () => {
      while (firing) {
        const i = next++;
        const account = accounts[(i * 31) % accounts.length]!;
        const amount = (i % 40) + 1;
        const x: Sent = {
          commandId: `dep-${i}`, account, amount, shard: shardOfAccount.get(account)!,
          outcome: track(n.send('Account', account, 'Deposit', { amount }, { commandId: `dep-${i}` })),
        };
        sent.push(x);
        await x.outcome.promise;
      }
    });
    const until = Date.now() + 20_000;
    while (sent.filter((x) => x.outcome.settled).length < 1000) {
      if (Date.now() > until) throw new Error('the load did not get going');
      await sleep(10);
    }
    const crashedShard = 0;
    const crashedSlotShards = new Set(range1(SHARDS).map((i) => i - 1).filter((sh) => sh % 2 === crashedShard % 2));
    const threadsBefore = (await n.stats()).workers.map((w) => w.threadId);
    // A burst for the crashed worker's actors, in the same turn as the crash: it leaves for that
    // worker before the worker learns it must die, and cannot all be acknowledged by JetStream
    // before it does, so commands are surely in flight when the worker dies.
    const crashedAccounts = accounts.filter((a) => crashedSlotShards.has(shardOfAccount.get(a)!));
    for (let k = 0; k < 200; k++) {
      const i = next++;
      const account = crashedAccounts[k % crashedAccounts.length]!;
      const amount = (i % 40) + 1;
      sent.push({
        commandId: `dep-${i}`, account, amount, shard: shardOfAccount.get(account)!,
        outcome: track(n.send('Account', account, 'Deposit', { amount }, { commandId: `dep-${i}` })),
      });
    }
    const inFlight = sent.filter((x) => crashedSlotShards.has(x.shard) && !x.outcome.settled).length;
    await n.crashWorkerOf(crashedShard);
    await sleep(1500); // the load keeps running while the worker is replaced
    firing = false;
    await Promise.all(lanes);
    await allSettled(sent.map((x) => x.outcome), 30_000);

    // Commands were in flight on the crashed worker, and it died with some of them unanswered.
    expect(inFlight).toBeGreaterThan(0);
    const failed = sent.filter((x) => x.outcome.error !== undefined);
    expect(failed.length, 'no command was lost with the worker: the crash was not under load').toBeGreaterThan(0);
    // Failures are retryable WORKER_LOST, and only on the crashed worker's shards.
    const wrong = failed.filter((x) => !(isTroupeError(x.outcome.error, 'WORKER_LOST') && x.outcome.error.retryable));
    expect(wrong.slice(0, 3).map((x) => describeError(x.outcome.error)), `${wrong.length} of ${failed.length} failures are not a retryable WORKER_LOST`).toEqual([]);
    expect(failed.filter((x) => !crashedSlotShards.has(x.shard)).map((x) => x.commandId)).toEqual([]);
    // The other worker's shards kept answering through the crash.
    expect(sent.filter((x) => !crashedSlotShards.has(x.shard) && x.outcome.error === undefined).length).toBeGreaterThan(0);

    // Every resolved send is in the log exactly once.
    let counts = countByCommandId(await readEvents(nats.url, s.stream));
    const resolved = sent.filter((x) => x.outcome.error === undefined);
    expect(resolved.filter((x) => counts.get(x.commandId) !== 1).map((x) => x.commandId)).toEqual([]);
    expect([...counts].filter(([, c]) => c !== 1)).toEqual([]);

    // The node serves every shard again: new sends to all accounts, on both workers.
    const errors: unknown[] = [];
    await Promise.all(accounts.map((a) => eventually(() => n.send('Account', a, 'Deposit', { amount: 1000 }, { commandId: `after-${a}` }), 30_000, (e) => errors.push(e))));
    expect(errors.filter((e) => !(isTroupeError(e) && e.retryable)).map(describeError)).toEqual([]);
    // Retrying the failed commands with their commandIds stores each exactly once.
    for (const x of failed) await eventually(() => n.send('Account', x.account, 'Deposit', { amount: x.amount }, { commandId: x.commandId }), 30_000);

    const events = await readEvents(nats.url, s.stream);
    counts = countByCommandId(events);
    const all = [...accounts.map((a) => `open-${a}`), ...sent.map((x) => x.commandId), ...accounts.map((a) => `after-${a}`)];
    expect(all.filter((id) => counts.get(id) !== 1)).toEqual([]);
    expect(counts.size).toBe(all.length);

    // A new worker replaced the crashed one; the other one lived on.
    const threadsAfter = (await n.stats()).workers.map((w) => w.threadId);
    expect(threadsAfter.filter((t) => threadsBefore.includes(t))).toHaveLength(1);
    expect(threadsAfter).toHaveLength(2);

    // Each state is the log's, and the sum of what was sent.
    const folded = foldAccounts(events);
    const queries = await Promise.all(accounts.map((a) => n.query('Account', a)));
    const actual = accounts.map((a, i) => ({ a, sequences: folded.get(a)!.sequences, balance: folded.get(a)!.balance, query: queries[i] }));
    const expected = accounts.map((a) => {
      const balance = sent.filter((x) => x.account === a).reduce((sum, x) => sum + x.amount, 0) + 1000;
      const version = folded.get(a)!.sequences.length;
      return { a, sequences: range1(version), balance, query: { state: { opened: true, balance }, version } };
    });
    expect(actual).toEqual(expected);
  });
});
