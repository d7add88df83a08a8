import { describe, expect, it } from 'vitest';
import { RateLimiter } from '../runtime/rate-limit.ts';

const ids = { aggregateType: 'Vault', aggregateId: 'v1', commandId: 'c1', commandType: 'Deposit' };
const flood = { id: 'flood', roles: [], tenant: 'acme' };
const calm = { id: 'calm', roles: [], tenant: 'other' };

function refusedAfter(limiter: RateLimiter, principal: typeof flood | null, n: number, now: number): number {
  for (let i = 0; i < n; i++) {
    try {
      limiter.admit(principal, ids, now);
    } catch (e) {
      return i;
    }
  }
  return n;
}

describe('RateLimiter', () => {
  it('admits a burst per principal, then refuses with RATE_LIMITED and the wait until the next token', () => {
    const l = RateLimiter.create({ perPrincipal: { perSecond: 10, burst: 5 } })!;
    expect(refusedAfter(l, flood, 100, 0)).toBe(5);
    let err: unknown;
    try { l.admit(flood, ids, 0); } catch (e) { err = e; }
    expect(err).toMatchObject({ code: 'RATE_LIMITED', retryable: true, data: { retryAfterMs: 100, principalId: 'flood', commandId: 'c1' } });
    expect((err as Error).message).toBe('principal "flood" sent commands faster than 10/s (burst 5); retry after 100 ms');
    // Another principal keeps its own bucket.
    expect(refusedAfter(l, calm, 5, 0)).toBe(5);
    // Refilled at the configured rate: 100 ms later, one more.
    expect(refusedAfter(l, flood, 5, 100)).toBe(1);
  });

  it('limits a tenant across its principals, and takes nothing from a bucket when another refuses', () => {
    const l = RateLimiter.create({ perPrincipal: { perSecond: 100 }, perTenant: { perSecond: 3 } })!;
    expect(refusedAfter(l, flood, 10, 0)).toBe(3);
    let err: unknown;
    try { l.admit({ id: 'colleague', roles: [], tenant: 'acme' }, ids, 0); } catch (e) { err = e; }
    expect(err).toMatchObject({ code: 'RATE_LIMITED', data: { tenant: 'acme' } });
    expect(refusedAfter(l, calm, 3, 0)).toBe(3);
  });

  it('says whether a principal\'s next command would be refused, without taking a token', () => {
    const l = RateLimiter.create({ perPrincipal: { perSecond: 10, burst: 2 }, perTenant: { perSecond: 100 } })!;
    expect(l.refusal(flood, 0)).toBeNull();
    expect(l.refusal(flood, 0)).toBeNull();
    expect(refusedAfter(l, flood, 10, 0)).toBe(2);
    const e = l.refusal(flood, 0);
    expect(e).toMatchObject({ code: 'RATE_LIMITED', retryable: true, data: { retryAfterMs: 100, principalId: 'flood' } });
    expect(e!.data.commandId).toBeUndefined();
    expect(l.refusal(calm, 0)).toBeNull();
    expect(l.refusal(flood, 100)).toBeNull();
    expect(refusedAfter(l, flood, 10, 100)).toBe(1);
  });

  it('puts callers without a principal in one shared bucket', () => {
    const l = RateLimiter.create({ perPrincipal: { perSecond: 2 } })!;
    expect(refusedAfter(l, null, 10, 0)).toBe(2);
    expect(() => l.admit(null, ids, 0)).toThrow(/callers without a principal/);
  });

  it('refuses wrong options, naming the fix, and makes no limiter without a limit', () => {
    expect(RateLimiter.create(undefined)).toBeNull();
    expect(RateLimiter.create({})).toBeNull();
    expect(() => RateLimiter.create({ perPrincipal: { perSecond: 0 } })).toThrow(/perPrincipal.perSecond must be a positive number/);
    expect(() => RateLimiter.create({ perTenant: { perSecond: 1, burst: 0 } })).toThrow(/perTenant.burst must be a number >= 1/);
  });
});
