/**
 * Benchmark reporting: result rows, machine info, a terminal table, JSON, RESULTS.md, an SVG
 * chart, and a progress indicator on stderr.
 */
import { execFileSync } from 'node:child_process';
import { cpus, totalmem, platform, release } from 'node:os';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { natsServerBin } from './nats.ts';
import type { ActivationRow } from './activation.ts';
import type { GoalRow, RatioRow } from './summary.ts';
import type { ClusterReport, TimelineReport } from './timeline.ts';

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/** Troupe variants plus the baselines; other strings are allowed for extra experiments. */
export type Variant =
  | 'in-process'
  | 'remote'
  | 'r3'
  | 'sync-always'
  | 'ceiling'
  | 'plain'
  | (string & {});

/** Variants that are not Troupe (drawn in a different colour). */
export const BASELINE_VARIANTS: ReadonlySet<string> = new Set(['ceiling', 'plain']);

/** The plain baseline and every ceiling (`ceiling`, `ceiling-r3`, `ceiling-sync-always`). */
export function isBaseline(variant: string): boolean {
  return BASELINE_VARIANTS.has(variant) || variant.startsWith('ceiling');
}

export interface BenchRow {
  readonly workload: string;
  readonly variant: Variant;
  readonly concurrency: number | null;
  readonly accounts: number | null;
  /** Phase-2 commands per second; null where there are no commands (the ceiling). */
  readonly cmdsPerSec: number | null;
  /** Events (or, for the ceiling, messages) stored per second. */
  readonly eventsPerSec: number | null;
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly p999Ms: number | null;
  readonly peakRssMb: number | null;
  /** CPU seconds of the whole measured phase (client process + nats-server when known). */
  readonly cpuSeconds: number | null;
  readonly jetstreamMessages: number | null;
  readonly verifyOk: boolean | null;
  readonly phase1PerSec?: number | null;
  readonly serverCpuSeconds?: number | null;
  /** CPU microseconds per phase-2 command (per message for the ceiling), all measured processes. */
  readonly cpuUsPerCmd?: number | null;
  /**
   * CPU microseconds per phase-2 command of the Troupe node process alone: in-process, the
   * process that drives and serves the commands (all its threads); remote, the node process,
   * without its client process and nats-server.
   */
  readonly nodeCpuUsPerCmd?: number | null;
  /** Remote variants: CPU microseconds per phase-2 command of the client process. */
  readonly clientCpuUsPerCmd?: number | null;
  /** When the variant ran in several rounds: each round's numbers (the row shows the median round). */
  readonly rounds?: readonly Pick<BenchRow, 'cmdsPerSec' | 'eventsPerSec' | 'p50Ms' | 'p99Ms' | 'p999Ms' | 'peakRssMb' | 'verifyOk'>[];
  /** Worker threads of the Troupe node, where it applies. */
  readonly workers?: number | null;
  /** Actors in memory at the end of phase 2 (all workers). */
  readonly residentActors?: number | null;
  readonly notes?: string;
}

export interface MicroRow {
  /** The race this alternative runs in, e.g. `codec: encode a message of 100 commits`. */
  readonly group?: string;
  readonly name: string;
  /** Items per second (median of the samples), in `unit`. */
  readonly opsPerSec: number;
  readonly unit?: string;
  readonly samples?: number;
  /** Relative margin of error of the throughput samples, in percent. */
  readonly rmePct?: number;
  /** opsPerSec / the best of its group. */
  readonly relative?: number | null;
  readonly notes?: string;
}

export interface MachineInfo {
  readonly cpuModel: string;
  readonly cores: number;
  readonly memoryGb: number;
  readonly os: string;
  readonly node: string;
  readonly natsServer: string;
}

export interface BenchReport {
  readonly machine: MachineInfo;
  readonly rows: readonly BenchRow[];
  readonly micro?: readonly MicroRow[];
  /** ISO timestamp; defaults to now when written. */
  readonly date?: string;
  /** `full` or `quick`, and the command line that produced the report. */
  readonly mode?: string;
  readonly command?: string;
  /** Sizes and settings of the run. */
  readonly config?: Readonly<Record<string, unknown>>;
  readonly activation?: readonly ActivationRow[];
  /** The cluster step's settings and timelines (its steady rows are in `rows`). */
  readonly cluster?: ClusterReport;
  readonly ratios?: readonly RatioRow[];
  readonly goals?: readonly GoalRow[];
  /** Steps that failed or could not be measured, with why. */
  readonly failures?: readonly string[];
  readonly durationSec?: number;
  /** Set when the report was rendered again from a saved JSON (`--from-json`): when, and from what. */
  readonly rerendered?: string;
}

// ---------------------------------------------------------------------------------------------
// Machine info
// ---------------------------------------------------------------------------------------------

