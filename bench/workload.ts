/**
 * The ledger workload (defined in docs/performance.md): deterministic command generation, a
 * closed-loop driver with latency percentiles, and a resource sampler (RSS, CPU) for this
 * process and for child processes such as nats-server.
 */
import { readFileSync } from 'node:fs';

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------

/** mulberry32 exactly as in the workload's definition: returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `accountId(7)` → `acct-00007`. */
export function accountId(i: number): string {
  return `acct-${String(i).padStart(5, '0')}`;
}

export type CommandType = 'Deposit' | 'Withdraw';

export interface LedgerCommand {
  readonly accountIndex: number;
  readonly type: CommandType;
  readonly amount: number;
}

/**
 * The phase-2 commands: per command draw r1 (account), r2 (type), r3 (amount), in that order.
 */
export function generateCommands(accounts: number, count: number, seed = 42): LedgerCommand[] {
  const rand = mulberry32(seed);
  const out: LedgerCommand[] = new Array<LedgerCommand>(count);
  for (let i = 0; i < count; i++) {
    const r1 = rand();
    const r2 = rand();
    const r3 = rand();
    const deposit = r2 < 0.7;
    out[i] = {
      accountIndex: Math.floor(r1 * accounts),
      type: deposit ? 'Deposit' : 'Withdraw',
      amount: deposit ? 1 + Math.floor(r3 * 100) : 1 + Math.floor(r3 * 150),
    };
  }
  return out;
}

export interface ExpectedOutcome {
  readonly accepted: number;
  readonly rejected: number;
  /** AccountOpened + Deposited + Withdrawn. */
  readonly events: number;
  readonly deposited: number;
  readonly withdrawn: number;
  readonly balances: Float64Array;
}

/**
 * The outcome of applying the commands one after another. Any correct runtime that keeps each
 * account's commands in submission order (a closed loop pulls them in index order) must reach
 * exactly this, so it doubles as a cross-check for verification.
 */
export function expectedOutcome(accounts: number, commands: readonly LedgerCommand[]): ExpectedOutcome {
  const balances = new Float64Array(accounts);
  let accepted = 0;
  let deposited = 0;
  let withdrawn = 0;
  for (const c of commands) {
    const b = balances[c.accountIndex] ?? 0;
    if (c.type === 'Deposit') {
      balances[c.accountIndex] = b + c.amount;
      deposited += c.amount;
      accepted++;
    } else if (b >= c.amount) {
      balances[c.accountIndex] = b - c.amount;
      withdrawn += c.amount;
      accepted++;
    }
  }
  return {
    accepted,
    rejected: commands.length - accepted,
    events: accounts + accepted,
    deposited,
    withdrawn,
    balances,
  };
}

// ---------------------------------------------------------------------------------------------
// Latency statistics
// ---------------------------------------------------------------------------------------------

export interface LatencySummary {
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly p999Ms: number;
  readonly maxMs: number;
}

/** Nearest-rank percentile of an ascending-sorted array; NaN when empty. */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length) - 1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank))] ?? Number.NaN;
}

/** Percentiles of the first `n` entries of `samples` (copied, then sorted numerically). */
export function summarizeLatencies(samples: Float64Array, n = samples.length): LatencySummary {
  const sorted = samples.slice(0, n).sort();
  return {
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    p999Ms: percentile(sorted, 99.9),
    maxMs: sorted.length > 0 ? (sorted[sorted.length - 1] ?? Number.NaN) : Number.NaN,
  };
}

// ---------------------------------------------------------------------------------------------
// Closed-loop driver
// ---------------------------------------------------------------------------------------------

export type Outcome = 'accepted' | 'rejected';

export interface ClosedLoopResult extends LatencySummary {
  readonly count: number;
  readonly concurrency: number;
  readonly durationMs: number;
  readonly accepted: number;
  readonly rejected: number;
  /** exec() threw or returned something other than an Outcome. */
  readonly errors: number;
  /** The first error thrown, to report why a run failed. */
  readonly firstError?: unknown;
  /** Completed commands (accepted + rejected + errors) per second. */
  readonly cmdsPerSec: number;
}

/**
 * C async callers pull from one shared index; each awaits `exec(item)` before taking the next.
 * Per-item latency (ms) goes into a preallocated Float64Array; errors are counted, not thrown.
 */
export async function runClosedLoop<T>(
  items: readonly T[],
  concurrency: number,
  exec: (item: T) => Promise<Outcome>,
): Promise<ClosedLoopResult> {
  const n = items.length;
  const latencies = new Float64Array(n);
  let next = 0;
  let accepted = 0;
  let rejected = 0;
  let errors = 0;
  let firstError: unknown;

  const caller = async (): Promise<void> => {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      const item = items[i] as T;
      const t0 = process.hrtime.bigint();
      try {
        const outcome = await exec(item);
        if (outcome === 'accepted') accepted++;
        else if (outcome === 'rejected') rejected++;
        else {
          errors++;
          firstError ??= new Error(`exec returned ${String(outcome)}`);
        }
      } catch (err) {
        errors++;
        firstError ??= err;
      }
      latencies[i] = Number(process.hrtime.bigint() - t0) / 1e6;
    }
  };

  const callers = Math.max(1, Math.min(concurrency, n));
  const start = process.hrtime.bigint();
  const running: Promise<void>[] = [];
  for (let c = 0; c < callers; c++) running.push(caller());
  await Promise.all(running);
  const durationMs = Number(process.hrtime.bigint() - start) / 1e6;

  return {
    count: n,
    concurrency,
    durationMs,
    accepted,
    rejected,
    errors,
    ...(firstError === undefined ? {} : { firstError }),
    cmdsPerSec: durationMs > 0 ? (n / durationMs) * 1000 : 0,
    ...summarizeLatencies(latencies),
  };
}

