/**
 * The worker entry: a Piscina task handler that hosts shards.
 *
 * Each worker thread keeps its own NATS connection and lean publisher, opens the node's LMDB
 * environment, and loads the actor modules by path. Commands arrive in batches over the
 * MessagePort handed over by the `attach` task (never one message per command); each outcome
 * (stored in JetStream, rejected, or failed with a typed error) goes back over the same port,
 * many per message. Queries, history, shard open/release and stop are Piscina tasks.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { threadId, workerData, type MessagePort } from 'node:worker_threads';
import { IdGenerator, type IdUse, type CommandResult } from '../envelope.ts';
import { COMMAND_STRIDE, readCommand } from '../wire.ts';
import type { Principal } from '../principal.ts';
import { OutcomeStream } from './outcomes.ts';
import { WorkerSubjects, type OutcomeTarget } from './serving.ts';
import { sweep } from './passivation.ts';
import { ConcurrencyError, toWire, type WireError } from '../errors.ts';
import { connectNats, openJournal, lastSequenceOf, shardSubject, LeanPublisher, nuid, type Journal, type NatsConnection } from '../journal/journal.ts';
import { restoreSharedCheckpoint } from './handoff.ts';
import type { ResolvedOptions } from '../options.ts';
import { loadRegistry, type Registry } from '../contracts/registry.ts';
import { stateUsesKeys } from '../contracts/sensitive.ts';
import { commitResult, eventsOf, ShardHost, type InboundCommand, type PendingCommit, type ShardContext, type ShardObserver } from './shard.ts';
import { Store } from '../journal/store.ts';
import { TimerClock } from './timers.ts';
import { SharedCheckpoints } from '../journal/shared-checkpoints.ts';
import { ShardNeeds } from '../journal/shard-needs.ts';
import type { EventEnvelope } from '../journal/codec.ts';
import { childLog, createLog, errorFields } from '../ops/log.ts';
import { WorkerMetrics, type WorkerMetricsSnapshot } from '../ops/metrics.ts';
import { shutdownTracingSdk, startTracingSdk, traceBatchHeaders, tracing, WorkerCommandTrace } from '../ops/tracing.ts';

export type WorkerTask =
  /** The main thread's end of this worker's command stream (pool.ts). */
  | { kind: 'attach'; port: MessagePort }
  | { kind: 'query'; shard: number; aggregateType: string; aggregateId: string; principal?: Principal | null }
  | { kind: 'history'; shard: number; aggregateType: string; aggregateId: string; principal?: Principal | null }
  | { kind: 'timers'; shard: number; aggregateType: string; aggregateId: string; principal?: Principal | null }
  | { kind: 'open'; shards: number[] }
  /** `checkpoint`: a planned hand-off: share the shards' checkpoints (the lease is still held). */
  | { kind: 'release'; shards: number[]; checkpoint?: boolean }
  /** Subscribe to (or drop) the command subjects of shards this worker hosts (serving.ts). */
  | { kind: 'serve'; shards: number[] }
  | { kind: 'unserve'; shards: number[] }
  /** Before a planned hand-off, while still serving: snapshot and share the shards' checkpoints, so the release after it shares nothing more. */
  | { kind: 'share'; shards: number[] }
  /** A planned hand-off to this node (handoff.ts): restore the shards' shared checkpoints before their leases come. Answers those restored. */
  | { kind: 'prefetch'; shards: number[] }
  | { kind: 'stats' }
  /** The ids of resident actors of a type (`troupe actors --resident`, the dashboard), at most `limit`. */
  | { kind: 'resident'; aggregateType: string; limit: number }
  | { kind: 'stop' }
  | { kind: 'crash' };

export interface WorkerStats {
  threadId: number;
  shards: number;
  residentActors: number;
  queuedCommits: number;
  inFlightAppends: number;
  natsConnected: boolean;
  /** Shards opened from a checkpoint another node shared, and log messages read by catch-ups, since the worker started. */
  restoredCheckpoints: number;
  catchUpMessages: number;
  /** Actors passivated (freed from memory) since the worker started. */
  passivations: number;
  /** Counters and histograms of this worker, for /metrics. */
  metrics: WorkerMetricsSnapshot;
}

