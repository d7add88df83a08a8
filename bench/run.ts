/**
 * The benchmark suite: `npm run bench` (node --import tsx bench/run.ts).
 *
 *   npm run bench                          the whole suite (several minutes); rewrites
 *                                          bench/RESULTS.md and bench/results.svg
 *   npm run bench -- --quick               small sizes, about a minute: a smoke test that the
 *                                          suite runs and verifies, not a performance claim
 *   npm run bench -- --json FILE           also write machine-readable results
 *   npm run bench -- --only in-process,remote
 *                                          a subset: ceiling, plain (or baselines), in-process,
 *                                          remote, workers, scale, activation, sync, r3 (or
 *                                          durability), cluster, micro
 *   npm run bench -- --profile DIR         CPU profiles of the Troupe runs: main thread
 *                                          (--cpu-prof) and workers (TROUPE_PROFILE_DIR), then
 *                                          a summary of the top self-time functions
 *   --accounts N --commands N              override the workload size
 *   --scale 10k,100k,1m                    account counts of the scale curve (the largest
 *                                          one bounds resident actors)
 *   --repeat N                             rounds of ceiling, plain, in-process, remote and
 *                                          workers; each shows its median round (default 3,
 *                                          quick 1)
 *   --same-process                         run Troupe in this process instead of a child per run
 *   --from-json FILE                       measure nothing: render the terminal report,
 *                                          RESULTS.md and the chart again from a --json file
 *                                          (goals and ratios re-evaluated)
 *   --md FILE --svg FILE                   where to write RESULTS.md and the chart (a full run
 *                                          of everything writes bench/RESULTS.md and
 *                                          bench/results.svg unless told otherwise)
 *   --timeline-seconds N                   how long each cluster timeline runs (default 35)
 *   --timeline-svg FILE                    where to draw the cluster timelines (default, when
 *                                          the cluster step ran without --quick:
 *                                          docs/img/cluster-timeline.svg)
 *
 * In one run, on the same nats-server where it applies:
 *  1. baselines: the per-message ceiling (best of 1 and 2 connections, as many messages as the
 *     workload stores events) and the plain way at C = 64 and 4096;
 *  2. Troupe in-process at C = 64 and 4096;
 *  3. Troupe remote (node and clients in two processes) at C = 64 and 4096;
 *  4. workers 1 and 2 (in-process, C = 4096);
 *  5. scale: 10k, 100k and 1M accounts (1M with maxResidentActors so idle actors passivate);
 *  6. activation of actors with 10, 1,000 and 100,000 events, with and without a snapshot;
 *  7. durability: sync_interval always (one server) and a 3-server cluster with replicas 3,
 *     each with its own ceiling;
 *  8. cluster: 3 Troupe nodes on a 3-server cluster (replicas 3), remote clients in their own
 *     process, in rounds (bench/cluster.ts); then throughput over time, per 250 ms, while a
 *     node hands its shards off (SIGTERM) and while one is killed (SIGKILL), drawn with
 *     markers at those instants (bench/timeline.ts);
 *  9. tinybench microbenchmarks.
 * Exit code 1 when a verification failed or a step could not run.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative } from 'node:path';
import { ceilingRow, plainRow, pickBestCeiling, runCeiling, runPlain, type CeilingResult } from './baselines.ts';
import { activationRows, type ActivationResult, type ActivationRow, type ActivationSpec } from './activation.ts';
import { runMicro } from './micro.ts';
import { runTimers } from './timers.ts';
import { startBenchCluster, startBenchNats } from './nats.ts';
import { formatSummary, profileFiles, summarizeProfile } from './profile.ts';
import {
  formatTerminal,
  machineInfo,
  QUICK_NOTICE,
  rowSection,
  steps,
  writeJson,
  writeResultsMd,
  writeSvgChart,
  type BenchReport,
  type BenchRow,
  type MicroRow,
  type ProgressHandle,
} from './report.ts';
import { BENCH_DIR, REPO_DIR, spawnChild } from './spawn.ts';
import { clusterRow, runClusterSteady, runClusterTimeline, type ClusterSettings } from './cluster.ts';
import { analyzeTimeline, formatTimelineSvg, type ClusterReport, type TimelineReport } from './timeline.ts';
import { computeGoals, computeRatios } from './summary.ts';
import { CHILD_SCRIPT, freshRun, ledgerRow, remoteRow, runLedger, runRemote, type RunControl, type ServerRef, type TroupeTuning } from './troupe.ts';
import { expectedOutcome, generateCommands } from './workload.ts';
import { parseArgs, STEP_KEYS, usage, type Args, type StepKey } from './args.ts';

interface Sizes {
  accounts: number;
  commands: number;
  concurrencies: number[];
  remoteConcurrencies: number[];
  scale: { accounts: number; label: string; tuning: TroupeTuning }[];
  maxResidentActors: number;
  activationSizes: number[];
  activationRepeats: number;
  durabilityConcurrency: number;
  workerCounts: number[];
  /** Rounds of ceiling, plain, in-process, remote and workers (each keeps its median run). */
  repeat: number;
  seed: number;
  cluster: Omit<ClusterSettings, 'server'>;
}

