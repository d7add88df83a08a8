/**
 * Shard ownership through leases in NATS KV, and placement: which node should hold which shard.
 *
 * A node holds `shard.<n>` in the bucket `<stream>_shards` with its name; it renews each
 * lease every ttl/3 with a compare-and-set on the revision it holds. The bucket's max age
 * expires a lease that is not renewed, so the shards of a node that died come free after the
 * TTL. A restarted node with the same name takes its leases back at once: a node that stops to
 * restart (stop({ handOff: false })) keeps them (stopMoving, then stop) instead of releasing them.
 *
 * Placement (runtime/placement.ts): given the live nodes (node/membership.ts), a node wants
 * exactly shardsOf(self, nodes, S). It takes a wanted shard when its lease is free, and hands
 * off a held shard it no longer wants:
 *
 *   held ──(not wanted)──▶ handing off: owns() is false (new commands fail SHARD_NOT_OWNED,
 *          retryable); the node shares the shard's checkpoint while still serving, then drains
 *          its in-flight appends and snapshots its actors (handOff, a round of shards at once),
 *          then deletes the lease ──▶ the new owner, watching the bucket, takes it the moment
 *          the lease is deleted (takeReleased).
 *
 * A change of the live nodes is applied once it has held for options.settleMs (a node that
 * restarts within it moves nothing), at once when a node left on purpose; at most
 * options.maxConcurrentMoves hand-offs and take-overs run at a time. Without membership
 * (`setNodes` never called) a node takes every free shard.
 *
 * Leases keep honest nodes apart; fencing in the log (expected last subject sequence) stops a
 * stale one (paused past its lease): its append is refused, it checks its lease (verify) and
 * drops the shard.
 */
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '../journal/journal.ts';
import { placeShardsReading, type BlockedShard, type Candidate, type Reads } from '../placement.ts';

export interface LeaseHolder {
  node: string;
  since: number;
}

export interface Move {
  shard: number;
  kind: 'take' | 'hand-off';
  since: number;
}

export interface PlacementOptions {
  settleMs: number;
  maxConcurrentMoves: number;
}

export class Ownership {
  private readonly revisions = new Map<number, number>();
  private readonly holders = new Map<number, string>();
  private readonly moving = new Map<number, Move>();
  private readonly verifying = new Set<number>();
  private readonly takenAt = new Map<number, number>();
  private timer: NodeJS.Timeout | null = null;
  private watching: { stop(): void } | null = null;
  /** The nodes placement spreads shards over; null: take every free shard. */
  private nodes: string[] | null = null;
  /** The same nodes with what each reads (mixed versions: placement.ts). */
  private candidates: Candidate[] = [];
  /** What each shard's log needs a reader to know (journal/shard-needs.ts); null: nothing tracked. */
  private needsOf: ((shard: number) => Reads | undefined) | null = null;
  private wanted: Set<number> | null = null;
  /** Where placement puts each shard now (the node a hand-off goes to). */
  private placedOn = new Map<number, string>();
  private blockedShards: BlockedShard[] = [];
  private pending: { key: string; timer: NodeJS.Timeout } | null = null;
  private balancing: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  onLost: ((shard: number, holder: string) => void) | null = null;
  onGained: ((shards: number[]) => void) | null = null;
  /** The set of shards that no live node can read changed (placement with versions). */
  onBlocked: ((blocked: BlockedShard[]) => void) | null = null;
  /** Drain shards this node hands off (up to maxConcurrentMoves at once): stop their commands, finish their appends, snapshot their actors. */
  handOff: ((shards: number[]) => Promise<void>) | null = null;
  /** Told after each hand-off: shard, ms it took. */
  onHandedOff: ((shard: number, ms: number) => void) | null = null;

  private constructor(
    private readonly kv: KV, private readonly node: string, private readonly shards: number, private readonly ttlMs: number,
    private readonly placement: PlacementOptions,
  ) {}

