import { describe, expect, it } from 'vitest';
import { isTroupeError } from '../runtime/errors.ts';
import { DEFAULT_SHARDS, resolveOptions } from '../runtime/options.ts';
import { shardOf } from '../runtime/envelope.ts';

describe('resolveOptions', () => {
  it('fills defaults and freezes the result', () => {
    const o = resolveOptions({ actors: ['actors/account.ts'] });
    expect(o.shards).toBe(DEFAULT_SHARDS);
    expect(o.actors[0]).toMatch(/\/actors\/account\.ts$/);
    expect(Object.isFrozen(o)).toBe(true);
  });

  it('names the option and the value it refuses', () => {
    try {
      resolveOptions({ actors: ['a.ts'], shards: -1 });
      expect.unreachable();
    } catch (e) {
      expect(isTroupeError(e, 'INVALID_OPTION')).toBe(true);
      expect((e as Error).message).toBe('options.shards must be an integer between 1 and 65536, got -1');
    }
    expect(() => resolveOptions({ actors: [] })).toThrow(/options.actors must list at least one module/);
    expect(() => resolveOptions({ actors: ['a.ts'], ownership: 'maybe' as never })).toThrow(/options.ownership must be 'lease' or 'none'/);
    expect(() => resolveOptions({ actors: ['a.ts'], stream: 'has space' })).toThrow(/options.stream must be a non-empty string matching/);
  });
});

describe('shardOf', () => {
  it('is stable across processes and spreads ids over every shard', () => {
    expect(shardOf('Account', 'acct-00001', 64)).toBe(shardOf('Account', 'acct-00001', 64));
    const seen = new Set<number>();
    for (let i = 0; i < 10_000; i++) seen.add(shardOf('Account', `acct-${i}`, 64));
    expect(seen.size).toBe(64);
    // The type takes part: the same id of two types may live on different shards.
    const differ = Array.from({ length: 100 }, (_, i) => shardOf('A', `x${i}`, 64) !== shardOf('B', `x${i}`, 64)).some(Boolean);
    expect(differ).toBe(true);
  });
});