interface WorkerState {
  nc: NatsConnection;
  journal: Journal;
  store: Store;
  registry: Registry;
  publisher: LeanPublisher;
  shards: Map<number, ShardHost>;
  /** Shards handed off or lost: their commands are refused (SHARD_NOT_OWNED) until an 'open' brings them back. */
  released: Set<number>;
  ctx: ShardContext;
  shared: SharedCheckpoints | null;
  sweeper: NodeJS.Timeout;
  clock: TimerClock;
  /** The command subjects this worker subscribes to itself (serving.ts). */
  subjects: WorkerSubjects;
  /** Shared checkpoints being restored ahead of a hand-off: an 'open' of the shard waits for them. */
  prefetching: Map<number, Promise<number>>;
  /** Send one message for every shard with buffered commits and none in flight. */
  flushAll(): void;
}

const options = (workerData as { options: ResolvedOptions }).options;
let state: Promise<WorkerState> | null = null;
const log = childLog(createLog(options.logLevel, { node: options.nodeName }), { worker: threadId });
const metrics = new WorkerMetrics();
let passivations = 0;

// A worker thread that fails (an uncaught exception or rejection) first lets LMDB finish and
// closes its environment, then exits. A thread that dies inside a write transaction leaves the
// environment's write lock held for ever: every other worker, and the replacement, then wait
// on it (seen under load: after such a crash no thread or process could write again). Piscina
// replaces the worker; the main thread fails its unanswered commands with WORKER_LOST.
let failing = false;
function failWorker(err: unknown): void {
  if (failing) return;
  failing = true;
  log.logger.error({ ...errorFields(err), stack: (err as Error)?.stack }, 'worker thread failed: letting LMDB commit, then exiting; Piscina replaces it');
  // Die the way an uncaught error does (Piscina sees the worker's 'error' event, with the thread id
  // still set, and the main thread fails this worker's unanswered commands with WORKER_LOST).
  const die = () => {
    process.off('uncaughtException', failWorker);
    process.off('unhandledRejection', failWorker);
    process.nextTick(() => { throw err instanceof Error ? err : new Error(String(err)); });
  };
  const timer = setTimeout(die, 5_000);
  // No new writes: commands stop being taken, acknowledgements stop arriving; then the writes
  // already queued commit, and the thread dies before anything else runs.
  const quiet = state === null ? Promise.resolve() : state.then(async (w) => {
    clearInterval(w.sweeper);
    w.publisher.close();
    await w.store.flushed();
    await w.store.flushed();
  });
  void quiet.catch(() => {}).finally(() => {
    clearTimeout(timer);
    die();
  });
}
process.on('uncaughtException', failWorker);
process.on('unhandledRejection', failWorker);

// `TROUPE_PROFILE_DIR=dir` writes a V8 CPU profile of each worker thread when the node stops
// (Node's --cpu-prof does not see Piscina workers, which are terminated, not exited).
const profileDir = process.env.TROUPE_PROFILE_DIR;
let profiler: Session | null = null;
if (profileDir !== undefined && profileDir !== '') {
  profiler = new Session();
  profiler.connect();
  profiler.post('Profiler.enable', () => profiler!.post('Profiler.start'));
}

function writeProfile(): Promise<void> {
  const session = profiler;
  if (session === null) return Promise.resolve();
  return new Promise((resolve) => session.post('Profiler.stop', (err, result) => {
    if (err === null) {
      mkdirSync(profileDir!, { recursive: true });
      writeFileSync(`${profileDir}/worker-${process.pid}-${threadId}.cpuprofile`, JSON.stringify(result.profile));
    }
    resolve();
  }));
}

