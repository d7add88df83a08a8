/**
 * One shard hosted on a worker: its actors, its commit buffer, its single in-flight append.
 *
 *   opening ──catch-up done──▶ ready ──append refused / no ack──▶ broken ──next use──▶ opening
 *      ▲                                                                                  │
 *      └──────────────────────────────────────────────────────────────────────────────────┘
 *
 * - opening: reads the shard's log from its LMDB checkpoint to the end, indexing every commit
 *   (history positions, processed commandIds), before any command is decided: a retry of a
 *   command the previous owner stored is answered from it. Commands that arrive meanwhile are
 *   stashed. The messages read are kept a while (log-cache.ts): the actors that activate next
 *   replay from them, not from JetStream.
 *   When the shard checkpoint another node shared on hand-off (journal/shared-checkpoints.ts)
 *   is ahead of the local one, it is restored into LMDB first and only the log after it is read.
 * - ready: commands are decided at once against each actor's pending state; commits wait in
 *   `buffer`; one JetStream message per flush carries many of them, with the expected last
 *   subject sequence, so a second writer is refused (fencing) and the log never forks.
 *   A shard has at most one message in flight: the next expectation is the previous ack.
 * - broken: an append failed or its outcome is unknown. Every uncommitted commit failed with a
 *   typed error; resident actors were dropped; the next use re-opens from the log, which also
 *   learns any commit whose ack was lost, so a retry with the same commandId is answered from it.
 *
 * This file keeps the state machine and the wiring; the parts live next to it: cell.ts (what
 * is resident), activation.ts (snapshot + replay), appender.ts (buffer, flush, ack, failure),
 * idempotency.ts (command ids), passivation.ts (snapshots, freeing actors), reads.ts (query,
 * history), and the root's
 * decide.ts (one command: decide, validate, contract write, evolve; shared with the test kit).
 */
import { decodeCommits, encodeCommit, estimateSize, isoTime, COMMIT_OVERHEAD, EVENT_OVERHEAD, type EventEnvelope } from '../journal/codec.ts';
import type { CommandEnvelope, CommandResult } from '../envelope.ts';
import { formatId, IdUse, type IdGenerator } from '../envelope.ts';
import {
  ConcurrencyError, DecideFailedError, InternalError, JournalUnavailableError, StoppedError, TroupeError, ValidationError, toWire,
  type WireError,
} from '../errors.ts';
import { lastSequenceOf, readSubject, shardSubject, type Journal, type LeanPublisher } from '../journal/journal.ts';
import type { ResolvedOptions } from '../options.ts';
import type { Registry } from '../contracts/registry.ts';
import { taintDecided } from '../contracts/contract.ts';
import { deferUntilKeys, pendingKeys, KEYS_PENDING } from '../contracts/sensitive.ts';
import type { Store } from '../journal/store.ts';
import type { SharedCheckpoints } from '../journal/shared-checkpoints.ts';
import type { CommandContext } from '../define.ts';
import type { Principal } from '../principal.ts';
import { Decider, DecideOutcome, type DecideStep } from '../decide.ts';
import { COMMIT, EVENT, TIMER_OP, TIMER_SET, commitTuple, lastSeqOf, type WireCommit, type WireEvent, type WireTimerOp } from '../wire.ts';
import type { DueTimer } from '../journal/timers.ts';
import { timerFiringTrace, tracing, WorkerCommandTrace } from '../ops/tracing.ts';
import { firedOps, missedOf, opKey, pendingTimer, ShardTimers, type PendingTimer, timerCommandId, TimerCommand, type TimedShard, type TimerClock } from './timers.ts';
import { ActorCell, CellMap, commitResult, eventsOf, follow, type InboundCommand, type PendingCommit } from './cell.ts';
import { activate } from './activation.ts';
import { actorHistory, queryActor } from './reads.ts';
import { Appender } from './appender.ts';
import { CommandIds } from './idempotency.ts';
import { passivate, snapshotAll } from './passivation.ts';
import { LogNeeds, type NeedsContext } from './log-needs.ts';
import { RecentLog } from './log-cache.ts';
import { restoreSharedCheckpoint } from './handoff.ts';

export { ActorCell, CellMap, commitResult, eventsOf, type InboundCommand, type PendingCommit } from './cell.ts';

