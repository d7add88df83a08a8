/**
 * The node's recent past, one sample per second, for the dashboard's live charts and
 * `troupe stats`: a ring buffer filled from the metrics the node keeps anyway (ops/metrics.ts).
 *
 * Each tick reads the main thread's command counters and latency histogram (plain numbers, no
 * copy per command) and asks each worker for its `stats` (one task per worker per second),
 * then stores the differences since the previous tick:
 *
 *   t            end of the second (ms since the epoch)
 *   commands     commands answered in that second (ok + failed)
 *   failed       of which failed (rejections included)
 *   events       events JetStream stored
 *   p50, p99     command latency quantiles of that second, in ms (null: no command)
 *   resident     resident actors at the end of the second
 *   passivations actors passivated in that second
 *
 * The quantiles are estimated from the histogram's bucket counts (linear inside a bucket), as
 * Prometheus' histogram_quantile does, so they agree with a Grafana panel over /metrics.
 */
import { LATENCY_BOUNDS_S, type PlainHistogram } from '../ops/metrics.ts';
import type { WorkerPool } from './pool.ts';
import type { WorkerStats } from './worker.ts';

export interface SeriesSample {
  t: number;
  commands: number;
  failed: number;
  events: number;
  p50: number | null;
  p99: number | null;
  resident: number;
  passivations: number;
}

/** Totals at one instant, the input of a tick. */
interface Totals {
  commands: number;
  failed: number;
  events: number;
  passivations: number;
  resident: number;
  latency: number[];
}

/** Samples kept: ten minutes. */
export const SERIES_CAPACITY = 600;

/** The q-quantile (0..1) of observations given per bucket, in the histogram's unit; null when there are none. */
export function quantileOf(counts: ArrayLike<number>, bounds: readonly number[], q: number): number | null {
  let total = 0;
  for (let i = 0; i < counts.length; i++) total += counts[i]!;
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    const n = counts[i]!;
    if (n > 0 && seen + n >= rank) {
      if (i >= bounds.length) return bounds[bounds.length - 1]!;
      const lo = i === 0 ? 0 : bounds[i - 1]!;
      return lo + (bounds[i]! - lo) * Math.min(1, Math.max(0, (rank - seen) / n));
    }
    seen += n;
  }
  return bounds[bounds.length - 1]!;
}

export class NodeSeries {
  private readonly samples: (SeriesSample | undefined)[] = new Array<SeriesSample | undefined>(SERIES_CAPACITY);
  private next = 0;
  private size = 0;
  private last: Totals | null = null;
  private timer: NodeJS.Timeout | null = null;
  private busy = false;
  /** Passivations of workers that died, so the total never goes down. */
  private readonly passivatedBy = new Map<number, number>();

  constructor(private readonly pool: WorkerPool, private readonly intervalMs = 1_000) {}

  start(): void {
    if (this.timer !== null) return;
    void this.tick();
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** Samples oldest first; `sinceMs` keeps only those newer than it. */
  list(sinceMs = 0): SeriesSample[] {
    const out: SeriesSample[] = [];
    for (let i = 0; i < this.size; i++) {
      const s = this.samples[(this.next - this.size + i + SERIES_CAPACITY) % SERIES_CAPACITY]!;
      if (s.t > sinceMs) out.push(s);
    }
    return out;
  }

  /** The last `seconds` summed up: rates per second and the latency quantiles over all of them. */
  summary(seconds = 10): { seconds: number; commandsPerSecond: number; failedPerSecond: number; eventsPerSecond: number; p50Ms: number | null; p99Ms: number | null; resident: number; passivations: number } {
    const recent = this.list(Date.now() - seconds * 1000 - this.intervalMs / 2);
    const n = Math.max(1, recent.length);
    const sum = (f: (s: SeriesSample) => number) => recent.reduce((a, s) => a + f(s), 0);
    const weighted = (f: (s: SeriesSample) => number | null): number | null => {
      let w = 0;
      let v = 0;
      for (const s of recent) {
        const x = f(s);
        if (x === null || s.commands === 0) continue;
        w += s.commands;
        v += x * s.commands;
      }
      return w === 0 ? null : v / w;
    };
    return {
      seconds: recent.length,
      commandsPerSecond: sum((s) => s.commands) / n,
      failedPerSecond: sum((s) => s.failed) / n,
      eventsPerSecond: sum((s) => s.events) / n,
      p50Ms: weighted((s) => s.p50),
      p99Ms: recent.reduce<number | null>((a, s) => (s.p99 === null ? a : Math.max(a ?? 0, s.p99)), null),
      resident: recent.at(-1)?.resident ?? 0,
      passivations: sum((s) => s.passivations),
    };
  }

  private async totals(): Promise<Totals> {
    const m = this.pool.metrics;
    let failed = 0;
    for (const k in m.failures) failed += m.failures[k]!;
    const stats = await Promise.all(this.pool.threadIds.map((id, slot) => id === 0
      ? Promise.resolve(null)
      : (this.pool.runOn(slot, { kind: 'stats' }) as Promise<WorkerStats>).catch(() => null)));
    let events = m.retired.eventsAppended;
    let resident = 0;
    for (const s of stats) {
      if (s === null) continue;
      this.passivatedBy.set(s.threadId, s.passivations);
      m.lastByThread.set(s.threadId, s.metrics);
      resident += s.residentActors;
    }
    for (const snap of m.lastByThread.values()) events += snap.eventsAppended;
    let passivations = 0;
    for (const n of this.passivatedBy.values()) passivations += n;
    return { commands: m.commandsOk + failed, failed, events, passivations, resident, latency: Array.from((m.commandSeconds as PlainHistogram).counts) };
  }

  private async tick(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const now = await this.totals();
      const prev = this.last;
      this.last = now;
      if (prev === null) return;
      const delta = now.latency.map((n, i) => n - (prev.latency[i] ?? 0));
      const p50 = quantileOf(delta, LATENCY_BOUNDS_S, 0.5);
      const p99 = quantileOf(delta, LATENCY_BOUNDS_S, 0.99);
      this.push({
        t: Date.now(),
        commands: Math.max(0, now.commands - prev.commands),
        failed: Math.max(0, now.failed - prev.failed),
        events: Math.max(0, now.events - prev.events),
        p50: p50 === null ? null : round(p50 * 1000),
        p99: p99 === null ? null : round(p99 * 1000),
        resident: now.resident,
        passivations: Math.max(0, now.passivations - prev.passivations),
      });
    } catch {
      // A tick that fails (the pool closing) leaves a gap; the next one measures from the last good totals.
    } finally {
      this.busy = false;
    }
  }

  private push(s: SeriesSample): void {
    this.samples[this.next] = s;
    this.next = (this.next + 1) % SERIES_CAPACITY;
    this.size = Math.min(SERIES_CAPACITY, this.size + 1);
  }
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
