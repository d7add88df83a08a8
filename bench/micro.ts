/**
 * tinybench microbenchmarks of Troupe's hot paths, each racing the alternatives:
 *
 * - codec: one message of N commits — runtime/journal/codec.ts encodeBatch, against msgpackr's pack()
 *   of the whole array, each commit packed alone and the parts concatenated, and JSON; and the
 *   way back (decodeCommits, decodeCommitBatch to full envelopes, JSON.parse).
 * - decide + evolve: Account (Deposit; a Withdraw rejected by throwing) and Investigation
 *   (AddInvestigationNote, a spread evolve), raw and with the event schema check the shard adds.
 * - shard routing: shardOf (FNV-1a) against crypto hashes and a 31-multiplier string hash.
 * - LMDB snapshot writes: async put (lmdb batches a turn's puts into one transaction) against an
 *   awaited put, putSync outside a transaction, and putSync inside one transactionSync.
 * - commit batching: one message per commit against one per flush, modelled as encode cost +
 *   the headers a publish carries + a counted publish (and a real core NATS publish, no ack,
 *   when a server is given).
 *
 * Rates are per item (commit, command, id, put), the median of tinybench's per-sample throughput
 * times the items one iteration handles.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bench, type Task } from 'tinybench';
import { Packr } from 'msgpackr';
import { open } from 'lmdb';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { decodeCommitBatch, decodeCommits, encodeBatch, encodeCommit, FORMAT, type WireCommit } from '../runtime/journal/codec.ts';
import { IdGenerator, shardOf } from '../runtime/envelope.ts';
import { Registry } from '../runtime/contracts/registry.ts';
import type { CommandContext, EventContext, EventDraft } from '../runtime/define.ts';
import { account } from '../actors/account.ts';
import { investigation } from '../actors/investigation.ts';
import type { MicroRow } from './report.ts';
import { accountId } from './workload.ts';

export interface MicroOptions {
  readonly quick: boolean;
  /** A nats-server for the core-publish variant of commit batching (optional). */
  readonly natsUrl?: string;
  readonly onGroup?: (group: string) => void;
}

interface Case {
  readonly name: string;
  /** Items one call handles (commits, commands, ids, puts). */
  readonly items: number;
  readonly fn: () => unknown;
  readonly notes?: string;
}

