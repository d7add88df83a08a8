/**
 * Reading a scaled-out projection (partitions.ts) from anywhere: each shard's partition is
 * served by the one instance that owns the shard, on
 *
 *   <prefix>.view.<name>.v<version>.<shard>
 *
 * and only that instance subscribes, so NATS routes a read to the owner. While a shard moves
 * nobody subscribes for a moment: the request gets "no responders", and the reader asks again
 * until its timeout, then fails with a retryable ConcurrencyError (SHARD_NOT_OWNED). A partition
 * that cannot reach `after` in time answers with a TimeoutError (retryable too).
 *
 *   const reader = await projectionReader({ name: 'balances', nc });
 *   await reader.get({ aggregateType: 'Account', aggregateId: 'a-1' }, 'a-1', { after: result.position });
 *   await reader.scan({ limit: 100 })   // every partition answers: [{ shard, key, value }]
 *
 * Requests and answers are JSON: keys and values of a scaled projection's view must be JSON.
 */
import { connectNats, type NatsConnection } from '../journal/journal.ts';
import { resolveNatsAuth, type NatsAuthOptions } from '../connection.ts';
import { ConcurrencyError, InvalidOptionError, fromWire, type WireError } from '../errors.ts';
import { shardOf } from '../envelope.ts';
import { DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX } from '../options.ts';
import { subjectToken } from './dlq.ts';
import { streamShardCount } from './consume.ts';
import type { Key } from './consumer-store.ts';

export function viewSubject(prefix: string, name: string, version: number, shard: number): string {
  return `${prefix}.view.${subjectToken(name)}.v${version}.${shard}`;
}

/** A read of one partition. `waitMs`: how long the partition may wait for `after`. */
export type ViewQuery =
  | { op: 'get'; key: Key; after?: number }
  | { op: 'scan'; start?: Key; end?: Key; limit?: number; after?: number };
export type ViewRequest = ViewQuery & { waitMs: number };

export type ViewAnswer =
  | { shard: number; position: number; instance: string; value?: unknown; rows?: { key: Key; value: unknown }[] }
  | { error: WireError };

export interface ViewRow<V = unknown> {
  shard: number;
  key: Key;
  value: V;
}

export interface ProjectionReaderOptions {
  /** The projection's name and version (default 1). */
  name: string;
  version?: number;
  /** An open connection (the reader leaves it open), or `servers` (and `nats`) to open its own. */
  nc?: NatsConnection;
  /** NATS servers, comma separated. Default `NATS_URL`, else nats://127.0.0.1:4222. */
  servers?: string;
  /** How to authenticate to NATS (default: the NATS_* environment). */
  nats?: NatsAuthOptions;
  stream?: string;
  subjectPrefix?: string;
  /** How long a read may take, waits for `after` and for a shard's owner included. Default 5,000 ms. */
  timeoutMs?: number;
}

export interface ViewReadOptions {
  /** Answer only once the partition has applied every event of its shard up to this log position (a command result's `position`). */
  after?: number;
  timeoutMs?: number;
}

const text = new TextEncoder();
const untext = new TextDecoder();

function noResponders(e: unknown): boolean {
  return /no responders|503/i.test(String((e as Error)?.message ?? e));
}

/** Open a reader of a scaled-out projection: reads the shard count from the stream. */
export async function projectionReader(options: ProjectionReaderOptions): Promise<ProjectionReader> {
  if (typeof options?.name !== 'string' || options.name.length === 0) throw new InvalidOptionError(`projectionReader: options.name must name the projection, got ${JSON.stringify(options?.name)}`, { field: 'name' });
  const version = options.version ?? 1;
  if (!Number.isInteger(version) || version < 1) throw new InvalidOptionError(`options.version must be an integer >= 1, got ${JSON.stringify(version)}`, { field: 'version' });
  const stream = options.stream ?? DEFAULT_STREAM;
  const own = options.nc === undefined;
  const nc = options.nc ?? await connectNats(options.servers ?? process.env.NATS_URL ?? 'nats://127.0.0.1:4222', `troupe-reader-${options.name}`, resolveNatsAuth(options.nats));
  try {
    return new ProjectionReader(nc, own, options, version, await streamShardCount(nc, stream));
  } catch (e) {
    if (own) await nc.close().catch(() => {});
    throw e;
  }
}