/** `<bin> --version` → `v2.10.27`; `unknown` if it cannot be run. */
function natsVersionOf(bin: string): string {
  try {
    const out = execFileSync(bin, ['--version'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
    return /v\d+\.\d+\.\d+\S*/.exec(out)?.[0] ?? out.trim();
  } catch {
    return 'unknown';
  }
}

/** CPU model and count, memory, OS, Node version, and the version of the nats-server binary used. */
export function machineInfo(natsBin: string = natsServerBin()): MachineInfo {
  const list = cpus();
  return {
    cpuModel: list[0]?.model.trim() ?? 'unknown',
    cores: list.length,
    memoryGb: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    os: `${platform()} ${release()}`,
    node: process.version,
    natsServer: natsVersionOf(natsBin),
  };
}

// ---------------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------------

function fmtInt(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  return Math.round(n).toLocaleString('en-US');
}

function fmtMs(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  if (n >= 100) return n.toFixed(0);
  if (n >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

function fmtNum(n: number | null | undefined, digits = 1): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  return n.toFixed(digits);
}

function fmtVerify(v: boolean | null): string {
  return v === null ? '–' : v ? 'ok' : 'FAIL';
}

interface Column {
  readonly title: string;
  readonly align: 'left' | 'right';
  readonly cell: (r: BenchRow) => string;
}

const COLUMNS: readonly Column[] = [
  { title: 'workload', align: 'left', cell: (r) => r.workload },
  { title: 'variant', align: 'left', cell: (r) => r.variant },
  { title: 'C', align: 'right', cell: (r) => fmtInt(r.concurrency) },
  { title: 'accounts', align: 'right', cell: (r) => fmtInt(r.accounts) },
  { title: 'cmds/s', align: 'right', cell: (r) => fmtInt(r.cmdsPerSec) },
  { title: 'events/s', align: 'right', cell: (r) => fmtInt(r.eventsPerSec) },
  { title: 'p50 ms', align: 'right', cell: (r) => fmtMs(r.p50Ms) },
  { title: 'p99 ms', align: 'right', cell: (r) => fmtMs(r.p99Ms) },
  { title: 'p99.9 ms', align: 'right', cell: (r) => fmtMs(r.p999Ms) },
  { title: 'open/s', align: 'right', cell: (r) => fmtInt(r.phase1PerSec) },
  { title: 'peak RSS MB', align: 'right', cell: (r) => fmtNum(r.peakRssMb, 0) },
  { title: 'CPU s', align: 'right', cell: (r) => fmtNum(r.cpuSeconds, 1) },
  { title: 'CPU µs/cmd', align: 'right', cell: (r) => fmtNum(r.cpuUsPerCmd, 0) },
  { title: 'server CPU s', align: 'right', cell: (r) => fmtNum(r.serverCpuSeconds, 1) },
  { title: 'JS msgs', align: 'right', cell: (r) => fmtInt(r.jetstreamMessages) },
  { title: 'verify', align: 'left', cell: (r) => fmtVerify(r.verifyOk) },
  { title: 'notes', align: 'left', cell: (r) => r.notes ?? '' },
];

function cells(rows: readonly BenchRow[], columns: readonly Column[] = COLUMNS): string[][] {
  return rows.map((r) => columns.map((c) => c.cell(r)));
}

/** The width the terminal report keeps to: every line fits 120 columns. */
export const TERMINAL_WIDTH = 120;

/**
 * The terminal table's columns: the numbers a reader compares, with short titles (latencies in
 * ms, said once above the table). The workload, CPU seconds and notes stay in RESULTS.md and
 * the JSON; the notes are printed under the table, wrapped.
 */
const TERMINAL_COLUMNS: readonly Column[] = [
  { title: 'variant', align: 'left', cell: (r) => r.variant },
  { title: 'C', align: 'right', cell: (r) => fmtInt(r.concurrency) },
  { title: 'accounts', align: 'right', cell: (r) => fmtInt(r.accounts) },
  { title: 'cmds/s', align: 'right', cell: (r) => fmtInt(r.cmdsPerSec) },
  { title: 'events/s', align: 'right', cell: (r) => fmtInt(r.eventsPerSec) },
  { title: 'p50', align: 'right', cell: (r) => fmtMs(r.p50Ms) },
  { title: 'p99', align: 'right', cell: (r) => fmtMs(r.p99Ms) },
  { title: 'p99.9', align: 'right', cell: (r) => fmtMs(r.p999Ms) },
  { title: 'open/s', align: 'right', cell: (r) => fmtInt(r.phase1PerSec) },
  { title: 'RSS MB', align: 'right', cell: (r) => fmtNum(r.peakRssMb, 0) },
  { title: 'µs/cmd', align: 'right', cell: (r) => fmtNum(r.cpuUsPerCmd, 0) },
  { title: 'JS msgs', align: 'right', cell: (r) => fmtInt(r.jetstreamMessages) },
  { title: 'verify', align: 'left', cell: (r) => fmtVerify(r.verifyOk) },
];

/**
 * Break a line longer than `width` at spaces; continuation lines get the line's own indent
 * plus `hang` spaces. A single word longer than the width is left whole.
 */
export function wrapLine(line: string, width = TERMINAL_WIDTH, hang = 4): string[] {
  if (line.length <= width) return [line];
  const indent = /^\s*/.exec(line)?.[0] ?? '';
  const next = `${indent}${' '.repeat(hang)}`;
  const out: string[] = [];
  let current = '';
  for (const word of line.slice(indent.length).split(' ')) {
    const prefix = out.length === 0 ? indent : next;
    if (current === '') current = prefix + word;
    else if (current.length + 1 + word.length <= width) current += ` ${word}`;
    else {
      out.push(current);
      current = next + word;
    }
  }
  if (current !== '') out.push(current);
  return out;
}

/** An aligned plain-text table of the terminal columns (it fits 120 columns for the suite's variants). */
export function formatTable(rows: readonly BenchRow[]): string {
  const columns = TERMINAL_COLUMNS;
  const body = cells(rows, columns);
  const widths = columns.map((c, i) => Math.max(c.title.length, ...body.map((row) => (row[i] ?? '').length)));
  const line = (values: readonly string[]): string =>
    columns.map((c, i) => {
      const v = values[i] ?? '';
      const w = widths[i] ?? 0;
      return c.align === 'right' ? v.padStart(w) : v.padEnd(w);
    })
      .join('  ')
      .trimEnd();
  const header = line(columns.map((c) => c.title));
  const rule = widths.map((w) => '─'.repeat(w)).join('  ');
  const notes = rows
    .filter((r) => (r.notes ?? '') !== '')
    .flatMap((r) => wrapLine(`  ${r.variant}${r.concurrency === null ? '' : ` C=${fmtInt(r.concurrency)}`}: ${r.notes ?? ''}`));
  return [
    'Latencies (p50, p99, p99.9) in ms; RSS: peak resident memory; µs/cmd: CPU of all measured processes per command.',
    '',
    header,
    rule,
    ...body.map(line),
    ...(notes.length === 0 ? [] : ['', 'Notes:', ...notes]),
  ].join('\n');
}

export function printTable(rows: readonly BenchRow[], out: NodeJS.WritableStream = process.stdout): void {
  out.write(`${formatTable(rows)}\n`);
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

async function writeText(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, text);
}

export async function writeJson(file: string, report: BenchReport): Promise<void> {
  const doc = { date: report.date ?? new Date().toISOString(), ...report, micro: report.micro ?? [] };
  await writeText(file, `${JSON.stringify(doc, null, 2)}\n`);
}

function mdEscape(s: string): string {
  return s.replace(/\|/g, '\\|');
}

/** Which section of the results a row belongs to. */
export function rowSection(r: BenchRow): 'main' | 'durability' | 'scale' | 'cluster' {
  if (r.variant.startsWith('scale-')) return 'scale';
  if (r.variant === 'cluster') return 'cluster';
  if (/(^|-)(r3|sync-always)$/.test(r.variant)) return 'durability';
  return 'main';
}

function mdTable(rows: readonly BenchRow[]): string[] {
  const out: string[] = [];
  out.push(`| ${COLUMNS.map((c) => c.title).join(' | ')} |`);
  out.push(`| ${COLUMNS.map((c) => (c.align === 'right' ? '---:' : '---')).join(' | ')} |`);
  for (const row of cells(rows)) out.push(`| ${row.map(mdEscape).join(' | ')} |`);
  return out;
}

function fmtRatio(v: number | null): string {
  return v === null || !Number.isFinite(v) ? '–' : `${v.toFixed(2)}×`;
}

function metText(m: boolean | null): string {
  return m === null ? 'not measured' : m ? '**met**' : '**not met**';
}

function microGroups(micro: readonly MicroRow[]): Map<string, MicroRow[]> {
  const groups = new Map<string, MicroRow[]>();
  for (const r of micro) {
    const g = r.group ?? '';
    groups.set(g, [...(groups.get(g) ?? []), r]);
  }
  return groups;
}

/**
 * Markdown for RESULTS.md: date, machine, goals, ratios, the results tables (with the chart),
 * activation, micro-benchmarks, and what failed or was not measured.
 */
export function formatResultsMd(report: BenchReport, chartFile?: string, timelineFile?: string): string {
  const date = report.date ?? new Date().toISOString();
  const m = report.machine;
  const out: string[] = [];
  out.push('# Benchmark results', '');
  out.push(
    `Generated by \`npm run bench\` (bench/run.ts) on ${date.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}` +
      `${report.mode === undefined ? '' : `, ${report.mode} mode`}` +
      `${report.durationSec === undefined ? '' : `, in ${(report.durationSec / 60).toFixed(1)} min`}.` +
      `${report.command === undefined ? '' : ` Command: \`${report.command}\`.`}`,
    '',
  );
  if (report.rerendered !== undefined) out.push(`Rendered again on ${report.rerendered} (nothing measured again; goals and ratios evaluated by the current bench/summary.ts).`, '');
  out.push(
    'The machine is shared with other work and has 2 cores for the client, the Troupe node, and nats-server together: ' +
      'read the numbers as one sample of a noisy machine, and compare rows of the same run rather than runs.',
    '',
  );
  out.push('| machine | |', '| --- | --- |');
  out.push(`| CPU | ${mdEscape(m.cpuModel)} × ${m.cores} |`);
  out.push(`| memory | ${m.memoryGb} GB |`);
  out.push(`| OS | ${mdEscape(m.os)} |`);
  out.push(`| Node | ${m.node} |`);
  out.push(`| nats-server | ${m.natsServer} |`, '');
  if (report.config !== undefined) {
    out.push('| setting | value |', '| --- | --- |');
    for (const [k, v] of Object.entries(report.config)) out.push(`| ${mdEscape(k)} | ${mdEscape(typeof v === 'string' ? v : JSON.stringify(v))} |`);
    out.push('');
  }

  const goals = report.goals ?? [];
  if (goals.length > 0) {
    out.push('## Goals', '');
    if (report.mode === 'quick') out.push(`_${QUICK_NOTICE.replace(/\n/g, ' ')}_`, '');
    out.push('| measure | goal | measured | verdict |', '| --- | --- | --- | --- |');
    for (const g of goals) out.push(`| ${mdEscape(g.measure)} | ${mdEscape(g.goal)} | ${mdEscape(g.measured)} | ${metText(g.met)} |`);
    out.push('');
  }
  const ratios = report.ratios ?? [];
  if (ratios.length > 0) {
    out.push('## Ratios against the baselines of the same run', '');
    out.push('| ratio | value | from |', '| --- | ---: | --- |');
    for (const r of ratios) out.push(`| ${mdEscape(r.name)} | ${fmtRatio(r.value)} | ${mdEscape(r.detail)} |`);
    out.push('');
  }

  const sections: Array<['main' | 'durability' | 'scale', string, string]> = [
    ['main', 'Ledger workload', 'Default server: one nats-server, file storage, stream replicas 1.'],
    ['durability', 'Production durability', '`sync-always`: a single nats-server with `sync_interval: always` (fsync on every write). `r3`: a 3-server cluster on loopback, stream replicas 3. Each next to the per-message ceiling measured on the same server(s).'],
    ['scale', 'Scale', 'In-process, C = 4096, 100,000 commands drawn over all accounts. Peak RSS is the whole Troupe process (its workers are threads in it) over phases 1 and 2.'],
  ];
  for (const [key, title, text] of sections) {
    const rows = report.rows.filter((r) => rowSection(r) === key);
    if (rows.length === 0) continue;
    const rounds = Math.max(0, ...rows.map((r) => r.rounds?.length ?? 0));
    const roundsText = rounds > 1
      ? ` The ceiling, plain, in-process, remote and workers rows ran in ${rounds} interleaved rounds; each row is its median round, and its notes list every round.`
      : '';
    out.push(`## ${title}`, '', text + roundsText, '');
    if (key === 'main' && chartFile !== undefined) out.push(`![throughput and p99, Troupe against the baselines](${chartFile})`, '');
    out.push(...mdTable(rows), '');
  }
  if (report.rows.length > 0) {
    out.push(
      'cmds/s, events/s and latencies are phase 2 (the generated commands, closed loop at C); open/s is phase 1 (OpenAccount). ' +
        'A command counts when its caller holds the acknowledgement that JetStream stored its events, or its domain rejection. ' +
        'The ceiling rows are pre-encoded ~150-byte events, one JetStream message each, lean publisher, no domain logic, as many as the workload stores: ' +
        'their events/s is messages/s and their latency publish-to-ack. ' +
        'Troupe runs each in a fresh process (the in-process variant sends through the node\'s own API from the same process; remote: node and clients in two processes), a fresh stream and data dir. ' +
        'Peak RSS: the Troupe process (VmHWM; for remote, the node process); baselines: the bench process. CPU s: client and node processes plus nats-server, phase 2; CPU µs/cmd: that per command (per message for the ceilings); server CPU s: nats-server alone. ' +
        'verify: every account rebuilt from the log alone (no snapshots, no Troupe API), no negative balance, sum of balances = deposits − withdrawals, ' +
        'event count = accounts + accepted, every stored message read back, and balances equal to a sequential replay of the commands.',
      '',
    );
  }
  out.push(...clusterSectionMd(report, timelineFile));
  const failed = report.rows.filter((r) => r.verifyOk === false);
  if (failed.length > 0) {
    out.push('**Verification failed** for: ' + failed.map((r) => `${r.variant} C=${fmtInt(r.concurrency)}`).join(', ') + '.', '');
  }

  const activation = report.activation ?? [];
  if (activation.length > 0) {
    out.push('## Activation', '');
    out.push(
      'Time of the first `query` of an actor on a freshly started node (median over the actors of each size), ' +
        'with its snapshot in LMDB, and with the snapshot deleted (the whole history replayed from the log). ' +
        'The second query (actor resident) is the round-trip floor.',
      '',
    );
    out.push('| events | snapshot | first query | samples | resident query | state ok |', '| ---: | --- | ---: | --- | ---: | --- |');
    for (const a of activation) {
      out.push(`| ${fmtInt(a.events)} | ${a.snapshot ? 'yes' : 'no'} | ${fmtMs(a.ms)} ms | ${a.samplesMs.map((x) => fmtMs(x)).join(', ')} | ${fmtMs(a.residentMs)} ms | ${a.stateOk ? 'ok' : 'FAIL'} |`);
    }
    out.push('');
  }

  const micro = report.micro ?? [];
  if (micro.length > 0) {
    out.push('## Micro-benchmarks', '', 'tinybench; the median of the per-sample throughput, per item (commit, command, id, put); relative to the best of its race.', '');
    for (const [group, rows] of microGroups(micro)) {
      out.push(`### ${group}`, '', `| alternative | ${rows[0]?.unit ?? 'ops/s'} | relative | notes |`, '| --- | ---: | ---: | --- |');
      for (const r of rows) out.push(`| ${mdEscape(r.name)} | ${fmtInt(r.opsPerSec)} | ${fmtRatio(r.relative ?? null)} | ${mdEscape(r.notes ?? '')} |`);
      out.push('');
    }
  }

  const failures = report.failures ?? [];
  if (failures.length > 0) {
    out.push('## Failed or not measured', '');
    for (const f of failures) out.push(`- ${f.replace(/\n/g, ' ')}`);
    out.push('');
  }
  return out.join('\n');
}

/** What a quick run is, said where its numbers are shown. */
export const QUICK_NOTICE =
  'Quick mode: small sizes, a smoke test that the suite runs and every run verifies.\n' +
  'These numbers are not a performance claim; `npm run bench` (without --quick) measures.';

/**
 * The same content for the terminal: tables, goals, ratios, activation, micro. Every line fits
 * TERMINAL_WIDTH columns (longer text is wrapped).
 */
export function formatTerminal(report: BenchReport): string {
  const out: string[] = [];
  const m = report.machine;
  const quick = report.mode === 'quick';
  out.push(`${m.cpuModel} × ${m.cores}, ${m.memoryGb} GB, Node ${m.node}, nats-server ${m.natsServer}${quick ? ' (quick mode)' : ''}`, '');
  if (quick) out.push(QUICK_NOTICE, '');
  if (report.rows.length > 0) out.push(formatTable(report.rows), '');
  const goals = report.goals ?? [];
  if (goals.length > 0) {
    out.push(`Goals${quick ? ' (quick mode: not a verdict on Troupe)' : ''}:`);
    const w = Math.max(...goals.map((g) => g.measure.length));
    for (const g of goals) {
      out.push(`  ${g.met === null ? '·' : g.met ? '✓' : '✗'} ${g.measure.padEnd(w)}  ${g.measured}`);
      out.push(`      goal: ${g.goal}`);
    }
    out.push('');
  }
  const ratios = report.ratios ?? [];
  if (ratios.length > 0) {
    out.push('Ratios:');
    const w = Math.max(...ratios.map((r) => r.name.length));
    for (const r of ratios) out.push(`  ${r.name.padEnd(w)}  ${fmtRatio(r.value).padStart(7)}  ${r.detail}`);
    out.push('');
  }
  const activation = report.activation ?? [];
  if (activation.length > 0) {
    out.push('Activation (first query on a fresh node, median):');
    for (const a of activation) {
      out.push(`  ${fmtInt(a.events).padStart(8)} events, ${a.snapshot ? 'snapshot   ' : 'no snapshot'}  ${fmtMs(a.ms).padStart(7)} ms  (resident ${fmtMs(a.residentMs)} ms)${a.stateOk ? '' : '  STATE WRONG'}`);
    }
    out.push('');
  }
  const micro = report.micro ?? [];
  if (micro.length > 0) {
    out.push('Micro-benchmarks (median, per item):');
    for (const [group, rows] of microGroups(micro)) {
      out.push(`  ${group}`);
      const w = Math.max(...rows.map((r) => r.name.length));
      for (const r of rows) {
        out.push(`    ${r.name.padEnd(w)}  ${fmtInt(r.opsPerSec).padStart(13)} ${r.unit ?? 'ops/s'}  ${fmtRatio(r.relative ?? null).padStart(6)}`);
        if (r.notes) out.push(`        ${r.notes}`);
      }
    }
    out.push('');
  }
  const timelines = report.cluster?.timelines ?? [];
  if (timelines.length > 0) {
    out.push('Cluster timelines:');
    for (const t of timelines) out.push(`  ${timelineLines(t)}`);
    out.push('');
  }
  const failures = report.failures ?? [];
  if (failures.length > 0) {
    out.push('Failed or not measured:');
    for (const f of failures) out.push(`  - ${f.split('\n')[0]}`);
    out.push('');
  }
  if (quick && report.rows.length > 0) out.push(QUICK_NOTICE, '');
  return out.flatMap((line) => line.split('\n')).flatMap((line) => wrapLine(line)).join('\n');
}

export async function writeResultsMd(path: string, report: BenchReport, chartFile?: string, timelineFile?: string): Promise<void> {
  await writeText(path, formatResultsMd(report, chartFile, timelineFile));
}

function secs(ms: number | null | undefined): string {
  return ms === null || ms === undefined || !Number.isFinite(ms) ? '–' : `${(ms / 1000).toFixed(2)} s`;
}

function timelineName(t: TimelineReport): string {
  return t.kind === 'move' ? `planned move: SIGTERM ${t.victim}` : `failover: kill -9 ${t.victim}`;
}

/** One line per timeline: steady rate, dip, recovery, placement, failures, verdict. */
export function timelineLines(t: TimelineReport): string {
  const s = t.summary;
  return `${timelineName(t)} (${t.victimShards} of ${t.shards} shards): steady ${fmtInt(s.steadyPerSec)} cmds/s, lowest 1 s ${fmtInt(s.minPerSec)} ` +
    `(−${Math.round(s.dipDepth * 100)}%), below 80% for ${secs(s.dipMs)}, back to ≥ 80% after ${s.recoverMs === null ? 'never' : secs(s.recoverMs)}, ` +
    `all shards placed after ${secs(t.placedMs)}; then ${fmtInt(s.afterPerSec)} cmds/s; ${fmtInt(t.errors)} failed; verify ${t.verifyOk ? 'ok' : 'FAIL'}`;
}

/**
 * The "Many nodes" section of RESULTS.md: the cluster rows (steady throughput) and the
 * timelines' table, with the timeline chart. Empty when the cluster step did not run.
 */
export function clusterSectionMd(report: BenchReport, timelineFile?: string): string[] {
  const rows = report.rows.filter((r) => rowSection(r) === 'cluster');
  const c = report.cluster;
  if (rows.length === 0 && (c === undefined || c.timelines.length === 0)) return [];
  const set = c?.settings ?? {};
  const out: string[] = ['## Many nodes', ''];
  out.push(
    `${String(set.nodes ?? 3)} Troupe nodes (each a child process with 1 worker) on a ${String(set.natsServers ?? 3)}-server nats-server cluster on loopback, ` +
      `stream replicas ${String(set.replicas ?? 3)}, ${String(set.shards ?? '–')} shards placed by rendezvous hashing; the clients (one TroupeClient, closed loop at C) ` +
      'in one more process, each command sent to its shard\'s owner by subject. All of them and the three nats-servers share the machine\'s cores. ' +
      'Each round starts fresh nodes on a fresh stream; the row is the median round. Verified like the other rows, and besides: every acknowledged commandId ' +
      'is in the log exactly once and the log holds no command that was not acknowledged.',
    '',
  );
  if (rows.length > 0) out.push(...mdTable(rows), '');
  if (c !== undefined && c.timelines.length > 0) {
    out.push('### Throughput over time: a planned move and a failover', '');
    out.push(
      `The same setup with the ledger's commands sent over and over for ${String(set.timeline ?? '')}; throughput counted per ${String(set.bucket ?? '250 ms')}. ` +
        'Planned move: the node holding about a third of the shards gets SIGTERM and hands them off. Failover: that node is killed with SIGKILL, and the others ' +
        `take its shards once its leases expire. Lease TTL ${String(set.leaseTtl ?? '')}, settle window ${String(set.settle ?? '')}; ` +
        `the client's timeoutMs ${String(set.clientTimeout ?? '')} (a command in flight on a killed node waits for it) and ${String(set.clientRetry ?? '')}.`,
      '',
    );
    if (timelineFile !== undefined) out.push(`![throughput over time during a planned move and a failover](${timelineFile})`, '');
    out.push(
      '| scenario | shards moved | steady cmds/s | lowest 1 s | dip depth | below 80% of steady | back to ≥ 80% after | all shards placed after | cmds/s after | p99 ms | failed | verify |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    );
    for (const t of c.timelines) {
      const s = t.summary;
      out.push(`| ${timelineName(t)} | ${t.victimShards} of ${t.shards} | ${fmtInt(s.steadyPerSec)} | ${fmtInt(s.minPerSec)} | ${Math.round(s.dipDepth * 100)}% | ${secs(s.dipMs)} | ` +
        `${s.recoverMs === null ? 'not within the run' : secs(s.recoverMs)} | ${secs(t.placedMs)} | ${fmtInt(s.afterPerSec)} | ${fmtMs(t.p99Ms)} | ${fmtInt(t.errors)} | ${t.verifyOk ? 'ok' : `FAIL: ${mdEscape(t.verifyFailures.join('; '))}`} |`);
    }
    out.push(
      '',
      'steady: the mean of the 5 s before the event. lowest 1 s: the lowest 1 s mean after the event; dip depth: 1 − that/steady. ' +
        'below 80%: time in 250 ms buckets under 80% of steady during the dip (the stretch around the lowest point). ' +
        'back to ≥ 80%: from the event until the 1 s mean is at least 80% of steady and stays there for 2 s. all shards placed: from the event until every shard\'s lease ' +
        'is held by the node placement gives it among the nodes left (seen in NATS KV). cmds/s after: the mean of the last 5 s, once recovered. ' +
        'In a closed loop every caller soon waits on a command for a shard that is moving, so throughput falls further than the share of shards that move.',
      '',
    );
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// SVG chart
// ---------------------------------------------------------------------------------------------

export function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function rowLabel(r: BenchRow): string {
  const c = r.concurrency === null ? '' : r.variant.startsWith('ceiling') ? ` (${r.concurrency} in flight)` : ` C=${r.concurrency}`;
  const fail = r.verifyOk === false ? ' ✗' : '';
  return `${r.variant}${c}${fail}`;
}

/** Throughput of a row: cmds/s, or msgs/s for rows without commands (the ceiling). */
function throughput(r: BenchRow): { value: number; unit: string } | undefined {
  if (r.cmdsPerSec !== null && Number.isFinite(r.cmdsPerSec)) return { value: r.cmdsPerSec, unit: 'cmds/s' };
  if (r.eventsPerSec !== null && Number.isFinite(r.eventsPerSec)) return { value: r.eventsPerSec, unit: 'msgs/s' };
  return undefined;
}

/** A round axis maximum ≥ v (quarters of it are round too): {1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8} × 10^k. */
export function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

export function compact(n: number): string {
  if (n === 0) return '0';
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(n >= 1e4 ? 0 : 1)}k`;
  if (n >= 10) return n.toFixed(0);
  return n.toFixed(n >= 1 ? 1 : 2);
}

const TROUPE_COLOR = '#2f6fdf';
const BASELINE_COLOR = '#9a9a9a';
const CEILING_COLOR = '#e08a2e';

function barColor(r: BenchRow): string {
  if (r.variant.startsWith('ceiling')) return CEILING_COLOR;
  return isBaseline(r.variant) ? BASELINE_COLOR : TROUPE_COLOR;
}

/**
 * A dependency-free SVG: two panels sharing row labels, throughput bars on the left (cmds/s;
 * msgs/s for the ceiling) and p99 latency on the right: bars on a linear axis, or points on a
 * log axis when the latencies spread over more than 30×. Troupe variants in blue,
 * the plain baseline in grey, the per-message ceiling in orange.
 */
export function formatSvgChart(rows: readonly BenchRow[], title = 'Ledger workload: throughput and p99 latency'): string {
  const order = ['in-process', 'remote', 'workers-1', 'workers-2', 'sync-always', 'r3', 'ceiling', 'ceiling-sync-always', 'ceiling-r3', 'plain'];
  const rank = (r: BenchRow): number => {
    const i = order.indexOf(r.variant);
    return i >= 0 ? i : isBaseline(r.variant) ? order.length + 1 : order.indexOf('r3') + 0.5;
  };
  const ordered = [...rows].sort((a, b) => {
    const ga = isBaseline(a.variant) ? 1 : 0;
    const gb = isBaseline(b.variant) ? 1 : 0;
    if (ga !== gb) return ga - gb;
    if (rank(a) !== rank(b)) return rank(a) - rank(b);
    if (a.variant !== b.variant) return a.variant < b.variant ? -1 : 1;
    return (a.concurrency ?? 0) - (b.concurrency ?? 0);
  });
  const labelW = Math.max(120, 8 + 7.2 * Math.max(0, ...ordered.map((r) => rowLabel(r).length)));
  const panelW = 330;
  const gap = 70;
  const barH = 20;
  const rowH = 28;
  const top = 70;
  const left = 10;
  const width = Math.ceil(left + labelW + panelW + gap + panelW + 20);
  const height = top + ordered.length * rowH + 60;
  const x1 = left + labelW;
  const x2 = x1 + panelW + gap;
  const plotW = panelW - 60; // leave room for value labels

  const maxT = niceMax(Math.max(0, ...ordered.map((r) => throughput(r)?.value ?? 0)));
  const p99s = ordered.map((r) => r.p99Ms).filter((v): v is number => v !== null && Number.isFinite(v) && v > 0);
  const maxL = niceMax(Math.max(0, ...p99s));
  // Latencies spread over orders of magnitude (C = 64 vs C = 4096, fsync): a log axis keeps small
  // ones readable, and then each row is a point, not a bar.
  const logL = p99s.length > 1 && Math.max(...p99s) / Math.min(...p99s) > 30;
  const logLo = logL ? 10 ** Math.floor(Math.log10(Math.min(...p99s))) : 0;
  const logHi = logL ? 10 ** Math.ceil(Math.log10(Math.max(...p99s))) : 1;
  const latencyWidth = (v: number): number =>
    logL ? (Math.log10(v / logLo) / Math.log10(logHi / logLo)) * plotW : (v / maxL) * plotW;

  const s: string[] = [];
  s.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="12">`,
  );
  s.push(`<rect width="100%" height="100%" fill="#ffffff"/>`);
  s.push(`<text x="${left}" y="22" font-size="15" font-weight="600" fill="#222">${xmlEscape(title)}</text>`);
  s.push(`<text x="${x1}" y="${top - 22}" font-weight="600" fill="#333">throughput (cmds/s; ceiling: msgs/s) →</text>`);
  s.push(`<text x="${x2}" y="${top - 22}" font-weight="600" fill="#333">p99 latency (ms${logL ? ', log scale' : ''}) — lower is better</text>`);

  // Grid lines and axis ticks.
  const axis = (x0: number, max: number, fmt: (n: number) => string): void => {
    for (let k = 0; k <= 4; k++) {
      const x = x0 + (plotW * k) / 4;
      s.push(`<line x1="${x.toFixed(1)}" y1="${top - 8}" x2="${x.toFixed(1)}" y2="${top + ordered.length * rowH}" stroke="#e4e4e4"/>`);
      s.push(`<text x="${x.toFixed(1)}" y="${top + ordered.length * rowH + 16}" text-anchor="middle" fill="#666">${xmlEscape(fmt((max * k) / 4))}</text>`);
    }
  };
  axis(x1, maxT, compact);
  if (logL) {
    const decades = Math.round(Math.log10(logHi / logLo));
    for (let k = 0; k <= decades; k++) {
      const x = x2 + (plotW * k) / decades;
      s.push(`<line x1="${x.toFixed(1)}" y1="${top - 8}" x2="${x.toFixed(1)}" y2="${top + ordered.length * rowH}" stroke="#e4e4e4"/>`);
      s.push(`<text x="${x.toFixed(1)}" y="${top + ordered.length * rowH + 16}" text-anchor="middle" fill="#666">${xmlEscape(compact(logLo * 10 ** k))}</text>`);
    }
  } else {
    axis(x2, maxL, (n) => compact(n));
  }

  ordered.forEach((r, i) => {
    const y = top + i * rowH;
    const color = barColor(r);
    s.push(`<text x="${x1 - 8}" y="${y + barH / 2 + 4}" text-anchor="end" fill="#222">${xmlEscape(rowLabel(r))}</text>`);
    const t = throughput(r);
    if (t !== undefined) {
      const w = Math.max(1, (t.value / maxT) * plotW);
      s.push(`<rect x="${x1}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${color}" rx="2"/>`);
      s.push(`<text x="${(x1 + w + 5).toFixed(1)}" y="${y + barH / 2 + 4}" fill="#222">${xmlEscape(compact(t.value))}</text>`);
    }
    if (r.p99Ms !== null && Number.isFinite(r.p99Ms) && r.p99Ms > 0) {
      const w = Math.max(1, latencyWidth(r.p99Ms));
      if (logL) {
        // A bar's length on a log axis means nothing (it depends on where the axis starts):
        // a log axis gets a point per row, a linear one gets bars.
        s.push(`<line x1="${x2}" y1="${y + barH / 2}" x2="${(x2 + plotW).toFixed(1)}" y2="${y + barH / 2}" stroke="#f0f0f0"/>`);
        s.push(`<circle cx="${(x2 + w).toFixed(1)}" cy="${y + barH / 2}" r="5" fill="${color}"/>`);
        s.push(`<text x="${(x2 + w + 9).toFixed(1)}" y="${y + barH / 2 + 4}" fill="#222">${xmlEscape(fmtMs(r.p99Ms))} ms</text>`);
      } else {
        s.push(`<rect x="${x2}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${color}" fill-opacity="0.75" rx="2"/>`);
        s.push(`<text x="${(x2 + w + 5).toFixed(1)}" y="${y + barH / 2 + 4}" fill="#222">${xmlEscape(fmtMs(r.p99Ms))} ms</text>`);
      }
    } else {
      s.push(`<text x="${x2 + 4}" y="${y + barH / 2 + 4}" fill="#999">–</text>`);
    }
  });

  // Legend.
  const ly = height - 18;
  const legend: Array<[string, string]> = [
    [TROUPE_COLOR, 'Troupe'],
    [BASELINE_COLOR, 'plain NATS client (one js.publish per event)'],
    [CEILING_COLOR, 'per-message ceiling (lean publisher, no domain logic)'],
  ];
  let lx = left;
  for (const [color, text] of legend) {
    s.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${color}" rx="2"/>`);
    s.push(`<text x="${lx + 17}" y="${ly}" fill="#333">${xmlEscape(text)}</text>`);
    lx += 30 + text.length * 6.4;
  }
  s.push('</svg>');
  return `${s.join('\n')}\n`;
}

export async function writeSvgChart(path: string, rows: readonly BenchRow[], title?: string): Promise<void> {
  await writeText(path, formatSvgChart(rows, title));
}

// ---------------------------------------------------------------------------------------------
// Progress
// ---------------------------------------------------------------------------------------------

export interface ProgressHandle {
  /** Replace the label while running (e.g. `verifying`). */
  update(label: string): void;
  /** Finish the step; the summary is printed after the label with the elapsed time. */
  done(summary?: string): void;
  fail(err: unknown): void;
}

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/**
 * A progress line on stderr. On a TTY: a spinner with the label and elapsed seconds, replaced
 * by a final line (✓/✗, elapsed, summary). Otherwise one line when the step starts and one
 * when it ends, so a log shows where a hang happened and what each step measured.
 */
export function progress(label: string, stream: NodeJS.WriteStream = process.stderr): ProgressHandle {
  const start = performance.now();
  const tty = stream.isTTY === true;
  let current = label;
  let frame = 0;
  let timer: NodeJS.Timeout | undefined;
  const elapsed = (): string => `${((performance.now() - start) / 1000).toFixed(1)}s`;
  const render = (): void => {
    frame = (frame + 1) % SPINNER.length;
    stream.write(`\r\x1b[2K${SPINNER[frame] ?? ''} ${current} ${elapsed()}`);
  };
  if (tty) {
    render();
    timer = setInterval(render, 100);
    timer.unref();
  } else {
    stream.write(`${label}…\n`);
  }
  const finish = (mark: string, text: string): void => {
    if (timer !== undefined) clearInterval(timer);
    timer = undefined;
    // The step's own label (not the last phase shown by the spinner), so the log reads as a list of steps.
    const phase = current !== label && mark === '✗' ? ` [during: ${current}]` : '';
    stream.write(`${tty ? '\r\x1b[2K' : ''}${mark} ${label}${phase} (${elapsed()})${text === '' ? '' : `: ${text}`}\n`);
  };
  return {
    update(next: string) {
      current = next;
    },
    done(summary = '') {
      finish('✓', summary);
    },
    fail(err: unknown) {
      finish('✗', err instanceof Error ? err.message : String(err));
    },
  };
}

/** Numbered steps: `const step = steps(12); const p = step('plain C=64')` → `[1/12] plain C=64`. */
export function steps(total: number, stream: NodeJS.WriteStream = process.stderr): (label: string) => ProgressHandle {
  let i = 0;
  return (label: string) => progress(`[${++i}/${total}] ${label}`, stream);
}
