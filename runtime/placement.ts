/**
 * Where shards live: rendezvous (highest-random-weight) hashing of shards over nodes.
 *
 * Every node computes the same placement from the same list of ready nodes, with no
 * coordination: shard s goes to the node n with the highest weight(s, n). Adding or removing a
 * node moves only the shards whose highest weight changes: about S / N of them when a node
 * joins, and exactly the leaving node's shards when one leaves. Used for the shards of a node
 * (node/ownership.ts) and for the partitions of a consumer's instances.
 */

/** 32-bit FNV-1a of `s`, then a murmur3 finalizer so that close strings spread well. */
function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The weight of `shard` on `node`: the higher, the more the shard wants that node. */
export function placementWeight(shard: number, node: string): number {
  return hash32(`${node}\u0000${shard}`);
}

/** The node that should own `shard` among `nodes` (undefined when there is none). Ties go to the smaller name. */
export function ownerOf(shard: number, nodes: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestWeight = -1;
  for (const n of nodes) {
    const w = placementWeight(shard, n);
    if (w > bestWeight || (w === bestWeight && best !== undefined && n < best)) {
      best = n;
      bestWeight = w;
    }
  }
  return best;
}

/** The shards 0..count-1 that `node` should own among `nodes`. */
export function shardsOf(node: string, nodes: readonly string[], count: number): number[] {
  const out: number[] = [];
  for (let s = 0; s < count; s++) if (ownerOf(s, nodes) === node) out.push(s);
  return out;
}

/** The whole placement: node → its shards (every node of `nodes` appears, perhaps with none). */
export function placeShards(nodes: readonly string[], count: number): Map<string, number[]> {
  const out = new Map<string, number[]>(nodes.map((n) => [n, []]));
  for (let s = 0; s < count; s++) {
    const owner = ownerOf(s, nodes);
    if (owner !== undefined) out.get(owner)!.push(s);
  }
  return out;
}

// ── mixed versions: place a shard only on a node that can read its log ─────────────────────

/**
 * Event versions, per event type named `<ActorType>.<EventType>`: what a process can read (the
 * highest version its definitions upcast from) or what a shard's log needs (the highest
 * version written to it).
 */
export type Reads = Readonly<Record<string, number>>;

/** A node (or consumer instance) and what it reads; `reads` undefined: it announced nothing (an older Troupe), taken to read everything. */
export interface Candidate {
  node: string;
  reads?: Reads | undefined;
}

/** The event versions of `needs` that `reads` cannot read, as `Type.Event v2` (empty: it can read them all). */
export function unreadable(reads: Reads | undefined, needs: Reads | undefined): string[] {
  if (reads === undefined || needs === undefined) return [];
  const out: string[] = [];
  for (const key in needs) {
    const v = needs[key]!;
    if ((reads[key] ?? 0) < v) out.push(`${key} v${v}`);
  }
  return out;
}

/** Whether a process that reads `reads` can read a log that needs `needs`. */
export function covers(reads: Reads | undefined, needs: Reads | undefined): boolean {
  if (reads === undefined || needs === undefined) return true;
  for (const key in needs) if ((reads[key] ?? 0) < needs[key]!) return false;
  return true;
}

/** The higher version of each event type of `a` and `b`; `a` itself when `b` adds nothing. */
export function mergeReads(a: Reads, b: Reads): Reads {
  let out: Record<string, number> | null = null;
  for (const key in b) {
    if ((a[key] ?? 0) < b[key]!) (out ??= { ...a })[key] = b[key]!;
  }
  return out ?? a;
}

/** A shard that no candidate can read: it stays unplaced until one that can joins. */
export interface BlockedShard {
  shard: number;
  /** What its log needs. */
  needs: Reads;
  /** For operators: which versions each candidate lacks. */
  reason: string;
}

/** The owner of `shard` among the candidates that can read its log (undefined when none can). */
export function eligibleOwnerOf(shard: number, candidates: readonly Candidate[], needs: Reads | undefined): string | undefined {
  if (needs === undefined) return ownerOf(shard, candidates.map((c) => c.node));
  let best: string | undefined;
  let bestWeight = -1;
  for (const c of candidates) {
    if (!covers(c.reads, needs)) continue;
    const w = placementWeight(shard, c.node);
    if (w > bestWeight || (w === bestWeight && best !== undefined && c.node < best)) {
      best = c.node;
      bestWeight = w;
    }
  }
  return best;
}

/**
 * Placement with versions: each shard goes, by rendezvous hashing, to one of the candidates
 * whose reads cover what its log needs (`needsOf(shard)`; undefined: nothing recorded, any
 * candidate). A shard no candidate can read is blocked: no one takes it. Shards whose logs
 * need nothing special are placed exactly as `placeShards` places them.
 */
export function placeShardsReading(candidates: readonly Candidate[], count: number, needsOf: (shard: number) => Reads | undefined): { byNode: Map<string, number[]>; blocked: BlockedShard[] } {
  const byNode = new Map<string, number[]>(candidates.map((c) => [c.node, []]));
  const blocked: BlockedShard[] = [];
  for (let s = 0; s < count; s++) {
    const needs = needsOf(s);
    const owner = eligibleOwnerOf(s, candidates, needs);
    if (owner !== undefined) byNode.get(owner)!.push(s);
    else if (candidates.length > 0 && needs !== undefined) blocked.push({ shard: s, needs, reason: blockedReason(candidates, needs) });
  }
  return { byNode, blocked };
}

/** The shards `node` should own among the candidates, reading versions into account. */
export function shardsReading(node: string, candidates: readonly Candidate[], count: number, needsOf: (shard: number) => Reads | undefined): number[] {
  const out: number[] = [];
  for (let s = 0; s < count; s++) if (eligibleOwnerOf(s, candidates, needsOf(s)) === node) out.push(s);
  return out;
}

/** Why no candidate can take a shard that needs `needs`: `a lacks X.Y v2; b lacks X.Y v2`. */
export function blockedReason(candidates: readonly Candidate[], needs: Reads): string {
  return candidates.map((c) => `${c.node} cannot read ${unreadable(c.reads, needs).join(', ')}`).join('; ');
}
