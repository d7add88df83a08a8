/**
 * A group of members sharing shards through leases in NATS KV, placed by rendezvous hashing.
 *
 * One KV bucket holds, per group (a consumer name, for example):
 *
 *   <group>.m.<member>   {member, since, at}   heartbeat: re-put every ttl/3
 *   <group>.s.<shard>    {member, since}       the shard's lease: renewed every ttl/3 by
 *                                               compare-and-set on the revision held
 *
 * The bucket's max age is the lease ttl, so a member that dies (kill -9) disappears from the
 * heartbeats and its leases expire within one ttl. Every member computes the same placement
 * from the live heartbeats (placement.ts): it releases the shards that now belong to another
 * member (after `release` has let its work finish) and takes the free shards that belong to it.
 * A member that stops gracefully releases its shards and deletes its heartbeat, so the others
 * take its shards on their next tick, not after a ttl.
 *
 *   free ──create──▶ held ──placement moved it──▶ releasing ──release() done──▶ deleted (free)
 *                     │ renewal refused (expired, taken)
 *                     ▼
 *                    lost ──lost() called at once──▶ (another member holds it)
 *
 * A lease keeps honest members apart; it cannot fence a member that was paused past its ttl
 * and still works on a shard until its next renewal fails.
 */
import { Kvm, KvWatchInclude, type KV } from '@nats-io/kv';
import type { NatsConnection } from './journal.ts';
import { shardsReading, type Candidate, type Reads } from '../placement.ts';

export interface LeaseGroupOptions {
  /** KV bucket (created when missing) whose max age is `ttlMs`. */
  bucket: string;
  /** The group's key prefix: members of one group share its shards. */
  group: string;
  /** This member's name (letters, digits, `_`, `-`); a restarted member with the same name takes its leases back at once. */
  member: string;
  /** Shards 0..count-1. */
  count: number;
  ttlMs: number;
  replicas?: number;
  /** Start working on a shard whose lease was just taken. Rejecting gives the lease back. */
  acquired: (shard: number) => Promise<void>;
  /** Finish the work on a shard before its lease is given back (placement moved it, or stop()). */
  release: (shard: number) => Promise<void>;
  /** The lease was lost (expired or taken): stop working on the shard at once. */
  lost: (shard: number) => Promise<void>;
  onError?: (e: unknown) => void;
  /**
   * What this member can read (mixed versions: placement.ts), announced in its heartbeat; with
   * `needsOf` (what each shard's log holds, journal/shard-needs.ts), a shard goes only to a
   * member whose reads cover it. A member that announces nothing is taken to read everything.
   */
  reads?: Reads;
  needsOf?: (shard: number) => Reads | undefined;
}

interface Held {
  revision: number;
  releasing: boolean;
}

const KEY = /^[A-Za-z0-9_-]+$/;

export class LeaseGroup {
  private readonly held = new Map<number, Held>();
  private timer: NodeJS.Timeout | null = null;
  private ticking: Promise<void> | null = null;
  private stopped = false;
  private readonly since = Date.now();
  private members: string[] = [];
  private readonly moves = new Set<Promise<void>>();
  private readonly taking = new Set<number>();
  private unwatch: (() => void) | null = null;

  private constructor(private readonly kv: KV, private readonly o: LeaseGroupOptions) {}

  static async open(nc: NatsConnection, options: LeaseGroupOptions): Promise<LeaseGroup> {
    for (const [field, v] of [['group', options.group], ['member', options.member]] as const) {
      if (!KEY.test(v)) throw new Error(`lease group ${field} must be letters, digits, _ or -, got ${JSON.stringify(v)}`);
    }
    const { kv, ttlMs } = await openLeaseBucket(nc, options.bucket, options.ttlMs, options.replicas ?? 1);
    return new LeaseGroup(kv, { ...options, ttlMs });
  }

  /** Who holds the group's exclusive lease (ExclusiveLease), if anyone. */
  async exclusiveHolder(): Promise<string | null> {
    return holderOf(this.kv, `${this.o.group}.x`);
  }

  /** The shards this member holds (releasing ones included). */
  get owned(): number[] {
    return [...this.held.keys()].sort((a, b) => a - b);
  }

