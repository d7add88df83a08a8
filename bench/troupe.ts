/**
 * Troupe on the ledger workload.
 *
 * - runLedgerInProcess: `Troupe.start` with the Account actor in this process, phase 1
 *   (OpenAccount for every account) and phase 2 (the generated commands, closed loop at C)
 *   through `node.send`. A command is done when `send` resolves (JetStream stored its events)
 *   or rejects with DOMAIN_REJECTION; anything else is an error and fails the run.
 * - serveNode: a node that only serves commands over NATS, for the remote variant.
 * - runLedger / runRemote (parent side): run those in child processes (bench/child.ts,
 *   bench/remote-client.ts), so that each run's peak RSS and CPU are its own and not what
 *   earlier runs of the suite left in the bench process.
 * - verifyTroupeLog: rebuild every account from the log alone (the stream read from the first
 *   message, each message decoded with decodeCommitBatch) into a LedgerVerifier. No snapshots,
 *   no Troupe API.
 */
import { rm } from 'node:fs/promises';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { Troupe } from '../runtime/node/system.ts';
import { isTroupeError } from '../runtime/errors.ts';
import { decodeCommitBatch } from '../runtime/journal/codec.ts';
import type { CommandResult } from '../runtime/envelope.ts';
import type { TroupeOptions } from '../runtime/options.ts';
import { verifyLedgerStream, type LedgerEventLike, type LedgerVerification } from './baselines.ts';
import type { BenchRow } from './report.ts';
import { announcePhase, BENCH_DIR, REPO_DIR, spawnChild } from './spawn.ts';
import {
  accountId,
  generateCommands,
  procMemoryMb,
  procRssBreakdown,
  ResourceSampler,
  runClosedLoop,
  type ClosedLoopResult,
  type LedgerCommand,
  type Outcome,
  type ResourceReport,
} from './workload.ts';

export const ACCOUNT_MODULE = join(REPO_DIR, 'actors', 'account.ts');
export const CHILD_SCRIPT = join(BENCH_DIR, 'child.ts');
export const REMOTE_CLIENT_SCRIPT = join(BENCH_DIR, 'remote-client.ts');

/** The node options a variant changes; everything else is Troupe's default. */
export interface TroupeTuning {
  readonly workers?: number;
  readonly shards?: number;
  readonly replicas?: number;
  readonly maxResidentActors?: number;
  readonly idleActorMs?: number;
  /** Many nodes (the cluster step): each node's name, its lease TTL and settle window. */
  readonly nodeName?: string;
  readonly leaseTtlMs?: number;
  readonly settleMs?: number;
  /** The `source` of every event the node writes (the cluster step: the node's name, to tell who wrote what). */
  readonly source?: string;
}

export interface ServerRef {
  /** Client URLs, comma separated. */
  readonly servers: string;
  /** nats-server PIDs, for CPU and RSS. */
  readonly pids: readonly number[];
}

export interface LedgerRunSpec {
  readonly variant: string;
  readonly server: ServerRef;
  readonly accounts: number;
  readonly commandCount: number;
  readonly seed: number;
  readonly concurrency: number;
  readonly tuning: TroupeTuning;
  readonly stream: string;
  readonly subjectPrefix: string;
  readonly dataDir: string;
}

export interface PhaseResult {
  readonly durationMs: number;
  readonly perSec: number;
  readonly accepted: number;
  readonly rejected: number;
  readonly errors: number;
  readonly firstError?: string;
}

export type Phase2 = Omit<ClosedLoopResult, 'firstError'> & { readonly firstError?: string };