  static async open(nc: NatsConnection, stream: string, node: string, shards: number, ttlMs: number, replicas: number,
    placement: PlacementOptions = { settleMs: 0, maxConcurrentMoves: shards }): Promise<Ownership> {
    const kvm = new Kvm(nc);
    const kv = await kvm.create(`${stream}_shards`, { history: 1, ttl: ttlMs, replicas });
    return new Ownership(kv, node, shards, ttlMs, placement);
  }

  /** Whether this node takes commands for `shard`: it holds the lease and is not handing it off. */
  owns(shard: number): boolean {
    return this.revisions.has(shard) && this.moving.get(shard)?.kind !== 'hand-off';
  }

  holderOf(shard: number): string | undefined {
    return this.revisions.has(shard) ? this.node : this.holders.get(shard);
  }

  /** The shards whose leases this node holds (those being handed off included). */
  get owned(): number[] {
    return [...this.revisions.keys()].sort((a, b) => a - b);
  }

  /** Hand-offs and take-overs under way on this node. */
  get moves(): Move[] {
    return [...this.moving.values()].sort((a, b) => a.shard - b.shard);
  }

  /** The shards placement gives this node (every shard when there is no membership). */
  get wantedShards(): number[] {
    return this.wanted === null ? Array.from({ length: this.shards }, (_, i) => i) : [...this.wanted].sort((a, b) => a - b);
  }

  private value(shard: number): Uint8Array {
    let since = this.takenAt.get(shard);
    if (since === undefined) this.takenAt.set(shard, since = Date.now());
    return new TextEncoder().encode(JSON.stringify({ node: this.node, since } satisfies LeaseHolder));
  }

  private async acquire(shard: number): Promise<boolean> {
    const key = `shard.${shard}`;
    try {
      this.revisions.set(shard, await this.kv.create(key, this.value(shard)));
      return true;
    } catch {
      // Held (or just expired and recreated): take it back only if it is ours from an earlier run.
      const entry = await this.kv.get(key).catch(() => null);
      if (entry === null || entry.operation !== 'PUT') {
        try {
          this.revisions.set(shard, await this.kv.create(key, this.value(shard)));
          return true;
        } catch {
          return false;
        }
      }
      const holder = (entry.json() as LeaseHolder).node;
      this.holders.set(shard, holder);
      if (holder !== this.node) return false;
      try {
        this.revisions.set(shard, await this.kv.update(key, this.value(shard), entry.revision));
        return true;
      } catch {
        return false;
      }
    }
  }