function sizesFor(args: Args): Sizes {
  const accounts = args.accounts ?? (args.quick ? 1_000 : 10_000);
  const commands = args.commands ?? (args.quick ? 5_000 : 100_000);
  const maxResidentActors = args.quick ? 1_000 : 100_000;
  const label = (n: number) => (n >= 1_000_000 ? `${n / 1_000_000}m` : n >= 1000 ? `${n / 1000}k` : `${n}`);
  const scaleAccounts = args.scale ?? (args.quick ? [4_000] : [10_000, 100_000, 1_000_000]);
  return {
    accounts,
    commands,
    concurrencies: [64, 4096],
    // C = 4096 is the goal; quick mode runs only that one.
    remoteConcurrencies: args.quick ? [4096] : [4096, 64],
    // The largest run (and the quick one) bounds resident actors, so idle ones are passivated.
    scale: scaleAccounts.map((n, i) => ({
      accounts: n,
      label: `scale-${label(n)}`,
      tuning: i === scaleAccounts.length - 1 ? { maxResidentActors } : {},
    })),
    maxResidentActors,
    activationSizes: args.quick ? [10, 1_000] : [10, 1_000, 100_000],
    activationRepeats: args.quick ? 1 : 3,
    durabilityConcurrency: 4096,
    workerCounts: [1, 2],
    repeat: args.repeat ?? (args.quick ? 1 : 3),
    seed: 42,
    cluster: {
      nodes: 3,
      // Rendezvous placement of 16 shards (the default) over node-1..3 is 10/1/5; 64 is 22/19/23.
      shards: 64,
      replicas: 3,
      accounts,
      commandCount: commands,
      seed: 42,
      concurrency: 4096,
      // Troupe's defaults (10 s lease, 2 s settle window), except in a quick run.
      ...(args.quick ? { leaseTtlMs: 3_000, settleMs: 1_000 } : {}),
      timelineMs: (args.timelineSeconds ?? (args.quick ? 12 : 35)) * 1000,
      eventAtMs: args.quick ? 4_000 : 8_000,
      bucketMs: 250,
      // A command in flight on a killed node is retried after this (its reply never comes).
      clientTimeoutMs: 5_000,
      // Default backoff (50 ms doubling to 2 s), but tries enough to outlast a failover.
      clientRetry: { attempts: 1_000, totalMs: 120_000 },
    },
  };
}

/**
 * The run with the median throughput of a variant's rounds (the lower middle one for an even
 * count), verified only when every round verified; the notes list every round.
 */
function medianRow(rs: readonly BenchRow[]): BenchRow {
  const speed = (r: BenchRow): number => r.cmdsPerSec ?? r.eventsPerSec ?? 0;
  const sorted = [...rs].sort((a, b) => speed(a) - speed(b));
  const m = sorted[Math.floor((sorted.length - 1) / 2)]!;
  if (rs.length === 1) return m;
  const unit = m.cmdsPerSec === null ? 'msgs/s' : 'cmds/s';
  return {
    ...m,
    verifyOk: rs.every((r) => r.verifyOk === true),
    rounds: rs.map((r) => ({ cmdsPerSec: r.cmdsPerSec, eventsPerSec: r.eventsPerSec, p50Ms: r.p50Ms, p99Ms: r.p99Ms, p999Ms: r.p999Ms, peakRssMb: r.peakRssMb, verifyOk: r.verifyOk })),
    notes: `median of ${rs.length} rounds (${rs.map((r) => fmt(speed(r))).join(', ')} ${unit}); ${m.notes ?? ''}`,
  };
}

