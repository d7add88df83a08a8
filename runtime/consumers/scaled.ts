/**
 * A consumer name run as several instances (`consume({ scaleOut })`): the instances share the
 * log's shards, so each aggregate's events are handled in order by one instance at a time.
 *
 *   instance ──heartbeat + leases (journal/leases.ts, KV bucket `<stream>_consumers`)──┐
 *     for each shard it holds: a Consumer (consume.ts) on JetStream consumer           │
 *     `<name>_s<shard>`, filtered on `<prefix>.log.<shard>`                            │
 *   placement: rendezvous hashing of shards over the live instances of the name ◀──────┘
 *
 * Hand-over. A shard's progress lives on the server, in its JetStream consumer: the next
 * owner resumes at that consumer's ack floor. An instance that stops, or whose shard moved to
 * a newer instance, stops the shard's consumer first (running handlers finish, their messages
 * are acked, held ones given back) and only then deletes the lease, so nothing it handled is
 * delivered again. An instance that dies (kill -9) keeps its leases until they expire; the
 * messages it had received and not acked are then delivered to the next owner, which reads
 * them first (recover) so that each aggregate's order holds. The events of those messages that
 * the dead instance had handled are delivered again: a handler whose effects live outside the
 * instance keeps the aggregate's last applied sequence beside them and skips what it applied
 * (`checkVersion(lastApplied, event)`); workflows and sagas need nothing more, since a node
 * answers a re-sent commandId with its first result.
 *
 * What a handler writes through its context (`ctx.put`, `ctx.setVersion`) stays in the
 * instance's own LMDB: it is shared only by instances that open the same data dir.
 */
import type { EventEnvelope } from '../journal/codec.ts';
import { connectNats, type NatsConnection } from '../journal/journal.ts';
import { listLeaseBuckets, readLeaseGroup, type LeaseGroupStatus } from '../journal/leases.ts';
import { TimeoutError } from '../errors.ts';
import { resolveNatsAuth } from '../connection.ts';
import { DEFAULT_STREAM } from '../options.ts';
import { DeadLetterQueue } from './dlq.ts';
import { validateConsumeOptions, type ConsumeOptions } from './consume-options.ts';
import { ConsumerStore, DEFAULT_DEDUP_TTL_MS } from './consumer-store.ts';
import { consume, type Consumer } from './consume.ts';
import { breakerState, consumerLeaseBucket, registerProbe, durableInfo, scaledLag, shardDurable, type ConsumerInfo, type ConsumerLag } from './durables.ts';
import { DEFAULT_SUBJECT_PREFIX } from '../options.ts';
import type { ConsumerGauges, HealthCheckResult } from '../ops/metrics.ts';
import { serveConsumerOps, type ConsumerOpsServer } from '../ops/consumer-ops.ts';
import type { PipelineStats } from './pipeline.ts';
import { defaultInstance, scaleOutOf, ShardGroup } from './shard-group.ts';

export interface ScaledConsumerStats extends PipelineStats {
  name: string;
  instance: string;
  /** The shards this instance reads now. */
  shards: number[];
}

/** A lease group of a stream: a consumer name's, or a scaled-out projection version's (`projection`). */
export type ConsumerGroupStatus = LeaseGroupStatus & { name: string; projection?: { name: string; version: number } };

const PROJECTION_GROUP = /^proj_([A-Za-z0-9_-]{1,64})_v(\d+)$/;

/**
 * The instances of every consumer of a stream and the shards each reads (for `troupe cluster
 * status` and `/cluster`): scaled-out groups, the one instance of each plain consumer, and the
 * instances of scaled-out projections with the shards whose partitions each owns.
 */
export async function consumerStatus(nc: NatsConnection, stream: string): Promise<ConsumerGroupStatus[]> {
  const prefix = consumerLeaseBucket(stream, '');
  const out: ConsumerGroupStatus[] = [];
  for (const bucket of await listLeaseBuckets(nc, prefix)) {
    const name = bucket.slice(prefix.length);
    const p = PROJECTION_GROUP.exec(name);
    out.push({ name, ...(p === null ? {} : { projection: { name: p[1]!, version: Number(p[2]) } }), ...await readLeaseGroup(nc, bucket, name) });
  }
  return out;
}