// ---------------------------------------------------------------------------------------------
// Resource sampling
// ---------------------------------------------------------------------------------------------

/** Linux USER_HZ; 100 on every mainstream kernel configuration. */
const CLK_TCK = 100;

/** utime + stime of a process in seconds, from /proc/<pid>/stat; undefined if unreadable. */
export function procCpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
    return (utime + stime) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/** VmRSS and VmHWM (peak) of a process in MB, from /proc/<pid>/status; undefined if unreadable. */
export function procMemoryMb(pid: number): { rssMb: number; hwmMb: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string): number => {
      const m = new RegExp(`^${key}:\\s+(\\d+)\\s+kB`, 'm').exec(status);
      return m?.[1] === undefined ? 0 : Number(m[1]);
    };
    return { rssMb: kb('VmRSS') / 1024, hwmMb: kb('VmHWM') / 1024 };
  } catch {
    return undefined;
  }
}

/** Resident memory of a process split by kind (MB): anonymous (heaps, malloc), file-backed (mapped files such as LMDB), shared. */
export function procRssBreakdown(pid: number): { anonMb: number; fileMb: number; shmemMb: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string): number => {
      const m = new RegExp(`^${key}:\\s+(\\d+)\\s+kB`, 'm').exec(status);
      return m?.[1] === undefined ? 0 : Number(m[1]);
    };
    return { anonMb: kb('RssAnon') / 1024, fileMb: kb('RssFile') / 1024, shmemMb: kb('RssShmem') / 1024 };
  } catch {
    return undefined;
  }
}

export interface ChildResources {
  readonly pid: number;
  readonly label: string;
  /** Highest VmRSS seen while sampling. */
  readonly peakRssMb: number;
  /** VmHWM at stop: the process's lifetime peak, which may predate the sampling window. */
  readonly hwmMb: number;
  /** CPU seconds used between start() and stop(). */
  readonly cpuSeconds: number;
}

export interface ResourceReport {
  readonly durationMs: number;
  /** Peak RSS of this process (all its threads) seen while sampling. */
  readonly peakRssMb: number;
  /** user + system CPU seconds of this process (all its threads) between start() and stop(). */
  readonly cpuSeconds: number;
  readonly children: readonly ChildResources[];
  /** This process plus all children. */
  readonly totalCpuSeconds: number;
}

interface ChildState {
  pid: number;
  label: string;
  cpuStart: number;
  peakRssMb: number;
}

/**
 * Samples RSS every `intervalMs` (this process and optional child PIDs) and measures CPU time
 * between start() and stop(). The timer is unref'd and costs one /proc read per child per tick.
 */
export class ResourceSampler {
  private readonly intervalMs: number;
  private readonly children: ChildState[] = [];
  private timer: NodeJS.Timeout | undefined;
  private cpuStart: NodeJS.CpuUsage | undefined;
  private startedAt = 0;
  private peakRss = 0;

  constructor(opts: { intervalMs?: number; children?: ReadonlyArray<{ pid: number; label?: string }> } = {}) {
    this.intervalMs = opts.intervalMs ?? 100;
    for (const c of opts.children ?? []) this.addChild(c.pid, c.label);
  }

  /** Track another process (e.g. nats-server); may be called before or after start(). */
  addChild(pid: number, label = `pid ${pid}`): void {
    this.children.push({ pid, label, cpuStart: procCpuSeconds(pid) ?? 0, peakRssMb: 0 });
  }

  start(): this {
    this.startedAt = performance.now();
    this.cpuStart = process.cpuUsage();
    this.peakRss = 0;
    for (const c of this.children) {
      c.cpuStart = procCpuSeconds(c.pid) ?? 0;
      c.peakRssMb = 0;
    }
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
    return this;
  }

  private sample(): void {
    const rss = process.memoryUsage.rss();
    if (rss > this.peakRss) this.peakRss = rss;
    for (const c of this.children) {
      const mem = procMemoryMb(c.pid);
      if (mem !== undefined && mem.rssMb > c.peakRssMb) c.peakRssMb = mem.rssMb;
    }
  }

  stop(): ResourceReport {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    this.sample();
    const cpu = process.cpuUsage(this.cpuStart);
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    const children: ChildResources[] = this.children.map((c) => {
      const end = procCpuSeconds(c.pid);
      const mem = procMemoryMb(c.pid);
      return {
        pid: c.pid,
        label: c.label,
        peakRssMb: c.peakRssMb,
        hwmMb: mem?.hwmMb ?? c.peakRssMb,
        cpuSeconds: end === undefined ? 0 : end - c.cpuStart,
      };
    });
    return {
      durationMs: performance.now() - this.startedAt,
      peakRssMb: this.peakRss / (1024 * 1024),
      cpuSeconds,
      children,
      totalCpuSeconds: cpuSeconds + children.reduce((s, c) => s + c.cpuSeconds, 0),
    };
  }
}