async function init(): Promise<WorkerState> {
  // Each worker thread has its own OpenTelemetry SDK, when OTEL_* variables enable tracing.
  await startTracingSdk({ serviceName: 'troupe' });
  // Opens the <stream>_keys ring when an actor type declares sensitive fields (contracts/contract.ts, keystore.ts).
  const registry = await loadRegistry(options.actors, options);
  const store = new Store(options.dataDir, options.stream, options.commandIdTtlMs);
  const nc = await connectNats(options.servers, `troupe-${options.nodeName}-w${threadId}`, options.nats);
  const journal = await openJournal(nc, {
    servers: options.servers, stream: options.stream, subjectPrefix: options.subjectPrefix, replicas: options.replicas,
    maxMessageBytes: options.maxBatchBytes, duplicateWindowMs: options.duplicateWindowMs, shards: options.shards,
  });
  const publisher = new LeanPublisher(nc, options.ackTimeoutMs);
  // With leases, shards move between nodes: they share checkpoints (shared-checkpoints.ts).
  const shared = options.ownership === 'lease' ? await SharedCheckpoints.open(nc, options.stream, options.replicas) : null;
  // With leases, shards record the event versions their logs hold, for placement (log-needs.ts).
  const needs = options.ownership === 'lease' ? { store: await ShardNeeds.open(nc, options.stream, options.replicas), reads: registry.reads() } : null;
  const shards = new Map<number, ShardHost>();
  const dirty = new Set<ShardHost>();
  let scheduled = false;
  const flushAll = () => {
    scheduled = false;
    for (const s of dirty) s.flush();
    dirty.clear();
  };
  const ids = new IdGenerator();
  // The periodic sweep bounds resident actors at its own pace; when actors activate faster
  // than that (a million touched at 20k/s), every 5% of the bound activated sweeps sooner.
  const sweepEvery = Math.max(64, Math.floor(options.maxResidentActors / 20));
  let activatedSinceSweep = 0;
  let sweepSoon = false;
  const sweepNow = () => {
    sweepSoon = false;
    activatedSinceSweep = 0;
    sweep(shards.values(), options.idleActorMs, options.maxResidentActors);
  };
  // Durable timers: one clock fires the due timers of this worker's shards (timers.ts).
  const clock = new TimerClock(() => shards.values(), metrics);
  const ctx: ShardContext = {
    options, registry, store, journal, publisher, ids, shared, needs, clock,
    writerId: `${options.nodeName}.${threadId}.${nuid.next()}`,
    observer: shardObserver(ids.prefix),
    actorPassivated() {
      passivations++;
    },
    actorActivated() {
      if (++activatedSinceSweep < sweepEvery || sweepSoon) return;
      sweepSoon = true;
      setImmediate(sweepNow);
    },
    scheduleFlush(shard) {
      dirty.add(shard);
      if (scheduled) return;
      scheduled = true;
      if (options.lingerMs > 0) setTimeout(flushAll, options.lingerMs);
      else setImmediate(flushAll);
    },
  };
  // A new leader of the stream (its last one died, or stepped down): appends sent before it may
  // never be acknowledged (their outcome is unknown: fail them now, retryable, rather than after
  // ackTimeoutMs), and reads waiting on the JetStream API ask again (journal.ts).
  const signal = () => {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => { resolve = r; });
    return { promise, resolve };
  };
  let elected = signal();
  nc.subscribe(`$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.${options.stream}`, {
    callback: () => {
      const was = elected;
      elected = signal();
      was.resolve();
      journal.electedAt = Date.now();
      publisher.failAll('the stream elected a new leader before JetStream acknowledged; the outcome is unknown, retry with the same commandId');
      if (log.info) log.logger.info({ stream: options.stream }, 'the stream elected a new leader: appends in flight failed (retryable), reads ask again');
    },
  });
  journal.leaderElected = () => elected.promise;
  // A dropped connection leaves every in-flight append's outcome unknown: say so at once.
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect' && log.warn) log.logger.warn({ server: nc.getServer() }, 'NATS connection lost; reconnecting');
      if (s.type === 'disconnect') publisher.failAll('the NATS connection dropped before JetStream acknowledged; the outcome is unknown, retry with the same commandId');
    }
  })();
  const sweeper = setInterval(sweepNow, Math.max(50, Math.min(1000, options.idleActorMs / 4)));
  sweeper.unref();
  // Crypto-shredding: resident actors whose state was built with a destroyed key leave memory
  // (their snapshot cannot be sealed any more, so it is dropped); they are rebuilt, redacted, from the log.
  registry.keys?.onDestroyed((kids) => {
    for (const s of shards.values()) for (const c of s.cells.values()) if (stateUsesKeys(c.state, kids) || stateUsesKeys(c.pending, kids)) s.passivate(c);
  });
  const w: WorkerState = { nc, journal, store, registry, publisher, shards, released: new Set(), ctx, shared, sweeper, flushAll, clock, subjects: null!, prefetching: new Map() };
  w.subjects = new WorkerSubjects(nc, options, registry, ids, {
    take: (flat, target) => take(w, flat, target, null),
    inProgress: () => metrics.mailboxDepth,
    answered: (ms, code) => served.answered(ms, code),
  });
  return w;
}

