// The cluster step's pure parts: its command line, what a throughput series says about a dip,
// the timeline chart (a marker where the move or kill happened), and the results text.
import { describe, expect, it } from 'vitest';
import { parseArgs } from '../bench/args.ts';
import { nodeNames, pickVictim } from '../bench/cluster.ts';
import { clusterSectionMd, formatTerminal, type BenchReport, type BenchRow } from '../bench/report.ts';
import { computeRatios } from '../bench/summary.ts';
import { analyzeTimeline, formatTimelineSvg, perSecond, type TimelineReport } from '../bench/timeline.ts';
import { shardsOf } from '../runtime/placement.ts';

/** cmds/s per 250 ms bucket: `rate` throughout, except `gaps` ([fromMs, toMs) at `at` cmds/s). */
function series(durationMs: number, rate: number, gaps: Array<[number, number, number]> = []): number[] {
  return Array.from({ length: durationMs / 250 }, (_, i) => {
    const t = i * 250;
    const gap = gaps.find(([a, b]) => t >= a && t < b);
    return gap === undefined ? rate : gap[2];
  });
}

describe('bench command line', () => {
  it('takes the cluster step in --only, also by its alias many-nodes', () => {
    expect([...parseArgs(['--only', 'cluster']).only!]).toEqual(['cluster']);
    expect([...parseArgs(['--only', 'remote,many-nodes']).only!].sort()).toEqual(['cluster', 'remote']);
  });

  it('names the cluster step among the steps when --only gets an unknown one', () => {
    expect(() => parseArgs(['--only', 'clusters'])).toThrow(/unknown step "clusters".*cluster/);
  });

  it('reads the timeline length and chart file, and refuses a length that is not a positive integer', () => {
    const a = parseArgs(['--quick', '--timeline-seconds', '20', '--timeline-svg', 'out.svg']);
    expect(a).toMatchObject({ quick: true, timelineSeconds: 20, timelineSvg: 'out.svg', only: null, help: false });
    expect(() => parseArgs(['--timeline-seconds', '0'])).toThrow(/--timeline-seconds needs a positive integer/);
    expect(() => parseArgs(['--timeline-svg'])).toThrow(/--timeline-svg needs a value/);
  });

  it('asks for the usage with --help instead of exiting while parsing', () => {
    expect(parseArgs(['--help']).help).toBe(true);
  });
});

describe('cluster step: the node that goes', () => {
  it('is the node whose share of the shards is closest to an even one', () => {
    const names = nodeNames(3);
    expect(names).toEqual(['node-1', 'node-2', 'node-3']);
    const v = pickVictim(names, 64);
    const shares = names.map((n) => shardsOf(n, names, 64).length);
    const best = Math.min(...shares.map((c) => Math.abs(c - 64 / 3)));
    expect(Math.abs(v.shards.length - 64 / 3)).toBe(best);
    expect(v.shards).toEqual(shardsOf(v.name, names, 64));
  });
});

