/**
 * Throughput over time during a planned move and a failover (the cluster step): what a series
 * of per-bucket throughputs says (steady rate, dip depth and length, time to recover), and a
 * dependency-free SVG chart of the series with markers at the instants that matter.
 *
 * Pure functions only: bench/cluster.ts measures, this file reads and draws.
 */
import { compact, niceMax, xmlEscape } from './report.ts';

export type TimelineKind = 'move' | 'failover';

export interface TimelineMarker {
  /** ms from the start of the load. */
  readonly atMs: number;
  readonly label: string;
  /** `event`: the move or the kill; `placed`: every shard held where placement says. */
  readonly kind: 'event' | 'placed';
}

export interface TimelineSummary {
  /** Mean throughput over the steady window before the event (cmds/s). */
  readonly steadyPerSec: number;
  /** The lowest 1 s mean from the event on (cmds/s). */
  readonly minPerSec: number;
  /** 1 − min/steady: 1 means throughput fell to zero. */
  readonly dipDepth: number;
  /** Time in buckets below threshold × steady within the dip (the stretch around the lowest 1 s mean), ms. */
  readonly dipMs: number;
  /** From the event until the 1 s mean is back at ≥ threshold × steady and stays there for `sustainMs`; null when it never did. */
  readonly recoverMs: number | null;
  /** Mean throughput over the last steady window of the series, once recovered (cmds/s); null when it never recovered. */
  readonly afterPerSec: number | null;
}

/** One timeline as the results keep it (JSON, RESULTS.md, the chart). */
export interface TimelineReport {
  readonly kind: TimelineKind;
  readonly title: string;
  readonly bucketMs: number;
  /** cmds/s per bucket from the start of the load. */
  readonly perSec: readonly number[];
  /** Commands that failed after their retries, per bucket. */
  readonly errorsPerBucket: readonly number[];
  readonly markers: readonly TimelineMarker[];
  readonly summary: TimelineSummary;
  /** The node stopped or killed, and how many of the shards it held. */
  readonly victim: string;
  readonly victimShards: number;
  readonly shards: number;
  /** From the move or kill until every shard was held where placement over the others says; null if not within the timeline. */
  readonly placedMs: number | null;
  readonly accepted: number;
  readonly rejected: number;
  readonly errors: number;
  readonly firstError?: string;
  /** Latency of the commands done during the whole timeline. */
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly jetstreamMessages: number;
  readonly verifyOk: boolean;
  readonly verifyFailures: readonly string[];
}

/** The cluster step's part of the results: its settings and timelines (its steady rows are ordinary rows). */
export interface ClusterReport {
  readonly settings: Readonly<Record<string, string | number>>;
  readonly timelines: readonly TimelineReport[];
}

export interface TimelineAnalysisOptions {
  /** Buckets before this (ms from the start) are left out of the steady rate: the JIT and the first flushes. Default 2000. */
  readonly warmupMs?: number;
  /** The window the steady rates are means of. Default 5000. */
  readonly steadyWindowMs?: number;
  /** Below threshold × steady is a dip. Default 0.8. */
  readonly threshold?: number;
  /** The width of the mean that smooths the series (centred on each bucket). Default 1000. */
  readonly smoothMs?: number;
  /** Recovered: the smoothed series stays at ≥ threshold × steady this long. Default 2000. */
  readonly sustainMs?: number;
}