/** Telemetry hooks (worker.ts implements them): called once per JetStream message, never per command. */
export interface ShardObserver {
  /** A message of `batch` commits leaves; `headers` may take trace context. */
  flushed(subject: string, batch: readonly PendingCommit[], headers: { set(k: string, v: string): void; get(k: string): string }, msgId: string, bytes: number): void;
  /** JetStream acknowledged it at `position`, `ms` after the publish. */
  appended(shard: number, batch: readonly PendingCommit[], position: number, ms: number): void;
  /** An append failed: every uncommitted commit of the shard failed with it. */
  appendFailed(shard: number, cause: TroupeError, failed: readonly PendingCommit[]): void;
}

export interface ShardContext {
  readonly options: ResolvedOptions;
  readonly registry: Registry;
  readonly store: Store;
  readonly journal: Journal;
  readonly publisher: LeanPublisher;
  /** Unique per worker incarnation: part of every Nats-Msg-Id. */
  readonly writerId: string;
  /** Event ids of this worker (their prefix travels once per message). */
  readonly ids: IdGenerator;
  scheduleFlush(shard: ShardHost): void;
  /** An actor became resident (the worker keeps the resident bound with it). */
  actorActivated?(): void;
  /** An actor was passivated (counted for `troupe stats` and the dashboard). */
  actorPassivated?(): void;
  readonly observer?: ShardObserver;
  /** Shard checkpoints shared between nodes (options.ownership 'lease'); null: the local cache alone. */
  readonly shared?: SharedCheckpoints | null;
  /** What shards' logs need a reader to know, and what this node reads (node/log-needs.ts); null: not tracked. */
  readonly needs?: NeedsContext | null;
  /** Fires the durable timers of the worker's shards (timers.ts); absent: timers are kept, not fired. */
  readonly clock?: TimerClock | null;
}

/** What the shard's last catch-up did: where it started, whether it restored a shared checkpoint. */
export interface CatchUp {
  /** The log position of the shared checkpoint restored, or 0 when none was. */
  restored: number;
  /** The first log position read, and the last. */
  from: number;
  to: number;
  /** Log messages read. */
  messages: number;
}

type ShardState = 'opening' | 'ready' | 'broken' | 'closed';

/** A broken shard's first try to open again by itself, and the longest wait between tries (Shard.reopenSoon). */
const REOPEN_FIRST_MS = 250;
const REOPEN_MAX_MS = 5_000;
type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/**
 * The shard's state machine and wiring. Its parts, one file each: activation.ts (snapshot +
 * replay), appender.ts (buffer, flush, ack, failure), idempotency.ts (command ids),
 * passivation.ts (snapshots, freeing actors); decide.ts runs each command.
 */
export class ShardHost implements DecideStep<InboundCommand>, TimedShard {
  state: ShardState = 'broken';
  /** Bumped whenever the shard re-opens or closes: work of an older generation is dropped. */
  generation = 0;
  /** The last catch-up (null before the first one ended). */
  lastCatchUp: CatchUp | null = null;
  private reopenTimer: NodeJS.Timeout | null = null;
  private reopenDelay = REOPEN_FIRST_MS;
  readonly cells = new CellMap();
  readonly subject: string;
  readonly commandIds: CommandIds;
  /** The record of the event versions this shard's log holds (node/log-needs.ts). */
  readonly needs: LogNeeds;
  /** The messages the last catch-up read, for the activations that follow it (log-cache.ts). */
  readonly recentLog = new RecentLog();
  private readonly appender: Appender;
  private stash: InboundCommand[] = [];
  private opening: Promise<void> | null = null;
  private readonly decider: Decider<InboundCommand> = new Decider(this);
  /** DecideStep: the node writes through contracts and never freezes. */
  readonly freeze = false;
  /** The actor being decided for, and its events as the log stores them (set per command; no object per command). */
  private deciding: ActorCell | null = null;
  private wire: WireEvent[] = [];
  private readonly context: Mutable<CommandContext> = {
    aggregateType: '', aggregateId: '', commandId: '', commandType: '', userId: undefined, correlationId: '', version: 0, now: 0, principal: null,
    schedule: this.decider.schedule, cancel: this.decider.cancel, timer: null,
  };
  /** The shard's durable timers in memory: its soonest, and the firings under way (timers.ts). */
  readonly timers: ShardTimers;

