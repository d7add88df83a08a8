/**
 * Who is in the cluster: each node heartbeats its entry in the NATS KV bucket `<stream>_nodes`
 * (key = node name) every ttl/3, and watches the bucket.
 *
 *   joining ──(shards opened)──▶ ready ──(stop, SIGTERM)──▶ draining ──▶ entry deleted
 *                                      └──(stop({ handOff: false }), SIGUSR2)──▶ restarting ──▶ entry expires
 *
 * An entry not renewed within the TTL is gone: the bucket's max age removes it on the server,
 * and every watcher forgets a node it has not heard from for a TTL (an expiry sends no
 * notification). A node that leaves on purpose says so (draining, then a delete), so the
 * others move its shards at once; one that vanishes is waited for (options.settleMs). A node
 * that stops to restart says `restarting` and keeps its leases: the others keep it in
 * placement for options.restartGraceMs after its last heartbeat (then settleMs as for any
 * vanished node), so a restart within that moves no shard. Placement counts a node once it is
 * ready: nothing is handed to a new node before it serves (one rejoining under its name while
 * still counted keeps its place as it joins).
 */
import { readFileSync } from 'node:fs';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { SHARDS_METADATA, type NatsConnection } from '../journal/journal.ts';
import type { LeaseHolder, Move } from './ownership.ts';
import { ShardNeeds } from '../journal/shard-needs.ts';
import type { LeaseGroupStatus } from '../journal/leases.ts';
import { blockedReason, eligibleOwnerOf, type BlockedShard, type Candidate, type Reads } from '../placement.ts';

/** The version of the troupe package (runtime/node/ and dist/node/ are both two folders deep). */
export function troupeVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** `restarting`: stopped to come back under the same name; still live for placement. */
export type MemberState = 'joining' | 'ready' | 'draining' | 'restarting';

export interface MemberEntry {
  state: MemberState;
  /** When this node process started (ms since epoch). */
  since: number;
  /** The troupe version the node runs. */
  version: string;
  /** The shards it holds. */
  shards: number[];
  /** Its hand-offs and take-overs under way. */
  moves: Move[];
  /**
   * What it can read: per `<ActorType>.<EventType>`, the highest event version its definitions
   * know. Placement gives it only shards whose logs need no more (placement.ts). Absent in
   * entries of older Troupe versions: taken to read everything.
   */
  reads?: Reads;
  /** The actor types it hosts, with their state versions. */
  actors?: Record<string, number>;
}

/** What a node announces about its definitions (Registry.reads, Registry.actorVersions). */
export interface Understands {
  reads: Reads;
  actors: Record<string, number>;
}

export interface Member extends MemberEntry {
  node: string;
  /** ms since this node last heard the member's heartbeat. */
  heardMsAgo: number;
}

/** What changed in the set of members, as seen by one watcher. */
export interface MembershipChange {
  /** Members placement spreads shards over (live()), by name, sorted. */
  live: string[];
  /** True when a member left on purpose (draining, or its entry was deleted). */
  leftOnPurpose: boolean;
  /** The live members with what each reads (the same order as `live`). */
  candidates: Candidate[];
}

export class Membership {
  private readonly seen = new Map<string, { entry: MemberEntry; at: number }>();
  /** Joining members that were live when they (re)joined: they keep their place while they start. */
  private readonly returning = new Set<string>();
  private self: MemberEntry;
  private timer: NodeJS.Timeout | null = null;
  private watching: { stop(): void } | null = null;
  private lastLive = '';
  private lastReads = '';
  onChange: ((change: MembershipChange) => void) | null = null;

  /** How long a member that said `restarting` stays live after its last heartbeat (at least the TTL). */
  private readonly restartGraceMs: number;

  private constructor(private readonly kv: KV, readonly node: string, private readonly ttlMs: number, version: string, private readonly report: () => { shards: number[]; moves: Move[] }, restartGraceMs: number, understands?: Understands) {
    this.self = { state: 'joining', since: Date.now(), version, shards: [], moves: [], ...understands };
    this.restartGraceMs = Math.max(ttlMs, restartGraceMs);
  }

  static async open(nc: NatsConnection, stream: string, node: string, ttlMs: number, replicas: number, version: string, report: () => { shards: number[]; moves: Move[] }, restartGraceMs = ttlMs, understands?: Understands): Promise<Membership> {
    const kv = await new Kvm(nc).create(`${stream}_nodes`, { history: 1, ttl: ttlMs, replicas });
    const m = new Membership(kv, node, ttlMs, version, report, restartGraceMs, understands);
    await m.start();
    return m;
  }