function mean(xs: readonly number[]): number {
  return xs.length === 0 ? Number.NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** The mean of the buckets within `width` buckets centred on each one (fewer at the edges). */
export function smooth(perSec: readonly number[], width: number): number[] {
  const half = Math.floor(width / 2);
  return perSec.map((_, i) => mean(perSec.slice(Math.max(0, i - half), Math.min(perSec.length, i - half + width))));
}

/**
 * Read a throughput series (cmds/s per bucket of `bucketMs`, from the start of the load) around
 * an event at `eventAtMs`. The series is smoothed with a 1 s mean first: on a shared machine
 * single 250 ms buckets swing by half. The dip is the stretch around the lowest point after the
 * event where the smoothed rate is below threshold × steady; it has recovered once the smoothed
 * rate is back above that and stays there for `sustainMs` (a short burst inside an outage is
 * not a recovery).
 */
export function analyzeTimeline(perSec: readonly number[], bucketMs: number, eventAtMs: number, opts: TimelineAnalysisOptions = {}): TimelineSummary {
  const warmupMs = opts.warmupMs ?? 2000;
  const windowMs = opts.steadyWindowMs ?? 5000;
  const threshold = opts.threshold ?? 0.8;
  const width = Math.max(1, Math.round((opts.smoothMs ?? 1000) / bucketMs));
  const sustain = Math.max(1, Math.round((opts.sustainMs ?? 2000) / bucketMs));
  const windowBuckets = Math.max(1, Math.round(windowMs / bucketMs));
  const eventBucket = Math.min(perSec.length, Math.floor(eventAtMs / bucketMs));
  // Steady: whole buckets before the event's, after the warm-up, within the window.
  const from = Math.max(Math.ceil(warmupMs / bucketMs), eventBucket - windowBuckets);
  const before = perSec.slice(Math.max(0, from), eventBucket);
  const steadyPerSec = mean(before.length > 0 ? before : perSec.slice(0, eventBucket));
  const low = threshold * steadyPerSec;
  const m = smooth(perSec, width);

  // The lowest point after the event (the first, when several are equally low).
  let j = -1;
  for (let i = eventBucket; i < m.length; i++) if (j < 0 || m[i]! < m[j]!) j = i;
  if (j < 0) return { steadyPerSec, minPerSec: steadyPerSec, dipDepth: 0, dipMs: 0, recoverMs: 0, afterPerSec: mean(perSec.slice(-windowBuckets)) };
  const minPerSec = m[j]!;
  const dipDepth = steadyPerSec > 0 ? Math.max(0, 1 - minPerSec / steadyPerSec) : 0;
  if (minPerSec >= low) return { steadyPerSec, minPerSec, dipDepth, dipMs: 0, recoverMs: 0, afterPerSec: mean(perSec.slice(-windowBuckets)) };

  let start = j;
  while (start - 1 >= eventBucket && m[start - 1]! < low) start--;
  let recovered = -1;
  for (let i = j + 1; i < m.length && recovered < 0; i++) {
    const stretch = m.slice(i, Math.min(m.length, i + sustain));
    if (stretch.length === sustain && stretch.every((v) => v >= low)) recovered = i;
  }
  // The 1 s mean blurs the edges by half its width: place them on the buckets themselves.
  while (start < j && perSec[start]! >= low) start++;
  if (recovered >= 0) while (recovered - 1 > j && perSec[recovered - 1]! >= low) recovered--;
  const end = recovered < 0 ? m.length : recovered;
  const dipMs = perSec.slice(start, end).filter((v) => v < low).length * bucketMs;
  const tail = recovered < 0 ? [] : perSec.slice(Math.max(recovered, perSec.length - windowBuckets));
  return {
    steadyPerSec,
    minPerSec,
    dipDepth,
    dipMs,
    recoverMs: recovered < 0 ? null : Math.max(0, recovered * bucketMs - eventAtMs),
    afterPerSec: tail.length > 0 ? mean(tail) : null,
  };
}

/** Completions per bucket → cmds/s per bucket, cut to `durationMs`. */
export function perSecond(counts: readonly number[], bucketMs: number, durationMs: number): number[] {
  const n = Math.floor(durationMs / bucketMs);
  return Array.from({ length: n }, (_, i) => ((counts[i] ?? 0) * 1000) / bucketMs);
}

/** Break text at spaces into lines of at most `width` characters (a longer word stays whole). */
export function wrapText(text: string, width: number): string[] {
  const out: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line === '') line = word;
    else if (line.length + 1 + word.length <= width) line += ` ${word}`;
    else {
      out.push(line);
      line = word;
    }
  }
  if (line !== '') out.push(line);
  return out;
}

