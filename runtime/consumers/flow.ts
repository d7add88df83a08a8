/**
 * Flow control for consumers: retry back-off, a token bucket, and circuit breakers.
 *
 * The breaker is cockatiel's (a well-kept library; we do not write one). A handler wraps its
 * external calls in `breaker.execute(...)`; while the breaker is open those calls throw
 * BrokenCircuitError, which the consumer treats as "delay and try again", never as a failed
 * attempt, so an outage of a downstream service does not fill the dead-letter queue.
 */
import {
  circuitBreaker as cockatielBreaker, ConsecutiveBreaker, handleAll, isBrokenCircuitError, CircuitState, type CircuitBreakerPolicy,
} from 'cockatiel';
import { InvalidOptionError } from '../errors.ts';

export { CircuitState, type CircuitBreakerPolicy };

export interface RetryOptions {
  /** Retries after the first attempt; after the last one the event goes to the dead-letter queue. Default 5. */
  maxRetries?: number;
  /** Delay before the first retry. Default 1,000 ms. */
  initialDelayMs?: number;
  /** Each retry waits `factor` times longer than the one before. Default 2. */
  factor?: number;
  /** Upper bound of a delay. Default 60,000 ms. */
  maxDelayMs?: number;
  /** Random spread of each delay, as a fraction of it: 0.2 waits 80%–120% of the delay. Default 0.2. */
  jitter?: number;
}

export type ResolvedRetry = Required<RetryOptions>;

export const DEFAULT_RETRY: ResolvedRetry = Object.freeze({ maxRetries: 5, initialDelayMs: 1_000, factor: 2, maxDelayMs: 60_000, jitter: 0.2 });

function num(o: Record<string, unknown>, name: string, fallback: number, min: number, max: number, integer: boolean): number {
  const v = o[name] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    throw new InvalidOptionError(`options.retry.${name} must be ${integer ? 'an integer' : 'a number'} between ${min} and ${max}, got ${JSON.stringify(v)}`, { field: `retry.${name}` });
  }
  return v;
}

export function resolveRetry(input: RetryOptions | undefined): ResolvedRetry {
  const o = (input ?? {}) as Record<string, unknown>;
  const initialDelayMs = num(o, 'initialDelayMs', DEFAULT_RETRY.initialDelayMs, 0, 24 * 3_600_000, false);
  return Object.freeze({
    maxRetries: num(o, 'maxRetries', DEFAULT_RETRY.maxRetries, 0, 1_000_000, true),
    initialDelayMs,
    factor: num(o, 'factor', DEFAULT_RETRY.factor, 1, 100, false),
    maxDelayMs: num(o, 'maxDelayMs', Math.max(DEFAULT_RETRY.maxDelayMs, initialDelayMs), initialDelayMs, 24 * 3_600_000, false),
    jitter: num(o, 'jitter', DEFAULT_RETRY.jitter, 0, 1, false),
  });
}

/** Delay before the retry that follows failed attempt number `attempt` (1-based). */
export function backoffDelay(r: ResolvedRetry, attempt: number, random: () => number = Math.random): number {
  const base = Math.min(r.maxDelayMs, r.initialDelayMs * r.factor ** Math.max(0, attempt - 1));
  const spread = r.jitter === 0 ? 1 : 1 + r.jitter * (2 * random() - 1);
  return Math.round(Math.min(r.maxDelayMs, Math.max(0, base * spread)));
}

export interface RateLimit {
  /** Events handed to the handler per second, on average. */
  perSecond: number;
  /** Events that may go at once after a quiet period. Default: perSecond (one second's worth). */
  burst?: number;
}

/**
 * A token bucket: `take(n)` resolves once n tokens were available. cockatiel has no rate
 * limiter (its bulkhead bounds concurrency, which `concurrency` already does), so this is ours.
 * A take larger than the bucket borrows: it goes at once when the bucket is full, and later
 * takes wait until the debt is paid back.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;
  readonly capacity: number;
  private queue: Promise<void> = Promise.resolve();

  constructor(readonly perSecond: number, burst?: number, private readonly now: () => number = Date.now) {
    if (!(perSecond > 0) || !Number.isFinite(perSecond)) throw new InvalidOptionError(`options.rateLimit.perSecond must be a positive number, got ${JSON.stringify(perSecond)}`, { field: 'rateLimit.perSecond' });
    this.capacity = burst ?? Math.max(1, perSecond);
    if (!(this.capacity >= 1) || !Number.isFinite(this.capacity)) throw new InvalidOptionError(`options.rateLimit.burst must be a number >= 1, got ${JSON.stringify(burst)}`, { field: 'rateLimit.burst' });
    this.tokens = this.capacity;
    this.last = this.now();
  }

  private refill(): void {
    const t = this.now();
    this.tokens = Math.min(this.capacity, this.tokens + ((t - this.last) / 1000) * this.perSecond);
    this.last = t;
  }

  /** Milliseconds until `n` tokens could be taken (0 = now). */
  waitFor(n: number): number {
    this.refill();
    const need = Math.min(n, this.capacity) - this.tokens;
    return need <= 0 ? 0 : Math.ceil((need / this.perSecond) * 1000);
  }

  take(n: number): Promise<void> {
    const run = this.queue.then(async () => {
      for (;;) {
        const wait = this.waitFor(n);
        if (wait === 0) break;
        await new Promise((r) => setTimeout(r, wait));
      }
      this.tokens -= n;
    });
    this.queue = run.catch(() => {});
    return run;
  }
}

export interface BreakerOptions {
  /** Consecutive failures that open the breaker. Default 5. */
  consecutiveFailures?: number;
  /** How long the breaker stays open before it lets one trial call through. Default 10,000 ms. */
  halfOpenAfterMs?: number;
}

/**
 * A circuit breaker (cockatiel's `circuitBreaker` with a consecutive-failure policy) for a
 * handler's external calls: `await breaker.execute(() => fetch(...))`.
 */
export function circuitBreaker(options: BreakerOptions = {}): CircuitBreakerPolicy {
  const failures = options.consecutiveFailures ?? 5;
  const halfOpenAfter = options.halfOpenAfterMs ?? 10_000;
  if (!Number.isInteger(failures) || failures < 1) throw new InvalidOptionError(`consecutiveFailures must be an integer >= 1, got ${JSON.stringify(failures)}`, { field: 'consecutiveFailures' });
  if (!(halfOpenAfter >= 0)) throw new InvalidOptionError(`halfOpenAfterMs must be >= 0, got ${JSON.stringify(halfOpenAfter)}`, { field: 'halfOpenAfterMs' });
  return cockatielBreaker(handleAll, { halfOpenAfter, breaker: new ConsecutiveBreaker(failures) });
}

/** True for the error a breaker throws while it is open (or isolated). */
export function isCircuitOpen(e: unknown): boolean {
  return isBrokenCircuitError(e);
}
