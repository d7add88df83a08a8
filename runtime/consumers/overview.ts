/**
 * What runs against a log stream, read from NATS alone (for `troupe consumers`, `troupe
 * projections` and the dashboard): every durable JetStream consumer on the stream, grouped by
 * the consumer it belongs to, with the instances that hold its leases and its dead letters.
 *
 * Durable names tell what a JetStream consumer is (consume.ts, projection.ts):
 *   <name>                         a consumer (one instance, its lease `x`)
 *   <name>_s<shard>                one shard of a scaled-out consumer (a lease group)
 *   proj_<name>_v<version>_<tag>   a projection version, built in the LMDB whose path hashes to <tag>
 *   proj_<name>_v<version>_<tag>_p<shard>_s<shard>   one partition of a scaled-out projection version (partitions.ts)
 *
 * Lag is num_pending + num_ack_pending: log messages not yet acknowledged. The rate is log
 * messages acknowledged per second, measured between two reads `sampleMs` apart (a log
 * message carries many commits, so it is not an event rate).
 *
 * This is one of the few files that import `@nats-io/*`.
 */
import { createHash } from 'node:crypto';
import { resolve, join } from 'node:path';
import { jetstreamManager, type ConsumerInfo as JsConsumerInfo } from '@nats-io/jetstream';
import type { NatsConnection } from '../journal/journal.ts';
import { consumerStatus } from './scaled.ts';

export { consumerStatus };
import { subjectToken, type DeadLetterQueue } from './dlq.ts';
import { JournalUnavailableError, fromWire, toWire, type WireError } from '../errors.ts';

/**
 * A projection is rebuilt where its apply function runs, so a running projection answers
 * rebuild requests (`troupe rebuild`, the dashboard) on
 *
 *   <prefix>.ops.projection.rebuild.<name>.<version>
 *
 * (its instances form a queue group). The answer comes at once, `{ version, from }` with the
 * log's last position then, and the rebuild runs after it: progress is read from the
 * projection's JetStream consumer (`projectionOverview`).
 */
export function rebuildSubject(prefix: string, name: string, version: number): string {
  return `${prefix}.ops.projection.rebuild.${subjectToken(name)}.${version}`;
}

const text = new TextEncoder();
const untext = new TextDecoder();

/** Answer rebuild requests of projection `name` v`version` with `rebuild` (started after the answer); returns the unsubscribe. */
export function serveRebuilds(nc: NatsConnection, prefix: string, name: string, version: number, lastSeq: () => Promise<number>, rebuild: () => Promise<void>): () => void {
  const sub = nc.subscribe(rebuildSubject(prefix, name, version), {
    queue: `troupe-rebuild-${subjectToken(name)}-${version}`,
    callback: (err, msg) => {
      if (err !== null) return;
      void (async () => {
        let answer: unknown;
        let go = false;
        try {
          answer = { version, from: await lastSeq() };
          go = true;
        } catch (e) {
          answer = { error: toWire(e) };
        }
        msg.respond(text.encode(JSON.stringify(answer)));
        // The answer leaves before the rebuild stops the consumer (and perhaps its connection).
        await nc.flush().catch(() => {});
        if (go) await rebuild().catch(() => {});
      })();
    },
  });
  return () => sub.unsubscribe();
}

/**
 * Every running consumer answers `<prefix>.ops.consumer.status` (no queue group: all of them,
 * scatter-gather) with what only the process knows: its counters and the aggregates failing now.
 */
export function statusSubject(prefix: string): string {
  return `${prefix}.ops.consumer.status`;
}

export interface ConsumerInstanceStatus {
  consumer: string;
  /** A projection's version. */
  version?: number;
  /** host:pid of the process. */
  instance: string;
  /** Its JetStream consumer (a scaled-out consumer answers once per shard it holds). */
  durable: string;
  handled: number;
  failed: number;
  retried: number;
  deadLettered: number;
  failing: { aggregateType: string; aggregateId: string; eventId: string; attempts: number; reason: string; nextAttemptAt: string }[];
}

/** Answer status requests with `status()`; returns the unsubscribe. */
export function serveConsumerStatus(nc: NatsConnection, prefix: string, status: () => ConsumerInstanceStatus): () => void {
  const sub = nc.subscribe(statusSubject(prefix), {
    callback: (err, msg) => {
      if (err !== null || msg.reply === undefined || msg.reply === '') return;
      try {
        msg.respond(text.encode(JSON.stringify(status())));
      } catch {
        // the connection is closing
      }
    },
  });
  return () => sub.unsubscribe();
}

