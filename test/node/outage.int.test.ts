// nats-server goes away while commands are in flight: no send reports a success JetStream did
// not store, every failure is retryable, and the same node serves again once the server is back.
import { afterAll, describe, expect, it } from 'vitest';
import { isTroupeError } from '../../runtime/errors.ts';
import type { CommandResult } from '../../runtime/envelope.ts';
import type { Troupe } from '../../runtime/node/system.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { allSettled, countByCommandId, describeError, eventually, foldAccounts, freshStream, range1, readEvents, sleep, startNode, track, type Outcome } from '../helpers/troupe.ts';

interface Sent {
  commandId: string;
  account: string;
  amount: number;
  outcome: Outcome<CommandResult>;
}

/** Codes a send may fail with while the journal is away; every one of them is retryable. */
const OUTAGE_CODES = ['JOURNAL_UNAVAILABLE', 'TIMEOUT', 'CONCURRENCY', 'SHARD_NOT_OWNED', 'STOPPED', 'OVERLOADED'];

describe('NATS outage', () => {
  const nats = useNatsServer();
  let node: Troupe | undefined;
  afterAll(async () => {
    await node?.stop();
  });

  it('fails in-flight sends only with retryable errors, never with a false success, and serves again after the server returns', async () => {
    const s = freshStream('OUT');
    node = await startNode(nats.url, { ...s, ackTimeoutMs: 1000 });
    const n = node;
    const accounts = range1(100).map((i) => `acct-${i}`);
    await Promise.all(accounts.map((a) => n.send('Account', a, 'OpenAccount', {}, { commandId: `open-${a}` })));

    // Load: 128 lanes, each sending one deposit at a time, until the server is gone.
    const sent: Sent[] = [];
    let firing = true;
    let next = 0;
    const lanes = Array.from({ length: 128 }, async () => {
      while (firing) {
        const i = next++;
        const account = accounts[i % accounts.length]!;
        const s: Sent = { commandId: `dep-${i}`, account, amount: (i % 50) + 1, outcome: track(n.send('Account', account, 'Deposit', { amount: (i % 50) + 1 }, { commandId: `dep-${i}` })) };
        sent.push(s);
        await s.outcome.promise;
      }
    });
    const until = Date.now() + 20_000;
    while (sent.filter((x) => x.outcome.settled && x.outcome.error === undefined).length < 1000) {
      if (Date.now() > until) throw new Error('the load did not get going');
      await sleep(10);
    }
    firing = false;
    const inFlight = sent.filter((x) => !x.outcome.settled).length;
    await nats.kill();
    await sleep(2000);
    await nats.restart();
    await Promise.all(lanes);
    await allSettled(sent.map((x) => x.outcome), 60_000);
    expect(inFlight).toBeGreaterThan(0);

    // Every failure is retryable; nothing else.
    const failed = sent.filter((x) => x.outcome.error !== undefined);
    const wrong = failed.filter((x) => !(isTroupeError(x.outcome.error) && x.outcome.error.retryable && OUTAGE_CODES.includes(x.outcome.error.code)));
    expect(wrong.slice(0, 3).map((x) => describeError(x.outcome.error))).toEqual([]);

    // Every success is in the log, exactly once.
    const counts = countByCommandId(await readEvents(nats.url, s.stream));
    const resolved = sent.filter((x) => x.outcome.error === undefined);
    const lost = resolved.filter((x) => counts.get(x.commandId) !== 1);
    expect(lost.map((x) => x.commandId), `${lost.length} of ${resolved.length} acknowledged deposits are not in the log exactly once`).toEqual([]);

    // The same node serves again within seconds.
    const errors: unknown[] = [];
    const probe = await eventually(() => n.send('Account', 'acct-1', 'Deposit', { amount: 1 }, { commandId: 'probe' }), 30_000, (e) => errors.push(e));
    expect(probe.commandId).toBe('probe');
    expect(errors.filter((e) => !(isTroupeError(e) && e.retryable)).map(describeError)).toEqual([]);
    // ...on every shard: a deposit to each account.
    await Promise.all(accounts.map((a) => eventually(() => n.send('Account', a, 'Deposit', { amount: 1000 }, { commandId: `after-${a}` }), 30_000)));

    // Retrying each failed command with its commandId is safe: each ends up stored exactly once.
    for (const x of failed) {
      await eventually(() => n.send('Account', x.account, 'Deposit', { amount: x.amount }, { commandId: x.commandId }), 30_000);
    }
    const events = await readEvents(nats.url, s.stream);
    const after = countByCommandId(events);
    const all = [...sent.map((x) => x.commandId), 'probe', ...accounts.map((a) => `after-${a}`), ...accounts.map((a) => `open-${a}`)];
    expect(all.filter((id) => after.get(id) !== 1)).toEqual([]);
    expect(after.size).toBe(all.length);

    // States equal the log and the sum of what was sent.
    const folded = foldAccounts(events);
    for (const a of accounts) {
      const expected = sent.filter((x) => x.account === a).reduce((sum, x) => sum + x.amount, 0) + 1000 + (a === 'acct-1' ? 1 : 0);
      const f = folded.get(a)!;
      expect(f.balance, a).toBe(expected);
      expect(f.sequences, a).toEqual(range1(f.sequences.length));
      expect(await n.query('Account', a), a).toEqual({ state: { opened: true, balance: expected }, version: f.sequences.length });
    }
  });
});