  constructor(readonly shard: number, readonly ctx: ShardContext) {
    this.subject = shardSubject(ctx.options.subjectPrefix, shard);
    this.appender = new Appender(this);
    this.needs = new LogNeeds(shard, ctx.needs ?? null, () => ctx.scheduleFlush(this));
    this.timers = new ShardTimers(shard, ctx.store.timers, ctx.clock?.meter ?? null);
    this.commandIds = new CommandIds(ctx.store, ctx.journal, (pc) => commitResult(pc, this.appender.expectedSeq, this.ctx.ids.prefix, true));
  }

  get residentActors(): number {
    return this.cells.size;
  }

  get queuedCommits(): number {
    return this.appender.queued;
  }

  // ── opening ─────────────────────────────────────────────────────────────────────────────

  /** Catch up from the checkpoint; idempotent while an open is under way. */
  open(): Promise<void> {
    if (this.state === 'ready') return Promise.resolve();
    if (this.state === 'closed') return Promise.reject(new StoppedError());
    this.opening ??= this.catchUp().finally(() => { this.opening = null; });
    return this.opening;
  }

  private async catchUp(): Promise<void> {
    this.state = 'opening';
    this.generation++;
    this.cells.clear();
    this.timers.clear();
    this.recentLog.clear();
    const { store, journal } = this.ctx;
    try {
      const last = await lastSequenceOf(journal, this.subject);
      await store.flushIndex(); // so the checkpoint read next is the newest one written
      let from = store.getCheckpoint(this.shard) + 1;
      if (from > last + 1) from = 1; // the cache is ahead of the log: it describes something else
      const restored = from <= last ? await restoreSharedCheckpoint(store, this.ctx.shared, this.shard, this.ctx.options.shards, from - 1, last) : 0;
      if (restored > 0) from = restored + 1;
      const cutoff = Date.now() - this.ctx.options.commandIdTtlMs;
      let messages = 0;
      const needs = this.needs;
      const recent = this.recentLog;
      needs.catchingUp();
      await readSubject(journal, this.subject, from, last, (data, seq) => {
        messages++;
        recent.add(seq, data);
        for (const c of decodeCommits(data)) {
          this.index(c, seq, cutoff);
          needs.saw(c);
        }
      });
      // A log this node cannot read (a newer version wrote to it) is refused here, as a whole.
      await needs.caughtUp();
      this.lastCatchUp = { restored, from, to: last, messages };
      store.advanceCheckpoint(this.shard, last);
      // The timer index's writes too: the window is read next. A catch-up that read nothing wrote
      // nothing (a restored checkpoint is committed already): it does not wait for other shards'
      // writes to reach the disk, which under load was most of a planned move's cut-over.
      if (messages > 0) await store.flushed();
      store.refresh();
      this.appender.expectedSeq = last;
      this.commandIds.clearRecent();
      recent.hold();
      this.state = 'ready';
      this.reopenDelay = REOPEN_FIRST_MS;
      this.timers.load();
      this.ctx.clock?.arm();
    } catch (e) {
      this.state = 'broken';
      this.reopenSoon();
      this.recentLog.clear();
      const err = toWire(e instanceof TroupeError ? e : new JournalUnavailableError(`shard ${this.shard} cannot catch up with the log: ${(e as Error).message}`, { shard: this.shard }, e));
      const stash = this.stash;
      this.stash = [];
      for (const c of stash) c.reply(err, null);
      throw e;
    }
    const stash = this.stash;
    this.stash = [];
    for (const c of stash) this.submit(c);
  }

  /** Record where a commit lives and that its command was processed. */
  private index(c: WireCommit, position: number, cutoff: number): void {
    const type = c[COMMIT.type];
    const id = c[COMMIT.id];
    const last = lastSeqOf(c);
    // A commit of timer ops alone has no events: nothing to replay, so no history entry.
    if (c[COMMIT.events].length > 0) this.ctx.store.indexCommit(type, id, last, position, true);
    const timers = c[COMMIT.timers];
    if (timers != null) this.timersStored(type, id, timers);
    this.commandIds.replayed(c[COMMIT.commandId], [type, id, c[COMMIT.firstSeq], last, position], c[COMMIT.timestamp], cutoff);
  }