/** What every running consumer answers within `windowMs`; empty when none runs. */
export async function gatherConsumerStatus(nc: NatsConnection, prefix: string, windowMs = 750): Promise<ConsumerInstanceStatus[]> {
  const out: ConsumerInstanceStatus[] = [];
  try {
    const replies = await nc.requestMany(statusSubject(prefix), new Uint8Array(0), { strategy: 'timer', maxWait: windowMs });
    for await (const m of replies) {
      try {
        out.push(JSON.parse(untext.decode(m.data)) as ConsumerInstanceStatus);
      } catch {
        // not an answer of ours
      }
    }
  } catch (e) {
    if (!/no responders|503/i.test(String((e as Error)?.message ?? e))) throw e;
  }
  return out;
}

/** Ask the running projection `name` v`version` to rebuild; resolves with the log position it rebuilds up to first. */
export async function requestRebuild(nc: NatsConnection, prefix: string, name: string, version: number, timeoutMs = 10_000): Promise<{ version: number; from: number }> {
  let reply: Uint8Array;
  try {
    reply = (await nc.request(rebuildSubject(prefix, name, version), new Uint8Array(0), { timeout: timeoutMs })).data;
  } catch (e) {
    const none = /no responders|503/i.test(String((e as Error)?.message ?? e));
    throw new JournalUnavailableError(none
      ? `no running process builds projection ${name} v${version}: a projection is rebuilt where its apply function runs; start it, then retry`
      : `projection ${name} v${version} did not answer the rebuild request within ${timeoutMs} ms`, { projection: name, version }, e);
  }
  const answer = JSON.parse(untext.decode(reply)) as { version?: number; from?: number; error?: WireError };
  if (answer.error !== undefined) throw fromWire(answer.error);
  return { version: answer.version!, from: answer.from! };
}

export interface ConsumerOverview {
  name: string;
  kind: 'consumer' | 'scaled' | 'projection';
  /** JetStream consumers (durables) of this consumer. */
  durables: number;
  /** Live instances (lease holders), when known from the leases. */
  instances: string[] | null;
  /** Log messages not yet acknowledged (pending + ack pending). */
  lag: number;
  numPending: number;
  numAckPending: number;
  /** Log messages acknowledged per second over the sample (null: one read only). */
  messagesPerSecond: number | null;
  /** Highest stream position every message up to which is acknowledged (lowest over shards). */
  ackFloor: number;
  dlqDepth: number | null;
}

export interface ProjectionVersionOverview {
  name: string;
  version: number;
  /** The LMDB the version is built in: the first 10 hex of the sha256 of its path. */
  store: string;
  /** Whether readers use this version: known only with the store's data dir (null: unknown). */
  active: boolean | null;
  /** Stream position up to which every log message is applied. */
  position: number;
  /** The stream's last position when read. */
  lastSeq: number;
  lag: number;
  /** position / lastSeq, 0..1 (1 when nothing is left to apply). */
  progress: number;
  /** When its JetStream consumer was created (ISO): a rebuild or restart creates it again. */
  created: string;
  /** A scaled-out projection: the shards whose partitions are built in this store (position is the highest over them). */
  shards?: number[];
}

const PROJECTION = /^proj_([A-Za-z0-9_-]{1,64})_v(\d+)_([0-9a-f]{10})$/;
const PARTITION = /^proj_([A-Za-z0-9_-]{1,64})_v(\d+)_([0-9a-f]{10})_p(\d+)_s\d+$/;
const SHARD = /^(.+)_s(\d+)$/;

async function durables(nc: NatsConnection, stream: string): Promise<{ infos: JsConsumerInfo[]; lastSeq: number }> {
  const jsm = await jetstreamManager(nc, { timeout: 10_000 });
  const infos: JsConsumerInfo[] = [];
  for await (const c of jsm.consumers.list(stream)) if (c.config.durable_name !== undefined) infos.push(c);
  const lastSeq = (await jsm.streams.info(stream)).state.last_seq;
  return { infos, lastSeq };
}

function groupOf(durable: string, scaledNames: ReadonlySet<string>): { name: string; kind: ConsumerOverview['kind'] } {
  const p = PROJECTION.exec(durable) ?? PARTITION.exec(durable);
  if (p !== null) return { name: p[1]!, kind: 'projection' };
  const s = SHARD.exec(durable);
  if (s !== null && scaledNames.has(s[1]!)) return { name: s[1]!, kind: 'scaled' };
  return { name: durable, kind: 'consumer' };
}

/**
 * Every consumer of `stream` with its lag and rate. With `sampleMs` > 0 the durables are read
 * twice, that far apart, for the rate. `dlq` (optional) adds each one's dead letters.
 */
