/**
 * A projection run as several instances (`project({ scaleOut })`): the instances of one
 * projection version share the log's shards, and each shard is a partition of the view that
 * lives in the LMDB of the instance that owns the shard.
 *
 *   instance ──lease group `proj_<name>_v<version>` (shard-group.ts, as scaled consumers)──┐
 *     per owned shard: a partition                                                        │
 *       view/<stream>/<name>/v<version>/p<shard>   its rows                               │
 *       c/<stream>/<consumer>_p<shard>/meta        its checkpoint, written in the same     │
 *                                                  transaction as its rows and de-dup marks│
 *                                                  (and every 100 ms as acks land)         │
 *       JetStream consumer `<consumer>_p<shard>_s<shard>` on `<prefix>.log.<shard>`,       │
 *         re-created from the checkpoint + 1 whenever the shard is taken                   │
 *       serves reads on `<prefix>.view.<name>.v<version>.<shard>` (view-reader.ts)          │
 *   placement: rendezvous hashing of the shards over the live instances ◀─────────────────┘
 *
 * Taking a shard: resume its partition from this instance's own checkpoint (from the start of
 * the shard's subject if it never held it); reads wait until the partition has caught up with
 * the shard's log as it was when the shard was taken. Giving a shard back (another instance
 * joined, or stop()): stop answering first, then stop applying (running tasks commit), save
 * the checkpoint, and keep the rows on disk for a later return. A lost lease (expired, taken)
 * does the same without waiting. A partition is never read while its instance does not own it.
 *
 * Each event is applied once per partition: its de-dup mark commits with its rows, so a
 * partition resumed from a checkpoint a little behind its rows skips what it applied.
 */
import type { Database } from 'lmdb';
import type { EventEnvelope } from '../journal/codec.ts';
import { connectNats, type NatsConnection } from '../journal/journal.ts';
import { TimeoutError, toWire } from '../errors.ts';
import { resolveNatsAuth } from '../connection.ts';
import { DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX } from '../options.ts';
import type { ConsumerGauges, HealthCheckResult } from '../ops/metrics.ts';
import { serveConsumerOps, type ConsumerOpsServer } from '../ops/consumer-ops.ts';
import { consume, type Consumer } from './consume.ts';
import type { ConsumerStore, Key } from './consumer-store.ts';
import { registerProbe, subjectCursor, type ConsumerLag, type SubjectCursor } from './durables.ts';
import type { PipelineStats } from './pipeline.ts';
import { TaskView, deliveryOptions, projectionConsumerName, type ProjectionOptions } from './projection.ts';
import { defaultInstance, scaleOutOf, ShardGroup } from './shard-group.ts';
import { ProjectionReader, viewSubject, type ViewAnswer, type ViewRequest } from './view-reader.ts';

/** What one owned partition reports. */
export interface PartitionStats {
  shard: number;
  /** Every message of the shard's log up to this position is applied. */
  checkpoint: number;
  /** Events applied by this instance since it took the shard. */
  handled: number;
}

export interface ScaledProjectionStats extends PipelineStats {
  name: string;
  version: number;
  instance: string;
  shards: number[];
  partitions: PartitionStats[];
}

interface Partition {
  shard: number;
  db: Database;
  consumer: Consumer;
  cursor: SubjectCursor;
  /** Reads wait until the partition reached the shard's log end as it was when the shard was taken. */
  readyAt: number;
  /** The checkpoint saved last. */
  saved: number;
  unsubscribe: () => void;
}

/** The lease group of a projection version (also its name in `troupe cluster status`). */
export function projectionGroup(name: string, version: number): string {
  return `proj_${name}_v${version}`;
}

export function partitionView(stream: string, name: string, version: number, shard: number): string {
  return `view/${stream}/${name}/v${version}/p${shard}`;
}

const CHECKPOINT_EVERY_MS = 100;
const text = new TextEncoder();
const untext = new TextDecoder();

