/**
 * The cluster step: the ledger workload on several Troupe nodes against a JetStream cluster
 * (stream replicas 3), with remote clients; and throughput over time while a node hands its
 * shards off (SIGTERM) or dies (kill -9).
 *
 * Every node is a child process (bench/child.ts, mode `serve`) with its own name and data dir;
 * the clients are one more (bench/cluster-client.ts). The parent watches the shard leases in
 * NATS KV (`<stream>_shards`) to know when placement has settled and when the shards of a node
 * that left are held by the others (bench/cluster-nodes.ts); bench/cluster-verify.ts checks the log.
 *
 * Verification, for both: every account rebuilt from the log alone (LedgerVerifier: opened once,
 * contiguous sequences, no negative balance, sum of balances = deposits − withdrawals, event
 * count = accounts + accepted); every acknowledged commandId in the log exactly once and no
 * commandId in the log that was not acknowledged; no command failed after its retries. The
 * steady run also compares balances with a sequential replay of the commands; the timelines do
 * not, since a command retried across a move may land after a later one for the same account.
 */
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { placeShards } from '../runtime/placement.ts';
import type { RetryOptions } from '../runtime/remote/client.ts';
import { deleteClusterRun, LeaseWatch, placedOver, startNodes, stopNodes, streamMessages, type ClusterNode } from './cluster-nodes.ts';
import { verifyClusterLog, type ClusterVerification } from './cluster-verify.ts';
import type { BenchRow } from './report.ts';
import { BENCH_DIR, spawnChild } from './spawn.ts';
import { analyzeTimeline, perSecond, type TimelineKind, type TimelineMarker, type TimelineReport } from './timeline.ts';
import { freshRun, type Phase2, type PhaseResult, type RunControl, type ServerRef, type VerifiedRun } from './troupe.ts';
import { generateCommands, procMemoryMb, ResourceSampler, type ResourceReport } from './workload.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, ms)));

export const CLUSTER_CLIENT_SCRIPT = join(BENCH_DIR, 'cluster-client.ts');

// ---------------------------------------------------------------------------------------------
// Specs and results
// ---------------------------------------------------------------------------------------------

export interface ClusterClientSpec {
  readonly mode: 'steady' | 'timeline';
  readonly servers: string;
  readonly subjectPrefix: string;
  readonly accounts: number;
  readonly commandCount: number;
  readonly seed: number;
  readonly concurrency: number;
  /** Where the client writes the commandIds it got acknowledged, one a line. */
  readonly ackFile: string;
  /** Timeline: the width of a throughput bucket. */
  readonly bucketMs: number;
  readonly timeoutMs: number;
  readonly retry: RetryOptions;
}

export interface ClusterSteadyClientResult {
  readonly phase1: PhaseResult;
  readonly phase2: Phase2;
  readonly cpuSeconds: number;
  readonly acked: number;
}

export interface TimelineClientResult {
  readonly phase1: PhaseResult;
  /** Date.now() when the load started; buckets count from here. */
  readonly t0: number;
  readonly bucketMs: number;
  /** Commands done (accepted or rejected) per bucket. */
  readonly counts: readonly number[];
  /** Commands that failed after their retries, per bucket. */
  readonly errorCounts: readonly number[];
  readonly sent: number;
  readonly accepted: number;
  readonly rejected: number;
  readonly errors: number;
  readonly firstError?: string;
  readonly durationMs: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly acked: number;
}

/** How the cluster step runs; the same for the steady rounds and the timelines. */
export interface ClusterSettings {
  readonly server: ServerRef;
  readonly nodes: number;
  readonly shards: number;
  readonly replicas: number;
  readonly accounts: number;
  readonly commandCount: number;
  readonly seed: number;
  readonly concurrency: number;
  /** Node options; undefined: Troupe's default. */
  readonly leaseTtlMs?: number;
  readonly settleMs?: number;
  /** Timeline: how long the load runs, when the move or kill happens, bucket width. */
  readonly timelineMs: number;
  readonly eventAtMs: number;
  readonly bucketMs: number;
  /** The clients' TroupeClient options. */
  readonly clientTimeoutMs: number;
  readonly clientRetry: RetryOptions;
}

export function nodeNames(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `node-${i + 1}`);
}

