/**
 * Shard ownership through leases in NATS KV: shards, not actors, are the unit of ownership.
 *
 * A node holds `shard.<n>` in the bucket `<stream>_shards` with its name; it renews each
 * lease every ttl/3 with a compare-and-set on the revision it holds. The bucket's max age
 * expires a lease that is not renewed, so the shards of a node that died are taken by the
 * next node that asks. A restarted node with the same name takes its leases back at once.
 * Leases keep honest nodes apart; fencing in the log (expected last subject sequence) stops
 * a stale one that still believes it owns a shard.
 */
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '../journal/journal.ts';

export interface LeaseHolder {
  node: string;
  since: number;
}

export class Ownership {
  private readonly revisions = new Map<number, number>();
  private readonly holders = new Map<number, string>();
  private timer: NodeJS.Timeout | null = null;
  onLost: ((shard: number, holder: string) => void) | null = null;
  onGained: ((shards: number[]) => void) | null = null;

  private constructor(private readonly kv: KV, private readonly node: string, private readonly shards: number, private readonly ttlMs: number) {}

  static async open(nc: NatsConnection, stream: string, node: string, shards: number, ttlMs: number, replicas: number): Promise<Ownership> {
    const kvm = new Kvm(nc);
    const kv = await kvm.create(`${stream}_shards`, { history: 1, ttl: ttlMs, replicas });
    return new Ownership(kv, node, shards, ttlMs);
  }

  owns(shard: number): boolean {
    return this.revisions.has(shard);
  }

  holderOf(shard: number): string | undefined {
    return this.revisions.has(shard) ? this.node : this.holders.get(shard);
  }

  get owned(): number[] {
    return [...this.revisions.keys()].sort((a, b) => a - b);
  }

  private value(): Uint8Array {
    return new TextEncoder().encode(JSON.stringify({ node: this.node, since: Date.now() } satisfies LeaseHolder));
  }

  private async acquire(shard: number): Promise<boolean> {
    const key = `shard.${shard}`;
    try {
      this.revisions.set(shard, await this.kv.create(key, this.value()));
      return true;
    } catch {
      // Held (or just expired and recreated): take it back only if it is ours from an earlier run.
      const entry = await this.kv.get(key).catch(() => null);
      if (entry === null || entry.operation !== 'PUT') {
        try {
          this.revisions.set(shard, await this.kv.create(key, this.value()));
          return true;
        } catch {
          return false;
        }
      }
      const holder = (entry.json() as LeaseHolder).node;
      this.holders.set(shard, holder);
      if (holder !== this.node) return false;
      try {
        this.revisions.set(shard, await this.kv.update(key, this.value(), entry.revision));
        return true;
      } catch {
        return false;
      }
    }
  }

  /** Try to hold every shard nobody else holds; then keep renewing. */
  async start(): Promise<number[]> {
    const gained = await this.acquireFree();
    this.timer = setInterval(() => void this.tick(), Math.max(200, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
    return gained;
  }

  private async acquireFree(): Promise<number[]> {
    const gained: number[] = [];
    await Promise.all(Array.from({ length: this.shards }, async (_, shard) => {
      if (!this.revisions.has(shard) && await this.acquire(shard)) gained.push(shard);
    }));
    return gained.sort((a, b) => a - b);
  }

  private async tick(): Promise<void> {
    await Promise.all([...this.revisions].map(async ([shard, rev]) => {
      try {
        this.revisions.set(shard, await this.kv.update(`shard.${shard}`, this.value(), rev));
      } catch (e) {
        // A wrong revision means another node holds it now; a timeout (NATS down) is retried next tick.
        const msg = (e as Error).message ?? '';
        if (/wrong last sequence|10071/.test(msg)) {
          this.revisions.delete(shard);
          const entry = await this.kv.get(`shard.${shard}`).catch(() => null);
          const holder = entry?.operation === 'PUT' ? (entry.json() as LeaseHolder).node : 'unknown';
          this.holders.set(shard, holder);
          this.onLost?.(shard, holder);
        }
      }
    }));
    if (this.revisions.size < this.shards) {
      const gained = await this.acquireFree().catch(() => []);
      if (gained.length > 0) this.onGained?.(gained);
    }
  }

  /** Give every lease back so another node can take the shards at once. */
  async release(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    await Promise.all([...this.revisions].map(([shard, rev]) => this.kv.delete(`shard.${shard}`, { previousSeq: rev }).catch(() => {})));
    this.revisions.clear();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}