/** Since the worker started: shards restored from a shared checkpoint, log messages read by catch-ups. */
const catchUps = { restored: 0, messages: 0 };

/**
 * Share the checkpoints of `shards` (their LMDB part is flushed): only those the log moved past
 * since the shared one. A failure is logged, not thrown: the next owner then reads the log.
 */
async function shareCheckpoints(w: WorkerState, shards: readonly number[]): Promise<void> {
  const shared = w.shared;
  if (shared === null || shards.length === 0) return;
  try {
    w.store.refresh();
    const identity = w.store.getStreamIdentity() ?? '';
    const behind: number[] = [];
    for (const s of shards) {
      const local = w.store.getCheckpoint(s);
      const m = await shared.manifest(s);
      if (local > 0 && (m === null || m.identity !== identity || m.position < local)) behind.push(s);
    }
    if (behind.length === 0) return;
    const started = Date.now();
    let bytes = 0;
    for (const [s, part] of w.store.exportShards(behind, options.shards)) {
      await shared.write(s, part.position, identity, part.bytes);
      bytes += part.bytes.length;
    }
    if (log.info) log.logger.info({ shards: behind, bytes, ms: Date.now() - started }, 'shard checkpoints shared');
  } catch (e) {
    if (log.warn) log.logger.warn(errorFields(e), 'sharing shard checkpoints failed: the next owner reads the log from its own checkpoint');
  }
}

/**
 * Restore the shared checkpoint of a shard this worker does not host yet, ahead of its lease (a
 * planned hand-off to this node, handoff.ts). Returns the position restored, or 0.
 */
function prefetch(w: WorkerState, shard: number): Promise<number> {
  if (w.shards.has(shard) || w.shared === null) return Promise.resolve(0);
  const running = w.prefetching.get(shard);
  if (running !== undefined) return running;
  const p = (async () => {
    const started = Date.now();
    const last = await lastSequenceOf(w.journal, shardSubject(options.subjectPrefix, shard));
    await w.store.flushIndex();
    const position = await restoreSharedCheckpoint(w.store, w.shared, shard, options.shards, w.store.getCheckpoint(shard), last);
    if (position > 0) catchUps.restored++;
    if (position > 0 && log.info) log.logger.info({ shard, position, ms: Date.now() - started }, 'restored a shard checkpoint ahead of its hand-off');
    return position;
  })().catch(() => 0).finally(() => w.prefetching.delete(shard));
  w.prefetching.set(shard, p);
  return p;
}