/** The node whose share of the shards is closest to an even one (the first such, by name), and its shards. */
export function pickVictim(names: readonly string[], shards: number): { name: string; shards: number[] } {
  const placed = placeShards(names, shards);
  const even = shards / names.length;
  let best: { name: string; shards: number[] } | undefined;
  for (const name of names) {
    const mine = placed.get(name) ?? [];
    if (best === undefined || Math.abs(mine.length - even) < Math.abs(best.shards.length - even)) best = { name, shards: mine };
  }
  return best!;
}

// ---------------------------------------------------------------------------------------------
// Steady throughput
// ---------------------------------------------------------------------------------------------

export interface ClusterSteadyRun {
  readonly accounts: number;
  readonly commandCount: number;
  readonly concurrency: number;
  readonly nodes: number;
  readonly shards: number;
  /** Shards per node once placed. */
  readonly shardsPerNode: Readonly<Record<string, number>>;
  readonly placeMs: number;
  readonly client: ClusterSteadyClientResult;
  readonly resources: ResourceReport;
  /** The largest lifetime peak RSS of the node processes at the end of phase 2. */
  readonly nodeHwmMb: number;
  readonly clientPeakRssMb: number;
  readonly jetstreamMessages: number;
}

/** One round: fresh stream, `nodes` node processes, placement settled, then both phases from the client process; verified. */
export async function runClusterSteady(settings: ClusterSettings, control: RunControl): Promise<VerifiedRun<ClusterSteadyRun> & { verification: ClusterVerification }> {
  const run = freshRun('cluster');
  const names = nodeNames(settings.nodes);
  const ackDir = mkdtempSync(join(tmpdir(), 'troupe-bench-cluster-acks-'));
  let nodes: ClusterNode[] = [];
  let watch: LeaseWatch | undefined;
  try {
    control.onPhase?.('start nodes');
    const t0 = Date.now();
    nodes = await startNodes(settings, run, names);
    watch = await LeaseWatch.open(settings.server.servers, run.stream);
    control.onPhase?.('placement');
    const placedAt = await watch.until(placedOver(names, settings.shards), 60_000, `placement over ${names.join(', ')}`);
    await watch.close();
    // A lease holder opens the shard and subscribes to its subjects right after taking it.
    await sleep(1_000);

    const sampler = new ResourceSampler();
    for (const n of nodes) sampler.addChild(n.child.pid, 'node');
    for (const pid of settings.server.pids) sampler.addChild(pid, 'nats-server');
    let resources: ResourceReport | undefined;
    let nodeHwmMb = 0;
    const ackFile = join(ackDir, 'acks.txt');
    const spec: ClusterClientSpec = {
      mode: 'steady',
      servers: settings.server.servers,
      subjectPrefix: run.subjectPrefix,
      accounts: settings.accounts,
      commandCount: settings.commandCount,
      seed: settings.seed,
      concurrency: settings.concurrency,
      ackFile,
      bucketMs: settings.bucketMs,
      timeoutMs: settings.clientTimeoutMs,
      retry: settings.clientRetry,
    };
    const client = spawnChild<ClusterSteadyClientResult>(CLUSTER_CLIENT_SCRIPT, spec, {
      onPhase: (phase) => {
        control.onPhase?.(phase);
        if (phase === 'commands') sampler.start();
        if (phase === 'commands-done') {
          resources = sampler.stop();
          nodeHwmMb = Math.max(0, ...nodes.map((n) => procMemoryMb(n.child.pid)?.hwmMb ?? 0));
        }
      },
      ...(control.timeoutMs === undefined ? {} : { timeoutMs: control.timeoutMs }),
    });
    sampler.addChild(client.pid, 'client');
    const result = await client.result;
    if (resources === undefined) throw new Error('the cluster client never reported the end of phase 2');
    const jetstreamMessages = await streamMessages(settings.server.servers, run.stream);
    await stopNodes(nodes);

    control.onPhase?.('verify');
    const verification = await verifyClusterLog({
      servers: settings.server.servers,
      stream: run.stream,
      accounts: settings.accounts,
      accepted: result.phase2.accepted,
      jetstreamMessages,
      ackFile,
      commands: generateCommands(settings.accounts, settings.commandCount, settings.seed),
      shards: settings.shards,
    });
    const placed = placeShards(names, settings.shards);
    const r = resources;
    return {
      run: {
        accounts: settings.accounts,
        commandCount: settings.commandCount,
        concurrency: settings.concurrency,
        nodes: settings.nodes,
        shards: settings.shards,
        shardsPerNode: Object.fromEntries(names.map((n) => [n, placed.get(n)?.length ?? 0])),
        placeMs: placedAt - t0,
        client: result,
        resources: r,
        nodeHwmMb,
        clientPeakRssMb: r.children.find((c) => c.label === 'client')?.peakRssMb ?? 0,
        jetstreamMessages,
      },
      verification,
      verifyOk: verification.ok && result.phase1.errors === 0 && result.phase1.rejected === 0 && result.phase2.errors === 0,
    };
  } finally {
    await watch?.close();
    await stopNodes(nodes);
    await deleteClusterRun(settings.server.servers, run.stream);
    await rm(ackDir, { recursive: true, force: true }).catch(() => {});
  }
}

