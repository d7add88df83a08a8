import { describe, expect, it } from 'vitest';
import { minRetryWindowMs, resolveRetry } from '../../runtime/remote/client.ts';
import { DEFAULT_LEASE_TTL_MS, DEFAULT_SETTLE_MS } from '../../runtime/options.ts';
import { isTroupeError } from '../../runtime/errors.ts';

describe('TroupeClient retry defaults', () => {
  it('keeps retrying a command for longer than a default failover takes (lease TTL + settle + 5 s of catch-up)', () => {
    const r = resolveRetry(undefined)!;
    expect(minRetryWindowMs(r)).toBeGreaterThanOrEqual(DEFAULT_LEASE_TTL_MS + DEFAULT_SETTLE_MS + 5_000);
    expect(r.totalMs).toBe(30_000);
  });

  it('gives the window of a custom retry, bounded by its totalMs', () => {
    expect(minRetryWindowMs(resolveRetry({ attempts: 3, baseMs: 100, maxMs: 1_000 })!)).toBe(50 + 100);
    expect(minRetryWindowMs(resolveRetry({ attempts: 100, totalMs: 5_000 })!)).toBe(5_000);
    expect(resolveRetry(false)).toBeNull();
  });

  it('refuses a retry option that is not a number with INVALID_OPTION naming the field', () => {
    try {
      resolveRetry({ attempts: 0 });
      expect.unreachable();
    } catch (e) {
      expect(isTroupeError(e, 'INVALID_OPTION')).toBe(true);
      expect((e as Error).message).toContain('retry.attempts');
    }
  });
});