/** The chart of the cluster timelines, with the settings that shape them in a footnote. */
function timelineChart(cluster: ClusterReport, machine: BenchReport['machine'], mode: string | undefined): string {
  const set = cluster.settings;
  const footnote = [
    `${set.nodes} Troupe nodes (1 worker each), ${set.shards} shards, stream replicas ${set.replicas} on a ${set.natsServers}-server nats-server cluster; ` +
      `one client process, closed loop at C = ${set.concurrency}; lease TTL ${set.leaseTtl}, settle window ${set.settle}; client timeoutMs ${set.clientTimeout}, ${set.clientRetry}.`,
    `Throughput per ${set.bucket}. ${machine.cores} shared cores (${machine.cpuModel}), loaded by other work; Node ${machine.node}, nats-server ${machine.natsServer}` +
      `${mode === 'quick' ? '. Quick mode: not a performance claim.' : '.'}`,
  ];
  return formatTimelineSvg(cluster.timelines, 'Ledger workload on 3 nodes: throughput over time during a planned move and a failover', footnote);
}

/** Print the report; write the JSON, RESULTS.md and the charts where they are due. */
async function output(report: BenchReport, args: Args, accounts: number, commandCount: number): Promise<void> {
  const rows = report.rows;
  process.stdout.write(`\n${formatTerminal(report)}`);

  // The timelines are drawn whenever they were measured for real (or when asked).
  const timelineSvg = report.cluster === undefined || report.cluster.timelines.length === 0 ? undefined
    : args.timelineSvg ?? (report.mode === 'quick' ? undefined : join(REPO_DIR, 'docs', 'img', 'cluster-timeline.svg'));
  if (timelineSvg !== undefined && report.cluster !== undefined) {
    await mkdir(dirname(timelineSvg), { recursive: true });
    await writeFile(timelineSvg, timelineChart(report.cluster, report.machine, report.mode));
    process.stdout.write(`wrote ${relative(process.cwd(), timelineSvg) || timelineSvg}\n`);
  }

  if (args.json !== undefined) {
    await writeJson(args.json, report);
    process.stdout.write(`wrote ${args.json}\n`);
  }
  const everything = args.only === null && !args.quick;
  const md = args.md ?? (everything ? join(BENCH_DIR, 'RESULTS.md') : undefined);
  const svg = args.svg ?? (everything ? join(BENCH_DIR, 'results.svg') : undefined);
  const chartRows = rows.filter((r) => rowSection(r) !== 'scale');
  if (svg !== undefined) {
    await writeSvgChart(svg, chartRows, `Ledger workload, ${fmt(accounts)} accounts, ${fmt(commandCount)} commands: Troupe against the baselines`);
    process.stdout.write(`wrote ${relative(process.cwd(), svg) || svg}\n`);
  }
  if (md !== undefined) {
    const chartRef = svg === undefined ? undefined : relative(join(md, '..'), svg) || basename(svg);
    const timelineRef = timelineSvg === undefined ? undefined : relative(join(md, '..'), timelineSvg);
    await writeResultsMd(md, report, chartRef, timelineRef);
    process.stdout.write(`wrote ${relative(process.cwd(), md) || md}\n`);
  }
}

