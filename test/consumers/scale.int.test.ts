// consume({ scaleOut }): several instances of one consumer name share its shards. Two
// instances run in two child processes (test/fixtures/scaled-consumer-child.ts) against one
// nats-server; each applies events to a sink shared in NATS KV with the version check, and
// records every delivery in a file.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actorModules } from '../../actors/index.ts';
import { consume, consumerStatus, type ScaledConsumer } from '../../runtime/consumers/consume.ts';
import { workflow } from '../../runtime/consumers/saga.ts';
import type { Command, CommandResult } from '../../runtime/envelope.ts';
import type { EventEnvelope } from '../../runtime/journal/codec.ts';
import { placeShards } from '../../runtime/placement.ts';
import { Troupe } from '../../runtime/node/system.ts';
import { isTroupeError } from '../../runtime/errors.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { useScaledChildren, type ScaledChild } from '../helpers/children.ts';
import { freshStream, natsConnect, range1, until } from '../helpers/troupe.ts';

const childScript = fileURLToPath(new URL('../fixtures/scaled-consumer-child.ts', import.meta.url));
const SHARDS = 8;
const LEASE_TTL_MS = 3_000;
const A = 'inst-a';
const B = 'inst-b';

describe('consume with scaleOut', () => {
  const nats = useNatsServer();
  let nc: NatsConnection;
  const children = useScaledChildren();

  beforeAll(async () => {
    nc = await natsConnect(nats.url);
  });
  afterAll(async () => {
    await nc?.close();
  });

  async function setup(label: string): Promise<{ node: Troupe; stream: string; subjectPrefix: string; sink: KV; sinkBucket: string; deliveries: string }> {
    const { stream, subjectPrefix } = freshStream(label);
    const node = await Troupe.start({ actors: [...actorModules], servers: nats.url, dataDir: tempDir(), workers: 1, shards: SHARDS, stream, subjectPrefix });
    const sinkBucket = `${stream}_sink`;
    const sink = await new Kvm(nc).create(sinkBucket, { history: 1 });
    const deliveries = join(tempDir(), 'deliveries.txt');
    writeFileSync(deliveries, '');
    return { node, stream, subjectPrefix, sink, sinkBucket, deliveries };
  }

  function start(env: { stream: string; subjectPrefix: string; sinkBucket: string; deliveries: string }, name: string, instance: string, slowMs: number): ScaledChild {
    return children.start(childScript, [nats.url, env.stream, env.subjectPrefix, tempDir(), name, instance, String(slowMs), env.sinkBucket, env.deliveries]);
  }

  async function send(node: Troupe, ids: readonly string[], deposits: number): Promise<void> {
    await Promise.all(ids.map(async (id) => {
      for (const amount of range1(deposits)) await node.send('Account', id, 'Deposit', { amount });
    }));
  }

  /** Every delivery line of the file, and the GAP / CONFLICT lines. */
  function readDeliveries(file: string): { lines: { instance: string; id: string; seq: number; eventId: string }[]; problems: string[] } {
    const all = readFileSync(file, 'utf8').trim().split('\n').filter((l) => l !== '');
    const problems = all.filter((l) => l.startsWith('GAP ') || l.startsWith('CONFLICT '));
    const lines = all.filter((l) => !problems.includes(l)).map((l) => {
      const [instance, id, seq, eventId] = l.split(' ') as [string, string, string, string];
      return { instance, id, seq: Number(seq), eventId };
    });
    return { lines, problems };
  }

  async function sinkState(sink: KV, id: string): Promise<{ v: number; by: string[] } | null> {
    const e = await sink.get(`Account.${id}`);
    return e?.operation === 'PUT' ? e.json<{ v: number; by: string[] }>() : null;
  }

  it('splits the shards between two instances, handles each aggregate in order and each event once, and hands over at once on a graceful stop', async () => {
    const env = await setup('SCALEG');
    const { node, sink } = env;
    try {
      const placed = placeShards([A, B], SHARDS);
      // The instance names are fixed so that the split is known: both get shards.
      expect(placed.get(A)!.length).toBeGreaterThan(0);
      expect(placed.get(B)!.length).toBeGreaterThan(0);

      const a = start(env, 'ledger', A, 0);
      const b = start(env, 'ledger', B, 0);
      await until('the shards to be split by placement', () =>
        JSON.stringify(a.shards()) === JSON.stringify(placed.get(A)) && JSON.stringify(b.shards()) === JSON.stringify(placed.get(B)), 30_000);

      // The status a cluster page shows: both instances, and each shard held by its placed owner.
      const status = (await consumerStatus(nc, env.stream)).find((g) => g.name === 'ledger')!;
      expect(status.members.map((m) => m.member)).toEqual([A, B]);
      expect(status.shards.map((s) => `${s.shard}:${s.member}`)).toEqual(range1(SHARDS).map((i) => `${i - 1}:${placed.get(A)!.includes(i - 1) ? A : B}`));
      expect(status.shards.every((s) => s.ageMs < LEASE_TTL_MS)).toBe(true);
      expect(status.exclusive).toBeNull();

      const ids = range1(24).map((i) => `acct-g-${i}`);
      await Promise.all(ids.map((id) => node.send('Account', id, 'OpenAccount', {})));
      await send(node, ids, 4);
      await until('both instances to apply every event', async () => (await Promise.all(ids.map((id) => sinkState(sink, id)))).every((s) => s?.v === 5), 30_000);

      // A graceful stop releases A's leases at once: B reads every shard well before A's leases would have expired.
      const stoppedAt = Date.now();
      a.proc.kill('SIGTERM');
      expect((await a.exited).code).toBe(0);
      await until('B to read every shard', () => b.shards().length === SHARDS, LEASE_TTL_MS);
      const handOverMs = Date.now() - stoppedAt;
      console.log(`graceful hand-over of ${placed.get(A)!.length} shards: ${handOverMs} ms after SIGTERM`);
      expect(handOverMs).toBeLessThan(LEASE_TTL_MS / 2);

      await send(node, ids, 2);
      await until('B to apply the later events', async () => (await Promise.all(ids.map((id) => sinkState(sink, id)))).every((s) => s?.v === 7), 30_000);

      const { lines, problems } = readDeliveries(env.deliveries);
      expect(problems).toEqual([]);
      // Each event was handed to a handler exactly once, in per-aggregate order across both instances ...
      const history = (await Promise.all(ids.map((id) => node.history('Account', id)))).flat();
      expect(history).toHaveLength(ids.length * 7);
      expect(lines.map((l) => l.eventId).sort()).toEqual(history.map((e) => e.eventId).sort());
      for (const id of ids) expect(lines.filter((l) => l.id === id).map((l) => l.seq)).toEqual(range1(7));
      // ... and both instances did part of the work before the stop.
      const before = lines.filter((l) => l.seq <= 5);
      expect(new Set(before.map((l) => l.instance))).toEqual(new Set([A, B]));
      expect(lines.filter((l) => l.seq > 5).every((l) => l.instance === B)).toBe(true);
    } finally {
      await node.stop();
    }
  }, 90_000);

  it('hands the shards of an instance killed with SIGKILL to the other once its leases expire, still applying each event once and in order', async () => {
    const env = await setup('SCALEK');
    const { node, sink } = env;
    try {
      const placed = placeShards([A, B], SHARDS);
      const a = start(env, 'ledger', A, 100);
      const b = start(env, 'ledger', B, 100);
      await until('the shards to be split by placement', () =>
        JSON.stringify(a.shards()) === JSON.stringify(placed.get(A)) && JSON.stringify(b.shards()) === JSON.stringify(placed.get(B)), 30_000);
      // Slow handlers: A is killed with a backlog, some of its messages handled and not acked.
      const ids = range1(16).map((i) => `acct-k-${i}`);
      await Promise.all(ids.map((id) => node.send('Account', id, 'OpenAccount', {})));
      await send(node, ids, 5);
      await until('A to apply a few events', async () =>
        (await Promise.all(ids.map((id) => sinkState(sink, id)))).reduce((n, s) => n + (s?.by.filter((i) => i === A).length ?? 0), 0) >= 8, 60_000);
      a.proc.kill('SIGKILL');
      const killedAt = Date.now();
      expect((await a.exited).signal).toBe('SIGKILL');
      await until('B to read every shard', () => b.shards().length === SHARDS, LEASE_TTL_MS + 5_000);
      const takeOverMs = Date.now() - killedAt;
      console.log(`take-over after SIGKILL: ${takeOverMs} ms (lease ttl ${LEASE_TTL_MS} ms)`);
      expect(takeOverMs).toBeLessThan(LEASE_TTL_MS + 5_000);

      await until('every event to be applied', async () => (await Promise.all(ids.map((id) => sinkState(sink, id)))).every((s) => s?.v === 6), 60_000);
      const { lines, problems } = readDeliveries(env.deliveries);
      // No event of an aggregate was handled before the one before it, nor by two instances at once ...
      expect(problems).toEqual([]);
      // ... each was applied once: the sink holds one application per sequence ...
      for (const id of ids) expect((await sinkState(sink, id))!.by).toHaveLength(6);
      // ... by A before the kill and by B after it.
      const states = await Promise.all(ids.map((id) => sinkState(sink, id)));
      expect(states.some((s) => s!.by.includes(A))).toBe(true);
      // Events delivered twice are only ones A had received when it was killed.
      const firstBy = new Map<string, string>();
      const again: string[] = [];
      for (const l of lines) {
        if (firstBy.has(l.eventId)) again.push(firstBy.get(l.eventId)!);
        else firstBy.set(l.eventId, l.instance);
      }
      expect(again.every((i) => i === A)).toBe(true);
      const appliedByA = new Set<string>();
      for (const [i, id] of ids.entries()) states[i]!.by.forEach((who, k) => { if (who === A) appliedByA.add(`${id}:${k + 1}`); });
      const redelivered = lines.filter((l, i) => l.instance === B && lines.findIndex((m) => m.eventId === l.eventId) !== i);
      console.log(`after SIGKILL: ${redelivered.length} events delivered again to B, ${redelivered.filter((l) => appliedByA.has(`${l.id}:${l.seq}`)).length} of them applied by A before (skipped by the version check)`);
      // Per aggregate, the first delivery of each event is in sequence order, across both instances.
      const firsts = lines.filter((l, i) => lines.findIndex((m) => m.eventId === l.eventId) === i);
      for (const id of ids) expect(firsts.filter((l) => l.id === id).map((l) => l.seq)).toEqual(range1(6));
    } finally {
      await node.stop();
    }
  }, 90_000);

  it('splits a workflow between instances the same way: each event reacted to once, in order per aggregate', async () => {
    const { stream, subjectPrefix } = freshStream('SCALEW');
    const node = await Troupe.start({ actors: [...actorModules], servers: nats.url, dataDir: tempDir(), workers: 1, shards: SHARDS, stream, subjectPrefix });
    const sent: { instance: string; commandId: string; aggregateId: string; seq: number }[] = [];
    const sender = (instance: string) => ({
      send: async (_t: string, aggregateId: string, command: Command): Promise<CommandResult> => {
        sent.push({ instance, commandId: command.commandId!, aggregateId, seq: Number((command.payload as { seq: number }).seq) });
        return { events: [] } as unknown as CommandResult;
      },
    });
    const flows: ScaledConsumer[] = [];
    try {
      for (const instance of [A, B]) {
        flows.push(await workflow({
          name: 'mirror', nc, stream, subjectPrefix, dataDir: tempDir(), scaleOut: { instance, leaseTtlMs: LEASE_TTL_MS },
          sender: sender(instance),
          on: { Deposited: (e: EventEnvelope, commands) => commands.send('Audit', e.aggregateId, 'Note', { seq: e.sequence }) },
        }) as ScaledConsumer);
      }
      await until('the two instances to split the shards', () => flows[0]!.shards.length + flows[1]!.shards.length === SHARDS && flows.every((f) => f.shards.length > 0), 20_000);
      const ids = range1(16).map((i) => `acct-w-${i}`);
      await Promise.all(ids.map((id) => node.send('Account', id, 'OpenAccount', {})));
      await send(node, ids, 3);
      await flows[0]!.caughtUp(30_000);
      expect(new Set(sent.map((s) => s.commandId)).size).toBe(sent.length);
      expect(sent).toHaveLength(ids.length * 3);
      for (const id of ids) {
        const mine = sent.filter((s) => s.aggregateId === id);
        expect(mine.map((s) => s.seq)).toEqual([2, 3, 4]);
        expect(new Set(mine.map((s) => s.instance)).size).toBe(1);
      }
      expect(new Set(sent.map((s) => s.instance))).toEqual(new Set([A, B]));
    } finally {
      for (const f of flows) await f.stop();
      await node.stop();
    }
  }, 60_000);

  it('refuses a second instance of a name that is not scaled out, and a scaled-out instance beside it, until the first stops', async () => {
    const { stream, subjectPrefix } = freshStream('SCALEX');
    const node = await Troupe.start({ actors: [...actorModules], servers: nats.url, dataDir: tempDir(), workers: 1, shards: SHARDS, stream, subjectPrefix });
    const base = { name: 'solo', nc, stream, subjectPrefix, handler: () => {} };
    try {
      const first = await consume({ ...base, dataDir: tempDir() });
      const second = await consume({ ...base, dataDir: tempDir() }).then(() => null, (e: unknown) => e);
      expect(isTroupeError(second, 'CONCURRENCY')).toBe(true);
      expect((second as Error).message).toMatch(/already runs as instance/);
      const scaled = await consume({ ...base, dataDir: tempDir(), scaleOut: { instance: 'x1', leaseTtlMs: LEASE_TTL_MS } }).then(() => null, (e: unknown) => e);
      expect(isTroupeError(scaled, 'CONCURRENCY')).toBe(true);
      // The same data dir is the same instance: a restart after a crash takes the lease back at once.
      const again = await consume({ ...base, store: first.store });
      await again.stop();
      await first.stop();
      // Stopped: the lease is released, and a scaled-out group of the name may start; then a plain instance may not.
      const group = await consume({ ...base, dataDir: tempDir(), scaleOut: { instance: 'x1', leaseTtlMs: LEASE_TTL_MS } });
      try {
        const plain = await consume({ ...base, dataDir: tempDir() }).then(() => null, (e: unknown) => e);
        expect(isTroupeError(plain, 'CONCURRENCY')).toBe(true);
      } finally {
        await group.stop();
      }
    } finally {
      await node.stop();
    }
  }, 60_000);
});