  /** The live members seen at the last tick. */
  get live(): readonly string[] {
    return this.members;
  }

  private memberKey(m: string): string { return `${this.o.group}.m.${m}`; }
  private shardKey(s: number): string { return `${this.o.group}.s.${s}`; }
  private json(v: object): Uint8Array { return new TextEncoder().encode(JSON.stringify(v)); }

  /**
   * Announce this member and take its shards; then keep going every ttl/3, and at once when a
   * member joins or leaves gracefully (a heartbeat that expires is seen by the next round).
   */
  async start(): Promise<void> {
    await this.tick();
    this.timer = setInterval(() => void this.tick(), Math.max(100, Math.floor(this.o.ttlMs / 3)));
    this.timer.unref();
    const watch = await this.kv.watch({ key: `${this.o.group}.m.>`, include: KvWatchInclude.UpdatesOnly });
    this.unwatch = () => watch.stop();
    void (async () => {
      for await (const e of watch) {
        if (this.stopped) break;
        const member = e.key.slice(this.o.group.length + 3);
        const changed = e.operation === 'PUT' ? !this.members.includes(member) : this.members.includes(member);
        // A round already running may have read the members before this change: run one more after it.
        if (changed) void this.tick().then(() => this.tick());
      }
    })().catch((e) => this.o.onError?.(e));
  }

  /** One round: heartbeat, renew, release what moved away, take what is free and ours. Never two at once. */
  tick(): Promise<void> {
    this.ticking ??= this.round().catch((e) => this.o.onError?.(e)).finally(() => { this.ticking = null; });
    return this.ticking;
  }

  private async round(): Promise<void> {
    if (this.stopped) return;
    await this.kv.put(this.memberKey(this.o.member), this.json({ member: this.o.member, since: this.since, at: Date.now(), ...(this.o.reads === undefined ? {} : { reads: this.o.reads }) }));
    await Promise.all([...this.held].map(([s, h]) => this.renew(s, h)));
    const members: string[] = [];
    for await (const k of await this.kv.keys(`${this.o.group}.m.>`)) members.push(k.slice(this.o.group.length + 3));
    if (!members.includes(this.o.member)) members.push(this.o.member);
    this.members = members.sort();
    if (this.stopped) return;
    const candidates = await this.candidates();
    const mine = new Set(shardsReading(this.o.member, candidates, this.o.count, this.o.needsOf ?? (() => undefined)));
    // Moves run beside the ticks, so that renewals go on while a released shard's work finishes.
    for (const [s, h] of this.held) if (!mine.has(s) && !h.releasing) this.track(this.giveBack(s, h));
    for (const s of mine) if (!this.held.has(s) && !this.taking.has(s)) this.track(this.take(s));
  }

  /** The live members with what each reads (read from their heartbeats only when versions are tracked). */
  private async candidates(): Promise<Candidate[]> {
    if (this.o.needsOf === undefined) return this.members.map((node) => ({ node }));
    return Promise.all(this.members.map(async (member) => {
      if (member === this.o.member) return { node: member, reads: this.o.reads };
      const e = await this.kv.get(this.memberKey(member)).catch(() => null);
      const reads = e !== null && e.operation === 'PUT' ? (e.json() as { reads?: Reads }).reads : undefined;
      return { node: member, reads };
    }));
  }

  /** A shard's record of needed versions changed: place again now. */
  needsChanged(): void {
    if (!this.stopped) void this.tick().then(() => this.tick());
  }

  private track(p: Promise<void>): void {
    this.moves.add(p);
    void p.catch((e) => this.o.onError?.(e)).finally(() => this.moves.delete(p));
  }

  private async renew(shard: number, h: Held): Promise<void> {
    try {
      h.revision = await this.kv.update(this.shardKey(shard), this.json({ member: this.o.member, since: this.since }), h.revision);
    } catch (e) {
      const msg = (e as Error).message ?? '';
      if (!/wrong last sequence|10071/.test(msg)) throw e; // NATS unreachable: retried next tick
      this.held.delete(shard);
      await this.o.lost(shard).catch((err) => this.o.onError?.(err));
    }
  }