export class ScaledProjection {
  readonly name: string;
  readonly stream: string;
  readonly instance: string;
  private readonly prefix: string;
  private readonly base: string;
  private readonly partitions = new Map<number, Partition>();
  private readonly listeners = new Set<(events: EventEnvelope[]) => void>();
  private group: ShardGroup | null = null;
  private unprobe: (() => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private http: ConsumerOpsServer | null = null;
  private stopped: Promise<void> | null = null;
  private stopTimeoutMs = 10_000;
  private readonly onError: (e: unknown) => void;
  shardCount = 0;

  private constructor(private readonly options: ProjectionOptions, readonly version: number, readonly store: ConsumerStore, readonly nc: NatsConnection, private readonly cleanup: (() => Promise<unknown>)[]) {
    this.name = options.name;
    this.stream = options.stream ?? DEFAULT_STREAM;
    this.prefix = options.subjectPrefix ?? DEFAULT_SUBJECT_PREFIX;
    this.instance = scaleOutOf(options.scaleOut).instance ?? defaultInstance();
    this.base = projectionConsumerName(store, options.name, version);
    this.onError = options.onError ?? ((e) => process.emitWarning(`troupe projection ${options.name} v${version} (${this.instance}): ${(e as Error)?.message ?? String(e)}`));
  }

  /** @internal use project({ scaleOut }) */
  static async start(options: ProjectionOptions, version: number, store: ConsumerStore, cleanup: (() => Promise<unknown>)[]): Promise<ScaledProjection> {
    let nc = options.nc;
    if (nc === undefined) {
      nc = await connectNats(options.servers ?? process.env.NATS_URL ?? 'nats://127.0.0.1:4222', `troupe-projection-${options.name}`, resolveNatsAuth(undefined));
      const own = nc;
      cleanup.push(() => own.drain());
    }
    const p = new ScaledProjection(options, version, store, nc, cleanup);
    try {
      await p.join();
      if (options.http !== undefined) p.http = await serveConsumerOps(options.http);
    } catch (e) {
      await p.stop(0).catch(() => {});
      throw e;
    }
    return p;
  }

  private async join(): Promise<void> {
    this.group = await ShardGroup.join({
      nc: this.nc, stream: this.stream, group: projectionGroup(this.name, this.version), label: `projection ${this.name} v${this.version}`,
      instance: this.instance, scaleOut: scaleOutOf(this.options.scaleOut),
      acquired: (shard) => this.take(shard),
      release: (shard) => this.giveBack(shard, this.stopTimeoutMs),
      lost: (shard) => this.giveBack(shard, 0),
      onError: this.onError,
    });
    this.shardCount = this.group.count;
    this.timer = setInterval(() => void this.saveCheckpoints().catch(this.onError), CHECKPOINT_EVERY_MS);
    this.timer.unref();
    if (this.options.probe !== false) {
      const self = this;
      this.unprobe = registerProbe({
        name: this.base,
        lag: () => this.lag(),
        gauges: () => this.gauges(),
        status: () => this.status(),
        deadLetters: { async stats() { return self.deadLetterStats(); } },
      }, this.options.probe === undefined ? undefined : this.options.probe, { name: this.name, version: this.version });
    }
  }

  private async take(shard: number): Promise<void> {
    if (this.partitions.has(shard) || this.stopped !== null) return;
    const { options } = this;
    const name = `${this.base}_p${shard}`;
    const db = this.store.db(partitionView(this.stream, this.name, this.version, shard));
    const state = this.store.state(this.stream, name);
    const meta = state.meta;
    const checkpoint = state.getMeta<number>('checkpoint') ?? 0;
    const apply = options.apply;
    let consumer: Consumer | null = null;
    const checkpointed = new WeakSet<object>();
    consumer = await consume({
      name, shard, startAfter: checkpoint,
      store: this.store, nc: this.nc, stream: this.stream, subjectPrefix: this.prefix,
      ...deliveryOptions(options),
      onError: this.onError,
      batchSize: options.batchSize ?? 500,
      concurrency: 1,
      probe: false,
      metricsAs: { name: this.name, version: this.version },
      handler: (event, ctx) => {
        // The checkpoint commits with the rows, once per task: every message up to it is applied
        // and committed. (Before consume() resolved, 0: the stream may have turned out new.)
        if (!checkpointed.has(ctx)) {
          checkpointed.add(ctx);
          const p = consumer?.position ?? 0;
          if (p > (ctx.get<number>(meta, 'checkpoint') ?? 0)) ctx.put(meta, 'checkpoint', p);
        }
        return apply(event, new TaskView(ctx, db));
      },
      // The stream was re-created: its events are new, so is the partition.
      onStreamReset: () => db.clearAsync(),
    });
    const c = consumer;
    let cursor: SubjectCursor;
    let readyAt: number;
    try {
      cursor = await subjectCursor(this.nc, this.stream, `${this.prefix}.log.${shard}`);
      readyAt = await cursor.last() ?? 0;
    } catch (e) {
      await c.stop(0).catch(() => {});
      throw e;
    }
    const unlisten = c.onCommitted((events) => { for (const l of this.listeners) l(events); });
    const sub = this.nc.subscribe(viewSubject(this.prefix, this.name, this.version, shard), {
      callback: (err, msg) => {
        if (err !== null) return;
        void this.answer(part, msg.data).then((a) => {
          try {
            msg.respond(text.encode(JSON.stringify(a)));
          } catch {
            // the connection is closing
          }
        });
      },
    });
    const part: Partition = { shard, db, consumer: c, cursor, readyAt, saved: c.position, unsubscribe: () => { sub.unsubscribe(); unlisten(); } };
    this.partitions.set(shard, part);
  }

  private async giveBack(shard: number, timeoutMs: number): Promise<void> {
    const part = this.partitions.get(shard);
    if (part === undefined) return;
    // Stop answering before anything else: a partition it does not own is never read.
    this.partitions.delete(shard);
    part.unsubscribe();
    await this.nc.flush().catch(() => {});
    const p = part.consumer.position;
    await part.consumer.stop(timeoutMs);
    if (p > 0) await part.consumer.state.putMeta('checkpoint', Math.max(p, part.consumer.position)).catch(this.onError);
  }

  /**
   * Between tasks the pipeline's position moves on as their acks land, after the commit that
   * wrote the checkpoint: save it now and then, so that a restart after a crash re-reads little.
   * Never more than what is committed, so always safe to resume from.
   */
  private async saveCheckpoints(): Promise<void> {
    for (const part of this.partitions.values()) {
      const p = part.consumer.position;
      if (p <= part.saved) continue;
      part.saved = p;
      await part.consumer.state.putMeta('checkpoint', p);
    }
  }

  /** Wait until every message of the shard's log up to `after` is applied; TimeoutError after `waitMs`. */
  private async reach(part: Partition, after: number, waitMs: number): Promise<void> {
    const until = Date.now() + waitMs;
    for (;;) {
      const p = part.consumer.position;
      if (p >= after) return;
      const next = await part.cursor.nextAfter(p);
      if (next === null || next > after) return;
      const left = until - Date.now();
      if (left <= 0) {
        throw new TimeoutError(`shard ${part.shard} of projection ${this.name} v${this.version} did not reach log position ${after} within ${waitMs} ms (it is at ${p})`, { position: after, shard: part.shard });
      }
      await part.consumer.waitFor(next, left);
    }
  }

  private async answer(part: Partition, data: Uint8Array): Promise<ViewAnswer> {
    try {
      const req = JSON.parse(untext.decode(data)) as ViewRequest;
      const waitMs = Math.max(0, Number(req.waitMs) || 0);
      const after = Math.max(req.after ?? 0, part.readyAt);
      if (after > 0) await this.reach(part, after, waitMs);
      if (part.readyAt > 0 && part.consumer.position >= part.readyAt) part.readyAt = 0;
      if (this.partitions.get(part.shard) !== part) throw new TimeoutError(`shard ${part.shard} of projection ${this.name} moved while it was read; read again`, { shard: part.shard });
      const position = part.consumer.position;
      if (req.op === 'get') {
        const value = part.db.get(req.key);
        return { shard: part.shard, position, instance: this.instance, ...(value === undefined ? {} : { value }) };
      }
      const rows: { key: Key; value: unknown }[] = [];
      for (const { key, value } of part.db.getRange({ ...(req.start === undefined ? {} : { start: req.start }), ...(req.end === undefined ? {} : { end: req.end }), ...(req.limit === undefined ? {} : { limit: req.limit }) })) {
        rows.push({ key, value });
      }
      return { shard: part.shard, position, instance: this.instance, rows };
    } catch (e) {
      return { error: toWire(e) };
    }
  }

  /** The shards whose partitions this instance owns now. */
  get shards(): number[] {
    return [...this.partitions.keys()].sort((a, b) => a - b);
  }

  /** The live instances of this projection version, as seen at the last lease round. */
  get instances(): readonly string[] {
    return this.group?.live ?? [];
  }

  /** Each owned partition: its shard and checkpoint. */
  partitionStats(): PartitionStats[] {
    return this.shards.map((shard) => {
      const c = this.partitions.get(shard)!.consumer;
      return { shard, checkpoint: c.position, handled: c.stats().handled };
    });
  }

  stats(): ScaledProjectionStats {
    const total: Record<string, number> = {};
    for (const p of this.partitions.values()) {
      for (const [k, v] of Object.entries(p.consumer.stats())) if (typeof v === 'number') total[k] = (total[k] ?? 0) + v;
    }
    return { ...(total as unknown as PipelineStats), name: this.name, version: this.version, instance: this.instance, shards: this.shards, partitions: this.partitionStats() };
  }

  /** Log messages left to apply over this instance's partitions, and the oldest one's age. */
  async lag(): Promise<ConsumerLag> {
    const lags = await Promise.all([...this.partitions.values()].map((p) => p.consumer.lag()));
    return { messages: lags.reduce((a, l) => a + l.messages, 0), oldestAgeMs: lags.reduce((a, l) => Math.max(a, l.oldestAgeMs), 0) };
  }

  gauges(): ConsumerGauges {
    let bufferedMessages = 0;
    let bufferedBytes = 0;
    for (const p of this.partitions.values()) {
      const g = p.consumer.gauges();
      bufferedMessages += g.bufferedMessages;
      bufferedBytes += g.bufferedBytes;
    }
    return { bufferedMessages, bufferedBytes };
  }

  private async deadLetterStats(): Promise<{ byConsumer: Record<string, number> }> {
    const first = this.partitions.values().next().value;
    if (first === undefined) return { byConsumer: {} };
    const s = await first.consumer.deadLetters.stats();
    let n = 0;
    for (const p of this.partitions.values()) n += s.byConsumer[p.consumer.name] ?? 0;
    return { byConsumer: { [this.base]: n } };
  }

  /** Whether it runs: not stopped, its NATS connection open, every partition applying. */
  status(): HealthCheckResult {
    if (this.stopped !== null) return { ok: false, error: 'stopped' };
    if (this.nc.isClosed()) return { ok: false, error: 'its NATS connection is closed' };
    const down = [...this.partitions.values()].filter((p) => p.consumer.status().ok !== true).map((p) => p.shard);
    if (down.length > 0) return { ok: false, error: `the partitions of shards ${down.join(', ')} do not apply events`, shards: this.shards };
    return { ok: true, instance: this.instance, shards: this.shards, checkpoints: Object.fromEntries(this.partitionStats().map((p) => [p.shard, p.checkpoint])) };
  }

  /** Listen to the events each committed task applied, on every owned partition. */
  onApplied(listener: (events: EventEnvelope[]) => void): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  /** Resolves once every owned partition has applied its shard's log up to `position`. */
  async waitFor(position: number, timeoutMs = 5_000): Promise<void> {
    await Promise.all([...this.partitions.values()].map((p) => this.reach(p, position, timeoutMs)));
  }

  /** The value of `key` in the local partition of `shard`; undefined when this instance does not own the shard. */
  get<V = unknown>(shard: number, key: Key): V | undefined {
    return this.partitions.get(shard)?.db.get(key) as V | undefined;
  }

  /**
   * A reader of this projection version over every instance (the owner of each shard answers),
   * on this instance's NATS connection.
   */
  reader(options: { timeoutMs?: number } = {}): ProjectionReader {
    return new ProjectionReader(this.nc, false, { name: this.name, version: this.version, nc: this.nc, stream: this.stream, subjectPrefix: this.prefix, ...options }, this.version, this.shardCount);
  }

  /** `http://host:port` of the endpoints this projection serves (options.http), or null. */
  get httpUrl(): string | null {
    return this.http?.url ?? null;
  }

  /**
   * Leave the group: each partition stops answering, applies what it runs, saves its
   * checkpoint and gives its lease back, so the other instances take the shards at once. The
   * partitions stay on disk for a later return.
   */
  stop(timeoutMs = 10_000): Promise<void> {
    this.stopTimeoutMs = timeoutMs;
    this.stopped ??= (async () => {
      if (this.timer !== null) clearInterval(this.timer);
      this.unprobe?.();
      await this.http?.close();
      await this.group?.stop();
      for (const s of [...this.partitions.keys()]) await this.giveBack(s, 0).catch(this.onError);
      for (const c of this.cleanup) await c().catch(() => {});
    })();
    return this.stopped;
  }
}