export class ScaledConsumer {
  readonly name: string;
  /** This instance's name in its consumer's group. */
  readonly instance: string;
  private readonly consumers = new Map<number, Consumer>();
  private readonly listeners = new Set<(events: EventEnvelope[]) => void>();
  private readonly unlisten = new Map<number, () => void>();
  /** Shard consumers start and stop one at a time (they share the store's records): the group runs them so. */
  private group: ShardGroup | null = null;
  private unprobe: (() => void) | null = null;
  private http: ConsumerOpsServer | null = null;
  private stopped: Promise<void> | null = null;
  private readonly onError: (e: unknown) => void;
  /** How long a released shard's running handlers may take to finish. */
  private stopTimeoutMs = 10_000;
  /** Shards of the log (from the stream's metadata). */
  shardCount = 0;

  private constructor(
    private readonly options: ConsumeOptions,
    readonly nc: NatsConnection,
    readonly store: ConsumerStore,
    /** The dead-letter queue the instances write to: stats, list, discard. */
    readonly deadLetters: DeadLetterQueue,
    private readonly cleanup: (() => Promise<unknown>)[],
  ) {
    this.name = options.name;
    this.instance = scaleOutOf(options.scaleOut).instance ?? defaultInstance();
    this.onError = options.onError ?? ((e) => process.emitWarning(`troupe consumer ${options.name} (${this.instance}): ${(e as Error)?.message ?? String(e)}`));
  }

  /** @internal use consume({ scaleOut }) */
  static async start(options: ConsumeOptions): Promise<ScaledConsumer> {
    const cleanup: (() => Promise<unknown>)[] = [];
    try {
      let nc = options.nc;
      if (nc === undefined) {
        nc = await connectNats(options.servers ?? process.env.NATS_URL ?? 'nats://127.0.0.1:4222', `troupe-consumer-${options.name}`, resolveNatsAuth(options.nats));
        const own = nc;
        cleanup.push(() => own.drain());
      }
      let store = options.store;
      if (store === undefined) {
        store = ConsumerStore.open(options.dataDir!);
        const own = store;
        cleanup.unshift(() => own.close());
      }
      const o = validateConsumeOptions(options);
      const dlq = await DeadLetterQueue.open({ nc, stream: o.stream, subjectPrefix: o.subjectPrefix });
      cleanup.unshift(() => dlq.close());
      const c = new ScaledConsumer(options, nc, store, dlq, cleanup);
      await c.join();
      if (options.http !== undefined) {
        const http = await serveConsumerOps(options.http).catch(async (e: unknown) => {
          await c.stop(0);
          throw e;
        });
        c.http = http;
      }
      return c;
    } catch (e) {
      for (const c of cleanup) await c().catch(() => {});
      throw e;
    }
  }

  private get stream(): string {
    return this.options.stream ?? DEFAULT_STREAM;
  }

  private async join(): Promise<void> {
    this.group = await ShardGroup.join({
      nc: this.nc, stream: this.stream, group: this.name, label: `consumer ${this.name}`, instance: this.instance, scaleOut: scaleOutOf(this.options.scaleOut),
      acquired: (shard) => this.open(shard),
      release: (shard) => this.close(shard, this.stopTimeoutMs),
      // Another instance may already read the shard: stop at once.
      lost: (shard) => this.close(shard, 0),
      onError: this.onError,
    });
    this.shardCount = this.group.count;
    if (this.options.probe !== false) {
      this.unprobe = registerProbe(this, this.options.probe);
    }
  }

  private async open(shard: number): Promise<void> {
    if (this.consumers.has(shard)) return;
    const c = await consume({ ...this.options, scaleOut: undefined, http: undefined, shard, nc: this.nc, store: this.store, probe: false } as ConsumeOptions);
    this.consumers.set(shard, c);
    this.unlisten.set(shard, c.onCommitted((events) => { for (const l of this.listeners) l(events); }));
  }

  private async close(shard: number, timeoutMs: number): Promise<void> {
    const c = this.consumers.get(shard);
    if (c === undefined) return;
    this.consumers.delete(shard);
    this.unlisten.get(shard)?.();
    this.unlisten.delete(shard);
    await c.stop(timeoutMs);
  }

  /** The shards this instance reads now. */
  get shards(): number[] {
    return [...this.consumers.keys()].sort((a, b) => a - b);
  }

  /** The live instances of this consumer name, as seen at the last lease round. */
  get instances(): readonly string[] {
    return this.group?.live ?? [];
  }