  private async start(): Promise<void> {
    // A bucket just created on a replicated cluster answers once its stream has a leader.
    const until = Date.now() + 15_000;
    for (;;) {
      try {
        await this.heartbeat();
        break;
      } catch (e) {
        if (Date.now() > until) throw e;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    const iter = await this.kv.watch({ key: '>' });
    this.watching = iter;
    void (async () => {
      for await (const e of iter) {
        if (e.operation === 'PUT') {
          try {
            const entry = e.json() as MemberEntry;
            // A node back under its name while the others still count it (restarted, or crashed within the TTL) keeps its place while it joins.
            const before = this.seen.get(e.key)?.entry.state;
            if (entry.state !== 'joining') this.returning.delete(e.key);
            else if (before !== undefined && before !== 'joining' && before !== 'draining') this.returning.add(e.key);
            this.seen.set(e.key, { entry, at: Date.now() });
          } catch {
            continue;
          }
          this.changed(false);
        } else {
          this.seen.delete(e.key);
          this.returning.delete(e.key);
          this.changed(true);
        }
      }
    })().catch(() => {});
    // The watcher replays the current entries first; wait for them so `live` is whole at start.
    const replayed = Date.now() + 2_000;
    while (!this.seen.has(this.node) && Date.now() < replayed) await new Promise((r) => setTimeout(r, 10));
    this.timer = setInterval(() => void this.tick(), Math.max(100, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    await this.heartbeat().catch(() => {});
    this.expire();
  }

  private expire(): void {
    const now = Date.now();
    let gone = false;
    for (const [name, s] of this.seen) {
      // A node that said it restarts keeps its place (and its leases stay unwanted by the others) longer.
      const limit = s.entry.state === 'restarting' ? this.restartGraceMs : this.ttlMs;
      if (name !== this.node && now - s.at > limit) {
        this.seen.delete(name);
        this.returning.delete(name);
        gone = true;
      }
    }
    if (gone) this.changed(false);
  }

  private async heartbeat(): Promise<void> {
    this.self = { ...this.self, ...this.report() };
    await this.kv.put(this.node, JSON.stringify(this.self));
  }

  private changed(deleted: boolean): void {
    const live = this.live();
    const key = live.join(',');
    // A member restarted with the same name under newer definitions reads more: placement changes too.
    const candidates = this.candidates();
    const readsKey = JSON.stringify(candidates.map((c) => c.reads ?? null));
    if (key === this.lastLive && readsKey === this.lastReads) return;
    const before = this.lastLive === '' ? [] : this.lastLive.split(',');
    const leftOnPurpose = deleted || before.some((n) => !live.includes(n) && this.seen.get(n)?.entry.state === 'draining');
    this.lastLive = key;
    this.lastReads = readsKey;
    this.onChange?.({ live, leftOnPurpose, candidates });
  }

  /**
   * Members that take shards: ready and restarting ones (a restarting one keeps its shards
   * while it is away), and joining ones that were live when they joined (back under their
   * name). A new node is placed once it is ready, so nothing is handed to it before it can
   * serve; this node counts itself unless it is draining.
   */
  live(): string[] {
    const out: string[] = [];
    for (const [name, s] of this.seen) {
      const st = s.entry.state;
      if (st === 'ready' || st === 'restarting' || (st === 'joining' && this.returning.has(name))) out.push(name);
    }
    if (this.self.state !== 'draining' && !out.includes(this.node)) out.push(this.node);
    if (this.self.state === 'draining') return out.filter((n) => n !== this.node).sort();
    return out.sort();
  }

  /** The live members and what each reads (placement.ts candidates). */
  candidates(): Candidate[] {
    return this.live().map((node) => ({ node, reads: node === this.node ? this.self.reads : this.seen.get(node)?.entry.reads }));
  }

  /** Every member this node knows of, itself included. */
  members(): Member[] {
    const now = Date.now();
    const out: Member[] = [...this.seen].map(([node, s]) => ({ node, ...s.entry, heardMsAgo: now - s.at }));
    if (!this.seen.has(this.node)) out.push({ node: this.node, ...this.self, heardMsAgo: 0 });
    return out.sort((a, b) => a.node.localeCompare(b.node));
  }

  get state(): MemberState {
    return this.self.state;
  }

  /** Announce a new state at once (ready once the node serves; draining or restarting when it stops). */
  async announce(state: MemberState): Promise<void> {
    this.self = { ...this.self, state };
    const s = this.seen.get(this.node);
    if (s !== undefined) s.entry = this.self;
    await this.heartbeat().catch(() => {});
  }

  /** Stop heartbeating and remove this node's entry: the others see it leave now, not after a TTL. */
  async leave(): Promise<void> {
    this.close();
    await this.kv.delete(this.node).catch(() => {});
  }

  /** Stop heartbeating and watching; the entry expires after the TTL (as if the node had died). */
  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.watching?.stop();
    this.watching = null;
  }
}

export interface ClusterStatus {
  stream: string;
  /** The deployment's shard count (the stream's metadata). */
  shards: number;
  nodes: (MemberEntry & { node: string; heartbeatMsAgo: number; shardCount: number })[];
  /** Every lease: its shard, holder, ms since renewed and since taken. */
  leases: { shard: number; node: string; ageMs: number; heldMs: number }[];
  /** Shards whose lease nobody holds now. */
  unowned: number[];
  /** Hand-offs and take-overs under way, on every node. */
  moves: (Move & { node: string; ms: number })[];
  /** Shards whose logs hold event versions no live node can read: unplaced until a node that can joins (mixed versions). */
  blocked?: BlockedShard[];
  /**
   * The consumers that run against the stream, from their lease buckets: the instances of each
   * scaled-out consumer and projection (`projection` names its version) and the shards each holds.
   */
  consumers?: ConsumerGroup[];
}

/** One consumer name's (or scaled projection version's) lease group. */
export type ConsumerGroup = LeaseGroupStatus & { name: string; projection?: { name: string; version: number } };

async function bucket(nc: NatsConnection, name: string): Promise<KV | null> {
  try {
    const kv = await new Kvm(nc).open(name);
    await kv.status();
    return kv;
  } catch {
    return null;
  }
}

/** The cluster as NATS KV records it: nodes, leases, moves (`troupe cluster status`, GET /cluster). */
export async function readClusterStatus(nc: NatsConnection, stream: string): Promise<ClusterStatus> {
  const jsm = await jetstreamManager(nc);
  const info = await jsm.streams.info(stream);
  const shards = Number(info.config.metadata?.[SHARDS_METADATA] ?? 0);
  const now = Date.now();
  const nodes: ClusterStatus['nodes'] = [];
  const nodesKv = await bucket(nc, `${stream}_nodes`);
  if (nodesKv !== null) {
    // keys() may name a key twice when it is written while listed (a heartbeat): take each once.
    const keys = new Set<string>();
    for await (const key of await nodesKv.keys()) keys.add(key);
    for (const key of keys) {
      const e = await nodesKv.get(key).catch(() => null);
      if (e === null || e.operation !== 'PUT') continue;
      const entry = e.json() as MemberEntry;
      nodes.push({ node: key, ...entry, moves: entry.moves ?? [], heartbeatMsAgo: Math.max(0, now - e.created.getTime()), shardCount: entry.shards.length });
    }
  }
  const leases: ClusterStatus['leases'] = [];
  const shardsKv = await bucket(nc, `${stream}_shards`);
  if (shardsKv !== null) {
    await Promise.all(Array.from({ length: shards }, async (_, shard) => {
      const e = await shardsKv.get(`shard.${shard}`).catch(() => null);
      if (e === null || e.operation !== 'PUT') return;
      const h = e.json() as LeaseHolder;
      leases.push({ shard, node: h.node, ageMs: Math.max(0, now - e.created.getTime()), heldMs: Math.max(0, now - h.since) });
    }));
  }
  leases.sort((a, b) => a.shard - b.shard);
  const held = new Set(leases.map((l) => l.shard));
  const blocked: BlockedShard[] = [];
  const needs = await ShardNeeds.find(nc, stream);
  if (needs !== null) {
    await needs.load().catch(() => {});
    const candidates: Candidate[] = nodes.filter((n) => n.state !== 'draining').map((n) => ({ node: n.node, reads: n.reads }));
    for (const [shard, need] of [...needs.all()].sort((a, b) => a[0] - b[0])) {
      if (candidates.length > 0 && eligibleOwnerOf(shard, candidates, need) === undefined) blocked.push({ shard, needs: need, reason: blockedReason(candidates, need) });
    }
  }
  nodes.sort((a, b) => a.node.localeCompare(b.node));
  return {
    stream, shards, nodes, leases,
    unowned: Array.from({ length: shards }, (_, i) => i).filter((s) => !held.has(s)),
    moves: nodes.flatMap((n) => n.moves.map((m) => ({ ...m, node: n.node, ms: Math.max(0, now - m.since) }))),
    blocked,
  };
}
