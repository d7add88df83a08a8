/**
 * Rate limits on commands at the node's door: a token bucket per principal, and one per tenant
 * when the principal names a tenant. A command takes one token from each bucket that applies;
 * when one is empty it is refused with RATE_LIMITED (retryable) and `data.retryAfterMs`, the
 * time until that bucket holds a token again, and nothing is taken from the others. Callers
 * without a principal share one bucket (`anonymous`).
 *
 * One flooding caller then spends only its own bucket: the commands of others are never queued
 * behind its refused ones, because a refusal happens before a command reaches a worker.
 */
import { InvalidOptionError, RateLimitedError } from './errors.ts';
import type { Principal } from './principal.ts';

/** One bucket's size and refill. */
export interface CommandRateLimit {
  /** Tokens added per second: the sustained rate. */
  perSecond: number;
  /** The bucket's size: how many commands may come at once after a quiet time. Default: `perSecond` (one second's worth). */
  burst?: number;
}

/** `options.rateLimits` of a node. */
export interface RateLimits {
  /** A bucket per principal id (and one shared by callers without a principal). */
  perPrincipal?: CommandRateLimit;
  /** A bucket per tenant, for principals that name one. */
  perTenant?: CommandRateLimit;
}

/** Buckets kept at most; the least recently created are forgotten first (a forgotten bucket starts full). */
const MAX_BUCKETS = 100_000;

class Buckets {
  private readonly map = new Map<string, { tokens: number; at: number }>();
  private readonly burst: number;
  private readonly perMs: number;

  constructor(readonly limit: CommandRateLimit, readonly what: string) {
    this.burst = limit.burst ?? limit.perSecond;
    this.perMs = limit.perSecond / 1000;
  }

  /** 0 when a token is available (not taken yet), else the ms until there is one. */
  wait(key: string, now: number): number {
    const b = this.refill(key, now);
    return b.tokens >= 1 ? 0 : Math.ceil((1 - b.tokens) / this.perMs);
  }

  take(key: string, now: number): void {
    this.refill(key, now).tokens -= 1;
  }

  private refill(key: string, now: number): { tokens: number; at: number } {
    let b = this.map.get(key);
    if (b === undefined) {
      if (this.map.size >= MAX_BUCKETS) this.map.delete(this.map.keys().next().value!);
      b = { tokens: this.burst, at: now };
      this.map.set(key, b);
      return b;
    }
    b.tokens = Math.min(this.burst, b.tokens + (now - b.at) * this.perMs);
    b.at = now;
    return b;
  }
}

export class RateLimiter {
  private readonly principal: Buckets | null;
  private readonly tenant: Buckets | null;

  private constructor(limits: RateLimits) {
    this.principal = limits.perPrincipal === undefined ? null : new Buckets(limits.perPrincipal, 'principal');
    this.tenant = limits.perTenant === undefined ? null : new Buckets(limits.perTenant, 'tenant');
  }

  /** Check `options.rateLimits`; null when it sets no limit. */
  static create(limits: RateLimits | undefined): RateLimiter | null {
    if (limits === undefined) return null;
    if (typeof limits !== 'object' || limits === null) throw new InvalidOptionError('options.rateLimits must be an object: { perPrincipal?: { perSecond, burst? }, perTenant?: { perSecond, burst? } }', { field: 'rateLimits' });
    for (const k of ['perPrincipal', 'perTenant'] as const) {
      const l = limits[k];
      if (l === undefined) continue;
      if (typeof l?.perSecond !== 'number' || !(l.perSecond > 0) || !Number.isFinite(l.perSecond)) {
        throw new InvalidOptionError(`options.rateLimits.${k}.perSecond must be a positive number, got ${JSON.stringify(l?.perSecond)}`, { field: `rateLimits.${k}` });
      }
      if (l.burst !== undefined && (typeof l.burst !== 'number' || !(l.burst >= 1) || !Number.isFinite(l.burst))) {
        throw new InvalidOptionError(`options.rateLimits.${k}.burst must be a number >= 1, got ${JSON.stringify(l.burst)}`, { field: `rateLimits.${k}` });
      }
    }
    return limits.perPrincipal === undefined && limits.perTenant === undefined ? null : new RateLimiter(limits);
  }

  /**
   * RATE_LIMITED when the next command of `principal` would be refused (a bucket that applies
   * holds less than one token), else null; takes nothing. The NATS service asks this once per
   * request, before any command of it is looked at, so that a flood is refused for the cost of
   * a bucket lookup, not of building and refusing each of its commands.
   */
  refusal(principal: Principal | null, now = Date.now()): RateLimitedError | null {
    const id = principal?.id ?? 'anonymous';
    const tenant = principal?.tenant;
    const t = tenant === undefined ? null : this.tenant;
    const waitP = this.principal === null ? 0 : this.principal.wait(id, now);
    const waitT = t === null ? 0 : t.wait(tenant!, now);
    return waitP > 0 || waitT > 0 ? this.limited(principal, waitP, waitT, {}) : null;
  }

  /** Take one command's tokens, or throw RATE_LIMITED naming the bucket and the wait. */
  admit(principal: Principal | null, ids: { aggregateType: string; aggregateId: string; commandId: string; commandType: string }, now = Date.now()): void {
    const id = principal?.id ?? 'anonymous';
    const tenant = principal?.tenant;
    const p = this.principal;
    const t = tenant === undefined ? null : this.tenant;
    const waitP = p === null ? 0 : p.wait(id, now);
    const waitT = t === null ? 0 : t.wait(tenant!, now);
    if (waitP > 0 || waitT > 0) throw this.limited(principal, waitP, waitT, ids);
    p?.take(id, now);
    t?.take(tenant!, now);
  }

  /** The refusal: which bucket, its rate, the wait. Without a stack trace: it is an answer, and a flood makes many. */
  private limited(principal: Principal | null, waitP: number, waitT: number, ids: Record<string, string>): RateLimitedError {
    const tenant = principal?.tenant;
    const byTenant = waitT > waitP;
    const limit = byTenant ? this.tenant!.limit : this.principal!.limit;
    const who = byTenant ? `tenant ${JSON.stringify(tenant)}` : principal === null ? 'callers without a principal' : `principal ${JSON.stringify(principal.id)}`;
    const retryAfterMs = Math.max(waitP, waitT);
    const stackLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    const e = new RateLimitedError(`${who} sent commands faster than ${limit.perSecond}/s (burst ${limit.burst ?? limit.perSecond}); retry after ${retryAfterMs} ms`, {
      ...ids, retryAfterMs, principalId: principal?.id ?? null, ...(byTenant ? { tenant } : {}),
    });
    Error.stackTraceLimit = stackLimit;
    return e;
  }
}