export function clusterRow(v: VerifiedRun<ClusterSteadyRun>): BenchRow {
  const r = v.run;
  const p2 = r.client.phase2;
  const servers = r.resources.children.filter((c) => c.label === 'nats-server');
  const cpuSeconds = r.resources.children.reduce((s, c) => s + c.cpuSeconds, 0);
  const notes = [
    `${r.nodes} nodes (shards ${Object.values(r.shardsPerNode).join('/')} of ${r.shards}), stream R3, 1 client process`,
    `${p2.accepted.toLocaleString('en-US')} acc, ${p2.rejected.toLocaleString('en-US')} rej`,
    `client RSS ${Math.round(r.clientPeakRssMb)} MB`,
    ...(r.client.phase1.errors > 0 ? [`phase 1: ${r.client.phase1.errors} errors (${r.client.phase1.firstError ?? ''})`] : []),
    ...(p2.errors > 0 ? [`${p2.errors} errors: ${p2.firstError ?? ''}`] : []),
    ...(v.verification.ok ? [] : [`verify: ${v.verification.failures.join('; ')}`]),
  ];
  return {
    workload: 'ledger',
    variant: 'cluster',
    concurrency: r.concurrency,
    accounts: r.accounts,
    cmdsPerSec: p2.cmdsPerSec,
    eventsPerSec: p2.durationMs > 0 ? (p2.accepted / p2.durationMs) * 1000 : 0,
    p50Ms: p2.p50Ms,
    p99Ms: p2.p99Ms,
    p999Ms: p2.p999Ms,
    peakRssMb: r.nodeHwmMb,
    cpuSeconds,
    cpuUsPerCmd: r.commandCount > 0 ? (cpuSeconds * 1e6) / r.commandCount : null,
    serverCpuSeconds: servers.length === 0 ? null : servers.reduce((s, c) => s + c.cpuSeconds, 0),
    jetstreamMessages: r.jetstreamMessages,
    verifyOk: v.verifyOk,
    phase1PerSec: r.client.phase1.perSec,
    notes: notes.join('; '),
  };
}

// ---------------------------------------------------------------------------------------------
// Throughput over time
// ---------------------------------------------------------------------------------------------

export interface TimelineRun extends TimelineReport {
  readonly verification: ClusterVerification;
}

/**
 * One timeline: fresh stream and nodes, placement settled, phase 1, then the commands over and
 * over at C for `timelineMs`; at `eventAtMs` the node holding about a third of the shards is
 * stopped with SIGTERM (`move`: it hands its shards off) or killed with SIGKILL (`failover`).
 */
