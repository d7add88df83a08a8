// The benchmark's report speaks to a user: the terminal output fits 120 columns, goals are
// headed "Goals", a quick run says it is a smoke test, and the chart draws no bars on a log axis.
// Rows are built like the suite's own (full-size names and numbers), so widths are realistic.
import { describe, expect, it } from 'vitest';
import { formatSvgChart, formatTerminal, wrapLine, type BenchReport, type BenchRow } from '../bench/report.ts';
import { computeGoals, computeRatios } from '../bench/summary.ts';

const longNotes = 'median of 5 rounds (53,251, 45,985, 47,655, 46,968, 61,804 cmds/s); 88,309 acc, 11,691 rej; 1 worker; ' +
  '10,000 resident; RSS 133 MB started, 178 after phase 1, 305 phase-2 peak (end: 254 anon + 51 file-backed)';

function row(variant: string, concurrency: number, accounts: number | null, cmds: number | null, events: number, p99: number): BenchRow {
  return {
    workload: 'ledger', variant, concurrency, accounts, cmdsPerSec: cmds, eventsPerSec: events,
    p50Ms: p99 / 2.5, p99Ms: p99, p999Ms: p99 * 1.2, peakRssMb: 676, cpuSeconds: 15.2, jetstreamMessages: 98_309,
    verifyOk: true, phase1PerSec: 33_692, serverCpuSeconds: 8.1, cpuUsPerCmd: 152, workers: 1, residentActors: 97_649, notes: longNotes,
  };
}

const rows: BenchRow[] = [
  row('ceiling', 4000, null, null, 92_724, 85.2),
  row('plain', 64, 10_000, 10_878, 9_606, 11.3),
  row('plain', 4096, 10_000, 9_009, 7_956, 1315),
  row('in-process', 64, 10_000, 26_990, 23_834, 12.4),
  { ...row('in-process', 4096, 10_000, 47_655, 42_084, 210), nodeCpuUsPerCmd: 16.4 },
  { ...row('remote', 4096, 10_000, 30_656, 27_072, 312), nodeCpuUsPerCmd: 23.1, clientCpuUsPerCmd: 8.2 },
  row('ceiling-sync-always', 4000, null, null, 4_607, 1704),
  row('sync-always', 4096, 10_000, 44_054, 38_904, 208),
  row('scale-1m', 4096, 1_000_000, 24_614, 17_314, 316),
];

function report(mode: 'quick' | 'full'): BenchReport {
  return {
    machine: { cpuModel: 'AMD EPYC 7B13 64-Core Processor', cores: 2, memoryGb: 23.5, os: 'linux 6.1', node: 'v20.20.2', natsServer: 'v2.10.27' },
    rows,
    micro: [{ group: 'shard routing: hash(type, id) mod 64', name: 'shardOf: FNV-1a (runtime/envelope.ts)', opsPerSec: 16_263_865, unit: 'ids/s', relative: 1, notes: '10k ids over 64 shards: max 1.06× mean, min 0.95×' }],
    mode,
    ratios: computeRatios(rows),
    goals: computeGoals({ rows, activation: [], quick: mode === 'quick', maxResidentActors: 100_000 }),
    failures: [],
  };
}

describe('bench terminal report', () => {
  it('fits every line in 120 columns', () => {
    const text = formatTerminal(report('full'));
    const wide = text.split('\n').filter((l) => [...l].length > 120);
    expect(wide).toEqual([]);
    expect(text).toContain('47,655');
    expect(text).toContain(longNotes.slice(0, 40));
  });

  it('heads the goals "Goals" and names no issue', () => {
    const text = formatTerminal(report('full'));
    expect(text).toMatch(/^Goals:$/m);
    expect(text).not.toMatch(/issue/i);
    expect(text).toContain('goal: ≥ 150,000 cmds/s');
  });

  it('shows the node CPU per command of remote against in-process next to the raw ratio', () => {
    const text = formatTerminal(report('full'));
    expect(text).toMatch(/Troupe remote C=4096 \/ in-process C=4096 +0\.64×/);
    expect(text).toMatch(/Troupe node CPU\/cmd remote C=4096 \/ in-process C=4096 +1\.41× +23\.1 \/ 16\.4 µs\/cmd; client 8\.2$/m);
  });

  it('says a quick run is a smoke test and not a performance claim', () => {
    expect(formatTerminal(report('quick'))).toContain('not a performance claim');
    expect(formatTerminal(report('full'))).not.toContain('not a performance claim');
  });

  it('wraps a long line at spaces with a hanging indent', () => {
    const lines = wrapLine(`  ${'word '.repeat(40).trim()}`, 50);
    expect(lines.length).toBeGreaterThan(1);
    expect(lines.every((l) => l.length <= 50)).toBe(true);
    expect(lines.slice(1).every((l) => l.startsWith('      w'))).toBe(true);
  });
});

describe('bench chart', () => {
  const p99Bars = (svg: string): number => (svg.match(/fill-opacity="0\.75"/g) ?? []).length;

  it('draws p99 as points, not bars, when the axis is logarithmic', () => {
    const svg = formatSvgChart(rows);
    expect(svg).toContain('log scale');
    expect(p99Bars(svg)).toBe(0);
    expect((svg.match(/<circle /g) ?? []).length).toBe(rows.length);
  });

  it('draws p99 as bars on a linear axis', () => {
    const close = rows.filter((r) => (r.p99Ms ?? 0) >= 80 && (r.p99Ms ?? 0) <= 400);
    const svg = formatSvgChart(close);
    expect(svg).not.toContain('log scale');
    expect(p99Bars(svg)).toBe(close.length);
    expect(svg).not.toContain('<circle ');
  });
});
