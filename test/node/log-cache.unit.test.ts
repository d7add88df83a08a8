// The messages a shard's catch-up read, kept for the activations that follow it (runtime/node/log-cache.ts).
import { describe, expect, it, vi } from 'vitest';
import { RecentLog } from '../../runtime/node/log-cache.ts';

const bytes = (n: number, fill: number) => new Uint8Array(n).fill(fill);

describe('RecentLog', () => {
  it('keeps a copy of each message by position, not a view of the buffer it was read from', () => {
    const log = new RecentLog(1_000, 1_000);
    const buffer = bytes(20, 7);
    log.add(5, buffer.subarray(0, 10));
    buffer.fill(9);
    expect(log.get(5)).toEqual(bytes(10, 7));
    expect(log.get(6)).toBeUndefined();
  });

  it('keeps the newest messages within its byte bound', () => {
    const log = new RecentLog(25, 1_000);
    for (let p = 1; p <= 5; p++) log.add(p, bytes(10, p));
    expect([1, 2, 3, 4, 5].map((p) => log.get(p) !== undefined)).toEqual([false, false, false, true, true]);
    log.add(6, bytes(100, 6));
    expect(log.get(6)).toBeUndefined();
    expect(log.size).toBe(2);
  });

  it('forgets every message once the hold after the catch-up ends, and on clear', () => {
    vi.useFakeTimers();
    try {
      const log = new RecentLog(1_000, 500);
      log.add(1, bytes(10, 1));
      log.hold();
      vi.advanceTimersByTime(499);
      expect(log.get(1)).toBeDefined();
      vi.advanceTimersByTime(1);
      expect(log.get(1)).toBeUndefined();
      log.add(2, bytes(10, 2));
      log.clear();
      expect(log.size).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });
});