/** Metrics, logs and trace headers of this worker's shards: once per JetStream message. */
function shardObserver(idPrefix: string): ShardObserver {
  return {
    flushed(subject, batch, headers, msgId, bytes) {
      metrics.flushed(batch.length, bytes);
      if (tracing.on) traceBatchHeaders(headers, subject, msgId, batch);
      if (log.debug) log.logger.debug({ subject, msgId, commits: batch.length, bytes }, 'commit batch sent');
    },
    appended(shard, batch, position, ms) {
      let events = 0;
      for (let i = 0; i < batch.length; i++) events += batch[i]!.wire.length;
      metrics.appended(batch.length, events, ms);
      if (log.info) logEvents(shard, batch, position, idPrefix);
    },
    appendFailed(shard, cause, failed) {
      metrics.appendFailed(cause.code, failed.length);
      if (log.warn) {
        log.logger.warn({ shard, commits: failed.length, ...errorFields(cause) },
          'append failed: its commands failed with a retryable error; the shard re-opens from the log');
      }
    },
  };
}

/** info: one line per stored event (a business event), with the ids that tie it to its cause. */
function logEvents(shard: number, batch: readonly PendingCommit[], position: number, idPrefix: string): void {
  for (const pc of batch) {
    const aggregateType = pc.cell.reg.def.type;
    for (const e of eventsOf(pc, idPrefix)) {
      log.logger.info({
        eventType: e.eventType, eventId: e.eventId, aggregateType, aggregateId: pc.cell.id, sequence: e.sequence, position, shard,
        commandId: pc.commandId, correlationId: pc.cmd.correlationId, causationId: pc.commandId, userId: pc.cmd.userId,
      }, 'event stored');
    }
  }
}

/** A command failed in this worker: a bug or a failure needs attention now; an answer is flow detail. */
function logFailure(cmd: WorkerCommand, error: WireError): void {
  const fields = {
    ...errorFields(error), commandId: cmd.commandId, commandType: cmd.type, aggregateType: cmd.aggregateType, aggregateId: cmd.aggregateId,
    correlationId: cmd.correlationId, causationId: cmd.causationId,
  };
  if (error.code === 'DECIDE_FAILED' || error.code === 'INTERNAL') log.logger.error(fields, 'command failed: the actor threw');
  // A refusal names who and what, never the payload (errorFields carries the message, which names neither).
  else if (error.code === 'FORBIDDEN') { if (log.warn) log.logger.warn({ ...fields, principalId: cmd.principal?.id ?? null }, 'command forbidden by an authorize rule'); }
  else if (log.debug) log.logger.debug(fields, 'command not stored');
}

function shardFor(w: WorkerState, shard: number): ShardHost {
  let host = w.shards.get(shard);
  if (host === undefined) {
    host = new ShardHost(shard, w.ctx);
    w.shards.set(shard, host);
  }
  return host;
}

/** A command unpacked from a flat batch; `reply` sends its outcome back once. */
class WorkerCommand implements InboundCommand {
  // Filled by readCommand (wire.ts COMMAND layout).
  declare readonly commandId: string;
  declare readonly type: string;
  declare readonly aggregateType: string;
  declare readonly aggregateId: string;
  declare readonly payload: unknown;
  declare readonly userId: string | null;
  declare readonly correlationId: string;
  declare readonly causationId: string | null;
  declare readonly shard: number;
  declare readonly idUse: IdUse;
  /** The command's number on its slot (pool.ts): its outcome carries it back. */
  declare readonly seq: number;
  declare readonly principal: Principal | null;
  readonly spans: WorkerCommandTrace | null;
  private settled = false;
  constructor(flat: unknown[], base: number, private readonly stream: OutcomeTarget, traceparent: string | null) {
    readCommand(flat, base, this);
    this.spans = traceparent === null ? null : new WorkerCommandTrace(traceparent, this);
  }

  replyStored(pc: PendingCommit, position: number, idPrefix: string): void {
    // A traced command's spans want the result object.
    if (this.spans !== null) this.reply(null, commitResult(pc, position, idPrefix, false));
    else if (this.settle()) this.stream.pushStored(this.seq, pc, position, idPrefix);
  }

