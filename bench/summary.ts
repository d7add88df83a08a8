/**
 * What the rows of one run mean: ratios against the baselines of the same run, and Troupe's
 * performance goals with met / not met.
 */
import type { ActivationRow } from './activation.ts';
import type { BenchRow } from './report.ts';

export interface RatioRow {
  readonly name: string;
  /** null when one side was not measured. */
  readonly value: number | null;
  readonly detail: string;
}

export interface GoalRow {
  readonly measure: string;
  readonly goal: string;
  readonly measured: string;
  /** null: not measured in this run. */
  readonly met: boolean | null;
}

export function findRow(rows: readonly BenchRow[], variant: string, concurrency?: number): BenchRow | undefined {
  return rows.find((r) => r.variant === variant && (concurrency === undefined || r.concurrency === concurrency));
}

function int(n: number | null | undefined): string {
  return n === null || n === undefined || !Number.isFinite(n) ? '–' : Math.round(n).toLocaleString('en-US');
}

function ms(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  return n >= 100 ? `${n.toFixed(0)} ms` : n >= 10 ? `${n.toFixed(1)} ms` : `${n.toFixed(2)} ms`;
}

function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  if (a === null || a === undefined || b === null || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return null;
  return a / b;
}

/** Throughput of a row: cmds/s, or msgs/s for the ceiling rows. */
export function rate(r: BenchRow | undefined): number | null {
  if (r === undefined) return null;
  return r.cmdsPerSec ?? r.eventsPerSec ?? null;
}

export function computeRatios(rows: readonly BenchRow[]): RatioRow[] {
  const out: RatioRow[] = [];
  const add = (name: string, a: BenchRow | undefined, b: BenchRow | undefined, pick: (r: BenchRow) => number | null, unit: string, fmt: (n: number | null) => string = int): void => {
    if (a === undefined && b === undefined) return;
    const va = a === undefined ? null : pick(a);
    const vb = b === undefined ? null : pick(b);
    out.push({ name, value: ratio(va, vb), detail: `${fmt(va)} / ${fmt(vb)} ${unit}`.trim() });
  };
  const ceiling = findRow(rows, 'ceiling');
  const ip4096 = findRow(rows, 'in-process', 4096);
  const ip64 = findRow(rows, 'in-process', 64);
  const plain64 = findRow(rows, 'plain', 64);
  const plain4096 = findRow(rows, 'plain', 4096);
  const remote4096 = findRow(rows, 'remote', 4096);
  const cmds = (r: BenchRow) => r.cmdsPerSec;
  const p99 = (r: BenchRow) => r.p99Ms;
  add('Troupe in-process C=4096 / ceiling', ip4096, ceiling, rate, 'cmds/s vs msgs/s');
  add('Troupe in-process C=4096 events/s / ceiling', ip4096, ceiling, (r) => r.eventsPerSec, 'events/s vs msgs/s');
  add('Troupe remote C=4096 / ceiling', remote4096, ceiling, rate, 'cmds/s vs msgs/s');
  add('Troupe in-process C=64 / plain C=64', ip64, plain64, cmds, 'cmds/s');
  add('Troupe in-process C=64 p99 / plain C=64 p99', ip64, plain64, p99, '', (n) => ms(n));
  add('Troupe in-process C=4096 / plain C=4096', ip4096, plain4096, cmds, 'cmds/s');
  add('Troupe in-process C=4096 p99 / plain C=4096 p99', ip4096, plain4096, p99, '', (n) => ms(n));
  add('Troupe remote C=4096 / in-process C=4096', remote4096, ip4096, cmds, 'cmds/s');
  // The node's own CPU per command, apart from the client process that shares the machine in
  // the remote run (in-process: the whole process, which also drives the commands).
  if (remote4096?.nodeCpuUsPerCmd != null) {
    const us = (n: number | null | undefined) => (n === null || n === undefined || !Number.isFinite(n) ? '–' : n.toFixed(1));
    add('Troupe node CPU/cmd remote C=4096 / in-process C=4096', remote4096, ip4096, (r) => r.nodeCpuUsPerCmd ?? null,
      `µs/cmd; client ${us(remote4096.clientCpuUsPerCmd)}`, us);
  }
  add('workers 1 / workers 2 (in-process C=4096)', findRow(rows, 'workers-1'), findRow(rows, 'workers-2'), cmds, 'cmds/s');
  for (const [v, label] of [['sync-always', 'sync_interval: always'], ['r3', 'R3 cluster']] as const) {
    const t = findRow(rows, v);
    const c = findRow(rows, `ceiling-${v}`);
    add(`${label}: Troupe / Troupe default (in-process C=4096)`, t, ip4096, cmds, 'cmds/s');
    add(`${label}: ceiling / ceiling default`, c, ceiling, rate, 'msgs/s');
    add(`${label}: Troupe / its ceiling`, t, c, rate, 'cmds/s vs msgs/s');
  }
  // Many nodes: 3 nodes on an R3 cluster against one node on one server (remote both), and
  // against one node on the same kind of cluster (in-process).
  const cluster = findRow(rows, 'cluster');
  if (cluster !== undefined) {
    const c = cluster.concurrency ?? undefined;
    const remote = findRow(rows, 'remote', c);
    const r3 = findRow(rows, 'r3');
    if (remote !== undefined) add(`cluster (3 nodes, R3) C=${int(c)} / remote (1 node, R1) C=${int(c)}`, cluster, remote, cmds, 'cmds/s');
    if (r3 !== undefined) add(`cluster (3 nodes, R3) C=${int(c)} / r3 (1 node, in-process)`, cluster, r3, cmds, 'cmds/s');
  }
  return out;
}