/** --from-json: the report of an earlier run, with goals and ratios evaluated again. */
async function rerender(args: Args): Promise<void> {
  const saved = JSON.parse(readFileSync(args.fromJson!, 'utf8')) as BenchReport;
  const config = saved.config ?? {};
  const num = (k: string): number | undefined => (typeof config[k] === 'number' ? (config[k] as number) : undefined);
  const maxResidentActors = num('maxResidentActors (largest scale run, per worker)');
  // The timelines are read again too: the series and markers are the measurement, the summary is not.
  const cluster: ClusterReport | undefined = saved.cluster === undefined ? undefined : {
    ...saved.cluster,
    timelines: saved.cluster.timelines.map((t) => {
      const event = t.markers.find((m) => m.kind === 'event');
      return event === undefined ? t : { ...t, summary: analyzeTimeline(t.perSec, t.bucketMs, event.atMs) };
    }),
  };
  const report: BenchReport = {
    ...saved,
    ...(cluster === undefined ? {} : { cluster }),
    rerendered: `${new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC')} from ${basename(args.fromJson!)}`,
    ratios: computeRatios(saved.rows),
    goals: computeGoals({ rows: saved.rows, activation: saved.activation ?? [], quick: saved.mode === 'quick', ...(maxResidentActors === undefined ? {} : { maxResidentActors }) }),
  };
  // Written again only when asked (--json, --md, --svg), or in place for a full run of everything.
  const full = saved.mode === 'full' && (saved.command ?? '').includes('--only') === false;
  await output(report, { ...args, quick: !full, only: full ? null : new Set(STEP_KEYS) }, num('accounts') ?? 0, num('commands') ?? 0);
}