  reply(error: WireError | null, result: CommandResult | null): void {
    if (!this.settle()) return;
    if (this.spans !== null) this.spans.replied(error, result);
    if (error !== null && (log.debug || error.code === 'DECIDE_FAILED' || error.code === 'INTERNAL' || error.code === 'FORBIDDEN')) logFailure(this, error);
    this.stream.push(this.seq, error, result);
  }

  /** True the first time: a command is answered once. */
  private settle(): boolean {
    if (this.settled) return false;
    this.settled = true;
    metrics.mailboxDepth--;
    return true;
  }
}

function attach(w: WorkerState, port: MessagePort): void {
  const stream = new OutcomeStream(port);
  served.port = port;
  // A batch is a flat array; a batch with traced commands comes as {flat, traces} (pool.ts).
  port.on('message', (msg: unknown[] | { flat: unknown[]; traces: (string | null)[] }) => {
    if (failing) return; // the main thread fails them with WORKER_LOST when this thread exits
    take(w, Array.isArray(msg) ? msg : msg.flat, stream, Array.isArray(msg) ? null : msg.traces);
  });
}

/** A flat batch of commands (wire.ts COMMAND layout) for this worker's shards; each outcome goes to `target`. */
function take(w: WorkerState, flat: unknown[], target: OutcomeTarget, traces: (string | null)[] | null): void {
  metrics.mailboxDepth += flat.length / COMMAND_STRIDE;
  if (log.debug) log.logger.debug({ commands: flat.length / COMMAND_STRIDE }, 'command batch received');
  for (let b = 0; b < flat.length; b += COMMAND_STRIDE) {
    const cmd = new WorkerCommand(flat, b, target, traces === null ? null : traces[b / COMMAND_STRIDE] ?? null);
    try {
      if (w.released.size > 0 && w.released.has(cmd.shard)) {
        // Sent before the main thread stopped taking commands for it, arrived after the hand-off.
        cmd.reply(toWire(new ConcurrencyError('SHARD_NOT_OWNED', `shard ${cmd.shard} moved to another node; send it there`, { shard: cmd.shard, commandId: cmd.commandId })), null);
        continue;
      }
      shardFor(w, cmd.shard).submit(cmd);
    } catch (e) {
      cmd.reply(toWire(e), null);
    }
  }
  // Each batch's commits leave now rather than after the last queued batch: the main thread
  // sends a busy turn's commands in several batches (pool.ts), and their appends then overlap.
  if (options.lingerMs === 0) w.flushAll();
}

/**
 * Commands this worker took from NATS itself (serving.ts) and answered: latency and failure
 * codes, posted to the main thread every SERVED_EVERY_MS (and before a stats answer) for the
 * node's /metrics, which counts the commands the main thread hands over itself.
 */
const SERVED_EVERY_MS = 200;
const served = {
  port: null as MessagePort | null,
  /** [ms, code | null, ...] */
  pending: [] as (number | string | null)[],
  timer: null as NodeJS.Timeout | null,
  answered(ms: number, code: string | null): void {
    this.pending.push(ms, code);
    if (this.timer === null) {
      this.timer = setTimeout(() => this.post(), SERVED_EVERY_MS);
      this.timer.unref();
    }
  },
  post(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.pending.length === 0 || this.port === null) return;
    this.port.postMessage({ served: this.pending });
    this.pending = [];
  },
};

