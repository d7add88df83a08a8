// `troupe consumers`, `troupe projections`, `troupe actors`, `troupe stats`, `troupe timers` as a user runs them
// (spawned like runtime/bin/troupe.mjs spawns the CLI), against a real nats-server, a real
// node, a real consumer with a dead letter and a real projection.
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actorModules } from '../../actors/index.ts';
import { consume, type Consumer } from '../../runtime/consumers/consume.ts';
import { project, type Projection } from '../../runtime/consumers/projection.ts';
import { DeadLetterQueue } from '../../runtime/consumers/dlq.ts';
import { Troupe } from '../../runtime/node/system.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { runCli } from '../helpers/cli.ts';
import { eventually, freshStream, natsConnect } from '../helpers/troupe.ts';

const reminderModule = fileURLToPath(new URL('../fixtures/reminder.ts', import.meta.url));

const run = (args: string[]) => runCli(args);

describe('troupe consumers, projections, actors and stats', () => {
  const nats = useNatsServer();
  const { stream, subjectPrefix } = freshStream('OPS2');
  const base = () => ['--nats-url', nats.url, '--stream', stream];
  const projectionDir = tempDir();
  let node: Troupe;
  let consumer: Consumer;
  let flaky: Consumer;
  let projection: Projection;
  let dlq: DeadLetterQueue;

  beforeAll(async () => {
    node = await Troupe.start({ actors: [...actorModules, reminderModule], servers: nats.url, dataDir: tempDir(), workers: 1, shards: 16, stream, subjectPrefix });
    for (const id of ['a-1', 'a-2', 'a-3']) {
      await node.send('Account', id, 'OpenAccount', {});
      await node.send('Account', id, 'Deposit', { amount: 5 });
    }
    const nc = await natsConnect(nats.url);
    dlq = await DeadLetterQueue.open({ nc, stream, subjectPrefix });
    consumer = await consume({
      nc, stream, subjectPrefix, dataDir: tempDir(), name: 'auditor', eventTypes: ['Deposited'], retry: { maxRetries: 0 },
      handler: (e) => { if ((e.payload as { amount: number }).amount === 5 && e.aggregateId === 'a-2') throw new Error('cannot audit a-2'); },
    });
    // Fails on a-3 and retries it later: a failing aggregate, not a dead letter.
    flaky = await consume({
      nc, stream, subjectPrefix, dataDir: tempDir(), name: 'flaky', eventTypes: ['Deposited'], retry: { maxRetries: 100, initialDelayMs: 120_000, jitter: 0 },
      handler: (e) => { if (e.aggregateId === 'a-3') throw new Error('a-3 is not ready'); },
    });
    projection = await project({ name: 'balances', nc, stream, subjectPrefix, dataDir: projectionDir, apply: (e, view) => { view.put(e.aggregateId, e.sequence); } });
    await projection.caughtUp();
    await eventually(async () => { if ((await dlq.stats()).count !== 1) throw new Error('not yet'); }, 15_000);
  }, 60_000);
  afterAll(async () => {
    await projection?.stop();
    await flaky?.stop();
    await consumer?.stop();
    await dlq?.close();
    await node?.stop();
  });

  it('lists each consumer with its instance, lag and dead letters, and each projection version with its progress and whether it is active', async () => {
    const [c, p] = await Promise.all([run(['consumers', ...base(), '--json']), run(['projections', ...base(), '--data-dir', projectionDir, '--json'])]);
    expect(c.code, c.stderr).toBe(0);
    const list = JSON.parse(c.stdout) as { name: string; kind: string; instances: string[] | null; lag: number; dlqDepth: number; messagesPerSecond: number }[];
    const auditor = list.find((x) => x.name === 'auditor');
    expect(auditor).toMatchObject({ kind: 'consumer', lag: 0, dlqDepth: 1 });
    expect(auditor!.instances).toHaveLength(1);
    expect(auditor!.messagesPerSecond).toBe(0);
    // What only the running process knows: its counters and the aggregates failing now.
    expect(auditor).toMatchObject({ handled: 2, failed: 1, handledPerSecond: 0, failingAggregates: [] });
    const f = list.find((x) => x.name === 'flaky') as unknown as { handled: number; failingAggregates: { aggregateType: string; aggregateId: string; reason: string; attempts: number }[] };
    expect(f.handled).toBe(2);
    expect(f.failingAggregates).toMatchObject([{ aggregateType: 'Account', aggregateId: 'a-3', attempts: 1 }]);
    expect(list.find((x) => x.name === 'balances')).toMatchObject({ kind: 'projection', lag: 0, dlqDepth: 0 });

    expect(p.code, p.stderr).toBe(0);
    const versions = JSON.parse(p.stdout) as { name: string; version: number; active: boolean | null; progress: number; position: number; lastSeq: number }[];
    expect(versions).toHaveLength(1);
    expect(versions[0]).toMatchObject({ name: 'balances', version: 1, active: true, progress: 1, position: projection.position });
  }, 60_000);

  it('asks every node for its resident actors and its stats', async () => {
    const [a, s] = await Promise.all([run(['actors', 'Account', '--resident', ...base(), '--json']), run(['stats', ...base(), '--json'])]);
    expect(a.code, a.stderr).toBe(0);
    expect(JSON.parse(a.stdout)).toEqual([{ node: node.nodeName, ids: ['a-1', 'a-2', 'a-3'], hosted: true }]);
    expect(s.code, s.stderr).toBe(0);
    const [st] = JSON.parse(s.stdout) as { node: string; shards: { owned: number; total: number }; residentActors: number; sinceStart: { commands: number; p50Ms: number | null; p99Ms: number | null } }[];
    expect(st).toMatchObject({ node: node.nodeName, shards: { owned: 16, total: 16 }, residentActors: 3, sinceStart: { commands: 6 } });
    expect(st!.sinceStart.p50Ms).toBeGreaterThan(0);
    expect(st!.sinceStart.p99Ms).toBeGreaterThanOrEqual(st!.sinceStart.p50Ms!);
  }, 60_000);

  it('rebuilds a projection in its own process from the start of the log, and says "retry" for one that does not run', async () => {
    const before = projection.position;
    const [r, none] = await Promise.all([run(['rebuild', 'balances', ...base(), '--json']), run(['rebuild', 'nobody', ...base()])]);
    expect(r.code, r.stderr).toBe(0);
    const done = JSON.parse(r.stdout) as { projection: string; version: number; from: number; position: number; waited: boolean };
    expect(done).toMatchObject({ projection: 'balances', version: 1, waited: true });
    expect(done.from).toBeGreaterThanOrEqual(before);
    expect(done.position).toBeGreaterThanOrEqual(done.from);
    // The view was cleared and built again: every account is back, at its last sequence.
    await projection.caughtUp();
    expect(['a-1', 'a-2', 'a-3'].map((id) => projection.get<number>(id))).toEqual([2, 2, 2]);
    expect(none.code).toBe(75);
    expect(none.stderr).toMatch(/no running projection nobody/);
  }, 60_000);

  it('lists an actor\'s pending timers from the node that owns its shard, and refuses an unknown actor type', async () => {
    await node.send('Reminder', 'r-1', 'Remind', { key: 'daily', every: 86_400_000, note: 'standup' });
    await node.send('Reminder', 'r-1', 'Remind', { key: 'once', after: 3_600_000 });
    const [t, none, bad] = await Promise.all([
      run(['timers', 'Reminder', 'r-1', ...base(), '--json']), run(['timers', 'Reminder', 'r-2', ...base()]), run(['timers', 'Nope', 'x', ...base()]),
    ]);
    expect(t.code, t.stderr).toBe(0);
    const listed = JSON.parse(t.stdout) as { node: string; timers: { key: string; command: string; every?: number; payload: unknown }[] };
    expect(listed.node).toBe(node.nodeName);
    expect(listed.timers.map((x) => x.key).sort()).toEqual(['daily', 'once']);
    expect(listed.timers.find((x) => x.key === 'daily')).toMatchObject({ command: 'Ring', every: 86_400_000, payload: { note: 'standup' } });
    expect(listed.timers).toEqual(await node.timers('Reminder', 'r-1'));
    expect(none.code, none.stderr).toBe(0);
    expect(none.stdout).toContain('Reminder r-2 has no pending timers');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/UNKNOWN_ACTOR_TYPE/);
  }, 60_000);

  it('says no node answered when none serves the stream', async () => {
    await node.stop();
    const r = await run(['stats', ...base()]);
    expect(r.code).toBe(75);
    expect(r.stderr).toContain('no Troupe node answered');
  }, 30_000);
});