describe('timeline analysis', () => {
  it('finds a full outage: its depth, its length and when throughput came back', () => {
    // 1,000 cmds/s, an outage from 10 s to 14 s, then 1,000 again; the event at 9 s.
    const s = analyzeTimeline(series(30_000, 1000, [[10_000, 14_000, 0]]), 250, 9_000);
    expect(s.steadyPerSec).toBe(1000);
    expect(s.minPerSec).toBe(0);
    expect(s.dipDepth).toBe(1);
    expect(s.dipMs).toBe(4_000);
    // Back at 14 s, 5 s after the event.
    expect(s.recoverMs).toBe(5_000);
    expect(s.afterPerSec).toBe(1000);
  });

  it('measures the steady rate before the event, leaving out the warm-up', () => {
    const perSec = series(30_000, 1000, [[0, 2_000, 100], [12_000, 13_000, 0]]);
    expect(analyzeTimeline(perSec, 250, 8_000).steadyPerSec).toBe(1000);
  });

  it('does not take a short burst inside an outage for a recovery', () => {
    // Zero from 10 s to 20 s, except one good second at 14 s.
    const perSec = series(30_000, 1000, [[10_000, 14_000, 0], [15_000, 20_000, 0]]);
    const s = analyzeTimeline(perSec, 250, 9_000);
    expect(s.recoverMs).toBe(11_000);
    expect(s.dipMs).toBe(9_000);
  });

  it('says there was no dip when throughput never falls below 80% of steady', () => {
    const s = analyzeTimeline(series(30_000, 1000, [[12_000, 13_000, 900]]), 250, 9_000);
    expect(s).toMatchObject({ dipMs: 0, recoverMs: 0 });
    expect(s.dipDepth).toBeCloseTo(0.1, 5);
  });

  it('says throughput never came back when it stays low to the end', () => {
    const s = analyzeTimeline(series(30_000, 1000, [[10_000, 30_000, 100]]), 250, 9_000);
    expect(s.recoverMs).toBeNull();
    expect(s.afterPerSec).toBeNull();
    expect(s.dipDepth).toBeCloseTo(0.9, 5);
  });

  it('turns completions per bucket into cmds/s, cut to the timeline', () => {
    expect(perSecond([10, 20, 30, 40], 250, 750)).toEqual([40, 80, 120]);
    expect(perSecond([10], 250, 500)).toEqual([40, 0]);
  });
});

function timeline(kind: 'move' | 'failover', eventAtMs: number, placedAtMs: number): TimelineReport {
  const perSec = series(30_000, 20_000, [[eventAtMs + 500, placedAtMs + 1_000, 0]]);
  return {
    kind,
    title: kind === 'move' ? 'Planned move: node-1 stopped with SIGTERM & handing off' : 'Failover: node-1 killed',
    bucketMs: 250,
    perSec,
    errorsPerBucket: [],
    markers: [
      { atMs: eventAtMs, kind: 'event', label: `${kind === 'move' ? 'SIGTERM' : 'kill -9'} node-1 (22 of 64 shards)` },
      { atMs: placedAtMs, kind: 'placed', label: 'all shards held by node-2 and node-3' },
    ],
    summary: analyzeTimeline(perSec, 250, eventAtMs),
    victim: 'node-1',
    victimShards: 22,
    shards: 64,
    placedMs: placedAtMs - eventAtMs,
    accepted: 400_000,
    rejected: 50_000,
    errors: 0,
    p50Ms: 150,
    p99Ms: 9_000,
    maxMs: 14_000,
    jetstreamMessages: 9_000,
    verifyOk: true,
    verifyFailures: [],
  };
}

describe('timeline chart', () => {
  const move = timeline('move', 8_000, 9_000);
  const failover = timeline('failover', 8_000, 20_000);
  const svg = formatTimelineSvg([move, failover], 'Throughput <over> time', ['lease TTL 10 s (default)']);

  it('is one SVG document with the title escaped', () => {
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect(svg).toContain('Throughput &lt;over&gt; time');
    expect(svg).toContain('SIGTERM &amp; handing off');
    expect(svg).not.toMatch(/NaN|undefined/);
  });

  it('draws a marker line at each marked instant, on the time axis of the series', () => {
    const lines = [...svg.matchAll(/<line class="marker" x1="([\d.]+)"[^>]*stroke="(#[0-9a-f]+)"/g)].map((m) => ({ x: Number(m[1]), color: m[2] }));
    expect(lines).toHaveLength(4);
    // 70 px left margin, 810 px for 30 s.
    const at = (ms: number): number => 70 + (ms / 30_000) * 810;
    expect(lines.map((l) => l.x)).toEqual([at(8_000), at(9_000), at(8_000), at(20_000)].map((v) => Number(v.toFixed(1))));
    // A planned move's event is orange, a kill's red, and "every shard placed" green in both.
    expect(lines.map((l) => l.color)).toEqual(['#e08a2e', '#2a9d4b', '#d0342c', '#2a9d4b']);
    expect(svg).toContain('kill -9 node-1 (22 of 64 shards) (8.0 s)');
    expect(svg).toContain('all shards held by node-2 and node-3 (20.0 s)');
  });

  it('says on the panel when its run failed verification', () => {
    expect(svg).not.toContain('verification FAILED');
    expect(formatTimelineSvg([{ ...failover, verifyOk: false }], 't')).toContain('verification FAILED');
  });

  it('draws each series per bucket and as a 1 s mean', () => {
    expect((svg.match(/<path class="raw"/g) ?? []).length).toBe(2);
    expect((svg.match(/<polyline class="mean"/g) ?? []).length).toBe(2);
    // One flat segment per bucket.
    const raw = /<path class="raw" d="([^"]+)"/.exec(svg)![1]!;
    expect((raw.match(/H/g) ?? []).length).toBe(120);
  });
});