  private async take(shard: number): Promise<void> {
    this.taking.add(shard);
    try {
      await this.takeLease(shard);
    } finally {
      this.taking.delete(shard);
    }
  }

  private async takeLease(shard: number): Promise<void> {
    if (this.stopped) return;
    const key = this.shardKey(shard);
    let revision: number;
    try {
      revision = await this.kv.create(key, this.json({ member: this.o.member, since: this.since }));
    } catch {
      // Held by someone: ours only if it is this member's from an earlier run.
      const entry = await this.kv.get(key).catch(() => null);
      if (entry === null || entry.operation !== 'PUT' || (entry.json() as { member?: string }).member !== this.o.member) return;
      try {
        revision = await this.kv.update(key, this.json({ member: this.o.member, since: this.since }), entry.revision);
      } catch {
        return;
      }
    }
    const h: Held = { revision, releasing: false };
    this.held.set(shard, h);
    try {
      await this.o.acquired(shard);
    } catch (e) {
      this.o.onError?.(e);
      await this.giveBack(shard, h, false);
    }
  }

  private async giveBack(shard: number, h: Held, finish = true): Promise<void> {
    h.releasing = true;
    try {
      if (finish) await this.o.release(shard);
    } catch (e) {
      this.o.onError?.(e);
    }
    if (this.held.get(shard) !== h) return; // lost meanwhile
    this.held.delete(shard);
    const key = this.shardKey(shard);
    try {
      await this.kv.delete(key, { previousSeq: h.revision });
    } catch {
      // A renewal raced the delete: delete the lease if it is still this member's.
      const entry = await this.kv.get(key).catch(() => null);
      if (entry?.operation === 'PUT' && (entry.json() as { member?: string }).member === this.o.member) {
        await this.kv.delete(key, { previousSeq: entry.revision }).catch(() => {});
      }
    }
  }

  /** Release every shard (after its work finished) and leave the group. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.unwatch?.();
    await this.ticking;
    // Keep the leases alive while their work finishes.
    const keepAlive = setInterval(() => {
      for (const [s, h] of this.held) void this.renew(s, h).catch(() => {});
    }, Math.max(100, Math.floor(this.o.ttlMs / 3)));
    try {
      await Promise.all([...this.moves].map((p) => p.catch(() => {})));
      await Promise.all([...this.held].filter(([, h]) => !h.releasing).map(([s, h]) => this.giveBack(s, h)));
      await Promise.all([...this.moves].map((p) => p.catch(() => {})));
    } finally {
      clearInterval(keepAlive);
    }
    await this.kv.delete(this.memberKey(this.o.member)).catch(() => {});
  }
}

/**
 * Open (or create) a lease bucket. Its max age is the ttl of every lease in it, fixed when it
 * was created: an existing bucket keeps its own, which is returned.
 */
export async function openLeaseBucket(nc: NatsConnection, bucket: string, ttlMs: number, replicas: number): Promise<{ kv: KV; ttlMs: number }> {
  const kvm = new Kvm(nc);
  try {
    return { kv: await kvm.create(bucket, { history: 1, ttl: ttlMs, replicas }), ttlMs };
  } catch {
    // Created earlier with another ttl (or replicas): use it as it is.
    const kv = await kvm.open(bucket);
    const ttl = (await kv.status()).ttl;
    return { kv, ttlMs: ttl > 0 ? ttl : ttlMs };
  }
}

async function holderOf(kv: KV, key: string): Promise<string | null> {
  const entry = await kv.get(key);
  if (entry === null || entry.operation !== 'PUT') return null;
  return (entry.json() as { member?: string }).member ?? 'unknown';
}

/**
 * One lease for one member at a time (`<group>.x`), renewed every ttl/3 — what keeps a second
 * instance of a consumer that is not scaled out from starting beside the first. A member that
 * comes back with the same name takes it back at once; another waits for stop() or the ttl.
 */
export class ExclusiveLease {
  private timer: NodeJS.Timeout | null = null;

  private constructor(private readonly kv: KV, private readonly key: string, private readonly member: string, private revision: number) {}