  // ── commands ────────────────────────────────────────────────────────────────────────────

  submit(cmd: InboundCommand): void {
    if (this.state !== 'ready') {
      if (this.state === 'closed') { cmd.reply(toWire(new StoppedError(undefined, { shard: this.shard })), null); return; }
      if (this.stash.length >= this.ctx.options.maxQueuedCommands) {
        cmd.reply(toWire(new JournalUnavailableError(`shard ${this.shard} is not ready and its stash is full`, { shard: this.shard })), null);
        return;
      }
      this.stash.push(cmd);
      this.open().catch(() => { /* stashed commands were failed by catchUp */ });
      return;
    }
    if (cmd.idUse !== IdUse.GENERATED && this.commandIds.answerDuplicate(cmd)) return;
    const reg = this.ctx.registry.get(cmd.aggregateType);
    if (reg === undefined || !reg.def.commands.has(cmd.type)) {
      // The door checks this; a node whose actor modules differ from the sender's still answers clearly.
      try { this.ctx.registry.check(cmd.aggregateType, cmd.type, cmd.payload, cmd); } catch (e) { cmd.reply(toWire(e), null); }
      return;
    }
    let cell = this.cells.get(cmd.aggregateType, cmd.aggregateId);
    if (cell === undefined) {
      cell = new ActorCell(reg, cmd.aggregateId, this.generation);
      this.cells.add(cell);
      activate(this, cell);
    }
    if (cell.phase === 'activating') {
      (cell.stash ??= []).push(cmd);
      return;
    }
    cell.phase = 'running';
    if (cmd.spans) this.tracedDecide(cell, cmd);
    else this.decide(cell, cmd);
  }

  /** An activation ended: decide the commands that waited for it, in order (activation.ts). */
  decideStash(cell: ActorCell): void {
    const stash = cell.stash ?? [];
    cell.stash = null;
    for (const c of stash) {
      // Asked again: an earlier attempt of the same commandId may have been stashed with it
      // (a retry while the actor replayed); it is decided now, so this one follows it.
      if (c.idUse !== IdUse.GENERATED && this.commandIds.answerDuplicate(c)) continue;
      if (c.spans) this.tracedDecide(cell, c); else this.decide(cell, c);
    }
  }

  private decide(cell: ActorCell, cmd: InboundCommand): void {
    // Waiting for a new subject key (deferUntilKeys): later commands queue behind, in order.
    if (cell.phase === 'activating') { (cell.stash ??= []).push(cmd); return; }
    const def = cell.reg.def;
    const now = Date.now();
    cell.lastUsed = now;
    // A timer's firing (timers.ts): only while the timer is still the one it was taken for.
    const firing = cmd instanceof TimerCommand ? cmd : null;
    let missed = 0;
    if (firing !== null) {
      const key = firing.rec[TIMER_SET.key];
      const edit = cell.timerEdits?.get(key);
      const current = edit !== undefined ? edit : this.ctx.store.timers.get(def.type, cell.id, key)?.[TIMER_SET.dueAt] ?? null;
      if (current !== firing.dueAt) {
        firing.reply(null, null);
        return;
      }
      missed = missedOf(firing.dueAt, firing.rec[TIMER_SET.every], now);
      firing.firedAt = now;
      firing.firing = { key, dueAt: firing.dueAt, missed, scheduledBy: firing.rec[TIMER_SET.scheduledBy] };
    }
    // One context object per shard, refilled per command: decide is synchronous, and a context
    // must not be kept beyond the call (define.ts says so).
    const ctx = this.context;
    ctx.aggregateType = def.type;
    ctx.aggregateId = cell.id;
    ctx.commandId = cmd.commandId;
    ctx.commandType = cmd.type;
    ctx.userId = cmd.userId ?? undefined;
    ctx.principal = cmd.principal ?? null;
    ctx.correlationId = cmd.correlationId;
    ctx.version = cell.pendingVersion;
    ctx.now = now;
    ctx.timer = firing === null ? null : firing.firing;
    this.deciding = cell;
    const decider = this.decider;
    decider.traceparent = cmd.spans?.origin ?? null;
    const outcome = decider.run(def, cell.pending, cell.pendingVersion, cmd.payload, ctx, isoTime(now), cmd);
    this.deciding = null;
    let timers = decider.timers;
    if (firing !== null) {
      // A firing is consumed whatever decide did: FIRED (and the next due time) come first.
      const fired = firedOps(firing.rec, missed, outcome === DecideOutcome.FAILED ? decider.error!.code : null);
      timers = timers === null ? fired : fired.concat(timers);
    }
    if (outcome === DecideOutcome.FAILED) {
      if (firing === null) {
        this.replyAfterPending(cell, cmd, withIds(decider.error!, cell, cmd), null);
        return;
      }
      this.commit(cell, cmd, [], cell.pending, timers, now);
      return;
    }
    if (outcome === DecideOutcome.NO_EVENTS) {
      if (timers === null) {
        this.replyAfterPending(cell, cmd, null, { commandId: cmd.commandId, aggregateType: def.type, aggregateId: cell.id, version: cell.pendingVersion, events: [], position: 0, duplicate: false });
        return;
      }
      this.commit(cell, cmd, [], cell.pending, timers, now);
      return;
    }
    if (outcome === DecideOutcome.DEFERRED) {
      deferUntilKeys(cell, cmd, pendingKeys(), (c) => this.submit(c));
      return;
    }
    const state = decider.state;
    // Filled by write() during this run (a fresh array per decided command: it becomes the commit's).
    const wireEvents = this.wire;
    if (cell.reg.secrets) {
      try {
        taintDecided(cell.reg, cell.pending, state, wireEvents);
      } catch (e) {
        this.replyAfterPending(cell, cmd, withIds(e instanceof TroupeError ? e : new DecideFailedError(`${def.type}.${cmd.type} applying its events threw: ${(e as Error)?.message ?? String(e)}`, {}, e), cell, cmd), null);
        return;
      }
    }
    this.commit(cell, cmd, wireEvents, state, timers, now);
  }

