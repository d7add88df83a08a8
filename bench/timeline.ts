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
  /** Median throughput over the steady window before the event (cmds/s). */
  readonly steadyPerSec: number;
  /** The lowest bucket from the event to the recovery (cmds/s). */
  readonly minPerSec: number;
  /** 1 − min/steady: 1 means throughput fell to zero. */
  readonly dipDepth: number;
  /** Time spent below the threshold (× steady) between the event and the recovery, ms. */
  readonly dipMs: number;
  /** From the event to the start of the first window of `sustainMs` back at ≥ threshold × steady; null when it never came back. */
  readonly recoverMs: number | null;
  /** Median throughput over the last steady window of the series, once recovered (cmds/s); null when it never recovered. */
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
  /** The window the steady rates are medians of. Default 5000. */
  readonly steadyWindowMs?: number;
  /** A bucket below threshold × steady is in the dip. Default 0.8. */
  readonly threshold?: number;
  /** Recovered: a window this long whose mean is at least threshold × steady. Default 1000. */
  readonly sustainMs?: number;
}

function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Read a throughput series (cmds/s per bucket of `bucketMs`, from the start of the load) around
 * an event at `eventAtMs`: the steady rate before it, how deep and how long the dip after it
 * went, and when throughput came back.
 */
export function analyzeTimeline(perSec: readonly number[], bucketMs: number, eventAtMs: number, opts: TimelineAnalysisOptions = {}): TimelineSummary {
  const warmupMs = opts.warmupMs ?? 2000;
  const windowMs = opts.steadyWindowMs ?? 5000;
  const threshold = opts.threshold ?? 0.8;
  const sustain = Math.max(1, Math.round((opts.sustainMs ?? 1000) / bucketMs));
  const eventBucket = Math.floor(eventAtMs / bucketMs);
  // Steady: whole buckets that end by the event, start after the warm-up, within the window.
  const from = Math.max(Math.ceil(warmupMs / bucketMs), Math.floor((eventAtMs - windowMs) / bucketMs));
  const before = perSec.slice(Math.max(0, from), eventBucket);
  const steadyPerSec = median(before.length > 0 ? before : perSec.slice(0, eventBucket));
  const low = threshold * steadyPerSec;

  let dipStart = -1;
  for (let i = eventBucket; i < perSec.length; i++) {
    if (perSec[i]! < low) {
      dipStart = i;
      break;
    }
  }
  if (dipStart < 0) {
    const rest = perSec.slice(eventBucket);
    const minPerSec = rest.length > 0 ? Math.min(...rest) : steadyPerSec;
    return { steadyPerSec, minPerSec, dipDepth: Math.max(0, 1 - minPerSec / steadyPerSec), dipMs: 0, recoverMs: 0, afterPerSec: median(perSec.slice(-Math.round(windowMs / bucketMs))) };
  }
  let recovered = -1;
  for (let i = dipStart + 1; i + sustain <= perSec.length; i++) {
    let sum = 0;
    for (let k = 0; k < sustain; k++) sum += perSec[i + k]!;
    if (sum / sustain >= low) {
      recovered = i;
      break;
    }
  }
  const end = recovered < 0 ? perSec.length : recovered;
  const inDip = perSec.slice(eventBucket, end);
  const minPerSec = Math.min(...inDip);
  const dipMs = perSec.slice(dipStart, end).filter((v) => v < low).length * bucketMs;
  const recoverMs = recovered < 0 ? null : Math.max(0, recovered * bucketMs - eventAtMs);
  const tail = recovered < 0 ? [] : perSec.slice(Math.max(recovered, perSec.length - Math.round(windowMs / bucketMs)));
  return {
    steadyPerSec,
    minPerSec,
    dipDepth: steadyPerSec > 0 ? Math.max(0, 1 - minPerSec / steadyPerSec) : 0,
    dipMs,
    recoverMs,
    afterPerSec: tail.length > 0 ? median(tail) : null,
  };
}

