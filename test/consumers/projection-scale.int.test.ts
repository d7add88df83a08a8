// project({ scaleOut }): the instances of one projection version share the log's shards, each
// owned shard a partition of the view in the owner's LMDB, served over NATS to a reader. The
// instances run in child processes (test/fixtures/scaled-projection-child.ts); each view row
// counts the events applied to it and records any that did not follow the previous one.
import { fileURLToPath } from 'node:url';
import type { NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actorModules } from '../../actors/index.ts';
import { consumerOverview, projectionOverview } from '../../runtime/consumers/overview.ts';
import { project } from '../../runtime/consumers/projection.ts';
import { projectionReader, viewSubject, type ProjectionReader, type ViewAnswer } from '../../runtime/consumers/view-reader.ts';
import { shardOf } from '../../runtime/envelope.ts';
import { projectionReader as publicReader } from '../../runtime/index.ts';
import { isTroupeError } from '../../runtime/errors.ts';
import { placeShards } from '../../runtime/placement.ts';
import { Troupe } from '../../runtime/node/system.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { useScaledChildren, type ScaledChild } from '../helpers/children.ts';
import { freshStream, natsConnect, range1, sleep, until } from '../helpers/troupe.ts';

const childScript = fileURLToPath(new URL('../fixtures/scaled-projection-child.ts', import.meta.url));
const SHARDS = 8;
const LEASE_TTL_MS = 3_000;
const A = 'inst-a';
const B = 'inst-b';
const NAME = 'balances';

interface Row { balance: number; n: number; lastSeq: number; bad: string[]; by: string }

interface Child extends ScaledChild {
  /** Events applied, and events skipped as applied before, by this instance so far (over the partitions it owns now). */
  applied: () => { handled: number; duplicates: number };
}