  /** Buffer the commit of `cmd`: its events (maybe none) and timer ops (maybe none). */
  private commit(cell: ActorCell, cmd: InboundCommand, wireEvents: WireEvent[], state: unknown, timers: WireTimerOp[] | null, now: number): void {
    const def = cell.reg.def;
    const first = cell.pendingVersion + 1;
    const limit = this.ctx.options.maxCommandBytes;
    let size = COMMIT_OVERHEAD + wireEvents.length * EVENT_OVERHEAD;
    for (let i = 0; i < wireEvents.length && size <= limit; i++) size += estimateSize(wireEvents[i]![EVENT.payload], limit);
    if (timers !== null) size += estimateSize(timers, limit);
    // The estimate only errs high: measure exactly before refusing.
    if (size > limit / 2) {
      size = encodeCommit(commitTuple(cmd.commandId, def.type, cell.id, cmd.correlationId, cmd.userId, now, this.ctx.options.source, first, wireEvents, cmd.causationId, timers)).length;
    }
    if (size > limit) {
      this.replyAfterPending(cell, cmd, toWire(new ValidationError('COMMAND_TOO_LARGE',
        `${def.type}.${cmd.type} decided ${size} bytes of events; the limit is options.maxCommandBytes = ${limit}`,
        { aggregateType: def.type, aggregateId: cell.id, commandId: cmd.commandId, bytes: size })), null);
      return;
    }
    const pc: PendingCommit = {
      cell, commandId: cmd.commandId, wire: wireEvents, timestamp: now, size, firstSeq: first, lastSeq: first + wireEvents.length - 1, stateAfter: state, cmd,
      followers: null, failFollowers: null, timers,
    };
    if (timers !== null) {
      const edits = cell.timerEdits ??= new Map();
      for (const op of timers) edits.set(opKey(op), op[0] === TIMER_OP.SET ? op[TIMER_SET.dueAt] : null);
    }
    cell.pending = state;
    cell.pendingVersion = pc.lastSeq;
    cell.lastPending = pc;
    if (cmd.idUse !== IdUse.GENERATED) this.commandIds.began(pc);
    this.appender.push(pc);
  }

  // ── timers (timers.ts) ──────────────────────────────────────────────────────────────────