export interface GoalInputs {
  readonly rows: readonly BenchRow[];
  readonly activation: readonly ActivationRow[];
  readonly quick: boolean;
  /** maxResidentActors per worker used for the largest scale run. */
  readonly maxResidentActors?: number;
}

export function computeGoals(inp: GoalInputs): GoalRow[] {
  const { rows, activation } = inp;
  const goals: GoalRow[] = [];
  const ceiling = findRow(rows, 'ceiling');
  const ip4096 = findRow(rows, 'in-process', 4096);
  const ip64 = findRow(rows, 'in-process', 64);
  const plain64 = findRow(rows, 'plain', 64);
  const remote4096 = findRow(rows, 'remote', 4096);
  const when = <T>(x: T | undefined, f: (x: T) => boolean): boolean | null => (x === undefined ? null : f(x));

  goals.push({
    measure: 'ledger in-process, C = 4096: throughput',
    goal: '≥ 150,000 cmds/s, verification passing',
    measured: ip4096 === undefined ? 'not measured' : `${int(ip4096.cmdsPerSec)} cmds/s, verify ${ip4096.verifyOk ? 'ok' : 'FAILED'}`,
    met: when(ip4096, (r) => (r.cmdsPerSec ?? 0) >= 150_000 && r.verifyOk === true),
  });
  const vsCeiling = ratio(rate(ip4096), rate(ceiling));
  goals.push({
    measure: 'ledger in-process, C = 4096: against the ceiling',
    goal: '≥ 0.8× the per-message ceiling of the same run',
    measured: vsCeiling === null ? 'not measured' : `${vsCeiling.toFixed(2)}× (${int(rate(ip4096))} cmds/s vs ${int(rate(ceiling))} msgs/s)`,
    met: vsCeiling === null ? null : vsCeiling >= 0.8,
  });
  goals.push({
    measure: 'ledger in-process, C = 4096: latency',
    goal: 'p99 < 50 ms',
    measured: ip4096 === undefined ? 'not measured' : `p99 ${ms(ip4096.p99Ms)}`,
    met: when(ip4096, (r) => (r.p99Ms ?? Infinity) < 50),
  });
  const vsPlain = ratio(ip64?.cmdsPerSec, plain64?.cmdsPerSec);
  goals.push({
    measure: 'ledger in-process, C = 64: throughput',
    goal: '≥ 1.0× the plain way (same run)',
    measured: vsPlain === null ? 'not measured' : `${vsPlain.toFixed(2)}× (${int(ip64?.cmdsPerSec)} vs ${int(plain64?.cmdsPerSec)} cmds/s)`,
    met: vsPlain === null ? null : vsPlain >= 1.0,
  });
  goals.push({
    measure: 'ledger in-process, C = 64: latency',
    goal: 'p99 no worse than the plain way',
    measured: ip64 === undefined || plain64 === undefined ? 'not measured' : `p99 ${ms(ip64.p99Ms)} vs ${ms(plain64.p99Ms)}`,
    met: ip64 === undefined || plain64 === undefined ? null : (ip64.p99Ms ?? Infinity) <= (plain64.p99Ms ?? 0),
  });
  goals.push({
    measure: 'ledger remote, C = 4096',
    goal: '≥ 60,000 cmds/s',
    measured: remote4096 === undefined ? 'not measured' : `${int(remote4096.cmdsPerSec)} cmds/s, verify ${remote4096.verifyOk ? 'ok' : 'FAILED'}`,
    met: when(remote4096, (r) => (r.cmdsPerSec ?? 0) >= 60_000 && r.verifyOk === true),
  });

  const scale = rows.filter((r) => r.variant.startsWith('scale-'));
  const s100k = scale.find((r) => r.accounts === 100_000);
  goals.push({
    measure: 'memory, 100k accounts',
    goal: 'peak RSS < 400 MB',
    measured: s100k === undefined ? 'not measured' : `${int(s100k.peakRssMb)} MB (whole process, phases 1 and 2)`,
    met: when(s100k, (r) => (r.peakRssMb ?? Infinity) < 400 && r.verifyOk === true),
  });
  const s1m = scale.find((r) => r.accounts === 1_000_000);
  // The node passivates by a periodic sweep (once a second at most), down to 90% of the bound:
  // between sweeps the actors touched since the last one may stand above it. 10% slack.
  const bound = inp.maxResidentActors !== undefined && s1m?.workers != null ? Math.round(1.1 * inp.maxResidentActors * s1m.workers) : undefined;
  goals.push({
    measure: 'memory, 1M accounts touched',
    goal: `bounded: resident actors ≤ 1.1 × workers × maxResidentActors${bound === undefined ? '' : ` (${int(bound)}; passivation runs on a periodic sweep)`} and peak RSS ≤ 2× the 100k run's`,
    measured: s1m === undefined ? 'not measured'
      : `${int(s1m.peakRssMb)} MB peak, ${int(s1m.residentActors)} resident at the end${s100k === undefined ? '' : ` (100k run: ${int(s100k.peakRssMb)} MB)`}`,
    met: s1m === undefined || s100k === undefined ? null
      : s1m.verifyOk === true && (bound === undefined || (s1m.residentActors ?? Infinity) <= bound) && (s1m.peakRssMb ?? Infinity) <= 2 * (s100k.peakRssMb ?? 0),
  });

  const a10 = activation.find((a) => a.snapshot && a.events === 10);
  const aMax = activation.filter((a) => a.snapshot).sort((x, y) => y.events - x.events)[0];
  const big = aMax !== undefined && aMax.events >= 100_000 ? aMax : undefined;
  goals.push({
    measure: 'activation with a snapshot',
    goal: '100,000 events about as fast as 10: ≤ max(2×, +5 ms) of the 10-event time',
    measured: a10 === undefined || big === undefined ? 'not measured'
      : `${ms(big.ms)} (100,000 events) vs ${ms(a10.ms)} (10 events)`,
    met: a10 === undefined || big === undefined ? null : big.stateOk && a10.stateOk && big.ms <= Math.max(2 * a10.ms, a10.ms + 5),
  });
  return goals;
}