export default async function handle(task: WorkerTask): Promise<unknown> {
  const w = await (state ??= init());
  switch (task.kind) {
    case 'attach':
      attach(w, task.port);
      return true;
    // Errors cross back as data: a thrown error would lose its class and code on the way.
    case 'query':
      return shardFor(w, task.shard).query(task.aggregateType, task.aggregateId, task.principal ?? null).then((value) => ({ value }), (e: unknown) => ({ error: toWire(e) }));
    case 'history':
      return shardFor(w, task.shard).history(task.aggregateType, task.aggregateId, task.principal ?? null).then((value: EventEnvelope[]) => ({ value }), (e: unknown) => ({ error: toWire(e) }));
    case 'timers':
      return shardFor(w, task.shard).pendingTimers(task.aggregateType, task.aggregateId, task.principal ?? null).then((value) => ({ value }), (e: unknown) => ({ error: toWire(e) }));
    case 'open':
      for (const s of task.shards) w.released.delete(s);
      await Promise.all(task.shards.map(async (s) => {
        await w.prefetching.get(s);
        return shardFor(w, s).open();
      }));
      for (const s of task.shards) {
        const c = w.shards.get(s)?.lastCatchUp;
        if (c == null) continue;
        catchUps.messages += c.messages;
        if (c.restored > 0) catchUps.restored++;
      }
      if (log.info) {
        log.logger.info({ shards: task.shards, catchUps: task.shards.map((s) => w.shards.get(s)?.lastCatchUp ?? null) }, 'shards opened: caught up with the log');
      }
      return true;
    case 'release':
      for (const s of task.shards) {
        w.released.add(s);
        const host = w.shards.get(s);
        if (host === undefined) continue;
        await host.drain(options.ackTimeoutMs);
        host.snapshotAll();
        host.close();
        w.shards.delete(s);
      }
      await w.store.flushed();
      if (task.checkpoint === true) await shareCheckpoints(w, task.shards);
      return true;
    case 'serve':
      // The main thread opened these shards first (catch-up): a request reaches this worker once it can answer it.
      await w.subjects.serve(task.shards.filter((s) => !w.released.has(s)));
      return true;
    case 'unserve':
      await w.subjects.unserve(task.shards);
      return true;
    case 'prefetch': {
      const positions = await Promise.all(task.shards.map((s) => prefetch(w, s)));
      return task.shards.filter((_, i) => positions[i]! > 0);
    }
    case 'share':
      for (const s of task.shards) w.shards.get(s)?.snapshotAll();
      await w.store.flushed();
      await shareCheckpoints(w, task.shards);
      return true;
    case 'stats': {
      served.post();
      let residentActors = 0;
      let queuedCommits = 0;
      for (const s of w.shards.values()) {
        residentActors += s.residentActors;
        queuedCommits += s.queuedCommits;
      }
      const stats: WorkerStats = {
        threadId, shards: w.shards.size, residentActors, queuedCommits, inFlightAppends: w.publisher.inFlight,
        natsConnected: !w.nc.isClosed() && w.nc.getServer() !== '',
        restoredCheckpoints: catchUps.restored, catchUpMessages: catchUps.messages, passivations,
        metrics: metrics.snapshot(),
      };
      return stats;
    }
    case 'resident': {
      const ids: string[] = [];
      for (const s of w.shards.values()) {
        for (const c of s.cells.values()) {
          if (c.reg.def.type !== task.aggregateType || c.phase === 'passivating') continue;
          if (ids.push(c.id) >= task.limit) return ids;
        }
      }
      return ids;
    }
    case 'stop': {
      await w.subjects.unserve(w.subjects.served);
      await Promise.all([...w.shards.values()].map((s) => s.drain(options.ackTimeoutMs)));
      for (const s of w.shards.values()) {
        s.snapshotAll();
        s.close();
      }
      served.post();
      clearInterval(w.sweeper);
      w.clock.stop();
      await w.store.flushed();
      // The node hands every shard off as it stops: the next owners restore these.
      await shareCheckpoints(w, [...w.shards.keys()]);
      w.publisher.close();
      await shutdownTracingSdk();
      await w.nc.drain().catch(() => {});
      await w.store.close().catch(() => {});
      await w.registry.close().catch(() => {});
      if (log.info) log.logger.info({ shards: w.shards.size }, 'worker stopped: commits finished, snapshots written, NATS drained, LMDB closed');
      await writeProfile();
      state = null;
      return true;
    }
    case 'crash':
      // For tests of worker replacement: die the way a native fault or OOM would.
      setImmediate(() => { throw new Error('worker crash requested'); });
      return true;
  }
}