  /** An acknowledged (or replayed) commit's timer ops: into the LMDB index, and the window. */
  timersStored(type: string, id: string, ops: readonly WireTimerOp[]): void {
    const delta = this.ctx.store.applyTimerOps(this.shard, type, id, ops);
    this.timers.applied(type, id, ops, delta);
    const clock = this.ctx.clock;
    if (clock != null && this.timers.loaded) {
      for (const op of ops) if (op[0] === TIMER_OP.SET) clock.added(op[TIMER_SET.dueAt]);
    }
  }

  /** TimedShard (timers.ts): send the firing of `t` to its actor. */
  fireTimer(t: DueTimer, done: (failed: boolean) => void): void {
    const rec = this.ctx.store.timers.get(t.type, t.id, t.key);
    if (rec === undefined || rec[TIMER_SET.dueAt] !== t.dueAt || this.ctx.registry.get(t.type) === undefined) {
      done(false); // cancelled or replaced since the window read it; or an actor type this node does not host
      return;
    }
    const spans = tracing.on ? new WorkerCommandTrace(timerFiringTrace(`${t.type}.${rec[TIMER_SET.command]}`, rec[TIMER_SET.traceparent], {
      'troupe.aggregate.type': t.type, 'troupe.aggregate.id': t.id, 'troupe.timer.key': t.key, 'troupe.timer.due_at': t.dueAt,
    }), { aggregateType: t.type, aggregateId: t.id, type: rec[TIMER_SET.command], commandId: timerCommandId(t.key, t.dueAt, rec[TIMER_SET.scheduledBy]) }) : null;
    this.submit(new TimerCommand(t.type, t.id, this.shard, rec, done, this.ctx.clock?.meter ?? null, spans));
  }

  /**
   * DecideStep (decide.ts): event `i` of the command being decided passed its declaration
   * check. Schema, sensitive-data guard, encryption of sensitive fields: one precompiled call
   * (contracts/contract.ts). An event id is formatted only where it is read: encryption binds
   * it; results and logs format it from its counter (eventsOf, wire.ts readOutcome).
   */
  write(cmd: InboundCommand, i: number, count: number, eventType: string, payload: unknown): boolean {
    const cell = this.deciding!;
    if (i === 0) this.wire = new Array<WireEvent>(count);
    const ids = this.ctx.ids;
    const n = ids.nextCounter();
    const eventId = cell.reg.secrets ? formatId(ids.prefix, n) : '';
    const contract = cell.reg.contracts.get(eventType)!;
    const stored = contract.write(payload, eventId, cell.id, cmd.userId, cmd.commandId);
    if (stored === KEYS_PENDING) return false;
    this.needs.wrote(contract);
    this.wire[i] = [n, eventType, contract.version, stored];
    return true;
  }

  /** Reply now, or once the actor's last uncommitted commit is stored (a decision may rest on it). */
  private replyAfterPending(cell: ActorCell, cmd: InboundCommand, error: WireError | null, result: CommandResult | null): void {
    const last = cell.lastPending;
    if (last === null) cmd.reply(error, result);
    else follow(last, cmd, error, result);
  }

  /** decide() for a command that carries a trace: its `troupe.decide` span (ops/tracing.ts). */
  private tracedDecide(cell: ActorCell, cmd: InboundCommand): void {
    const start = performance.now();
    this.decide(cell, cmd);
    const pc = cell.lastPending !== null && cell.lastPending.cmd === cmd ? cell.lastPending : null;
    cmd.spans!.decided(start, pc === null ? null : eventsOf(pc, this.ctx.ids.prefix), pc === null ? cell.pendingVersion : pc.lastSeq);
  }

  // ── appending (appender.ts) ─────────────────────────────────────────────────────────────

  /** Send one message of buffered commits, if none is in flight. Called by the worker's flush loop. */
  flush(): void {
    this.appender.flush();
  }