export interface LedgerRunResult {
  readonly variant: string;
  readonly stream: string;
  readonly accounts: number;
  readonly commandCount: number;
  readonly concurrency: number;
  readonly workers: number;
  readonly startMs: number;
  readonly phase1: PhaseResult;
  readonly phase2: Phase2;
  /** Phase 2: the Troupe process (and nats-server). */
  readonly resources: ResourceReport;
  /** The Troupe process's lifetime peak RSS (VmHWM) at the end of phase 2: phase 1 included. */
  readonly hwmMb: number;
  /** Actors in memory on all workers at the end of phase 2. */
  readonly residentActors: number | null;
  /** RSS once the node started, before any command. */
  readonly rssAfterStartMb: number;
  /** RSS when phase 1 ended (every account opened). */
  readonly rssAfterPhase1Mb: number;
  /** RSS at the end of phase 2 by kind: anonymous (heaps) and file-backed (LMDB's map, code). */
  readonly rssEnd: { anonMb: number; fileMb: number; shmemMb: number } | null;
  readonly jetstreamMessages: number;
  readonly stopMs: number;
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

let runCounter = 0;

/** A stream name, subject prefix and data dir that no other run uses. */
export function freshRun(label: string): { stream: string; subjectPrefix: string; dataDir: string } {
  runCounter++;
  const tag = `${label.replace(/[^A-Za-z0-9]/g, '')}${runCounter}_${process.pid}_${Date.now().toString(36)}`;
  return {
    stream: `BENCH_${tag}`,
    subjectPrefix: `bench${tag.toLowerCase()}`,
    dataDir: mkdtempSync(join(tmpdir(), `troupe-bench-${label.replace(/[^A-Za-z0-9-]/g, '')}-`)),
  };
}

function errorText(e: unknown): string {
  if (e === undefined) return '';
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}

function phaseOf(r: ClosedLoopResult): PhaseResult {
  return {
    durationMs: r.durationMs,
    perSec: r.cmdsPerSec,
    accepted: r.accepted,
    rejected: r.rejected,
    errors: r.errors,
    ...(r.firstError === undefined ? {} : { firstError: errorText(r.firstError) }),
  };
}

export function phase2Of(r: ClosedLoopResult): Phase2 {
  const { firstError, ...rest } = r;
  return { ...rest, ...(firstError === undefined ? {} : { firstError: errorText(firstError) }) };
}

type Sender = (type: string, id: string, commandType: string, payload: unknown) => Promise<CommandResult>;

const accepted = (r: CommandResult): Outcome => {
  if (r.events.length !== 1) throw new Error(`expected one event, got ${r.events.length} (${JSON.stringify(r.events)})`);
  return 'accepted';
};
const rejectedOrThrow = (e: unknown): Outcome => {
  if (isTroupeError(e, 'DOMAIN_REJECTION')) return 'rejected';
  throw e;
};

/** Phase 1 and phase 2 of the workload through `send` (a node's or a TroupeClient's). */
export async function driveLedger(
  send: Sender,
  accounts: number,
  commands: readonly LedgerCommand[],
  concurrency: number,
  onPhase: (phase: 'open' | 'commands' | 'commands-done') => void = () => {},
): Promise<{ phase1: ClosedLoopResult; phase2: ClosedLoopResult }> {
  const ids = Array.from({ length: accounts }, (_, i) => accountId(i));
  onPhase('open');
  const phase1 = await runClosedLoop(ids, concurrency, (id) => send('Account', id, 'OpenAccount', {}).then(accepted, rejectedOrThrow));
  onPhase('commands');
  const phase2 = await runClosedLoop(commands, concurrency, (c) =>
    send('Account', ids[c.accountIndex]!, c.type, { amount: c.amount }).then(accepted, rejectedOrThrow),
  );
  onPhase('commands-done');
  return { phase1, phase2 };
}

function nodeOptions(spec: { server: ServerRef; stream: string; subjectPrefix: string; dataDir: string; tuning: TroupeTuning }, serve: boolean): TroupeOptions {
  return {
    actors: [ACCOUNT_MODULE],
    servers: spec.server.servers,
    stream: spec.stream,
    subjectPrefix: spec.subjectPrefix,
    dataDir: spec.dataDir,
    serve,
    ...spec.tuning,
  };
}

// ---------------------------------------------------------------------------------------------
// In the Troupe process
// ---------------------------------------------------------------------------------------------

/** The in-process variant, in this process. Leaves the stream on the server for verification. */
export async function runLedgerInProcess(spec: LedgerRunSpec): Promise<LedgerRunResult> {
  const commands = generateCommands(spec.accounts, spec.commandCount, spec.seed);
  announcePhase('start');
  const t0 = performance.now();
  const node = await Troupe.start(nodeOptions(spec, false));
  const startMs = performance.now() - t0;
  const rssAfterStartMb = process.memoryUsage.rss() / (1024 * 1024);
  try {
    const sampler = new ResourceSampler();
    for (const pid of spec.server.pids) sampler.addChild(pid, 'nats-server');
    let resources: ResourceReport | undefined;
    let hwmMb = 0;
    let rssAfterPhase1Mb = 0;
    let rssEnd: LedgerRunResult['rssEnd'] = null;
    const { phase1, phase2 } = await driveLedger(
      (t, id, c, p) => node.send(t, id, c, p),
      spec.accounts,
      commands,
      spec.concurrency,
      (phase) => {
        announcePhase(phase);
        if (phase === 'commands') rssAfterPhase1Mb = process.memoryUsage.rss() / (1024 * 1024);
        if (phase === 'commands') sampler.start();
        if (phase === 'commands-done') {
          resources = sampler.stop();
          hwmMb = procMemoryMb(process.pid)?.hwmMb ?? resources.peakRssMb;
          rssEnd = procRssBreakdown(process.pid) ?? null;
        }
      },
    );
    let residentActors: number | null = null;
    try {
      residentActors = (await node.stats()).workers.reduce((s, w) => s + w.residentActors, 0);
    } catch {
      residentActors = null;
    }
    const jetstreamMessages = (await node.journal.jsm.streams.info(spec.stream)).state.messages;
    announcePhase('stop');
    const t1 = performance.now();
    await node.stop();
    const stopMs = performance.now() - t1;
    return {
      variant: spec.variant,
      stream: spec.stream,
      accounts: spec.accounts,
      commandCount: spec.commandCount,
      concurrency: spec.concurrency,
      workers: node.options.workers,
      startMs,
      phase1: phaseOf(phase1),
      phase2: phase2Of(phase2),
      resources: resources!,
      hwmMb,
      residentActors,
      rssAfterStartMb,
      rssAfterPhase1Mb,
      rssEnd,
      jetstreamMessages,
      stopMs,
    };
  } finally {
    await node.stop().catch(() => {});
    await rm(spec.dataDir, { recursive: true, force: true }).catch(() => {});
  }
}

export interface ServeSpec {
  readonly server: ServerRef;
  readonly stream: string;
  readonly subjectPrefix: string;
  readonly dataDir: string;
  readonly tuning: TroupeTuning;
}

/** A node serving commands over NATS until `stop()`. */
export async function serveNode(spec: ServeSpec): Promise<{ node: Troupe; stop: () => Promise<{ stopMs: number }> }> {
  const node = await Troupe.start(nodeOptions(spec, true));
  return {
    node,
    async stop() {
      const t = performance.now();
      await node.stop();
      const stopMs = performance.now() - t;
      await rm(spec.dataDir, { recursive: true, force: true }).catch(() => {});
      return { stopMs };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// In the parent: verification, cleanup, child processes
// ---------------------------------------------------------------------------------------------

/** Map the decoded envelopes of one message to what the verifier reads. */
export function decodeLedgerMessage(data: Uint8Array, seq: number): LedgerEventLike[] {
  return decodeCommitBatch(data, seq).map((e) => {
    if (e.aggregateType !== 'Account') throw new Error(`unexpected aggregate type ${e.aggregateType}`);
    return { eventType: e.eventType, aggregateId: e.aggregateId, seq: e.sequence, payload: e.payload as { amount?: number } };
  });
}

/** Rebuild every account from the log alone and check the ledger workload's rules (docs/performance.md). */
export async function verifyTroupeLog(opts: {
  servers: string;
  stream: string;
  accounts: number;
  accepted: number;
  jetstreamMessages: number;
  commands: readonly LedgerCommand[];
}): Promise<LedgerVerification> {
  const nc = await connect({ servers: opts.servers.split(','), name: 'bench-verify' });
  try {
    return await verifyLedgerStream({
      nc,
      stream: opts.stream,
      accounts: opts.accounts,
      accepted: opts.accepted,
      jetstreamMessages: opts.jetstreamMessages,
      commands: opts.commands,
      decode: (m) => decodeLedgerMessage(m.data, m.seq),
    });
  } finally {
    await nc.close();
  }
}

/** Delete a run's stream and its shard-lease bucket (best effort), so the server's disk stays small. */
export async function deleteRunStreams(servers: string, stream: string): Promise<void> {
  const nc = await connect({ servers: servers.split(','), name: 'bench-cleanup' }).catch(() => null);
  if (nc === null) return;
  try {
    const jsm = await jetstreamManager(nc);
    for (const name of [stream, `KV_${stream}_shards`]) await jsm.streams.delete(name).catch(() => {});
  } finally {
    await nc.close().catch(() => {});
  }
}

async function streamMessages(servers: string, stream: string): Promise<number> {
  const nc = await connect({ servers: servers.split(','), name: 'bench-info' });
  try {
    return (await (await jetstreamManager(nc)).streams.info(stream)).state.messages;
  } finally {
    await nc.close();
  }
}

export interface RunControl {
  /** Run Troupe in a child process (default) or in this process. */
  readonly isolate: boolean;
  /** Write CPU profiles (main thread via --cpu-prof, workers via TROUPE_PROFILE_DIR) here. */
  readonly profileDir?: string;
  readonly onPhase?: (phase: string) => void;
  readonly timeoutMs?: number;
}

function profileArgs(control: RunControl, label: string): { nodeArgs: string[]; env: NodeJS.ProcessEnv; dir?: string } {
  if (control.profileDir === undefined) return { nodeArgs: [], env: {} };
  const dir = join(control.profileDir, label);
  return { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${dir}`], env: { TROUPE_PROFILE_DIR: dir }, dir };
}

export interface VerifiedRun<R> {
  readonly run: R;
  readonly verification: LedgerVerification;
  readonly verifyOk: boolean;
}

/**
 * A run passes when the log alone rebuilds the expected accounts (verifyTroupeLog) and no
 * command failed, nor any OpenAccount was rejected.
 */
async function verifyRun(
  spec: Pick<LedgerRunSpec, 'server' | 'stream' | 'accounts' | 'commandCount' | 'seed'>,
  phase1: Pick<PhaseResult, 'errors' | 'rejected'>,
  phase2: Pick<PhaseResult, 'errors' | 'accepted'>,
  jetstreamMessages: number,
): Promise<Omit<VerifiedRun<unknown>, 'run'>> {
  const verification = await verifyTroupeLog({
    servers: spec.server.servers,
    stream: spec.stream,
    accounts: spec.accounts,
    accepted: phase2.accepted,
    jetstreamMessages,
    commands: generateCommands(spec.accounts, spec.commandCount, spec.seed),
  });
  return { verification, verifyOk: verification.ok && phase1.errors === 0 && phase1.rejected === 0 && phase2.errors === 0 };
}

/** The in-process variant (in a child unless `isolate` is false), then verification and cleanup. */
export async function runLedger(spec: LedgerRunSpec, control: RunControl): Promise<VerifiedRun<LedgerRunResult>> {
  try {
    let run: LedgerRunResult;
    if (control.isolate) {
      const prof = profileArgs(control, `${spec.variant}-c${spec.concurrency}`);
      const child = spawnChild<LedgerRunResult>(CHILD_SCRIPT, { mode: 'ledger', spec }, {
        nodeArgs: prof.nodeArgs,
        env: prof.env,
        ...(control.onPhase === undefined ? {} : { onPhase: control.onPhase }),
        ...(control.timeoutMs === undefined ? {} : { timeoutMs: control.timeoutMs }),
      });
      run = await child.result;
    } else {
      const prof = profileArgs(control, `${spec.variant}-c${spec.concurrency}`);
      if (prof.dir !== undefined) process.env.TROUPE_PROFILE_DIR = prof.dir;
      try {
        run = await runLedgerInProcess(spec);
      } finally {
        if (prof.dir !== undefined) delete process.env.TROUPE_PROFILE_DIR;
      }
    }
    control.onPhase?.('verify');
    return { run, ...await verifyRun(spec, run.phase1, run.phase2, run.jetstreamMessages) };
  } finally {
    await deleteRunStreams(spec.server.servers, spec.stream);
    await rm(spec.dataDir, { recursive: true, force: true }).catch(() => {});
  }
}

export interface RemoteClientSpec {
  readonly servers: string;
  readonly subjectPrefix: string;
  readonly accounts: number;
  readonly commandCount: number;
  readonly seed: number;
  readonly concurrency: number;
}

export interface RemoteClientResult {
  readonly phase1: PhaseResult;
  readonly phase2: Phase2;
  /** CPU seconds of the client process, phase 2. */
  readonly cpuSeconds: number;
}

export interface RemoteRunResult {
  readonly variant: string;
  readonly accounts: number;
  readonly commandCount: number;
  readonly concurrency: number;
  readonly client: RemoteClientResult;
  /** Phase 2: the node process, the client process and nats-server, sampled from here. */
  readonly resources: ResourceReport;
  /** Lifetime peak RSS of the node process at the end of phase 2. */
  readonly nodeHwmMb: number;
  readonly nodePeakRssMb: number;
  readonly clientPeakRssMb: number;
  readonly cpuSeconds: number;
  readonly jetstreamMessages: number;
}

/**
 * The remote variant: a node in one child process (serving commands over NATS), the clients
 * (TroupeClient) in another; both phases from the client. Resources sampled from here.
 */
export async function runRemote(
  spec: Omit<LedgerRunSpec, 'variant'> & { variant?: string },
  control: RunControl,
): Promise<VerifiedRun<RemoteRunResult>> {
  const variant = spec.variant ?? 'remote';
  const prof = profileArgs(control, `${variant}-c${spec.concurrency}`);
  const nodeChild = spawnChild<{ stopped: true; stopMs: number }>(CHILD_SCRIPT, {
    mode: 'serve',
    spec: { server: spec.server, stream: spec.stream, subjectPrefix: spec.subjectPrefix, dataDir: spec.dataDir, tuning: spec.tuning } satisfies ServeSpec,
  }, { nodeArgs: prof.nodeArgs, env: prof.env });
  try {
    control.onPhase?.('start');
    await Promise.race([nodeChild.nextMessage(), nodeChild.result]);
    const sampler = new ResourceSampler();
    sampler.addChild(nodeChild.pid, 'node');
    for (const pid of spec.server.pids) sampler.addChild(pid, 'nats-server');
    let resources: ResourceReport | undefined;
    let nodeHwmMb = 0;
    const clientSpec: RemoteClientSpec = {
      servers: spec.server.servers,
      subjectPrefix: spec.subjectPrefix,
      accounts: spec.accounts,
      commandCount: spec.commandCount,
      seed: spec.seed,
      concurrency: spec.concurrency,
    };
    // With --profile, the client process is profiled too (its main thread is the busy one).
    const clientProf = profileArgs(control, `${variant}-c${spec.concurrency}-client`);
    const client = spawnChild<RemoteClientResult>(REMOTE_CLIENT_SCRIPT, clientSpec, {
      nodeArgs: clientProf.nodeArgs,
      onPhase: (phase) => {
        control.onPhase?.(phase);
        if (phase === 'commands') sampler.start();
        if (phase === 'commands-done') {
          resources = sampler.stop();
          nodeHwmMb = procMemoryMb(nodeChild.pid)?.hwmMb ?? 0;
        }
      },
      ...(control.timeoutMs === undefined ? {} : { timeoutMs: control.timeoutMs }),
    });
    sampler.addChild(client.pid, 'client');
    const clientResult = await client.result;
    if (resources === undefined) throw new Error('the remote client never reported the end of phase 2');
    const jetstreamMessages = await streamMessages(spec.server.servers, spec.stream);
    control.onPhase?.('stop');
    nodeChild.tell('stop');
    await nodeChild.result;

    control.onPhase?.('verify');
    const verified = await verifyRun(spec, clientResult.phase1, clientResult.phase2, jetstreamMessages);
    const r = resources;
    const node = r.children.find((c) => c.label === 'node');
    const cl = r.children.find((c) => c.label === 'client');
    const run: RemoteRunResult = {
      variant,
      accounts: spec.accounts,
      commandCount: spec.commandCount,
      concurrency: spec.concurrency,
      client: clientResult,
      resources: r,
      nodeHwmMb,
      nodePeakRssMb: node?.peakRssMb ?? 0,
      clientPeakRssMb: cl?.peakRssMb ?? 0,
      cpuSeconds: r.children.reduce((s, c) => s + c.cpuSeconds, 0),
      jetstreamMessages,
    };
    return { run, ...verified };
  } finally {
    nodeChild.kill();
    await deleteRunStreams(spec.server.servers, spec.stream);
    await rm(spec.dataDir, { recursive: true, force: true }).catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------

/** CPU µs per command of the processes labelled `label` (null when none was sampled). */
function cpuUsOf(r: ResourceReport, label: string, commands: number): number | null {
  const cs = r.children.filter((c) => c.label === label);
  return cs.length === 0 || commands <= 0 ? null : (cs.reduce((s, c) => s + c.cpuSeconds, 0) * 1e6) / commands;
}

function serverCpuOf(r: ResourceReport): number | null {
  const servers = r.children.filter((c) => c.label === 'nats-server');
  return servers.length === 0 ? null : servers.reduce((s, c) => s + c.cpuSeconds, 0);
}

function verifyNotes(v: VerifiedRun<unknown>, phase1: PhaseResult, phase2: Phase2): string[] {
  const notes: string[] = [];
  if (phase1.errors > 0) notes.push(`phase 1: ${phase1.errors} errors (${phase1.firstError ?? ''})`);
  if (phase1.rejected > 0) notes.push(`phase 1: ${phase1.rejected} rejected`);
  if (phase2.errors > 0) notes.push(`${phase2.errors} errors: ${phase2.firstError ?? ''}`);
  if (!v.verification.ok) notes.push(`verify: ${v.verification.failures.join('; ')}`);
  return notes;
}

export function ledgerRow(v: VerifiedRun<LedgerRunResult>, extraNotes: string[] = []): BenchRow {
  const r = v.run;
  const notes = [
    `${r.phase2.accepted.toLocaleString('en-US')} acc, ${r.phase2.rejected.toLocaleString('en-US')} rej`,
    `${r.workers} worker${r.workers === 1 ? '' : 's'}`,
    ...(r.residentActors === null ? [] : [`${r.residentActors.toLocaleString('en-US')} resident`]),
    `RSS ${Math.round(r.rssAfterStartMb)} MB started, ${Math.round(r.rssAfterPhase1Mb)} after phase 1, ${Math.round(r.resources.peakRssMb)} phase-2 peak` +
      (r.rssEnd === null ? '' : ` (end: ${Math.round(r.rssEnd.anonMb)} anon + ${Math.round(r.rssEnd.fileMb)} file-backed)`),
    ...extraNotes,
    ...verifyNotes(v, r.phase1, r.phase2),
  ];
  return {
    workload: 'ledger',
    variant: r.variant,
    concurrency: r.concurrency,
    accounts: r.accounts,
    cmdsPerSec: r.phase2.cmdsPerSec,
    eventsPerSec: r.phase2.durationMs > 0 ? (r.phase2.accepted / r.phase2.durationMs) * 1000 : 0,
    p50Ms: r.phase2.p50Ms,
    p99Ms: r.phase2.p99Ms,
    p999Ms: r.phase2.p999Ms,
    peakRssMb: r.hwmMb,
    cpuSeconds: r.resources.totalCpuSeconds,
    cpuUsPerCmd: r.commandCount > 0 ? (r.resources.totalCpuSeconds * 1e6) / r.commandCount : null,
    nodeCpuUsPerCmd: r.commandCount > 0 ? ((r.resources.totalCpuSeconds - (serverCpuOf(r.resources) ?? 0)) * 1e6) / r.commandCount : null,
    serverCpuSeconds: serverCpuOf(r.resources),
    jetstreamMessages: r.jetstreamMessages,
    verifyOk: v.verifyOk,
    phase1PerSec: r.phase1.perSec,
    workers: r.workers,
    residentActors: r.residentActors,
    notes: notes.join('; '),
  };
}

export function remoteRow(v: VerifiedRun<RemoteRunResult>): BenchRow {
  const r = v.run;
  const p2 = r.client.phase2;
  const notes = [
    `${p2.accepted.toLocaleString('en-US')} acc, ${p2.rejected.toLocaleString('en-US')} rej`,
    `client RSS ${Math.round(r.clientPeakRssMb)} MB`,
    ...verifyNotes(v, r.client.phase1, p2),
  ];
  return {
    workload: 'ledger',
    variant: r.variant,
    concurrency: r.concurrency,
    accounts: r.accounts,
    cmdsPerSec: p2.cmdsPerSec,
    eventsPerSec: p2.durationMs > 0 ? (p2.accepted / p2.durationMs) * 1000 : 0,
    p50Ms: p2.p50Ms,
    p99Ms: p2.p99Ms,
    p999Ms: p2.p999Ms,
    peakRssMb: r.nodeHwmMb,
    cpuSeconds: r.cpuSeconds,
    cpuUsPerCmd: r.commandCount > 0 ? (r.cpuSeconds * 1e6) / r.commandCount : null,
    nodeCpuUsPerCmd: cpuUsOf(r.resources, 'node', r.commandCount),
    clientCpuUsPerCmd: cpuUsOf(r.resources, 'client', r.commandCount),
    serverCpuSeconds: serverCpuOf(r.resources),
    jetstreamMessages: r.jetstreamMessages,
    verifyOk: v.verifyOk,
    phase1PerSec: r.client.phase1.perSec,
    notes: notes.join('; '),
  };
}