  /**
   * Take the lease, or return who holds it. `refuse(kv)` may name a reason not to take it
   * (for example, live members of a scaled-out group of the same name).
   */
  static async take(nc: NatsConnection, options: { bucket: string; group: string; member: string; ttlMs: number; replicas?: number; onLost: () => void }): Promise<ExclusiveLease | { heldBy: string }> {
    const { kv, ttlMs } = await openLeaseBucket(nc, options.bucket, options.ttlMs, options.replicas ?? 1);
    for await (const k of await kv.keys(`${options.group}.m.>`)) return { heldBy: `${k.slice(options.group.length + 3)} (scaled out)` };
    const key = `${options.group}.x`;
    const value = new TextEncoder().encode(JSON.stringify({ member: options.member, since: Date.now() }));
    let revision: number;
    try {
      revision = await kv.create(key, value);
    } catch {
      const entry = await kv.get(key);
      const holder = entry?.operation === 'PUT' ? (entry.json() as { member?: string }).member ?? 'unknown' : null;
      if (entry === null || holder === null) {
        revision = await kv.create(key, value);
      } else if (holder !== options.member) {
        return { heldBy: holder };
      } else {
        revision = await kv.update(key, value, entry.revision);
      }
    }
    const lease = new ExclusiveLease(kv, key, options.member, revision);
    lease.timer = setInterval(() => {
      void kv.update(key, value, lease.revision).then((r) => { lease.revision = r; }, (e: Error) => {
        if (/wrong last sequence|10071/.test(e.message ?? '')) {
          lease.stopTimer();
          options.onLost();
        }
      });
    }, Math.max(100, Math.floor(ttlMs / 3)));
    lease.timer.unref();
    return lease;
  }

  private stopTimer(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  async release(): Promise<void> {
    this.stopTimer();
    if (await holderOf(this.kv, this.key).catch(() => null) === this.member) {
      await this.kv.delete(this.key).catch(() => {});
    }
  }
}

export interface LeaseGroupStatus {
  group: string;
  ttlMs: number;
  /** Live members (heartbeat within the ttl): name, when it joined, its last heartbeat. */
  members: { member: string; since: number; at: number }[];
  /** Held shards: holder, and the age of the lease's last renewal in ms. */
  shards: { shard: number; member: string; ageMs: number }[];
  /** The one instance of a group that is not scaled out (ExclusiveLease), if any. */
  exclusive: { member: string; ageMs: number } | null;
}

/** What a lease bucket holds for `group` now: for status pages and the CLI. */
export async function readLeaseGroup(nc: NatsConnection, bucket: string, group: string): Promise<LeaseGroupStatus> {
  const kv = await new Kvm(nc).open(bucket);
  const ttlMs = (await kv.status()).ttl;
  const out: LeaseGroupStatus = { group, ttlMs, members: [], shards: [], exclusive: null };
  const keys: string[] = [];
  for await (const k of await kv.keys(`${group}.>`)) keys.push(k);
  const now = Date.now();
  for (const key of keys) {
    const e = await kv.get(key);
    if (e === null || e.operation !== 'PUT') continue;
    const v = e.json() as { member?: string; since?: number; at?: number };
    const rest = key.slice(group.length + 1);
    const ageMs = Math.max(0, now - e.created.getTime());
    if (rest.startsWith('m.')) out.members.push({ member: v.member ?? rest.slice(2), since: v.since ?? 0, at: v.at ?? e.created.getTime() });
    else if (rest.startsWith('s.')) out.shards.push({ shard: Number(rest.slice(2)), member: v.member ?? 'unknown', ageMs });
    else if (rest === 'x') out.exclusive = { member: v.member ?? 'unknown', ageMs };
  }
  out.members.sort((a, b) => a.member.localeCompare(b.member));
  out.shards.sort((a, b) => a.shard - b.shard);
  return out;
}

/** The names of the lease buckets that start with `prefix`. */
export async function listLeaseBuckets(nc: NatsConnection, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const s of new Kvm(nc).list()) if (s.bucket.startsWith(prefix)) out.push(s.bucket);
  return out.sort();
}