  /** ready → broken: everything uncommitted fails; actors are dropped; the next use re-opens from the log. */
  appendFailed(cause: TroupeError, failed: readonly PendingCommit[]): void {
    const fenced = cause.code === 'CONCURRENCY';
    const error = toWire(fenced
      ? new ConcurrencyError('CONCURRENCY', `another writer appended to shard ${this.shard} (${cause.message}); nothing of this command was stored. Retry: the actor is reloaded from the log`, { shard: this.shard }, cause)
      : new JournalUnavailableError(`${cause.message}; retry with the same commandId: it is answered once, whatever happened`, { shard: this.shard }, cause));
    this.ctx.observer?.appendFailed(this.shard, cause, failed);
    this.state = 'broken';
    this.generation++;
    this.timers.clear();
    for (const cell of this.cells.values()) {
      if (cell.stash !== null) {
        const stash = cell.stash;
        cell.stash = null;
        for (const c of stash) this.stash.push(c);
      }
    }
    this.cells.clear();
    this.commandIds.clearInFlight();
    for (const pc of failed) {
      const data = { ...error.data, commandId: pc.commandId, aggregateType: pc.cell.reg.def.type, aggregateId: pc.cell.id };
      pc.cmd.reply({ ...error, data }, null);
      if (pc.failFollowers !== null) for (const f of pc.failFollowers) f(error);
    }
    if (this.stash.length > 0) this.open().catch(() => {});
    else this.reopenSoon();
  }

  /**
   * A broken shard opens again by itself, not only on its next command: its durable timers must
   * fire with no command to wake it (a catch-up that failed, e.g. while the stream elected a
   * leader, or an append that failed). After REOPEN_FIRST_MS, doubling up to REOPEN_MAX_MS.
   */
  private reopenSoon(): void {
    if (this.reopenTimer !== null || this.state === 'closed') return;
    const delay = this.reopenDelay;
    this.reopenDelay = Math.min(REOPEN_MAX_MS, delay * 2);
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = null;
      if (this.state === 'broken') this.open().catch(() => {});
    }, delay);
    this.reopenTimer.unref();
  }

  // ── reads ───────────────────────────────────────────────────────────────────────────────

  /** The committed state and version of an actor (activating it if needed). */
  query(type: string, id: string, principal: Principal | null = null): Promise<{ state: unknown; version: number }> {
    return queryActor(this, type, id, principal);
  }

  /** Every committed event of an actor, in order, as full envelopes. */
  history(type: string, id: string, principal: Principal | null = null): Promise<EventEnvelope[]> {
    return actorHistory(this, type, id, principal);
  }

  /** The actor's pending timers, soonest first. An actor type's `authorize` judges `principal` first (as `query`). */
  async pendingTimers(type: string, id: string, principal: Principal | null = null): Promise<PendingTimer[]> {
    if (this.ctx.registry.get(type)?.def.authorize != null) await queryActor(this, type, id, principal);
    await this.open();
    if (this.ctx.registry.get(type) === undefined) throw this.ctx.registry.check(type, '', undefined, { aggregateId: id });
    return this.ctx.store.timers.list(type, id).map(pendingTimer);
  }

  // ── passivation (passivation.ts) ────────────────────────────────────────────────────────

  /** Write a snapshot if the actor moved since the last one, then free it. */
  passivate(cell: ActorCell): void {
    this.ctx.actorPassivated?.();
    passivate(this.ctx.store, this.cells, cell, this.appender.expectedSeq);
  }

  /** Snapshot every actor that moved since its last snapshot (graceful stop). */
  snapshotAll(): void {
    snapshotAll(this.ctx.store, this.cells, this.appender.expectedSeq);
  }

  // ── closing ─────────────────────────────────────────────────────────────────────────────

  /** Resolves when nothing is buffered or in flight. */
  async drain(timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (!this.appender.idle && this.state === 'ready' && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  close(): void {
    const err = toWire(new StoppedError(undefined, { shard: this.shard }));
    this.state = 'closed';
    if (this.reopenTimer !== null) clearTimeout(this.reopenTimer);
    this.reopenTimer = null;
    this.generation++;
    this.timers.clear();
    this.recentLog.clear();
    for (const c of this.stash) c.reply(err, null);
    this.stash = [];
    for (const pc of this.appender.takeAll()) {
      pc.cmd.reply(err, null);
      if (pc.failFollowers !== null) for (const f of pc.failFollowers) f(err);
    }
    this.cells.clear();
  }
}

/**
 * The wire form of an error raised while deciding a command (decide.ts): a Troupe error keeps
 * its code and gains the ids of the actor and command.
 */
function withIds(e: unknown, cell: ActorCell, cmd: CommandEnvelope): WireError {
  const w = toWire(e);
  return { ...w, data: { aggregateType: cell.reg.def.type, aggregateId: cell.id, commandId: cmd.commandId, commandType: cmd.type, ...w.data } };
}
