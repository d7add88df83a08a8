// The operator's commands as a user runs them (spawned like runtime/bin/troupe.mjs spawns the
// CLI), against a real nats-server, a real node and a real consumer: `troupe tail` and `troupe dlq`.
import { spawn } from 'node:child_process';
import { jetstreamManager } from '@nats-io/jetstream';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actorModules } from '../../actors/index.ts';
import { consume, type Consumer } from '../../runtime/consumers/consume.ts';
import { DeadLetterQueue } from '../../runtime/consumers/dlq.ts';
import type { EventEnvelope } from '../../runtime/journal/codec.ts';
import { Troupe } from '../../runtime/node/system.ts';
import { findNatsServer, tempDir, useNatsServer } from '../helpers/nats.ts';
import { CLI_MAIN as cli, RUN_TS as runTs, runCli } from '../helpers/cli.ts';
import { eventually, freshStream, natsConnect } from '../helpers/troupe.ts';

const actorsModule = fileURLToPath(new URL('../../actors/index.ts', import.meta.url));

const run = (args: string[], env: Record<string, string> = {}) => runCli(args, env);

/** The envelope fields the log and history agree on. */
function core(e: EventEnvelope): Record<string, unknown> {
  return { eventId: e.eventId, eventType: e.eventType, aggregateType: e.aggregateType, aggregateId: e.aggregateId, sequence: e.sequence, version: e.version, position: e.position, payload: e.payload, commandId: e.commandId, userId: e.userId };
}