/** The commit the suite ran on, and whether runtime/ or actors/ had uncommitted changes then. */
function sourceState(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_DIR, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'runtime', 'actors'], { cwd: REPO_DIR, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
      .split('\n').filter((l) => l.trim() !== '').length;
    return dirty === 0 ? head : `${head} + ${dirty} uncommitted file${dirty === 1 ? '' : 's'} in runtime/ or actors/`;
  } catch {
    return 'unknown (not a git checkout)';
  }
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.help) {
    process.stdout.write(usage());
    return;
  }
  if (args.fromJson !== undefined) {
    await rerender(args);
    return;
  }
  const want = (k: StepKey): boolean => args.only === null || args.only.has(k);
  if (args.quick && args.only === null) {
    // Quick mode is the smoke test: the workload variants and the micro-benchmarks. Every
    // other step runs tiny with `--quick --only <step>`. (Each Troupe node takes seconds to
    // boot its workers, so each run costs that much however small.)
    args.only = new Set<StepKey>(['ceiling', 'plain', 'in-process', 'remote', 'micro']);
  }
  const sizes = sizesFor(args);
  if (args.quick) process.stderr.write(`${QUICK_NOTICE}\n\n`);
  const started = performance.now();
  const machine = machineInfo();
  const source = sourceState();
  const commands = generateCommands(sizes.accounts, sizes.commands, sizes.seed);
  const expected = expectedOutcome(sizes.accounts, commands);
  const rows: BenchRow[] = [];
  const failures: string[] = [];
  let activation: ActivationRow[] = [];
  let cluster: ClusterReport | undefined;
  let micro: MicroRow[] = [];
  const control = (p: ProgressHandle, label: string, timeoutMs: number): RunControl => ({
    isolate: args.isolate,
    ...(args.profileDir === undefined ? {} : { profileDir: args.profileDir }),
    onPhase: (phase) => p.update(`${label}: ${phase}`),
    timeoutMs,
  });
  const childTimeout = args.quick ? 120_000 : 900_000;

  // The plan, so that progress can say [i/N].
  const plan: string[] = [];
  const defaultServer = (['ceiling', 'plain', 'in-process', 'remote', 'workers', 'scale', 'activation', 'micro', 'timers'] as const).some(want);
  for (let round = 0; round < sizes.repeat; round++) {
    if (want('ceiling')) plan.push('ceiling 1', 'ceiling 2');
    if (want('plain')) for (const c of sizes.concurrencies) plan.push(`plain ${c}`);
    if (want('in-process')) for (const c of sizes.concurrencies) plan.push(`in-process ${c}`);
    if (want('remote')) for (const c of sizes.remoteConcurrencies) plan.push(`remote ${c}`);
    if (want('workers')) for (const w of sizes.workerCounts) plan.push(`workers ${w}`);
  }
  if (want('scale')) for (const s of sizes.scale) plan.push(s.label);
  if (want('activation')) plan.push('activation');
  if (want('micro')) plan.push('micro');
  if (want('timers')) plan.push('timers');
  if (want('sync')) plan.push('sync ceiling 1', 'sync ceiling 2', 'sync troupe');
  if (want('r3')) plan.push('r3 ceiling 1', 'r3 ceiling 2', 'r3 troupe');
  if (want('cluster')) {
    for (let round = 0; round < sizes.repeat; round++) plan.push(`cluster ${round + 1}`);
    plan.push('cluster timeline move', 'cluster timeline failover');
  }
  const step = steps(plan.length);

  /** Run one step; a failure is recorded and the suite goes on. */
  const attempt = async (label: string, fn: (p: ProgressHandle) => Promise<string>): Promise<void> => {
    const p = step(label);
    try {
      p.done(await fn(p));
    } catch (e) {
      p.fail(e);
      failures.push(`${label}: ${errText(e)}`);
    }
  };

  /** Ceiling with 1 and 2 connections on `server`; the better of the two, or undefined. */
  const ceilingRound = async (variant: string, server: ServerRef, replicas: number, round: string): Promise<BenchRow | undefined> => {
    const runs: CeilingResult[] = [];
    for (const connections of [1, 2] as const) {
      await attempt(`${variant}${round}, ${connections} connection${connections > 1 ? 's' : ''}, ${fmt(expected.events)} msgs${replicas > 1 ? `, R${replicas}` : ''}`, async () => {
        const r = await runCeiling({
          url: server.servers,
          events: expected.events,
          connections,
          inFlight: 4000,
          size: 150,
          serverPids: server.pids,
          replicas,
        });
        runs.push(r);
        return `${fmt(r.msgsPerSec)} msgs/s, p99 ${r.p99Ms.toFixed(1)} ms${r.errors > 0 ? `, ${r.errors} errors` : ''}`;
      });
    }
    return runs.length > 0 ? ceilingRow(pickBestCeiling(runs), 'ledger', variant) : undefined;
  };

  const troupeRun = async (variant: string, server: ServerRef, accounts: number, concurrency: number, tuning: TroupeTuning, extraNotes: string[] = [], round = ''): Promise<BenchRow | undefined> => {
    const label = `Troupe ${variant} C=${concurrency}${round}, ${fmt(accounts)} accounts, ${fmt(sizes.commands)} commands`;
    let row: BenchRow | undefined;
    await attempt(label, async (p) => {
      const v = await runLedger({
        variant,
        server,
        accounts,
        commandCount: sizes.commands,
        seed: sizes.seed,
        concurrency,
        tuning,
        ...freshRun(variant),
      }, control(p, label, childTimeout));
      row = ledgerRow(v, extraNotes);
      if (!v.verifyOk) throw new Error(`verification FAILED: ${row.notes ?? ''}`);
      return `${fmt(row.cmdsPerSec ?? 0)} cmds/s, p99 ${(row.p99Ms ?? 0).toFixed(1)} ms, ${fmt(row.peakRssMb ?? 0)} MB, verify ok`;
    });
    return row;
  };

  const troupeOn = async (variant: string, server: ServerRef, accounts: number, concurrency: number, tuning: TroupeTuning, extraNotes: string[] = []): Promise<void> => {
    const row = await troupeRun(variant, server, accounts, concurrency, tuning, extraNotes);
    if (row !== undefined) rows.push(row);
  };

  const ceilingOn = async (variant: string, server: ServerRef, replicas: number): Promise<void> => {
    const row = await ceilingRound(variant, server, replicas, '');
    if (row !== undefined) rows.push(row);
  };

  // ── the default server ────────────────────────────────────────────────────────────────────
  if (defaultServer) {
    const nats = await startBenchNats();
    const server: ServerRef = { servers: nats.url, pids: [nats.pid] };
    try {
      // The variants the goals compare run in rounds (each round: ceiling, plain, in-process,
      // remote, workers), and each keeps the run with the median throughput: a burst of load
      // from elsewhere then hits one round of every variant, not every run of one.
      const samples = new Map<string, BenchRow[]>();
      const keep = (key: string, row: BenchRow | undefined): void => {
        if (row !== undefined) samples.set(key, [...(samples.get(key) ?? []), row]);
      };
      for (let round = 1; round <= sizes.repeat; round++) {
        const tag = sizes.repeat > 1 ? ` (round ${round}/${sizes.repeat})` : '';
        if (want('ceiling')) keep('ceiling', await ceilingRound('ceiling', server, 1, tag));

        if (want('plain')) {
          for (const concurrency of sizes.concurrencies) {
            const label = `plain C=${concurrency}${tag}, ${fmt(sizes.accounts)} accounts, ${fmt(sizes.commands)} commands`;
            await attempt(label, async (p) => {
              const r = await runPlain({ url: nats.url, accounts: sizes.accounts, commands, concurrency, serverPid: nats.pid, onPhase: (phase) => p.update(`${label}: ${phase}`) });
              keep(`plain ${concurrency}`, plainRow(r));
              if (!r.verifyOk) throw new Error(`verification FAILED: ${r.verification.failures.join('; ')}`);
              return `${fmt(r.cmdsPerSec)} cmds/s, p99 ${r.p99Ms.toFixed(1)} ms, verify ok`;
            });
          }
        }

        if (want('in-process')) {
          for (const concurrency of sizes.concurrencies) keep(`in-process ${concurrency}`, await troupeRun('in-process', server, sizes.accounts, concurrency, {}, [], tag));
        }

        if (want('remote')) {
          for (const concurrency of sizes.remoteConcurrencies) {
            const label = `Troupe remote C=${concurrency}${tag}, ${fmt(sizes.accounts)} accounts, ${fmt(sizes.commands)} commands`;
            await attempt(label, async (p) => {
              const v = await runRemote({
                server,
                accounts: sizes.accounts,
                commandCount: sizes.commands,
                seed: sizes.seed,
                concurrency,
                tuning: {},
                ...freshRun('remote'),
              }, control(p, label, childTimeout));
              const row = remoteRow(v);
              keep(`remote ${concurrency}`, row);
              if (!v.verifyOk) throw new Error(`verification FAILED: ${row.notes ?? ''}`);
              return `${fmt(row.cmdsPerSec ?? 0)} cmds/s, p99 ${(row.p99Ms ?? 0).toFixed(1)} ms, verify ok`;
            });
          }
        }

        if (want('workers')) {
          for (const workers of sizes.workerCounts) keep(`workers ${workers}`, await troupeRun(`workers-${workers}`, server, sizes.accounts, 4096, { workers }, [], tag));
        }
      }
      for (const rs of samples.values()) rows.push(medianRow(rs));

      if (want('scale')) {
        for (const s of sizes.scale) {
          const notes = s.tuning.maxResidentActors === undefined ? [] : [`maxResidentActors ${fmt(s.tuning.maxResidentActors)}/worker`];
          await troupeOn(s.label, server, s.accounts, 4096, s.tuning, notes);
        }
      }

      if (want('activation')) {
        const label = `activation: ${sizes.activationSizes.map(fmt).join(', ')} events × ${sizes.activationRepeats}`;
        await attempt(label, async (p) => {
          const run = freshRun('activation');
          const spec: ActivationSpec = {
            server,
            stream: run.stream,
            subjectPrefix: run.subjectPrefix,
            dataDir: run.dataDir,
            sizes: sizes.activationSizes,
            repeats: sizes.activationRepeats,
          };
          const child = spawnChild<ActivationResult>(CHILD_SCRIPT, { mode: 'activation', spec }, {
            onPhase: (phase) => p.update(`${label}: ${phase}`),
            timeoutMs: childTimeout,
          });
          const result = await child.result;
          activation = activationRows(result);
          const bad = activation.filter((a) => !a.stateOk);
          if (bad.length > 0) throw new Error(`activation returned the wrong state for ${bad.map((a) => `${a.events} events ${a.snapshot ? 'with' : 'without'} snapshot`).join(', ')}`);
          return activation.map((a) => `${fmt(a.events)}${a.snapshot ? 's' : ''} ${a.ms.toFixed(1)} ms`).join(', ');
        });
      }

      if (want('micro')) {
        await attempt('micro-benchmarks (tinybench)', async (p) => {
          micro = await runMicro({ quick: args.quick, natsUrl: nats.url, onGroup: (g) => p.update(`micro-benchmarks: ${g}`) });
          return `${micro.length} alternatives in ${new Set(micro.map((m) => m.group)).size} races`;
        });
      }

      // Durable timers (bench/timers.ts): 100k actors (2k with --quick), one timer each, all due at once.
      if (want('timers')) {
        await attempt('timers', async () => {
          const r = await runTimers(nats.url, args.quick ? 2000 : 100_000, 0);
          return `${fmt(r.actors)} timers: ${fmt(r.firingsPerSec)} firings/s, late p99 ≤ ${r.lateP99Sec} s, peak RSS ${fmt(r.peakRssMb)} MB`;
        });
      }
    } finally {
      await nats.stop();
    }
  }

  // ── sync_interval: always ─────────────────────────────────────────────────────────────────
  if (want('sync')) {
    let nats: Awaited<ReturnType<typeof startBenchNats>> | undefined;
    try {
      nats = await startBenchNats({ syncAlways: true });
    } catch (e) {
      failures.push(`sync-always: could not start nats-server with sync_interval always: ${errText(e)}`);
    }
    if (nats !== undefined) {
      const server: ServerRef = { servers: nats.url, pids: [nats.pid] };
      try {
        await ceilingOn('ceiling-sync-always', server, 1);
        await troupeOn('sync-always', server, sizes.accounts, sizes.durabilityConcurrency, {});
      } finally {
        await nats.stop();
      }
    }
  }

  // ── R3 cluster ────────────────────────────────────────────────────────────────────────────
  if (want('r3')) {
    let cluster: Awaited<ReturnType<typeof startBenchCluster>> | undefined;
    try {
      cluster = await startBenchCluster({ size: 3 });
    } catch (e) {
      failures.push(`r3: could not start a 3-server cluster: ${errText(e)}`);
    }
    if (cluster !== undefined) {
      const server: ServerRef = { servers: cluster.urls.join(','), pids: cluster.pids };
      try {
        await ceilingOn('ceiling-r3', server, 3);
        await troupeOn('r3', server, sizes.accounts, sizes.durabilityConcurrency, { replicas: 3 });
      } finally {
        await cluster.stop();
      }
    }
  }

  // ── many nodes: a 3-server cluster, 3 Troupe nodes, remote clients ──────────────────────────
  if (want('cluster')) {
    let nats: Awaited<ReturnType<typeof startBenchCluster>> | undefined;
    try {
      nats = await startBenchCluster({ size: 3 });
    } catch (e) {
      failures.push(`cluster: could not start a 3-server cluster: ${errText(e)}`);
    }
    if (nats !== undefined) {
      const settings: ClusterSettings = { ...sizes.cluster, server: { servers: nats.urls.join(','), pids: nats.pids } };
      const c = settings;
      try {
        const steady: BenchRow[] = [];
        for (let round = 1; round <= sizes.repeat; round++) {
          const tag = sizes.repeat > 1 ? ` (round ${round}/${sizes.repeat})` : '';
          const label = `Troupe cluster C=${c.concurrency}${tag}: ${c.nodes} nodes, ${c.shards} shards, R${c.replicas}, ${fmt(c.accounts)} accounts, ${fmt(c.commandCount)} commands`;
          await attempt(label, async (p) => {
            const v = await runClusterSteady(settings, control(p, label, childTimeout));
            const row = clusterRow(v);
            steady.push(row);
            if (!v.verifyOk) throw new Error(`verification FAILED: ${row.notes ?? ''}`);
            return `${fmt(row.cmdsPerSec ?? 0)} cmds/s, p99 ${(row.p99Ms ?? 0).toFixed(1)} ms, verify ok`;
          });
        }
        if (steady.length > 0) rows.push(medianRow(steady));
        const timelines: TimelineReport[] = [];
        for (const kind of ['move', 'failover'] as const) {
          const label = `cluster timeline: ${kind === 'move' ? 'planned move (SIGTERM)' : 'failover (kill -9)'}, ${c.timelineMs / 1000} s at C=${c.concurrency}`;
          await attempt(label, async (p) => {
            const { verification: _v, ...t } = await runClusterTimeline(settings, kind, control(p, label, childTimeout));
            timelines.push(t);
            const s = t.summary;
            const text = `steady ${fmt(s.steadyPerSec)} cmds/s, lowest ${fmt(s.minPerSec)}, below 80% for ${(s.dipMs / 1000).toFixed(2)} s, ` +
              `back after ${s.recoverMs === null ? 'never' : `${(s.recoverMs / 1000).toFixed(2)} s`}, shards placed after ${t.placedMs === null ? '–' : `${(t.placedMs / 1000).toFixed(2)} s`}`;
            if (!t.verifyOk) throw new Error(`verification FAILED: ${t.verifyFailures.join('; ')} (${text})`);
            return `${text}, verify ok`;
          });
        }
        cluster = {
          settings: {
            nodes: c.nodes,
            natsServers: nats.urls.length,
            shards: c.shards,
            replicas: c.replicas,
            concurrency: c.concurrency,
            leaseTtl: c.leaseTtlMs === undefined ? '10 s (default)' : `${c.leaseTtlMs / 1000} s`,
            settle: c.settleMs === undefined ? '2 s (default)' : `${c.settleMs / 1000} s`,
            clientTimeout: `${c.clientTimeoutMs / 1000} s`,
            clientRetry: `retry up to ${fmt(c.clientRetry.attempts ?? 10)} tries within ${(c.clientRetry.totalMs ?? 30_000) / 1000} s (backoff 50 ms doubling to 2 s)`,
            bucket: `${c.bucketMs} ms`,
            timeline: `${c.timelineMs / 1000} s, the move or kill at ${c.eventAtMs / 1000} s`,
          },
          timelines,
        };
      } finally {
        await nats.stop();
      }
    }
  }

  // ── report ────────────────────────────────────────────────────────────────────────────────
  const durationSec = (performance.now() - started) / 1000;
  const argv = process.argv.slice(2).join(' ');
  const report: BenchReport = {
    machine,
    rows,
    micro,
    mode: args.quick ? 'quick' : 'full',
    command: `npm run bench${argv === '' ? '' : ` -- ${argv}`}`,
    config: {
      'source (git)': source,
      accounts: sizes.accounts,
      commands: sizes.commands,
      seed: sizes.seed,
      concurrencies: sizes.concurrencies.join(', '),
      'expected outcome': `${fmt(expected.accepted)} accepted, ${fmt(expected.rejected)} rejected, ${fmt(expected.events)} events`,
      'scale accounts': sizes.scale.map((s) => fmt(s.accounts)).join(', '),
      'maxResidentActors (largest scale run, per worker)': sizes.maxResidentActors,
      'activation sizes': `${sizes.activationSizes.map(fmt).join(', ')} events, ${sizes.activationRepeats} actor(s) each`,
      'Troupe process': args.isolate ? 'a fresh child process per run' : 'the bench process',
      rounds: `${sizes.repeat} (ceiling, plain, in-process, remote, workers: the median round of each is shown)`,
    },
    activation,
    ...(cluster === undefined ? {} : { cluster }),
    ratios: computeRatios(rows),
    goals: computeGoals({ rows, activation, quick: args.quick, maxResidentActors: sizes.maxResidentActors }),
    failures,
    durationSec,
  };
  await output(report, args, sizes.accounts, sizes.commands);

  if (args.profileDir !== undefined) {
    // --cpu-prof also profiles every worker thread (and tsx's loader thread); the workers'
    // TROUPE_PROFILE_DIR profiles say the same, so show the main threads from --cpu-prof only.
    const files = profileFiles([args.profileDir]).filter((f) => !/^CPU\.\d+\.\d+\.\d+\.[1-9]\d*\.\d+\.cpuprofile$/.test(basename(f)));
    process.stdout.write(`\nCPU profiles (${files.length}) in ${args.profileDir}:\n\n`);
    for (const f of files) process.stdout.write(`${formatSummary(summarizeProfile(f, 20), 20)}\n\n`);
  }

  if (rows.some((r) => r.verifyOk === false) || failures.length > 0) process.exitCode = 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