async function race(group: string, unit: string, cases: readonly Case[], opts: MicroOptions): Promise<MicroRow[]> {
  opts.onGroup?.(group);
  const bench = new Bench({
    name: group,
    time: opts.quick ? 40 : 600,
    warmupTime: opts.quick ? 10 : 150,
    iterations: opts.quick ? 5 : 20,
  });
  for (const c of cases) bench.add(c.name, c.fn);
  const tasks = await bench.run();
  const rows = tasks.map((t: Task, i) => {
    const c = cases[i]!;
    const r = t.result;
    if (r.state !== 'completed') {
      const why = r.state === 'errored' ? r.error.message : r.state;
      return { group, name: c.name, unit, opsPerSec: Number.NaN, notes: `failed: ${why}` };
    }
    return {
      group,
      name: c.name,
      unit,
      opsPerSec: r.throughput.p50 * c.items,
      samples: r.throughput.samplesCount,
      rmePct: r.throughput.rme,
      ...(c.notes === undefined ? {} : { notes: c.notes }),
    };
  });
  const best = Math.max(...rows.map((r) => (Number.isFinite(r.opsPerSec) ? r.opsPerSec : 0)));
  return rows.map((r) => ({ ...r, relative: best > 0 && Number.isFinite(r.opsPerSec) ? r.opsPerSec / best : null }));
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const ids = new IdGenerator();

/** N one-event commits like the ledger's (Deposited), with counter event ids as the shard writes them. */
function ledgerCommits(n: number): WireCommit[] {
  const now = Date.now();
  return Array.from({ length: n }, (_, i): WireCommit => [
    ids.next(), 'Account', accountId(i % 10_000), null, null, now, 'troupe', 2 + (i % 50),
    [[ids.nextCounter(), 'Deposited', 1, { amount: 1 + (i % 100) }]],
  ]);
}

const genericPackr = new Packr({ useRecords: false, variableMapSize: true });

/** A msgpack array header for `n` items. */
function arrayHeader(n: number): Buffer {
  if (n < 16) return Buffer.from([0x90 | n]);
  if (n < 0x10000) return Buffer.from([0xdc, n >> 8, n & 0xff]);
  const b = Buffer.alloc(5);
  b[0] = 0xdd;
  b.writeUInt32BE(n, 1);
  return b;
}

/** The same layout as encodeBatch, with each commit packed alone and the parts concatenated. */
function packEachAndConcat(prefix: string, commits: readonly WireCommit[]): Buffer {
  const parts: Buffer[] = new Array(commits.length + 3);
  parts[0] = arrayHeader(commits.length + 2);
  parts[1] = genericPackr.pack(FORMAT);
  parts[2] = genericPackr.pack(prefix);
  for (let i = 0; i < commits.length; i++) parts[i + 3] = encodeCommit(commits[i]!);
  return Buffer.concat(parts);
}

function ctxFor(id: string): CommandContext {
  return { aggregateType: 'Account', aggregateId: id, commandId: 'c', commandType: 'Deposit', userId: undefined, correlationId: 'c', version: 1, now: Date.now(), schedule: () => {}, cancel: () => {}, timer: null };
}

// ---------------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------------

async function codecGroup(opts: MicroOptions): Promise<MicroRow[]> {
  const n = 100;
  const commits = ledgerCommits(n);
  const prefix = ids.prefix;
  // The alternatives must write what the runtime reads back.
  const check = (bytes: Uint8Array, what: string): void => {
    const back = decodeCommits(bytes);
    if (back.length !== n || back[n - 1]![2] !== commits[n - 1]![2]) throw new Error(`${what} does not round-trip`);
  };
  check(encodeBatch(prefix, commits), 'encodeBatch');
  check(genericPackr.pack([FORMAT, prefix, ...commits]), 'pack()');
  check(packEachAndConcat(prefix, commits), 'pack each + concat');
  const encoded = encodeBatch(prefix, commits);
  const json = Buffer.from(JSON.stringify([FORMAT, prefix, ...commits]));
  const size = (b: Uint8Array): string => `${Math.round(b.length / n)} B/commit`;
  const enc = await race('codec: encode a message of 100 commits', 'commits/s', [
    { name: 'encodeBatch (runtime/journal/codec.ts)', items: n, fn: () => encodeBatch(prefix, commits), notes: size(encoded) },
    { name: 'msgpackr pack() of the whole array', items: n, fn: () => genericPackr.pack([FORMAT, prefix, ...commits]), notes: size(genericPackr.pack([FORMAT, prefix, ...commits])) },
    { name: 'pack each commit + Buffer.concat', items: n, fn: () => packEachAndConcat(prefix, commits), notes: size(packEachAndConcat(prefix, commits)) },
    { name: 'JSON.stringify + Buffer.from', items: n, fn: () => Buffer.from(JSON.stringify([FORMAT, prefix, ...commits])), notes: size(json) },
  ], opts);
  const dec = await race('codec: decode a message of 100 commits', 'commits/s', [
    { name: 'decodeCommits (wire commits)', items: n, fn: () => decodeCommits(encoded) },
    { name: 'decodeCommitBatch (full envelopes)', items: n, fn: () => decodeCommitBatch(encoded, 1) },
    { name: 'JSON.parse', items: n, fn: () => JSON.parse(json.toString()) as unknown },
  ], opts);
  return [...enc, ...dec];
}

async function decideGroup(opts: MicroOptions): Promise<MicroRow[]> {
  const registry = new Registry();
  registry.add(account as never);
  registry.add(investigation as never);
  const acc = registry.get('Account')!;
  const inv = registry.get('Investigation')!;
  const deposit = account.commands.get('Deposit')!;
  const withdraw = account.commands.get('Withdraw')!;
  const deposited = account.events.get('Deposited')!;
  const validateDeposited = acc.eventValidators.get('Deposited');
  const addNote = investigation.commands.get('AddInvestigationNote')!;
  const noteAdded = investigation.events.get('InvestigationNoteAdded')!;
  const validateNote = inv.eventValidators.get('InvestigationNoteAdded');
  const ctx = ctxFor('acct-00001');
  const ectx: EventContext = { sequence: 2, eventType: 'Deposited', timestamp: new Date().toISOString() };
  const k = 1000;
  const payloads = Array.from({ length: k }, (_, i) => ({ amount: 1 + (i % 100) }));
  const noteCmds = Array.from({ length: k }, (_, i) => ({ note: `note ${i}` }));
  const accOpen = account.events.get('AccountOpened')!.evolve(account.initialState(), {}, ectx);
  let accState = accOpen;
  const invOpen = investigation.events.get('InvestigationCreated')!.evolve(investigation.initialState(), { title: 't', severity: 'low', sourceThreatId: null, createdBy: null }, ectx);
  let invState = invOpen;
  let sink = 0;

  return race('decide + evolve (1,000 commands per iteration)', 'commands/s', [
    {
      name: 'Account Deposit: decide + evolve',
      items: k,
      fn: () => {
        let s = accOpen;
        for (let i = 0; i < k; i++) {
          const d = deposit.decide(s, payloads[i], ctx) as EventDraft;
          s = deposited.evolve(s, d.payload, ectx);
        }
        accState = s;
      },
    },
    {
      name: 'Account Deposit: decide + event schema check + evolve',
      items: k,
      fn: () => {
        let s = accOpen;
        for (let i = 0; i < k; i++) {
          const d = deposit.decide(s, payloads[i], ctx) as EventDraft;
          if (validateDeposited !== undefined && !validateDeposited(d.payload)) throw new Error('invalid');
          s = deposited.evolve(s, d.payload, ectx);
        }
        accState = s;
      },
    },
    {
      name: 'Account Deposit: command schema check at the door (registry.check)',
      items: k,
      fn: () => {
        for (let i = 0; i < k; i++) registry.check('Account', 'Deposit', payloads[i], ctx);
      },
    },
    {
      name: 'Account Withdraw rejected (reject() throws, no stack)',
      items: k,
      fn: () => {
        for (let i = 0; i < k; i++) {
          try {
            withdraw.decide(accOpen, payloads[i], ctx);
          } catch {
            sink++;
          }
        }
      },
    },
    {
      name: 'Investigation AddInvestigationNote: decide + evolve (spread)',
      items: k,
      fn: () => {
        let s = invOpen;
        for (let i = 0; i < k; i++) {
          const d = addNote.decide(s, noteCmds[i], ctx) as EventDraft;
          if (validateNote !== undefined && !validateNote(d.payload)) throw new Error('invalid');
          s = noteAdded.evolve(s, d.payload, ectx);
        }
        invState = s;
        sink += invState.noteCount;
      },
    },
  ], opts).finally(() => {
    if (sink < 0 || accState === undefined) throw new Error('unreachable');
  });
}

function fnv(type: string, id: string, shards: number): number {
  return shardOf(type, id, shards);
}

function cryptoShard(alg: string): (type: string, id: string, shards: number) => number {
  return (type, id, shards) => createHash(alg).update(type).update('\x1f').update(id).digest().readUInt32BE(0) % shards;
}

function javaHash(type: string, id: string, shards: number): number {
  let h = 0;
  const s = `${type}\x1f${id}`;
  for (let i = 0; i < s.length; i++) h = (Math.imul(h, 31) + s.charCodeAt(i)) | 0;
  return (h >>> 0) % shards;
}

async function routingGroup(opts: MicroOptions): Promise<MicroRow[]> {
  const k = 1000;
  const idList = Array.from({ length: 10_000 }, (_, i) => accountId(i));
  const shards = 64;
  const spread = (f: (t: string, id: string, s: number) => number): string => {
    const counts = new Array<number>(shards).fill(0);
    for (const id of idList) counts[f('Account', id, shards)]!++;
    const mean = idList.length / shards;
    return `10k ids over 64 shards: max ${(Math.max(...counts) / mean).toFixed(2)}× mean, min ${(Math.min(...counts) / mean).toFixed(2)}×`;
  };
  let off = 0;
  let sink = 0;
  const routeWith = (f: (t: string, id: string, s: number) => number) => () => {
    off = (off + k) % idList.length;
    for (let i = 0; i < k; i++) sink += f('Account', idList[off + i]!, shards);
  };
  const rows = await race('shard routing: hash(type, id) mod 64', 'ids/s', [
    { name: 'shardOf: FNV-1a (runtime/envelope.ts)', items: k, fn: routeWith(fnv), notes: spread(fnv) },
    { name: '31-multiplier string hash', items: k, fn: routeWith(javaHash), notes: spread(javaHash) },
    { name: 'crypto md5', items: k, fn: routeWith(cryptoShard('md5')), notes: spread(cryptoShard('md5')) },
    { name: 'crypto sha1', items: k, fn: routeWith(cryptoShard('sha1')), notes: spread(cryptoShard('sha1')) },
    { name: 'crypto sha256', items: k, fn: routeWith(cryptoShard('sha256')), notes: spread(cryptoShard('sha256')) },
  ], opts);
  if (sink < 0) throw new Error('unreachable');
  return rows;
}

async function lmdbGroup(opts: MicroOptions): Promise<MicroRow[]> {
  const dir = mkdtempSync(join(tmpdir(), 'troupe-bench-lmdb-'));
  const root = open({ path: dir, maxDbs: 4, mapSize: 2 ** 30 });
  const db = root.openDB<{ sv: number; version: number; position: number; state: unknown }, [string, string]>({
    name: 'snapshots', sharedStructuresKey: Symbol.for('troupe.bench.structures'),
  });
  const plain = root.openDB<{ sv: number; version: number; position: number; state: unknown }, [string, string]>({ name: 'plain' });
  const idList = Array.from({ length: 10_000 }, (_, i) => accountId(i));
  let n = 0;
  const snap = (i: number) => ({ sv: 1, version: i, position: i, state: { opened: true, balance: i } });
  const k = 1000;
  try {
    return await race('LMDB snapshot writes', 'puts/s', [
      {
        name: 'async put × 1,000, await the last (lmdb batches a turn)',
        items: k,
        fn: async () => {
          let last: Promise<boolean> | undefined;
          for (let i = 0; i < k; i++, n++) last = db.put(['Account', idList[n % idList.length]!], snap(n));
          await last;
        },
      },
      {
        name: 'async put × 1,000 without shared structures',
        items: k,
        fn: async () => {
          let last: Promise<boolean> | undefined;
          for (let i = 0; i < k; i++, n++) last = plain.put(['Account', idList[n % idList.length]!], snap(n));
          await last;
        },
      },
      {
        name: 'await put, one at a time',
        items: 1,
        fn: async () => {
          n++;
          await db.put(['Account', idList[n % idList.length]!], snap(n));
        },
      },
      {
        name: 'putSync outside a transaction',
        items: 1,
        fn: () => {
          n++;
          db.putSync(['Account', idList[n % idList.length]!], snap(n));
        },
      },
      {
        name: 'putSync × 1,000 in one transactionSync',
        items: k,
        fn: () => {
          root.transactionSync(() => {
            for (let i = 0; i < k; i++, n++) db.putSync(['Account', idList[n % idList.length]!], snap(n));
          });
        },
      },
    ], opts);
  } finally {
    await root.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function batchingGroup(opts: MicroOptions): Promise<MicroRow[]> {
  const n = 100;
  const commits = ledgerCommits(n);
  const prefix = ids.prefix;
  let published = 0;
  let bytes = 0;
  let expected = 1;
  const counted = (subject: string, data: Uint8Array, h: ReturnType<typeof headers>): void => {
    published++;
    bytes += data.length + subject.length + (h.has('Nats-Msg-Id') ? 1 : 0);
  };
  const hdrs = () => {
    const h = headers();
    h.set('Nats-Expected-Last-Subject-Sequence', String(expected++));
    h.set('Nats-Msg-Id', `writer.0.${expected}`);
    h.set('Troupe-Format', 'commit-batch/1');
    return h;
  };
  const cases: Case[] = [
    {
      name: 'one message per commit (encode + headers + counted publish)',
      items: n,
      fn: () => {
        for (const c of commits) counted('bench.log.0', encodeCommit(c), hdrs());
      },
    },
    {
      name: 'one message per flush of 100 (encodeBatch + headers + counted publish)',
      items: n,
      fn: () => counted('bench.log.0', encodeBatch(prefix, commits), hdrs()),
    },
  ];
  let nc: NatsConnection | null = null;
  if (opts.natsUrl !== undefined) {
    nc = await connect({ servers: opts.natsUrl, name: 'bench-micro' });
    const conn = nc;
    // A subject nobody subscribes to: the client's whole per-message cost, and no ack.
    // 1,000 commits per iteration and one flush (a PING round trip) each, so the round trip
    // is spread over as many commits in both cases.
    cases.push(
      {
        name: 'one message per commit, real core publish (no ack)',
        items: 10 * n,
        fn: async () => {
          for (let r = 0; r < 10; r++) for (const c of commits) conn.publish('bench.micro.nobody', encodeCommit(c), { headers: hdrs() });
          await conn.flush();
        },
      },
      {
        name: 'one message per flush of 100, real core publish (no ack)',
        items: 10 * n,
        fn: async () => {
          for (let r = 0; r < 10; r++) conn.publish('bench.micro.nobody', encodeBatch(prefix, commits), { headers: hdrs() });
          await conn.flush();
        },
      },
    );
  }
  try {
    const rows = await race('commit batching: 100 commits to the log', 'commits/s', cases, opts);
    if (published < 0 || bytes < 0) throw new Error('unreachable');
    return rows;
  } finally {
    await nc?.close();
  }
}

/** Every group, in order. */
export async function runMicro(opts: MicroOptions): Promise<MicroRow[]> {
  const out: MicroRow[] = [];
  out.push(...(await codecGroup(opts)));
  out.push(...(await decideGroup(opts)));
  out.push(...(await routingGroup(opts)));
  out.push(...(await lmdbGroup(opts)));
  out.push(...(await batchingGroup(opts)));
  return out;
}