export async function runClusterTimeline(settings: ClusterSettings, kind: TimelineKind, control: RunControl): Promise<TimelineRun> {
  const run = freshRun(`cluster${kind}`);
  const names = nodeNames(settings.nodes);
  const victim = pickVictim(names, settings.shards);
  const survivors = names.filter((n) => n !== victim.name);
  const ackDir = mkdtempSync(join(tmpdir(), 'troupe-bench-cluster-acks-'));
  const ackFile = join(ackDir, 'acks.txt');
  let nodes: ClusterNode[] = [];
  let watch: LeaseWatch | undefined;
  try {
    control.onPhase?.('start nodes');
    nodes = await startNodes(settings, run, names);
    watch = await LeaseWatch.open(settings.server.servers, run.stream);
    control.onPhase?.('placement');
    await watch.until(placedOver(names, settings.shards), 60_000, `placement over ${names.join(', ')}`);
    await sleep(1_000);

    const spec: ClusterClientSpec = {
      mode: 'timeline',
      servers: settings.server.servers,
      subjectPrefix: run.subjectPrefix,
      accounts: settings.accounts,
      commandCount: settings.commandCount,
      seed: settings.seed,
      concurrency: settings.concurrency,
      ackFile,
      bucketMs: settings.bucketMs,
      timeoutMs: settings.clientTimeoutMs,
      retry: settings.clientRetry,
    };
    const client = spawnChild<TimelineClientResult>(CLUSTER_CLIENT_SCRIPT, spec, {
      ...(control.onPhase === undefined ? {} : { onPhase: control.onPhase }),
      ...(control.timeoutMs === undefined ? {} : { timeoutMs: control.timeoutMs }),
    });
    const started = await Promise.race([client.nextMessage(), client.result]) as { loading?: boolean; t0?: number };
    if (started.loading !== true || typeof started.t0 !== 'number') throw new Error(`the timeline client did not start its load: ${JSON.stringify(started)}`);
    const t0 = started.t0;

    await sleep(t0 + settings.eventAtMs - Date.now());
    const node = nodes.find((n) => n.name === victim.name)!;
    const eventAt = Date.now();
    control.onPhase?.(kind === 'move' ? `SIGTERM ${victim.name}` : `kill -9 ${victim.name}`);
    if (kind === 'move') node.child.process.kill('SIGTERM');
    else node.child.kill();
    const exited = new Promise<number>((resolve) => {
      if (node.child.process.exitCode !== null || node.child.process.signalCode !== null) resolve(Date.now());
      else node.child.process.once('exit', () => resolve(Date.now()));
    });
    const placedAt = await watch.until(placedOver(survivors, settings.shards), Math.max(1_000, t0 + settings.timelineMs - Date.now()), `placement over ${survivors.join(', ')}`).catch(() => null);
    await sleep(t0 + settings.timelineMs - Date.now());
    control.onPhase?.('stop load');
    client.tell('stop');
    const result = await client.result;
    const exitedAt = await Promise.race([exited, sleep(0).then(() => null)]);
    const jetstreamMessages = await streamMessages(settings.server.servers, run.stream);
    await stopNodes(nodes);

    control.onPhase?.('verify');
    const verification = await verifyClusterLog({
      servers: settings.server.servers,
      stream: run.stream,
      accounts: settings.accounts,
      accepted: result.accepted,
      jetstreamMessages,
      ackFile,
      shards: settings.shards,
      eventAt,
    });
    const perSec = perSecond(result.counts, result.bucketMs, settings.timelineMs);
    const eventAtMs = eventAt - t0;
    const markers: TimelineMarker[] = [
      { atMs: eventAtMs, kind: 'event', label: `${kind === 'move' ? 'SIGTERM' : 'kill -9'} ${victim.name} (${victim.shards.length} of ${settings.shards} shards)` },
    ];
    if (kind === 'move' && exitedAt !== null) markers.push({ atMs: exitedAt - t0, kind: 'event', label: `${victim.name} exited` });
    if (placedAt !== null) markers.push({ atMs: placedAt - t0, kind: 'placed', label: `all shards held by ${survivors.join(' and ')}` });
    return {
      kind,
      title: kind === 'move'
        ? `Planned move: ${victim.name} stopped with SIGTERM hands its ${victim.shards.length} shards to the other ${survivors.length}`
        : `Failover: ${victim.name} killed with SIGKILL; the other ${survivors.length} take its ${victim.shards.length} shards when its leases expire`,
      bucketMs: result.bucketMs,
      perSec,
      errorsPerBucket: result.errorCounts.slice(0, perSec.length),
      markers,
      summary: analyzeTimeline(perSec, result.bucketMs, eventAtMs),
      victim: victim.name,
      victimShards: victim.shards.length,
      shards: settings.shards,
      placedMs: placedAt === null ? null : placedAt - eventAt,
      accepted: result.accepted,
      rejected: result.rejected,
      errors: result.errors,
      ...(result.firstError === undefined ? {} : { firstError: result.firstError }),
      p50Ms: result.p50Ms,
      p99Ms: result.p99Ms,
      maxMs: result.maxMs,
      jetstreamMessages,
      verifyOk: verification.ok && result.errors === 0 && result.phase1.errors === 0,
      verifyFailures: [
        ...(result.phase1.errors > 0 ? [`phase 1: ${result.phase1.errors} errors (${result.phase1.firstError ?? ''})`] : []),
        ...(result.errors > 0 ? [`${result.errors} commands failed after their retries: ${result.firstError ?? ''}`] : []),
        ...verification.failures,
      ],
      verification,
    };
  } finally {
    await watch?.close();
    await stopNodes(nodes);
    await deleteClusterRun(settings.server.servers, run.stream);
    await rm(ackDir, { recursive: true, force: true }).catch(() => {});
  }
}