describe('cluster results', () => {
  const row = (variant: string, cmds: number): BenchRow => ({
    workload: 'ledger', variant, concurrency: 4096, accounts: 10_000, cmdsPerSec: cmds, eventsPerSec: cmds * 0.88,
    p50Ms: 100, p99Ms: 300, p999Ms: 400, peakRssMb: 300, cpuSeconds: 10, jetstreamMessages: 2_000, verifyOk: true,
  });
  const report: BenchReport = {
    machine: { cpuModel: 'AMD EPYC', cores: 2, memoryGb: 23.5, os: 'linux', node: 'v20.20.2', natsServer: 'v2.10.27' },
    rows: [row('remote', 30_000), row('cluster', 15_000)],
    cluster: {
      settings: { nodes: 3, natsServers: 3, shards: 64, replicas: 3, concurrency: 4096, leaseTtl: '10 s (default)', settle: '2 s (default)', clientTimeout: '5 s', clientRetry: 'retry', bucket: '250 ms', timeline: '30 s' },
      timelines: [timeline('move', 8_000, 9_000), timeline('failover', 8_000, 20_000)],
    },
  };

  it('puts the cluster next to one remote node of the same run as a ratio', () => {
    const r = computeRatios(report.rows).find((x) => x.name.startsWith('cluster (3 nodes, R3) C=4,096 / remote'));
    expect(r?.value).toBeCloseTo(0.5, 5);
    expect(computeRatios([row('cluster', 15_000)])).toEqual([]);
  });

  it('writes a Many nodes section with the steady row, the chart and a line per timeline', () => {
    const md = clusterSectionMd(report, '../docs/img/cluster-timeline.svg').join('\n');
    expect(md).toMatch(/^## Many nodes$/m);
    expect(md).toContain('| ledger | cluster | 4,096 | 10,000 | 15,000 |');
    expect(md).toContain('![throughput over time during a planned move and a failover](../docs/img/cluster-timeline.svg)');
    const failover = md.split('\n').find((l) => l.startsWith('| failover: kill -9 node-1'))!;
    // 20,000 cmds/s steady, zero during the outage, shards placed 12 s after the kill.
    expect(failover).toMatch(/\| 22 of 64 \| 20,000 \| 0 \| 100% \|/);
    expect(failover).toContain('| 12.00 s |');
    expect(md).toMatch(/^\| planned move: SIGTERM node-1 \|/m);
    expect(clusterSectionMd({ ...report, rows: [row('remote', 1)], cluster: undefined })).toEqual([]);
  });

  it('lists the timelines in the terminal report within 120 columns', () => {
    const text = formatTerminal(report);
    expect(text).toMatch(/^Cluster timelines:$/m);
    expect(text).toContain('failover: kill -9 node-1 (22 of 64 shards)');
    expect(text.split('\n').filter((l) => [...l].length > 120)).toEqual([]);
  });
});