export async function consumerOverview(nc: NatsConnection, stream: string, options: { sampleMs?: number; dlq?: DeadLetterQueue | null } = {}): Promise<ConsumerOverview[]> {
  const [first, leases, dlqStats] = await Promise.all([
    durables(nc, stream),
    consumerStatus(nc, stream).catch(() => []),
    options.dlq?.stats().catch(() => null) ?? Promise.resolve(null),
  ]);
  const scaledNames = new Set(leases.filter((l) => l.shards.length > 0 || l.members.length > 0).map((l) => l.name));
  let second: JsConsumerInfo[] | null = null;
  const sampleMs = options.sampleMs ?? 0;
  const started = Date.now();
  if (sampleMs > 0) {
    await new Promise((r) => setTimeout(r, sampleMs));
    second = (await durables(nc, stream)).infos;
  }
  const elapsed = (Date.now() - started) / 1000;
  const before = new Map(first.infos.map((c) => [c.name, c]));
  const out = new Map<string, ConsumerOverview>();
  for (const c of second ?? first.infos) {
    const { name, kind } = groupOf(c.name, scaledNames);
    const key = `${kind}:${name}`;
    let o = out.get(key);
    if (o === undefined) {
      const lease = leases.find((l) => (kind === 'projection' ? l.projection?.name === name : l.name === name));
      const instances = lease === undefined ? null
        : lease.members.length > 0 ? lease.members.map((m) => m.member)
          : lease.exclusive !== null ? [lease.exclusive.member] : [];
      o = {
        name, kind, durables: 0, instances, lag: 0, numPending: 0, numAckPending: 0, messagesPerSecond: second === null ? null : 0,
        ackFloor: Number.MAX_SAFE_INTEGER, dlqDepth: dlqStats === null ? null : dlqStats.byConsumer[subjectToken(name)] ?? 0,
      };
      out.set(key, o);
    }
    o.durables++;
    o.numPending += c.num_pending;
    o.numAckPending += c.num_ack_pending;
    o.lag = o.numPending + o.numAckPending;
    o.ackFloor = Math.min(o.ackFloor, c.ack_floor.stream_seq);
    const b = before.get(c.name);
    if (second !== null && b !== undefined && elapsed > 0) {
      o.messagesPerSecond! += Math.max(0, c.ack_floor.consumer_seq - b.ack_floor.consumer_seq) / elapsed;
    }
  }
  for (const o of out.values()) {
    if (o.ackFloor === Number.MAX_SAFE_INTEGER) o.ackFloor = 0;
    if (o.messagesPerSecond !== null) o.messagesPerSecond = Math.round(o.messagesPerSecond * 10) / 10;
  }
  return [...out.values()].sort((a, b) => a.name.localeCompare(b.name) || a.kind.localeCompare(b.kind));
}

/** The tag a projection's durable carries for the LMDB under `dataDir` (projection.ts names it so). */
export function projectionStoreTag(dataDir: string): string {
  return createHash('sha256').update(resolve(join(dataDir, 'consumers'))).digest('hex').slice(0, 10);
}

/**
 * Every projection version on `stream`: its build progress from its JetStream consumer.
 * `activeOf(name, store)` says which version readers use, when the caller can read that
 * store's registry (it lives in the LMDB of the process that builds the view).
 */
export async function projectionOverview(nc: NatsConnection, stream: string, activeOf?: (name: string, store: string) => number | undefined): Promise<ProjectionVersionOverview[]> {
  const { infos, lastSeq } = await durables(nc, stream);
  const out: ProjectionVersionOverview[] = [];
  const partitioned = new Map<string, ProjectionVersionOverview>();
  for (const c of infos) {
    const m = PROJECTION.exec(c.name);
    const part = m === null ? PARTITION.exec(c.name) : null;
    if (m === null && part === null) continue;
    const [, name, v, store] = (m ?? part) as unknown as [string, string, string, string];
    const position = c.ack_floor.stream_seq;
    const active = activeOf?.(name, store);
    const lag = c.num_pending + c.num_ack_pending;
    if (part !== null) {
      // One row per store for a scaled-out version: its partitions together.
      const key = `${name}/${v}/${store}`;
      const row = partitioned.get(key);
      if (row === undefined) {
        const r: ProjectionVersionOverview = { name, version: Number(v), store, active: null, position, lastSeq, created: String(c.created), lag, progress: 0, shards: [Number(part[4])] };
        partitioned.set(key, r);
        out.push(r);
      } else {
        row.position = Math.max(row.position, position);
        row.lag += lag;
        row.shards!.push(Number(part[4]));
        if (String(c.created) < row.created) row.created = String(c.created);
      }
      continue;
    }
    out.push({
      name, version: Number(v), store, active: activeOf === undefined || active === undefined ? null : active === Number(v),
      position, lastSeq, created: String(c.created), lag, progress: lastSeq === 0 || lag === 0 ? 1 : Math.min(1, position / lastSeq),
    });
  }
  for (const r of partitioned.values()) {
    r.shards!.sort((a, b) => a - b);
    r.progress = lastSeq === 0 || r.lag === 0 ? 1 : Math.min(1, r.position / lastSeq);
  }
  return out.sort((a, b) => a.name.localeCompare(b.name) || a.store.localeCompare(b.store) || a.version - b.version);
}