  stats(): ScaledConsumerStats {
    const total: Record<string, number> = {};
    for (const c of this.consumers.values()) {
      for (const [k, v] of Object.entries(c.stats())) if (typeof v === 'number') total[k] = (total[k] ?? 0) + v;
    }
    return { ...(total as unknown as PipelineStats), name: this.name, instance: this.instance, shards: this.shards };
  }

  /**
   * The JetStream view summed over every shard of the name (all instances). A shard whose
   * JetStream consumer does not exist yet counts the messages it will have to read as pending.
   */
  async info(): Promise<ConsumerInfo & { shardsWithoutConsumer: number }> {
    const out = { numPending: 0, numAckPending: 0, ackFloor: 0, shardsWithoutConsumer: 0 };
    const infos = await Promise.all(Array.from({ length: this.shardCount }, (_, s) => durableInfo(this.nc, this.stream, shardDurable(this.name, s))));
    for (const i of infos) {
      if (i === null) {
        out.shardsWithoutConsumer++;
        continue;
      }
      out.numPending += i.numPending;
      out.numAckPending += i.numAckPending;
    }
    return out;
  }

  /** Messages left to handle on every shard of the name (all instances), and the oldest one's age. */
  lag(): Promise<ConsumerLag> {
    return scaledLag(this.nc, this.stream, this.options.subjectPrefix ?? DEFAULT_SUBJECT_PREFIX, this.name, this.shardCount);
  }

  /** Held messages and their bytes over this instance's shards; the breaker (shared by its shards). */
  gauges(): ConsumerGauges {
    let bufferedMessages = 0;
    let bufferedBytes = 0;
    for (const c of this.consumers.values()) {
      const g = c.gauges();
      bufferedMessages += g.bufferedMessages;
      bufferedBytes += g.bufferedBytes;
    }
    const b = this.options.breaker;
    return { bufferedMessages, bufferedBytes, ...(b === undefined ? {} : { breakerState: breakerState(b.state) }) };
  }

  /** Whether this instance runs: not stopped, its NATS connection open, its shard consumers running. */
  status(): HealthCheckResult {
    if (this.stopped !== null) return { ok: false, error: 'stopped' };
    if (this.nc.isClosed()) return { ok: false, error: 'its NATS connection is closed' };
    const down = [...this.consumers.entries()].filter(([, c]) => c.status().ok !== true).map(([s]) => s);
    if (down.length > 0) return { ok: false, error: `the consumers of shards ${down.join(', ')} do not run`, shards: this.shards };
    return { ok: true, instance: this.instance, shards: this.shards };
  }

  /** `http://host:port` of the endpoints this instance serves (options.http), or null. */
  get httpUrl(): string | null {
    return this.http?.url ?? null;
  }

  /** Resolves when every shard of the name has a JetStream consumer with nothing left to deliver or to ack. */
  async caughtUp(timeoutMs = 30_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const i = await this.info();
      if (i.numPending === 0 && i.numAckPending === 0 && i.shardsWithoutConsumer === 0) return;
      if (Date.now() > until) {
        throw new TimeoutError(`consumer ${this.name} did not catch up within ${timeoutMs} ms: ${i.numPending} to deliver, ${i.numAckPending} un-acked, ${i.shardsWithoutConsumer} shards not read yet`, {});
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Listen to the events this instance handled, per committed task. Returns an unsubscribe function. */
  onCommitted(listener: (events: EventEnvelope[]) => void): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  /** What `ctx.setVersion` recorded for an aggregate in this instance's store (0 when nothing). */
  versionOf(aggregateType: string, aggregateId: string): number {
    return this.store.state(this.stream, this.name, this.options.dedupTtlMs ?? DEFAULT_DEDUP_TTL_MS).version(aggregateType, aggregateId);
  }

  /**
   * Leave the group: each shard's consumer stops (running handlers finish, their messages are
   * acked) and its lease is released, so the other instances take the shards at once.
   */
  stop(timeoutMs = 10_000): Promise<void> {
    this.stopTimeoutMs = timeoutMs;
    this.stopped ??= (async () => {
      this.unprobe?.();
      await this.http?.close();
      await this.group?.stop();
      for (const s of [...this.consumers.keys()]) await this.close(s, 0).catch(this.onError);
      for (const c of this.cleanup) await c().catch(() => {});
    })();
    return this.stopped;
  }
}