describe('project with scaleOut', () => {
  const nats = useNatsServer();
  let nc: NatsConnection;
  const children = useScaledChildren();

  beforeAll(async () => {
    nc = await natsConnect(nats.url);
  });
  afterAll(async () => {
    await nc?.close();
  });

  async function setup(label: string): Promise<{ node: Troupe; stream: string; subjectPrefix: string; reader: ProjectionReader }> {
    const { stream, subjectPrefix } = freshStream(label);
    const node = await Troupe.start({ actors: [...actorModules], servers: nats.url, dataDir: tempDir(), workers: 1, shards: SHARDS, stream, subjectPrefix });
    const reader = await projectionReader({ name: NAME, nc, stream, subjectPrefix, timeoutMs: 15_000 });
    return { node, stream, subjectPrefix, reader };
  }

  function start(env: { stream: string; subjectPrefix: string }, instance: string, dataDir = tempDir(), slowMs = 0): Child {
    const child = children.start(childScript, [nats.url, env.stream, env.subjectPrefix, dataDir, NAME, instance, String(slowMs)]);
    return Object.assign(child, {
      applied: () => {
        const lines = child.out().match(/^applied .*$/gm);
        const [handled, duplicates] = (lines?.[lines.length - 1]?.slice(8) ?? '0 0').split(' ').map(Number) as [number, number];
        return { handled, duplicates };
      },
    });
  }

  /** Open the accounts and deposit 1..deposits into each; the highest log position of the commands. */
  async function send(node: Troupe, ids: readonly string[], deposits: number, open = true): Promise<number> {
    const positions = await Promise.all(ids.map(async (id) => {
      let p = 0;
      if (open) p = (await node.send('Account', id, 'OpenAccount', {})).position;
      for (const amount of range1(deposits)) p = Math.max(p, (await node.send('Account', id, 'Deposit', { amount })).position);
      return p;
    }));
    return Math.max(...positions);
  }

  /** Every instance that answers a get on the shard's subject within `ms`. */
  async function responders(subjectPrefix: string, shard: number, ms = 500): Promise<string[]> {
    const out: string[] = [];
    const replies = await nc.requestMany(viewSubject(subjectPrefix, NAME, 1, shard), JSON.stringify({ op: 'get', key: 'none', waitMs: 0 }), { maxWait: ms });
    for await (const m of replies) {
      if (m.data.length === 0) break;
      const a = JSON.parse(new TextDecoder().decode(m.data)) as ViewAnswer;
      out.push('error' in a ? `error ${a.error.code}` : a.instance);
    }
    return out.sort();
  }

  function expectApplied(row: Row | undefined, events: number, balance: number): void {
    expect(row).toBeDefined();
    expect(row!.bad).toEqual([]);
    expect(row!.n).toBe(events);
    expect(row!.lastSeq).toBe(events);
    expect(row!.balance).toBe(balance);
  }

  const sum = (n: number) => (n * (n + 1)) / 2;

  it('splits the shards between two instances; each event is applied once, in order, in its shard\'s partition, and a reader gets it from the owner', async () => {
    const env = await setup('PSCALE');
    const { node, reader } = env;
    try {
      const placed = placeShards([A, B], SHARDS);
      expect(placed.get(A)!.length).toBeGreaterThan(0);
      expect(placed.get(B)!.length).toBeGreaterThan(0);
      const a = start(env, A);
      const b = start(env, B);
      await until('the shards to be split by placement', () =>
        JSON.stringify(a.shards()) === JSON.stringify(placed.get(A)) && JSON.stringify(b.shards()) === JSON.stringify(placed.get(B)), 30_000);

      // `troupe cluster status` and /cluster: the projection's instances and the shards each owns.
      const status = (await node.cluster()).consumers!.find((g) => g.projection?.name === NAME)!;
      expect(status.projection).toEqual({ name: NAME, version: 1 });
      expect(status.members.map((m) => m.member)).toEqual([A, B]);
      expect(status.shards.map((s) => `${s.shard}:${s.member}`)).toEqual(range1(SHARDS).map((i) => `${i - 1}:${placed.get(A)!.includes(i - 1) ? A : B}`));

      const ids = range1(24).map((i) => `acct-p-${i}`);
      const position = await send(node, ids, 4);
      // Read-your-writes: with `after`, every aggregate's row holds all its events, from its shard's owner.
      for (const id of ids) {
        const row = await reader.get<Row>({ aggregateType: 'Account', aggregateId: id }, id, { after: position });
        expectApplied(row, 5, sum(4));
        const shard = reader.shardOf('Account', id);
        expect(shard).toBe(shardOf('Account', id, SHARDS));
        expect(row!.by).toBe(placed.get(A)!.includes(shard) ? A : B);
      }
      // A command's own position is enough for its aggregate, whatever was appended elsewhere since.
      const one = await node.send('Account', ids[0]!, 'Deposit', { amount: 10 });
      expectApplied(await reader.get<Row>({ aggregateType: 'Account', aggregateId: ids[0]! }, ids[0]!, { after: one.position }), 6, sum(4) + 10);

      // Scan: every row exactly once across both instances, each with the shard of its aggregate.
      const rows = await reader.scan<Row>({ after: one.position });
      expect(rows.map((r) => r.key).sort()).toEqual([...ids].sort());
      for (const r of rows) expect(r.shard).toBe(shardOf('Account', String(r.key), SHARDS));
      expect(new Set(rows.map((r) => r.value.by))).toEqual(new Set([A, B]));
      // A process that runs no instance reads through the front door, on a connection of its own.
      const own = await publicReader({ name: NAME, servers: nats.url, stream: env.stream, subjectPrefix: env.subjectPrefix });
      try {
        expectApplied(await own.get<Row>({ aggregateType: 'Account', aggregateId: ids[0]! }, ids[0]!, { after: one.position }), 6, sum(4) + 10);
      } finally {
        await own.close();
      }
      // `troupe consumers` and `troupe projections`: one projection, its instances, a row per store with its partitions.
      const overview = (await consumerOverview(nc, env.stream)).filter((o) => o.name === NAME);
      expect(overview.map((o) => [o.kind, o.instances, o.durables])).toEqual([['projection', [A, B], SHARDS]]);
      const versions = (await projectionOverview(nc, env.stream)).filter((o) => o.name === NAME);
      expect(versions.map((v) => v.shards).sort((x, y) => x![0]! - y![0]!)).toEqual([placed.get(A), placed.get(B)].sort((x, y) => x![0]! - y![0]!));
      expect(versions.every((v) => v.lag === 0 && v.progress === 1)).toBe(true);
      // Each shard is answered by its owner alone.
      for (let s = 0; s < SHARDS; s++) expect(await responders(env.subjectPrefix, s)).toEqual([placed.get(A)!.includes(s) ? A : B]);
    } finally {
      await node.stop();
    }
  }, 60_000);

  it('hands the partitions of an instance killed with SIGKILL to the other once its leases expire; they catch up from the log, each event applied once', async () => {
    const env = await setup('PSCALEK');
    const { node, reader } = env;
    try {
      const placed = placeShards([A, B], SHARDS);
      const a = start(env, A);
      const b = start(env, B);
      await until('the shards to be split by placement', () =>
        JSON.stringify(a.shards()) === JSON.stringify(placed.get(A)) && JSON.stringify(b.shards()) === JSON.stringify(placed.get(B)), 30_000);
      const ids = range1(16).map((i) => `acct-k-${i}`);
      const first = await send(node, ids, 3);
      await reader.scan({ after: first });

      a.proc.kill('SIGKILL');
      const killedAt = Date.now();
      expect((await a.exited).signal).toBe('SIGKILL');
      // Until the leases expire, A's shards have no owner: a read fails with a retryable error.
      const ofA = ids.find((id) => placed.get(A)!.includes(shardOf('Account', id, SHARDS)))!;
      const refused = await reader.get({ aggregateType: 'Account', aggregateId: ofA }, ofA, { timeoutMs: 300 }).then(() => null, (e: unknown) => e);
      expect(isTroupeError(refused, 'SHARD_NOT_OWNED')).toBe(true);
      expect((refused as { retryable: boolean }).retryable).toBe(true);

      await until('B to own every shard', () => b.shards().length === SHARDS, LEASE_TTL_MS + 5_000);
      console.log(`projection take-over after SIGKILL: ${Date.now() - killedAt} ms (lease ttl ${LEASE_TTL_MS} ms)`);
      // Events appended meanwhile and after.
      const later = await send(node, ids, 2, false);
      for (const id of ids) {
        const row = await reader.get<Row>({ aggregateType: 'Account', aggregateId: id }, id, { after: later });
        // B built A's partitions from the start of their shards' logs; its own went on: each event once.
        expectApplied(row, 1 + 3 + 2, sum(3) + sum(2));
        expect(row!.by).toBe(B);
      }
      const rows = await reader.scan<Row>({ after: later });
      expect(rows.map((r) => r.key).sort()).toEqual([...ids].sort());
      for (const r of rows) expect(r.value.n).toBe(6);
    } finally {
      await node.stop();
    }
  }, 60_000);

  it('resumes the partitions of an instance killed with SIGKILL and restarted on its data dir from their checkpoints, applying no event twice', async () => {
    const env = await setup('PSCALER');
    const { node, reader } = env;
    try {
      const dataDir = tempDir();
      const a = start(env, A, dataDir, 10);
      await until('A to own every shard', () => a.shards().length === SHARDS, 20_000);
      const ids = range1(16).map((i) => `acct-r-${i}`);
      const last = await send(node, ids, 10);
      // Killed while it applies (10 ms an event): some tasks committed (rows, checkpoint and de-dup marks together), the rest not.
      await until('A to apply some events', () => a.applied().handled >= 60, 30_000);
      a.proc.kill('SIGKILL');
      expect((await a.exited).signal).toBe('SIGKILL');
      // The same instance name takes its leases back at once, and each partition resumes from its checkpoint.
      const again = start(env, A, dataDir);
      await until('A to own every shard again', () => again.shards().length === SHARDS, 20_000);
      const rows = await reader.scan<Row>({ after: last });
      expect(rows.map((r) => r.key).sort()).toEqual([...ids].sort());
      for (const r of rows) expectApplied(r.value, 11, sum(10));
      await sleep(300);
      const { handled, duplicates } = again.applied();
      console.log(`after SIGKILL and restart: ${handled} events applied, ${duplicates} skipped as applied before the kill`);
      // It finished what the kill interrupted; what it had applied came again only as far back as
      // the checkpoints, which trail the rows by the messages not fully applied yet, and was skipped.
      expect(handled).toBeGreaterThan(0);
      expect(handled + duplicates).toBeLessThanOrEqual(ids.length * 11);
    } finally {
      await node.stop();
    }
  }, 60_000);

  it('moves shards to an instance that joins, whose old owner stops answering for them; back on its stop, the old owner resumes its partitions from their checkpoints', async () => {
    const env = await setup('PSCALEJ');
    const { node, reader } = env;
    try {
      const placed = placeShards([A, B], SHARDS);
      const a = start(env, A);
      await until('A to own every shard', () => a.shards().length === SHARDS, 20_000);
      const ids = range1(16).map((i) => `acct-j-${i}`);
      const first = await send(node, ids, 2);
      for (const r of await reader.scan<Row>({ after: first })) expect(r.value.by).toBe(A);

      const b = start(env, B);
      await until('the shards to be split by placement', () =>
        JSON.stringify(a.shards()) === JSON.stringify(placed.get(A)) && JSON.stringify(b.shards()) === JSON.stringify(placed.get(B)), 30_000);
      const second = await send(node, ids, 2, false);
      // B's shards: answered by B alone, from partitions B built from the log.
      for (const s of placed.get(B)!) expect(await responders(env.subjectPrefix, s)).toEqual([B]);
      for (const id of ids) {
        const row = await reader.get<Row>({ aggregateType: 'Account', aggregateId: id }, id, { after: second });
        expectApplied(row, 1 + 2 + 2, sum(2) + sum(2));
        expect(row!.by).toBe(placed.get(A)!.includes(reader.shardOf('Account', id)) ? A : B);
      }

      // B stops: A takes its shards back and resumes the partitions it kept, from their checkpoints.
      b.proc.kill('SIGTERM');
      expect((await b.exited).code).toBe(0);
      await until('A to own every shard again', () => a.shards().length === SHARDS, LEASE_TTL_MS);
      const third = await send(node, ids, 1, false);
      const rows = await reader.scan<Row>({ after: third });
      expect(rows.map((r) => r.key).sort()).toEqual([...ids].sort());
      for (const r of rows) {
        expectApplied(r.value, 1 + 2 + 2 + 1, sum(2) + sum(2) + 1);
        expect(r.value.by).toBe(A);
      }
      // Resumed from the checkpoints A saved when it gave the shards back, not from the start of
      // their logs: no event came to A again (a replay from the start would skip them as duplicates).
      await sleep(300);
      expect(a.applied().duplicates).toBe(0);
      expect(a.applied().handled).toBeLessThan(ids.length * 6);
    } finally {
      await node.stop();
    }
  }, 60_000);

  it('runs in this process too: one instance owns every shard; its reader, stats and health name each partition with its checkpoint', async () => {
    const { node, stream, subjectPrefix } = await setup('PSCALEI');
    const applied: string[] = [];
    const p = await project({
      name: NAME, nc, stream, subjectPrefix, dataDir: tempDir(), scaleOut: { instance: 'solo', leaseTtlMs: LEASE_TTL_MS }, aggregateTypes: ['Account'],
      apply: (e, view) => view.update<number>(e.aggregateId, (n = 0) => n + 1),
    });
    try {
      p.onApplied((events) => { for (const e of events) applied.push(e.eventId); });
      await until('the instance to own every shard', () => p.shards.length === SHARDS, 10_000);
      expect(p.instances).toEqual(['solo']);
      const ids = range1(8).map((i) => `acct-i-${i}`);
      const position = await send(node, ids, 1);
      await p.waitFor(position);
      const reader = p.reader();
      for (const id of ids) {
        expect(await reader.get({ aggregateType: 'Account', aggregateId: id }, id)).toBe(2);
        expect(p.get(reader.shardOf('Account', id), id)).toBe(2);
      }
      expect(applied).toHaveLength(ids.length * 2);
      const t0 = performance.now();
      for (let i = 0; i < 200; i++) await reader.get({ aggregateType: 'Account', aggregateId: ids[i % ids.length]! }, ids[i % ids.length]!, { after: position });
      const t1 = performance.now();
      for (let i = 0; i < 20; i++) await reader.scan();
      console.log(`reader over NATS, one instance, ${SHARDS} shards: get with after ${((t1 - t0) / 200).toFixed(2)} ms, scan of ${ids.length} rows ${((performance.now() - t1) / 20).toFixed(2)} ms (sequential, mean)`);
      const stats = p.stats();
      expect(stats.shards).toEqual(range1(SHARDS).map((i) => i - 1));
      expect(stats.handled).toBe(ids.length * 2);
      expect(stats.partitions.reduce((n, x) => n + x.handled, 0)).toBe(ids.length * 2);
      // A partition's checkpoint: its shard's log up to there is applied.
      for (const id of ids) expect(stats.partitions[reader.shardOf('Account', id)]!.checkpoint).toBeGreaterThan(0);
      const health = p.status();
      expect(health.ok).toBe(true);
      expect(Object.keys(health.checkpoints as object)).toHaveLength(SHARDS);
    } finally {
      await p.stop();
      await node.stop();
    }
    expect(p.status().ok).toBe(false);
  }, 30_000);

  it('answers a read whose partition cannot reach `after` in time with a TimeoutError, and the same read once it has', async () => {
    const { node, stream, subjectPrefix } = await setup('PSCALEW');
    const p = await project({
      name: NAME, nc, stream, subjectPrefix, dataDir: tempDir(), scaleOut: { instance: 'slow', leaseTtlMs: LEASE_TTL_MS }, aggregateTypes: ['Account'], batchSize: 1,
      apply: async (e, view) => {
        await sleep(100);
        view.update<number>(e.aggregateId, (n = 0) => n + 1);
      },
    });
    try {
      await until('the instance to own every shard', () => p.shards.length === SHARDS, 10_000);
      const position = await send(node, ['acct-w-1'], 9);
      const reader = p.reader();
      const ref = { aggregateType: 'Account', aggregateId: 'acct-w-1' };
      const late = await reader.get(ref, 'acct-w-1', { after: position, timeoutMs: 300 }).then(() => null, (e: unknown) => e);
      expect(isTroupeError(late, 'TIMEOUT')).toBe(true);
      expect((late as { retryable: boolean }).retryable).toBe(true);
      expect(await reader.get(ref, 'acct-w-1', { after: position, timeoutMs: 10_000 })).toBe(10);
    } finally {
      await p.stop();
      await node.stop();
    }
  }, 30_000);

  it('refuses takeOver with scaleOut, and a malformed scaleOut', async () => {
    const { stream, subjectPrefix } = freshStream('PSCALET');
    const base = { name: NAME, nc, stream, subjectPrefix, dataDir: tempDir(), apply: () => {} };
    const e = await project({ ...base, scaleOut: true, takeOver: true }).then(() => null, (err: unknown) => err);
    expect(isTroupeError(e, 'INVALID_OPTION')).toBe(true);
    expect((e as Error).message).toMatch(/takeOver/);
    const bad = await project({ ...base, scaleOut: { leaseTtlMs: 10 } }).then(() => null, (err: unknown) => err);
    expect(isTroupeError(bad, 'INVALID_OPTION')).toBe(true);
    expect((bad as { data: { field: string } }).data.field).toBe('scaleOut.leaseTtlMs');
  });
});