describe('troupe tail and troupe dlq', () => {
  const nats = useNatsServer();
  const { stream, subjectPrefix } = freshStream('OPS');
  const masterKey = randomBytes(32).toString('base64');
  const previous = process.env.TROUPE_MASTER_KEY;
  let node: Troupe;
  const base = () => ['--nats-url', nats.url, '--stream', stream];

  beforeAll(async () => {
    process.env.TROUPE_MASTER_KEY = masterKey; // the node's worker threads read it
    node = await Troupe.start({ actors: [...actorModules], servers: nats.url, dataDir: tempDir(), workers: 1, shards: 4, stream, subjectPrefix });
    await node.send('Account', 'tail-1', 'OpenAccount', {});
    for (const amount of [5, 7, 11]) await node.send('Account', 'tail-1', 'Deposit', { amount });
    await node.send('Account', 'tail-2', 'OpenAccount', {});
    await node.send('Investigation', 'case-1', 'CreateInvestigation', { title: 'Phish', severity: 'high' }, { userId: 'sam' });
    await node.send('Investigation', 'case-1', 'AddInvestigationNote', { note: 'called the customer' }, { userId: 'sam' });
  });
  afterAll(async () => {
    await node?.stop();
    if (previous === undefined) delete process.env.TROUPE_MASTER_KEY;
    else process.env.TROUPE_MASTER_KEY = previous;
  });

  it('prints an actor\'s events as JSON lines that match its history', async () => {
    const r = await run(['tail', ...base(), '--type', 'Account', '--id', 'tail-1', '--json'], { TROUPE_MASTER_KEY: masterKey });
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as EventEnvelope);
    expect(lines.map(core)).toEqual((await node.history('Account', 'tail-1')).map(core));
    expect(lines.map((e) => e.eventType)).toEqual(['AccountOpened', 'Deposited', 'Deposited', 'Deposited']);
  });

  it('reads the whole log in order from a position, one readable line per event', async () => {
    const all = await run(['tail', ...base(), '--json'], { TROUPE_MASTER_KEY: masterKey });
    const events = all.stdout.trim().split('\n').map((l) => JSON.parse(l) as EventEnvelope);
    expect(events).toHaveLength(7); // 4 + 1 Account events, 2 Investigation events
    const positions = events.map((e) => e.position);
    expect(positions).toEqual([...positions].sort((a, b) => a - b));
    const from = events[4]!.position;
    const r = await run(['tail', ...base(), '--from', String(from)], { TROUPE_MASTER_KEY: masterKey });
    expect(r.code, r.stderr).toBe(0);
    const readable = r.stdout.trim().split('\n');
    expect(readable).toHaveLength(events.filter((e) => e.position >= from).length);
    expect(readable[0]).toMatch(new RegExp(`^#${from} \\S+ ${events[4]!.aggregateType}/${events[4]!.aggregateId} #${events[4]!.sequence} ${events[4]!.eventType}@v1 `));
    const later = await run(['tail', ...base(), '--from', new Date(Date.now() + 60_000).toISOString()]);
    expect(later.code, later.stderr).toBe(0);
    expect(later.stdout).toBe('');
  });

  it('shows sensitive fields only to a reader with the master key', async () => {
    const args = ['tail', ...base(), '--type', 'Investigation', '--id', 'case-1', '--json'];
    const withKey = (await run(args, { TROUPE_MASTER_KEY: masterKey })).stdout.trim().split('\n').map((l) => JSON.parse(l) as EventEnvelope);
    expect(withKey[1]).toMatchObject({ eventType: 'InvestigationNoteAdded', payload: { note: 'called the customer' } });
    expect(withKey[1]!.redacted).toBeUndefined();
    const without = await run(args);
    expect(without.code, without.stderr).toBe(0);
    const blind = without.stdout.trim().split('\n').map((l) => JSON.parse(l) as EventEnvelope);
    expect(blind[1]!.redacted).toEqual(['note']);
    expect(JSON.stringify(blind[1]!.payload)).not.toContain('called the customer');
  });

  it('follows the log: events committed after tail starts are printed', async () => {
    const child = spawn(process.execPath, [runTs, cli, 'tail', ...base(), '--type', 'Account', '--id', 'tail-3', '--follow', '--json'],
      { env: { ...process.env, TROUPE_NATS_SERVER: findNatsServer().path }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    try {
      await new Promise((r) => setTimeout(r, 1500));
      await node.send('Account', 'tail-3', 'OpenAccount', {});
      await node.send('Account', 'tail-3', 'Deposit', { amount: 3 });
      await eventually(async () => { if (stdout.trim().split('\n').length < 2) throw new Error('not yet'); }, 15_000);
      expect(stdout.trim().split('\n').map((l) => (JSON.parse(l) as EventEnvelope).eventType)).toEqual(['AccountOpened', 'Deposited']);
    } finally {
      child.kill('SIGINT');
    }
  });

  it('lists dead letters and replays one through the running consumer once; a missing one is refused', async () => {
    const nc = await natsConnect(nats.url);
    let broken = true;
    const applied: string[] = [];
    let c: Consumer | null = null;
    try {
      const dlq = await DeadLetterQueue.open({ nc, stream, subjectPrefix });
      const last = (await (await jetstreamManager(nc)).streams.info(stream)).state.last_seq;
      c = await consume({
        nc, stream, subjectPrefix, dataDir: tempDir(), from: { after: last }, name: 'ledger', eventTypes: ['Deposited'], retry: { maxRetries: 0 },
        handler: (e) => { if (broken) throw new Error('read model offline'); applied.push(e.eventId); },
      });
      const { events } = await node.send('Account', 'tail-2', 'Deposit', { amount: 9 });
      await eventually(async () => { if ((await dlq.list({ consumer: 'ledger' })).length !== 1) throw new Error('not yet'); }, 15_000);

      const list = await run(['dlq', 'list', ...base(), '--consumer', 'ledger', '--json']);
      expect(list.code, list.stderr).toBe(0);
      const letters = JSON.parse(list.stdout) as { seq: number; reason: string; event: EventEnvelope }[];
      expect(letters).toHaveLength(1);
      expect(letters[0]!.event.eventId).toBe(events[0]!.eventId);
      const byAggregate = await run(['dlq', 'list', ...base(), '--aggregate', 'Account/other', '--json']);
      expect(JSON.parse(byAggregate.stdout)).toEqual([]);
      const stats = JSON.parse((await run(['dlq', 'stats', ...base(), '--json'])).stdout) as { byConsumer: Record<string, number> };
      expect(stats.byConsumer.ledger).toBe(1);

      // Still broken: the replay fails with the handler's error and the dead letter stays.
      const failed = await run(['dlq', 'replay', String(letters[0]!.seq), ...base()]);
      expect(failed.code).toBe(1);
      expect(failed.stderr).toMatch(/read model offline/);
      expect(await dlq.list({ consumer: 'ledger' })).toHaveLength(1);

      broken = false;
      const ok = await run(['dlq', 'replay', String(letters[0]!.seq), ...base()]);
      expect(ok.code, ok.stderr).toBe(0);
      expect(applied).toEqual([events[0]!.eventId]);
      expect(await dlq.list({ consumer: 'ledger' })).toEqual([]);

      const again = await run(['dlq', 'replay', String(letters[0]!.seq), ...base()]);
      expect(again.code).toBe(1);
      expect(again.stderr).toMatch(/NOT_FOUND/);
      expect(applied).toHaveLength(1);
      await dlq.close();
    } finally {
      await c?.stop();
      await nc.close();
    }
  });

  it('says "retry" when no instance of the consumer runs to replay, and discards on request', async () => {
    const nc = await natsConnect(nats.url);
    try {
      const dlq = await DeadLetterQueue.open({ nc, stream, subjectPrefix });
      const ev = (await node.history('Account', 'tail-1'))[1]!;
      const seq = await dlq.publish({
        consumer: 'offline', reason: 'BAD_DATA', error: { name: 'Error', message: 'bad' }, attempts: 1,
        firstFailureAt: new Date().toISOString(), lastFailureAt: new Date().toISOString(), deadLetteredAt: new Date().toISOString(),
        subject: `${subjectPrefix}.log.0`, position: ev.position, headers: {}, event: ev,
      });
      const r = await run(['dlq', 'replay', String(seq), ...base()]);
      expect(r.code).toBe(75);
      expect(r.stderr).toMatch(/no running instance of consumer offline/);
      const d = await run(['dlq', 'discard', '--all', '--consumer', 'offline', ...base(), '--json']);
      expect(d.code, d.stderr).toBe(0);
      expect(JSON.parse(d.stdout)).toEqual({ discarded: 1 });
      expect(await dlq.list({ consumer: 'offline' })).toEqual([]);
      await dlq.close();
    } finally {
      await nc.close();
    }
  });

  it('upcasts with --actors and refuses --id without --type', async () => {
    const r = await run(['tail', ...base(), '--type', 'Account', '--id', 'tail-1', '--actors', actorsModule, '--json'], { TROUPE_MASTER_KEY: masterKey });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n')).toHaveLength(4);
    const bad = await run(['tail', ...base(), '--id', 'tail-1']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--id needs --type/);
  });
});
