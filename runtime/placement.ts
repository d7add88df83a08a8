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
