import { describe, expect, it } from 'vitest';
import { ownerOf, placeShards, shardsOf } from '../runtime/placement.ts';

const nodes = (n: number) => Array.from({ length: n }, (_, i) => `node-${i + 1}`);

describe('placement', () => {
  it('gives every shard exactly one owner, the same whatever the order of the node list', () => {
    const a = placeShards(nodes(3), 64);
    const b = placeShards([...nodes(3)].reverse(), 64);
    const all = [...a.values()].flat().sort((x, y) => x - y);
    expect(all).toEqual(Array.from({ length: 64 }, (_, i) => i));
    for (const [n, shards] of a) expect(b.get(n)).toEqual(shards);
  });

  it('spreads 64 shards over 3 nodes within ±25% of an even share', () => {
    for (const shards of placeShards(nodes(3), 64).values()) {
      expect(shards.length).toBeGreaterThanOrEqual(Math.floor((64 / 3) * 0.75));
      expect(shards.length).toBeLessThanOrEqual(Math.ceil((64 / 3) * 1.25));
    }
  });

  it('moves only shards to the new node when one joins, and only the leaver\'s shards when one leaves', () => {
    const before = nodes(3);
    const after = nodes(4);
    let moved = 0;
    for (let s = 0; s < 256; s++) {
      const was = ownerOf(s, before);
      const now = ownerOf(s, after);
      if (was !== now) {
        moved++;
        expect(now).toBe('node-4');
      }
    }
    expect(moved).toBeLessThanOrEqual(1.25 * (256 / 4));
    for (let s = 0; s < 256; s++) {
      const was = ownerOf(s, after)!;
      const now = ownerOf(s, before);
      if (was !== 'node-4') expect(now).toBe(was);
    }
  });

  it('has no owner without nodes', () => {
    expect(ownerOf(0, [])).toBeUndefined();
    expect(shardsOf('node-1', [], 4)).toEqual([]);
  });
});
