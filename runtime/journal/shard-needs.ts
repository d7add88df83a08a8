/**
 * What each shard's log needs a reader to know: per event type (`<ActorType>.<EventType>`),
 * the highest version written to the shard. Kept in the KV bucket `<stream>_needs` (history
 * 1, no max age, so it outlives any owner), key `shard.<n>`, value JSON `{ "Account.Deposited": 2 }`.
 *
 * The shard's owner raises the record, by compare-and-set, before it first appends a version
 * higher than recorded (node/log-needs.ts), and when its catch-up reads one; records only grow.
 * Writes are rare: one per (shard, event type, new version). Nodes and consumer instances
 * watch the bucket and place a shard only on a process whose announced reads cover it
 * (placement.ts).
 */
import { Kvm, KvWatchInclude, type KV } from '@nats-io/kv';
import type { NatsConnection } from './journal.ts';
import { mergeReads, type Reads } from '../placement.ts';

export class ShardNeeds {
  private readonly known = new Map<number, { revision: number; needs: Reads }>();
  private watching: { stop(): void } | null = null;
  /** Told when a shard's record changed (after `watch()`). */
  onChange: ((shard: number, needs: Reads) => void) | null = null;

  private constructor(private readonly kv: KV) {}

  static bucketOf(stream: string): string {
    return `${stream}_needs`;
  }

  static async open(nc: NatsConnection, stream: string, replicas: number): Promise<ShardNeeds> {
    const kvm = new Kvm(nc);
    let kv: KV;
    try {
      kv = await kvm.create(ShardNeeds.bucketOf(stream), { history: 1, replicas });
    } catch {
      kv = await kvm.open(ShardNeeds.bucketOf(stream));
    }
    return new ShardNeeds(kv);
  }

  /** Open the bucket only if it exists (readers: status pages, the CLI). */
  static async find(nc: NatsConnection, stream: string): Promise<ShardNeeds | null> {
    try {
      const kv = await new Kvm(nc).open(ShardNeeds.bucketOf(stream));
      await kv.status();
      return new ShardNeeds(kv);
    } catch {
      return null;
    }
  }

  /** What `shard`'s log needs, as last read or watched (undefined: nothing recorded). */
  needsOf(shard: number): Reads | undefined {
    return this.known.get(shard)?.needs;
  }

  /** Every shard with a record. */
  all(): Map<number, Reads> {
    return new Map([...this.known].map(([s, k]) => [s, k.needs]));
  }

  private learn(key: string, revision: number, value: Uint8Array | null): boolean {
    if (!key.startsWith('shard.')) return false;
    const shard = Number(key.slice('shard.'.length));
    const had = this.known.get(shard);
    if (had !== undefined && had.revision >= revision) return false;
    if (value === null || value.length === 0) {
      this.known.delete(shard);
      return had !== undefined;
    }
    try {
      this.known.set(shard, { revision, needs: JSON.parse(new TextDecoder().decode(value)) as Reads });
      return true;
    } catch {
      return false;
    }
  }

  /** Read every record now. */
  async load(): Promise<void> {
    const keys: string[] = [];
    for await (const k of await this.kv.keys('shard.>')) keys.push(k);
    await Promise.all(keys.map(async (k) => {
      const e = await this.kv.get(k).catch(() => null);
      if (e !== null && e.operation === 'PUT') this.learn(k, e.revision, e.value);
    }));
  }

  /** Read every record, then follow changes (onChange). */
  async watch(): Promise<void> {
    const iter = await this.kv.watch({ key: 'shard.>', include: KvWatchInclude.UpdatesOnly });
    this.watching = iter;
    void (async () => {
      for await (const e of iter) {
        if (this.learn(e.key, e.revision, e.operation === 'PUT' ? e.value : null)) {
          const shard = Number(e.key.slice('shard.'.length));
          this.onChange?.(shard, this.known.get(shard)?.needs ?? {});
        }
      }
    })().catch(() => {});
    await this.load();
  }

  /** The record of `shard` as the server holds it now. */
  async read(shard: number): Promise<Reads | undefined> {
    const e = await this.kv.get(`shard.${shard}`);
    if (e === null || e.operation !== 'PUT') return this.known.get(shard)?.needs;
    this.learn(e.key, e.revision, e.value);
    return this.known.get(shard)?.needs;
  }

  /**
   * Raise the record of `shard` to at least `needs` (compare-and-set, retried on a race; a
   * record never goes down). Returns the record as stored.
   */
  async raise(shard: number, needs: Reads): Promise<Reads> {
    const key = `shard.${shard}`;
    for (let attempt = 0; ; attempt++) {
      const e = await this.kv.get(key);
      const current: Reads = e !== null && e.operation === 'PUT' && e.value.length > 0 ? JSON.parse(new TextDecoder().decode(e.value)) as Reads : {};
      const next = mergeReads(current, needs);
      if (next === current && e !== null && e.operation === 'PUT') {
        this.learn(key, e.revision, e.value);
        return current;
      }
      const bytes = new TextEncoder().encode(JSON.stringify(next));
      try {
        const revision = e === null || e.operation !== 'PUT' ? await this.kv.create(key, bytes) : await this.kv.update(key, bytes, e.revision);
        this.learn(key, revision, bytes);
        return next;
      } catch (err) {
        if (attempt >= 5) throw err;
      }
    }
  }

  close(): void {
    this.watching?.stop();
    this.watching = null;
  }
}