  /**
   * Take the wanted shards that are free (or ours from an earlier run); then keep renewing,
   * and watch the bucket so a released lease is taken at once.
   */
  async start(nodes?: readonly string[] | readonly Candidate[]): Promise<number[]> {
    if (nodes !== undefined) this.apply(nodes);
    const gained = await this.acquireWanted(this.shards);
    this.timer = setInterval(() => void this.tick(), Math.max(200, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
    const iter = await this.kv.watch({ key: 'shard.>', include: 'updates' });
    this.watching = iter;
    void (async () => {
      for await (const e of iter) {
        if (e.operation === 'PUT') continue;
        const shard = Number(e.key.slice('shard.'.length));
        this.holders.delete(shard);
        if (this.wants(shard) && !this.revisions.has(shard)) this.takeReleased(shard);
      }
    })().catch(() => {});
    return gained;
  }

  /**
   * A wanted shard's lease was just released (a planned hand-off): take it and report it at
   * once, without waiting for a whole round of moves (the cut-over of a move); a round takes it
   * when this node is at maxConcurrentMoves.
   */
  private takeReleased(shard: number): void {
    const taking = [...this.moving.values()].filter((m) => m.kind === 'take').length;
    if (this.stopped || this.moving.has(shard) || taking >= this.placement.maxConcurrentMoves) {
      this.rebalance();
      return;
    }
    this.moving.set(shard, { shard, kind: 'take', since: Date.now() });
    void this.acquire(shard).then((ok) => {
      this.moving.delete(shard);
      if (ok && !this.stopped) this.onGained?.([shard]);
    }, () => { this.moving.delete(shard); });
  }

  /** The node placement gives `shard` to now, if any (where this node hands it off). */
  nextOwner(shard: number): string | undefined {
    return this.placedOn.get(shard);
  }

  /** Whether placement gives `shard` to this node and it does not hold its lease yet (a hand-off to it may come). */
  awaits(shard: number): boolean {
    return this.wants(shard) && !this.revisions.has(shard);
  }

  private wants(shard: number): boolean {
    return this.wanted === null || this.wanted.has(shard);
  }

  /**
   * The live nodes changed: place shards over them once the change has held for settleMs, or
   * now when `now` (a node left on purpose, or this node's first view). With what each node
   * reads (Candidate), a shard goes only to a node that can read its log.
   */
  setNodes(nodes: readonly string[] | readonly Candidate[], now: boolean): void {
    const key = placementKey(nodes);
    if (this.pending !== null) {
      clearTimeout(this.pending.timer);
      this.pending = null;
    }
    if (this.nodes !== null && key === placementKey(this.candidates)) return;
    if (now || this.placement.settleMs === 0) {
      this.apply(nodes);
      this.rebalance();
      return;
    }
    const timer = setTimeout(() => {
      this.pending = null;
      this.apply(nodes);
      this.rebalance();
    }, this.placement.settleMs);
    timer.unref();
    this.pending = { key, timer };
  }

  private apply(nodes: readonly string[] | readonly Candidate[]): void {
    this.candidates = nodes.map((n) => (typeof n === 'string' ? { node: n } : n)).sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
    this.nodes = this.candidates.map((c) => c.node);
    const needsOf = this.needsOf ?? (() => undefined);
    const { byNode, blocked } = placeShardsReading(this.candidates, this.shards, needsOf);
    this.wanted = new Set(byNode.get(this.node) ?? []);
    this.placedOn = new Map([...byNode].flatMap(([node, shards]) => shards.map((s) => [s, node] as const)));
    const was = this.blockedShards.map((b) => b.shard).join(',');
    this.blockedShards = blocked;
    if (blocked.map((b) => b.shard).join(',') !== was) this.onBlocked?.(blocked);
  }

  /**
   * Place shards by what their logs need (mixed versions): `needsOf(shard)` is the record of
   * the event versions the shard's log holds. Call `needsChanged()` when a record changes.
   */
  useNeeds(needsOf: (shard: number) => Reads | undefined): void {
    this.needsOf = needsOf;
  }

  /** A shard's record of needed versions grew: place again at once (a node that cannot read it must hand it off now). */
  needsChanged(): void {
    if (this.nodes === null || this.stopped) return;
    this.apply(this.candidates);
    this.rebalance();
  }

  /** Shards no live node can read: they stay unplaced until one that can joins. */
  get blocked(): BlockedShard[] {
    return this.blockedShards;
  }

  /** Start a round of moves (or another one after the one under way). */
  private rebalance(): void {
    if (this.stopped) return;
    if (this.balancing !== null) {
      this.again = true;
      return;
    }
    this.balancing = (async () => {
      do {
        this.again = false;
        await this.handOffUnwanted();
        const gained = await this.acquireWanted(this.placement.maxConcurrentMoves);
        if (gained.length > 0) this.onGained?.(gained);
      } while (this.again && !this.stopped);
    })().catch(() => {}).finally(() => { this.balancing = null; });
  }

  private async handOffUnwanted(): Promise<void> {
    for (;;) {
      const out = [...this.revisions.keys()].filter((s) => !this.wants(s) && !this.moving.has(s)).slice(0, this.placement.maxConcurrentMoves);
      if (out.length === 0 || this.stopped) return;
      await this.handOffBatch(out);
    }
  }

  /** Hand shards off together (one drain and one checkpoint per worker), then release each lease. */
  private async handOffBatch(shards: number[]): Promise<void> {
    const since = Date.now();
    for (const shard of shards) this.moving.set(shard, { shard, kind: 'hand-off', since });
    try {
      await this.handOff?.(shards);
      await Promise.all(shards.map(async (shard) => {
        const rev = this.revisions.get(shard);
        this.revisions.delete(shard);
        this.takenAt.delete(shard);
        if (rev !== undefined) await this.kv.delete(`shard.${shard}`, { previousSeq: rev }).catch(() => {});
        this.onHandedOff?.(shard, Date.now() - since);
      }));
    } finally {
      for (const shard of shards) this.moving.delete(shard);
    }
  }

  private async acquireWanted(limit: number): Promise<number[]> {
    const gained: number[] = [];
    const todo = this.wantedShards.filter((s) => !this.revisions.has(s) && !this.moving.has(s));
    for (let i = 0; i < todo.length && !this.stopped; i += limit) {
      await Promise.all(todo.slice(i, i + limit).map(async (shard) => {
        if (this.revisions.has(shard) || this.moving.has(shard)) return; // taken meanwhile (takeReleased)
        this.moving.set(shard, { shard, kind: 'take', since: Date.now() });
        try {
          if (await this.acquire(shard)) gained.push(shard);
        } finally {
          this.moving.delete(shard);
        }
      }));
    }
    return gained.sort((a, b) => a - b);
  }

  private async tick(): Promise<void> {
    await Promise.all([...this.revisions].map(async ([shard, rev]) => {
      try {
        this.revisions.set(shard, await this.kv.update(`shard.${shard}`, this.value(shard), rev));
      } catch (e) {
        // A wrong revision means another node holds it now; a timeout (NATS down) is retried next tick.
        const msg = (e as Error).message ?? '';
        if (/wrong last sequence|10071/.test(msg)) await this.lost(shard);
      }
    }));
    if (this.wantedShards.some((s) => !this.revisions.has(s)) || [...this.revisions.keys()].some((s) => !this.wants(s))) this.rebalance();
  }

  private async lost(shard: number): Promise<void> {
    if (!this.revisions.delete(shard)) return;
    this.takenAt.delete(shard);
    const entry = await this.kv.get(`shard.${shard}`).catch(() => null);
    const holder = entry?.operation === 'PUT' ? (entry.json() as LeaseHolder).node : 'unknown';
    this.holders.set(shard, holder);
    this.onLost?.(shard, holder);
  }

  /**
   * The log refused an append to `shard` (another writer): check the lease. When another node
   * holds it now (this node was paused past its lease), drop the shard.
   */
  verify(shard: number): void {
    const rev = this.revisions.get(shard);
    if (rev === undefined || this.verifying.has(shard)) return;
    this.verifying.add(shard);
    void this.kv.get(`shard.${shard}`).then(async (entry) => {
      if (entry === null || entry.operation !== 'PUT' || entry.revision !== this.revisions.get(shard)) await this.lost(shard);
    }).catch(() => {}).finally(() => this.verifying.delete(shard));
  }

  /** Give every lease back so another node can take the shards at once. */
  async release(): Promise<void> {
    this.stop();
    await Promise.all([...this.revisions].map(([shard, rev]) => this.kv.delete(`shard.${shard}`, { previousSeq: rev }).catch(() => {})));
    this.revisions.clear();
  }

  /**
   * Take and hand off nothing more, but keep renewing the leases held (a node stopping to
   * restart: its leases stay its own until it stops, then expire unless it is back first).
   */
  stopMoving(): void {
    this.stopped = true;
    if (this.pending !== null) clearTimeout(this.pending.timer);
    this.pending = null;
  }

  /** Stop renewing and watching; the leases held expire after the TTL (a restarted node with the same name takes them back). */
  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    if (this.pending !== null) clearTimeout(this.pending.timer);
    this.pending = null;
    this.watching?.stop();
    this.watching = null;
  }
}

/** Names and reads, in a stable order: equal keys place the same. */
function placementKey(nodes: readonly string[] | readonly Candidate[]): string {
  return nodes.map((n) => (typeof n === 'string' ? `${n}=` : `${n.node}=${n.reads === undefined ? '' : JSON.stringify(n.reads)}`)).sort().join(',');
}
