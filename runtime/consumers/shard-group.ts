/**
 * The instances of one scaled-out name (a consumer, a saga, a projection version) as a lease
 * group over the log's shards: what scaled.ts and partitions.ts share.
 *
 *   join: shard count (stream metadata) → lease group in `<stream>_consumer_<group>`
 *         (journal/leases.ts) → refuse if a plain instance of the name runs → start
 *   acquired(shard) / release(shard) run one at a time (they share the instance's records);
 *   lost(shard) runs at once (another instance may already work on the shard)
 *
 * Placement is rendezvous hashing of the shards over the live instances (placement.ts); with
 * `scaleOut.actors`, a shard goes only to an instance that can read its log (mixed versions).
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { NatsConnection } from '../journal/journal.ts';
import { LeaseGroup } from '../journal/leases.ts';
import { ShardNeeds } from '../journal/shard-needs.ts';
import { ConcurrencyError } from '../errors.ts';
import { readsOf } from '../contracts/registry.ts';
import { DEFAULT_LEASE_TTL_MS, type ScaleOutOptions } from './consume-options.ts';
import { streamShardCount } from './consume.ts';
import { consumerLeaseBucket } from './durables.ts';

/** An instance name nobody else has: host, pid and a random suffix. */
export function defaultInstance(): string {
  return `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 128);
}

/** `scaleOut: true` is `{}`. */
export function scaleOutOf(scaleOut: true | ScaleOutOptions | undefined): ScaleOutOptions {
  return scaleOut === true || scaleOut === undefined ? {} : scaleOut;
}

export interface ShardGroupOptions {
  nc: NatsConnection;
  stream: string;
  /** The lease group (and bucket suffix): a consumer's name, or a projection version's. */
  group: string;
  /** How errors name it: `consumer billing`, `projection totals v1`. */
  label: string;
  instance: string;
  scaleOut: ScaleOutOptions;
  acquired: (shard: number) => Promise<void>;
  release: (shard: number) => Promise<void>;
  lost: (shard: number) => Promise<void>;
  onError: (e: unknown) => void;
}

export class ShardGroup {
  /** acquired/release run one at a time. */
  private chain: Promise<unknown> = Promise.resolve();
  private readonly cleanup: (() => void)[] = [];
  /** Shards whose `acquired` runs now: a loss of one waits for it, so that what it started is stopped. */
  private readonly acquiring = new Map<number, Promise<void>>();
  private leases: LeaseGroup | null = null;

  private constructor(private readonly o: ShardGroupOptions, readonly count: number) {}

  /** Join the group: resolves once this instance's first lease round ran (it may own no shard yet). */
  static async join(o: ShardGroupOptions): Promise<ShardGroup> {
    const g = new ShardGroup(o, await streamShardCount(o.nc, o.stream));
    try {
      await g.open();
    } catch (e) {
      g.close();
      throw e;
    }
    return g;
  }

  private async open(): Promise<void> {
    const { o } = this;
    // Mixed versions: with the definitions it reads announced, a shard goes only to an instance that can read its log.
    let needs: ShardNeeds | null = null;
    if (o.scaleOut.actors !== undefined) {
      needs = await ShardNeeds.find(o.nc, o.stream) ?? await ShardNeeds.open(o.nc, o.stream, 1).catch(() => null);
      if (needs !== null) {
        await needs.watch();
        const n = needs;
        this.cleanup.push(() => n.close());
      }
    }
    const versions = needs === null ? {} : { reads: readsOf(o.scaleOut.actors ?? []), needsOf: (shard: number) => needs.needsOf(shard) };
    const leases = await LeaseGroup.open(o.nc, {
      ...versions,
      bucket: consumerLeaseBucket(o.stream, o.group),
      group: o.group,
      member: o.instance,
      count: this.count,
      ttlMs: o.scaleOut.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS,
      acquired: (shard) => this.acquire(shard),
      release: (shard) => this.serial(() => o.release(shard)),
      lost: (shard) => (this.acquiring.get(shard)?.catch(() => {}) ?? Promise.resolve()).then(() => o.lost(shard)),
      onError: o.onError,
    });
    this.leases = leases;
    if (needs !== null) needs.onChange = () => leases.needsChanged();
    const single = await leases.exclusiveHolder();
    if (single !== null) {
      throw new ConcurrencyError('CONCURRENCY',
        `${o.label} already runs as one instance (${single}) without scaleOut; stop it, then start every instance with options.scaleOut`,
        { consumer: o.group, heldBy: single });
    }
    await leases.start();
  }

  private acquire(shard: number): Promise<void> {
    const p = this.serial(() => this.o.acquired(shard));
    this.acquiring.set(shard, p);
    void p.catch(() => {}).finally(() => { if (this.acquiring.get(shard) === p) this.acquiring.delete(shard); });
    return p;
  }

  private serial<T>(f: () => Promise<T>): Promise<T> {
    const next = this.chain.then(f, f);
    this.chain = next.catch(() => {});
    return next;
  }

  /** The live instances of the name, as seen at the last lease round. */
  get live(): readonly string[] {
    return this.leases?.live ?? [];
  }

  /**
   * Leave the group: every held shard is released (after `release` finished) and the others
   * take them on their next round. Resolves once no acquired/release runs any more.
   */
  async stop(): Promise<void> {
    await this.leases?.stop().catch(this.o.onError);
    await this.chain;
    this.close();
  }

  private close(): void {
    for (const c of this.cleanup.splice(0)) c();
  }
}