/** Completions per bucket → cmds/s per bucket, cut to `durationMs`. */
export function perSecond(counts: readonly number[], bucketMs: number, durationMs: number): number[] {
  const n = Math.floor(durationMs / bucketMs);
  return Array.from({ length: n }, (_, i) => ((counts[i] ?? 0) * 1000) / bucketMs);
}

export interface TimelineChartPanel {
  readonly title: string;
  readonly kind: TimelineKind;
  readonly bucketMs: number;
  /** cmds/s per bucket. */
  readonly perSec: readonly number[];
  readonly markers: readonly TimelineMarker[];
  readonly summary?: TimelineSummary;
}

const LINE = '#2f6fdf';
const MOVE = '#e08a2e';
const KILL = '#d0342c';
const PLACED = '#2a9d4b';

/**
 * One panel per timeline, stacked, on the same time and throughput axes: throughput per bucket
 * as a step line, the steady rate dashed, a vertical marker at the move or kill (orange for a
 * planned move, red for a kill) and at the instant every shard was placed again (green), and
 * the dip (from the event until throughput came back) shaded.
 */
export function formatTimelineSvg(panels: readonly TimelineChartPanel[], title: string, footnote: readonly string[] = []): string {
  const width = 900;
  const left = 70;
  const right = 20;
  const panelH = 190;
  const panelGap = 62;
  const top = 52;
  const plotW = width - left - right;
  const height = top + panels.length * (panelH + panelGap) + footnote.length * 15 + 10;
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

  panels.forEach((p, i) => {
    const y0 = top + i * (panelH + panelGap) + 22;
    const y = (v: number): number => y0 + panelH - (Math.max(0, v) / maxY) * panelH;
    s.push(`<text x="${left}" y="${y0 - 10}" font-weight="600" fill="#333">${xmlEscape(p.title)}</text>`);
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
    // The series as steps: each bucket a flat segment.
    if (p.perSec.length > 0) {
      const d: string[] = [`M${x(0).toFixed(1)},${y(p.perSec[0]!).toFixed(1)}`];
      p.perSec.forEach((v, b) => {
        d.push(`V${y(v).toFixed(1)}`, `H${x((b + 1) * p.bucketMs).toFixed(1)}`);
      });
      s.push(`<path d="${d.join(' ')}" fill="none" stroke="${LINE}" stroke-width="1.6"/>`);
    }
    // Markers, labelled at the top; a second label one line lower when two are close.
    let lastLabelX = -Infinity;
    let row = 0;
    for (const m of [...p.markers].sort((a, b) => a.atMs - b.atMs)) {
      const mx = x(m.atMs);
      const mc = m.kind === 'placed' ? PLACED : color;
      s.push(`<line class="marker" x1="${mx.toFixed(1)}" y1="${y0}" x2="${mx.toFixed(1)}" y2="${y0 + panelH}" stroke="${mc}" stroke-width="1.5"${m.kind === 'placed' ? ' stroke-dasharray="4 3"' : ''}/>`);
      row = mx - lastLabelX < 220 ? row + 1 : 0;
      lastLabelX = mx;
      const anchor = mx > left + plotW - 200 ? 'end' : 'start';
      const tx = anchor === 'end' ? mx - 4 : mx + 4;
      s.push(`<text x="${tx.toFixed(1)}" y="${y0 + 13 + row * 14}" text-anchor="${anchor}" fill="${mc}">${xmlEscape(`${m.label} (${(m.atMs / 1000).toFixed(1)} s)`)}</text>`);
    }
  });
  footnote.forEach((line, i) => {
    s.push(`<text x="10" y="${height - 10 - (footnote.length - 1 - i) * 15}" fill="#666" font-size="11">${xmlEscape(line)}</text>`);
  });
  s.push('</svg>');
  return `${s.join('\n')}\n`;
}