export class ProjectionReader {
  private readonly prefix: string;
  private readonly timeoutMs: number;

  /** @internal use projectionReader() */
  constructor(private readonly nc: NatsConnection, private readonly ownsConnection: boolean, private readonly o: ProjectionReaderOptions, readonly version: number, readonly shardCount: number) {
    this.prefix = o.subjectPrefix ?? DEFAULT_SUBJECT_PREFIX;
    this.timeoutMs = o.timeoutMs ?? 5_000;
  }

  /** Close the reader's own NATS connection (one it was given stays open). */
  async close(): Promise<void> {
    if (this.ownsConnection) await this.nc.close();
  }

  /** The shard (so the partition) an aggregate's rows belong to: the node's own placement of the aggregate. */
  shardOf(aggregateType: string, aggregateId: string): number {
    return shardOf(aggregateType, aggregateId, this.shardCount);
  }

  /** The value of `key` in the partition of the aggregate's shard, from the shard's owner. */
  async get<V = unknown>(aggregate: { aggregateType: string; aggregateId: string }, key: Key, options: ViewReadOptions = {}): Promise<V | undefined> {
    const shard = this.shardOf(aggregate.aggregateType, aggregate.aggregateId);
    const until = Date.now() + (options.timeoutMs ?? this.timeoutMs);
    const a = await this.ask(shard, { op: 'get', key, ...(options.after === undefined ? {} : { after: options.after }) }, until);
    return a.value as V | undefined;
  }

  /**
   * Every partition's rows in [start, end) (at most `limit` from each), with their shard: each
   * row exactly once, from the owner of its shard. Fails with a retryable ConcurrencyError
   * (SHARD_NOT_OWNED) when some shard has no owner within the timeout.
   */
  async scan<V = unknown>(options: ViewReadOptions & { start?: Key; end?: Key; limit?: number } = {}): Promise<ViewRow<V>[]> {
    const until = Date.now() + (options.timeoutMs ?? this.timeoutMs);
    const { start, end, limit, after } = options;
    const req = { op: 'scan' as const, ...(start === undefined ? {} : { start }), ...(end === undefined ? {} : { end }), ...(limit === undefined ? {} : { limit }), ...(after === undefined ? {} : { after }) };
    const answers = await Promise.all(Array.from({ length: this.shardCount }, (_, shard) => this.ask(shard, req, until)));
    const out: ViewRow<V>[] = [];
    for (const a of answers) for (const r of a.rows ?? []) out.push({ shard: a.shard, key: r.key, value: r.value as V });
    return out;
  }

  private async ask(shard: number, req: ViewQuery, until: number): Promise<Exclude<ViewAnswer, { error: WireError }>> {
    const subject = viewSubject(this.prefix, this.o.name, this.version, shard);
    for (let attempt = 0; ; attempt++) {
      const left = until - Date.now();
      if (left <= 0) {
        throw new ConcurrencyError('SHARD_NOT_OWNED', `no instance of projection ${this.o.name} v${this.version} answered for shard ${shard} (${subject}) in time; start one, or retry once the shard has moved`, { shard, projection: this.o.name });
      }
      let answer: ViewAnswer;
      try {
        // The partition may wait for `after` up to its part; the rest covers the way back.
        const m = await this.nc.request(subject, text.encode(JSON.stringify({ ...req, waitMs: Math.max(0, left - 100) })), { timeout: left });
        answer = JSON.parse(untext.decode(m.data)) as ViewAnswer;
      } catch (e) {
        // Nobody subscribes (the shard moves, or has no instance), or the one that did died
        // without answering (its subscription outlives it for a moment): ask again until the deadline.
        if (noResponders(e) || /timeout/i.test(String((e as Error)?.message ?? e))) {
          await new Promise((r) => setTimeout(r, Math.min(250, 20 * 2 ** Math.min(attempt, 4), Math.max(1, until - Date.now()))));
          continue;
        }
        throw e;
      }
      if ('error' in answer) throw fromWire(answer.error);
      return answer;
    }
  }
}
