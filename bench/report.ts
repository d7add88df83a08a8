/**
 * Benchmark reporting: result rows, machine info, a terminal table, JSON, RESULTS.md, an SVG
 * chart, and a progress indicator on stderr.
 */
import { execFileSync } from 'node:child_process';
import { cpus, totalmem, platform, release } from 'node:os';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { natsServerBin } from './nats.ts';

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
  readonly notes?: string;
}

export interface MicroRow {
  readonly name: string;
  readonly opsPerSec: number;
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
  { title: 'JS msgs', align: 'right', cell: (r) => fmtInt(r.jetstreamMessages) },
  { title: 'verify', align: 'left', cell: (r) => fmtVerify(r.verifyOk) },
  { title: 'notes', align: 'left', cell: (r) => r.notes ?? '' },
];

function cells(rows: readonly BenchRow[]): string[][] {
  return rows.map((r) => COLUMNS.map((c) => c.cell(r)));
}

/** An aligned plain-text table. */
export function formatTable(rows: readonly BenchRow[]): string {
  const body = cells(rows);
  const widths = COLUMNS.map((c, i) => Math.max(c.title.length, ...body.map((row) => (row[i] ?? '').length)));
  const line = (values: readonly string[]): string =>
    COLUMNS.map((c, i) => {
      const v = values[i] ?? '';
      const w = widths[i] ?? 0;
      return c.align === 'right' ? v.padStart(w) : v.padEnd(w);
    })
      .join('  ')
      .trimEnd();
  const header = line(COLUMNS.map((c) => c.title));
  const rule = widths.map((w) => '─'.repeat(w)).join('  ');
  return [header, rule, ...body.map(line)].join('\n');
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

/** Markdown for RESULTS.md: date, machine, the results table, micro-benchmarks, failures. */
export function formatResultsMd(report: BenchReport): string {
  const date = report.date ?? new Date().toISOString();
  const m = report.machine;
  const out: string[] = [];
  out.push('# Benchmark results', '');
  out.push(`Run on ${date.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}.`, '');
  out.push('| machine | |', '| --- | --- |');
  out.push(`| CPU | ${mdEscape(m.cpuModel)} × ${m.cores} |`);
  out.push(`| memory | ${m.memoryGb} GB |`);
  out.push(`| OS | ${mdEscape(m.os)} |`);
  out.push(`| Node | ${m.node} |`);
  out.push(`| nats-server | ${m.natsServer} |`, '');
  out.push('## Ledger workload', '');
  out.push(`| ${COLUMNS.map((c) => c.title).join(' | ')} |`);
  out.push(`| ${COLUMNS.map((c) => (c.align === 'right' ? '---:' : '---')).join(' | ')} |`);
  for (const row of cells(report.rows)) out.push(`| ${row.map(mdEscape).join(' | ')} |`);
  out.push('');
  out.push(
    'cmds/s, events/s and latencies are phase 2 (the generated commands, closed loop at C). ' +
      'The ceiling row is one pre-encoded event per JetStream message, lean publisher, no domain logic: ' +
      'its events/s is messages/s and its latency is publish-to-ack. open/s is phase 1 (OpenAccount). ' +
      'CPU s counts the client process and nats-server.',
  );
  out.push('');
  const failed = report.rows.filter((r) => r.verifyOk === false);
  if (failed.length > 0) {
    out.push('**Verification failed** for: ' + failed.map((r) => `${r.variant} C=${fmtInt(r.concurrency)}`).join(', ') + '.', '');
  }
  const micro = report.micro ?? [];
  if (micro.length > 0) {
    out.push('## Micro-benchmarks', '', '| name | ops/s | notes |', '| --- | ---: | --- |');
    for (const r of micro) out.push(`| ${mdEscape(r.name)} | ${fmtInt(r.opsPerSec)} | ${mdEscape(r.notes ?? '')} |`);
    out.push('');
  }
  return out.join('\n');
}

export async function writeResultsMd(path: string, report: BenchReport): Promise<void> {
  await writeText(path, formatResultsMd(report));
}

// ---------------------------------------------------------------------------------------------
// SVG chart
// ---------------------------------------------------------------------------------------------

function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function rowLabel(r: BenchRow): string {
  const c = r.concurrency === null ? '' : r.variant === 'ceiling' ? ` (${r.concurrency} in flight)` : ` C=${r.concurrency}`;
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
function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function compact(n: number): string {
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
  if (r.variant === 'ceiling') return CEILING_COLOR;
  return BASELINE_VARIANTS.has(r.variant) ? BASELINE_COLOR : TROUPE_COLOR;
}

/**
 * A dependency-free SVG: two horizontal bar panels sharing row labels, throughput on the left
 * (cmds/s; msgs/s for the ceiling) and p99 latency on the right. Troupe variants in blue,
 * the plain baseline in grey, the per-message ceiling in orange.
 */
export function formatSvgChart(rows: readonly BenchRow[], title = 'Ledger workload: throughput and p99 latency'): string {
  const ordered = [...rows].sort((a, b) => {
    const ga = BASELINE_VARIANTS.has(a.variant) ? 1 : 0;
    const gb = BASELINE_VARIANTS.has(b.variant) ? 1 : 0;
    if (ga !== gb) return ga - gb;
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
  const maxL = niceMax(Math.max(0, ...ordered.map((r) => (r.p99Ms !== null && Number.isFinite(r.p99Ms) ? r.p99Ms : 0))));

  const s: string[] = [];
  s.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="12">`,
  );
  s.push(`<rect width="100%" height="100%" fill="#ffffff"/>`);
  s.push(`<text x="${left}" y="22" font-size="15" font-weight="600" fill="#222">${xmlEscape(title)}</text>`);
  s.push(`<text x="${x1}" y="${top - 22}" font-weight="600" fill="#333">throughput (cmds/s; ceiling: msgs/s) →</text>`);
  s.push(`<text x="${x2}" y="${top - 22}" font-weight="600" fill="#333">p99 latency (ms) — lower is better</text>`);

  // Grid lines and axis ticks.
  const axis = (x0: number, max: number, fmt: (n: number) => string): void => {
    for (let k = 0; k <= 4; k++) {
      const x = x0 + (plotW * k) / 4;
      s.push(`<line x1="${x.toFixed(1)}" y1="${top - 8}" x2="${x.toFixed(1)}" y2="${top + ordered.length * rowH}" stroke="#e4e4e4"/>`);
      s.push(`<text x="${x.toFixed(1)}" y="${top + ordered.length * rowH + 16}" text-anchor="middle" fill="#666">${xmlEscape(fmt((max * k) / 4))}</text>`);
    }
  };
  axis(x1, maxT, compact);
  axis(x2, maxL, (n) => compact(n));

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
    if (r.p99Ms !== null && Number.isFinite(r.p99Ms)) {
      const w = Math.max(1, (r.p99Ms / maxL) * plotW);
      s.push(`<rect x="${x2}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${color}" fill-opacity="0.75" rx="2"/>`);
      s.push(`<text x="${(x2 + w + 5).toFixed(1)}" y="${y + barH / 2 + 4}" fill="#222">${xmlEscape(fmtMs(r.p99Ms))} ms</text>`);
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
 * by a final line (✓/✗, elapsed, summary). Otherwise exactly one line when the step starts
 * (plus one if it fails), so logs stay short and a hang still shows where it happened.
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
    stream.write(`${tty ? '\r\x1b[2K' : ''}${mark} ${current} (${elapsed()})${text === '' ? '' : `: ${text}`}\n`);
  };
  return {
    update(next: string) {
      current = next;
    },
    done(summary = '') {
      if (tty) finish('✓', summary);
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