export interface TimelineChartPanel {
  readonly title: string;
  readonly kind: TimelineKind;
  readonly bucketMs: number;
  /** cmds/s per bucket. */
  readonly perSec: readonly number[];
  readonly markers: readonly TimelineMarker[];
  readonly summary?: TimelineSummary;
  /** false: the panel says its run failed verification. */
  readonly verifyOk?: boolean;
}

const LINE = '#2f6fdf';
const RAW = '#9dbcf0';
const MOVE = '#e08a2e';
const KILL = '#d0342c';
const PLACED = '#2a9d4b';

/**
 * One panel per timeline, stacked, on the same time and throughput axes: throughput per bucket
 * as a light step line and its 1 s mean as a dark line, the steady rate dashed, a vertical marker at the move or kill (orange for a
 * planned move, red for a kill) and at the instant every shard was placed again (green), and
 * the dip (from the event until throughput came back) shaded.
 */
export function formatTimelineSvg(panels: readonly TimelineChartPanel[], title: string, footnote: readonly string[] = []): string {
  const width = 900;
  const left = 70;
  const right = 20;
  const panelH = 190;
  const panelGap = 62;
  const top = 70;
  const plotW = width - left - right;
  const notes = footnote.flatMap((line) => wrapText(line, 150));
  const height = top + panels.length * (panelH + panelGap) + notes.length * 15 + 10;
  const durationMs = Math.max(1, ...panels.map((p) => p.perSec.length * p.bucketMs));
  const maxY = niceMax(Math.max(1, ...panels.flatMap((p) => p.perSec)));
  const x = (ms: number): number => left + (Math.min(ms, durationMs) / durationMs) * plotW;
  const tickEvery = durationMs > 40_000 ? 10_000 : 5_000;

  const s: string[] = [];
  s.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="12">`,
  );
  s.push(`<rect width="100%" height="100%" fill="#ffffff"/>`);
  s.push(`<text x="10" y="24" font-size="15" font-weight="600" fill="#222">${xmlEscape(title)}</text>`);
  // Legend.
  const legend: Array<[string, string, string]> = [
    [RAW, '', 'per 250 ms'],
    [LINE, '', '1 s mean'],
    ['#888', '5 4', 'steady (before the event)'],
    [MOVE, '', 'SIGTERM (planned move)'],
    [KILL, '', 'kill -9'],
    [PLACED, '4 3', 'every shard held by its new owner'],
  ];
  let lx = 10;
  for (const [c, dash, text] of legend) {
    s.push(`<line x1="${lx}" y1="44" x2="${lx + 18}" y2="44" stroke="${c}" stroke-width="2"${dash === '' ? '' : ` stroke-dasharray="${dash}"`}/>`);
    s.push(`<text x="${lx + 23}" y="48" fill="#444">${xmlEscape(text)}</text>`);
    lx += 23 + text.length * 6.3 + 18;
  }

  panels.forEach((p, i) => {
    const y0 = top + i * (panelH + panelGap) + 22;
    const y = (v: number): number => y0 + panelH - (Math.max(0, v) / maxY) * panelH;
    s.push(`<text x="${left}" y="${y0 - 10}" font-weight="600" fill="#333">${xmlEscape(p.title)}${p.verifyOk === false ? `<tspan fill="${KILL}"> — verification FAILED</tspan>` : ''}</text>`);
    // Grid and axes.
    for (let k = 0; k <= 4; k++) {
      const v = (maxY * k) / 4;
      s.push(`<line x1="${left}" y1="${y(v).toFixed(1)}" x2="${left + plotW}" y2="${y(v).toFixed(1)}" stroke="#e4e4e4"/>`);
      s.push(`<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" fill="#666">${xmlEscape(compact(v))}</text>`);
    }
    for (let t = 0; t <= durationMs; t += tickEvery) {
      s.push(`<line x1="${x(t).toFixed(1)}" y1="${y0 + panelH}" x2="${x(t).toFixed(1)}" y2="${y0 + panelH + 4}" stroke="#999"/>`);
      s.push(`<text x="${x(t).toFixed(1)}" y="${y0 + panelH + 16}" text-anchor="middle" fill="#666">${t / 1000} s</text>`);
    }
    s.push(`<text x="${left - 56}" y="${(y0 + panelH / 2).toFixed(1)}" fill="#666" transform="rotate(-90 ${left - 56} ${(y0 + panelH / 2).toFixed(1)})" text-anchor="middle">cmds/s</text>`);

    // The dip, shaded from the event until the recovery (or the end).
    const event = p.markers.find((m) => m.kind === 'event');
    const color = p.kind === 'failover' ? KILL : MOVE;
    if (event !== undefined && p.summary !== undefined && p.summary.dipMs > 0) {
      const endMs = p.summary.recoverMs === null ? durationMs : event.atMs + p.summary.recoverMs;
      s.push(`<rect x="${x(event.atMs).toFixed(1)}" y="${y0}" width="${Math.max(0, x(endMs) - x(event.atMs)).toFixed(1)}" height="${panelH}" fill="${color}" fill-opacity="0.08"/>`);
    }
    // Steady rate before the event.
    if (p.summary !== undefined && Number.isFinite(p.summary.steadyPerSec)) {
      const ys = y(p.summary.steadyPerSec).toFixed(1);
      s.push(`<line x1="${left}" y1="${ys}" x2="${left + plotW}" y2="${ys}" stroke="#888" stroke-dasharray="5 4"/>`);
      s.push(`<text x="${left + 4}" y="${(Number(ys) - 5).toFixed(1)}" fill="#666">steady ${xmlEscape(compact(p.summary.steadyPerSec))} cmds/s</text>`);
    }
    // The series as steps (each bucket a flat segment), and its 1 s mean through the buckets' middles.
    if (p.perSec.length > 0) {
      const d: string[] = [`M${x(0).toFixed(1)},${y(p.perSec[0]!).toFixed(1)}`];
      p.perSec.forEach((v, b) => {
        d.push(`V${y(v).toFixed(1)}`, `H${x((b + 1) * p.bucketMs).toFixed(1)}`);
      });
      s.push(`<path class="raw" d="${d.join(' ')}" fill="none" stroke="${RAW}" stroke-width="1"/>`);
      const m = smooth(p.perSec, Math.max(1, Math.round(1000 / p.bucketMs)));
      const pts = m.map((v, b) => `${x((b + 0.5) * p.bucketMs).toFixed(1)},${y(v).toFixed(1)}`);
      s.push(`<polyline class="mean" points="${pts.join(' ')}" fill="none" stroke="${LINE}" stroke-width="2"/>`);
    }
    // Markers, labelled at the top: each label on the first line where it overlaps no other.
    const taken: Array<Array<[number, number]>> = [];
    for (const m of [...p.markers].sort((a, b) => a.atMs - b.atMs)) {
      const mx = x(m.atMs);
      const mc = m.kind === 'placed' ? PLACED : color;
      s.push(`<line class="marker" x1="${mx.toFixed(1)}" y1="${y0}" x2="${mx.toFixed(1)}" y2="${y0 + panelH}" stroke="${mc}" stroke-width="1.5"${m.kind === 'placed' ? ' stroke-dasharray="4 3"' : ''}/>`);
      const text = `${m.label} (${(m.atMs / 1000).toFixed(1)} s)`;
      const textW = text.length * 6.4;
      const anchor = mx + 4 + textW > left + plotW ? 'end' : 'start';
      const span: [number, number] = anchor === 'end' ? [mx - 4 - textW, mx] : [mx, mx + 4 + textW];
      let row = 0;
      while ((taken[row] ?? []).some(([a, b]) => span[0] < b + 6 && a < span[1] + 6)) row++;
      (taken[row] ??= []).push(span);
      const tx = anchor === 'end' ? mx - 4 : mx + 4;
      s.push(`<text x="${tx.toFixed(1)}" y="${y0 + 13 + row * 14}" text-anchor="${anchor}" fill="${mc}">${xmlEscape(text)}</text>`);
    }
  });
  notes.forEach((line, i) => {
    s.push(`<text x="10" y="${height - 10 - (notes.length - 1 - i) * 15}" fill="#666" font-size="11">${xmlEscape(line)}</text>`);
  });
  s.push('</svg>');
  return `${s.join('\n')}\n`;
}
