/**
 * One shard hosted on a worker: its actors, its commit buffer, its single in-flight append.
 *
 *   opening ──catch-up done──▶ ready ──append refused / no ack──▶ broken ──next use──▶ opening
 *      ▲                                                                                  │
 *      └──────────────────────────────────────────────────────────────────────────────────┘
 *
 * - opening: reads the shard's log from its LMDB checkpoint to the end, indexing every commit
 *   (history positions, processed commandIds). Commands that arrive meanwhile are stashed.
 * - ready: commands are decided at once against each actor's pending state; commits wait in
 *   `buffer`; one JetStream message per flush carries many of them, with the expected last
 *   subject sequence, so a second writer is refused (fencing) and the log never forks.
 *   A shard has at most one message in flight: the next expectation is the previous ack.
 * - broken: an append failed or its outcome is unknown. Every uncommitted commit failed with a
 *   typed error; resident actors were dropped; the next use re-opens from the log, which also
 *   learns any commit whose ack was lost, so a retry with the same commandId is answered from it.
 */
import { beginBatch, decodeCommits, encodeCommit, endBatch, estimateSize, isoTime, writeCommit, COMMIT_OVERHEAD, EVENT_OVERHEAD, type EventEnvelope, type WireCommit, type WireEvent } from '../journal/codec.ts';
import type { CommandEnvelope, CommandResult } from '../envelope.ts';
import { formatId, IdUse, type IdGenerator } from '../envelope.ts';
import {
  ConcurrencyError, DecideFailedError, InternalError, JournalUnavailableError, StoppedError, TroupeError, ValidationError, toWire,
  type WireError,
} from '../errors.ts';
import { AppendHeaders, COMMIT_BATCH_FORMAT, FORMAT_HEADER, lastSequenceOf, readMessage, readSubject, shardSubject, type Journal, type LeanPublisher, type PublishAck } from '../journal/journal.ts';
import type { ResolvedOptions } from '../options.ts';
import type { Registered, Registry } from '../contracts/registry.ts';
import { foldCommit, readCommit, readSnapshot, taintDecided } from '../contracts/contract.ts';
import { deferUntilKeys, pendingKeys, sealSnapshot, KEYS_PENDING } from '../contracts/sensitive.ts';
import type { CommandRecord, Store } from '../journal/store.ts';
import type { CommandContext, EventDraft } from '../define.ts';
import type { WorkerCommandTrace } from '../ops/tracing.ts';

/** A command inside a worker, with where its outcome goes (no closure per command on the hot path). */
export interface InboundCommand extends CommandEnvelope {
  reply(error: WireError | null, result: CommandResult | null): void;
  /**
   * The command's commit is stored at `position`: the same answer as `reply(null, result)`,
   * without building the result (the hot path). Event ids are `idPrefix` + each event's counter.
   */
  replyStored(pc: PendingCommit, position: number, idPrefix: string): void;
  /** Spans of a traced command (ops/tracing.ts); null or absent when it carries no trace. */
  readonly spans?: WorkerCommandTrace | null;
}

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
  readonly observer?: ShardObserver;
}

type Phase = 'activating' | 'running' | 'passivating';

/** One actor in memory. `state`/`version` are committed; `pending*` include decided, unacknowledged commits. */
export class ActorCell {
  state: unknown;
  version = 0;
  pending: unknown;
  pendingVersion = 0;
  snapshotVersion = 0;
  lastUsed = 0;
  phase: Phase = 'activating';
  stash: InboundCommand[] | null = null;
  /** Settles when an asynchronous activation (replay from the log) ends. */
  activated: Promise<void> | null = null;
  lastPending: PendingCommit | null = null;
  constructor(readonly reg: Registered, readonly id: string, readonly generation: number) {}
}

/** Resident actors by type, then id: no key string is built per command. */
export class CellMap {
  private readonly byType = new Map<string, Map<string, ActorCell>>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(type: string, id: string): ActorCell | undefined {
    return this.byType.get(type)?.get(id);
  }

  add(cell: ActorCell): void {
    const type = cell.reg.def.type;
    let ids = this.byType.get(type);
    if (ids === undefined) this.byType.set(type, (ids = new Map()));
    if (!ids.has(cell.id)) this.count++;
    ids.set(cell.id, cell);
  }

  /** Remove this very cell (not a newer one for the same actor). */
  remove(cell: ActorCell): void {
    const ids = this.byType.get(cell.reg.def.type);
    if (ids?.get(cell.id) === cell) {
      ids.delete(cell.id);
      this.count--;
    }
  }

  *values(): IterableIterator<ActorCell> {
    for (const ids of this.byType.values()) yield* ids.values();
  }

  clear(): void {
    this.byType.clear();
    this.count = 0;
  }
}

/** A decided commit waiting for its append: its commit tuple is written from these fields. */
export interface PendingCommit {
  cell: ActorCell;
  commandId: string;
  /** Its events as the log stores them: [id counter, type, schema version, stored payload]. */
  wire: WireEvent[];
  /** When it was decided (ms). */
  timestamp: number;
  /** Upper-ish estimate of the commit's encoded size. */
  size: number;
  firstSeq: number;
  lastSeq: number;
  stateAfter: unknown;
  cmd: InboundCommand;
  /** Replies decided after this commit that must not be given before it is stored. */
  followers: (() => void)[] | null;
  failFollowers: ((e: WireError) => void)[] | null;
}

type ShardState = 'opening' | 'ready' | 'broken' | 'closed';
type Mutable<T> = { -readonly [K in keyof T]: T[K] };

export class ShardHost {
  state: ShardState = 'broken';
  private expectedSeq = 0;
  private generation = 0;
  readonly cells = new CellMap();
  private buffer: PendingCommit[] = [];
  private inflight: PendingCommit[] | null = null;
  private stash: InboundCommand[] = [];
  private opening: Promise<void> | null = null;
  /** Commands acknowledged, or waiting for an ack, whose LMDB record may not be committed yet. */
  private readonly recent = new Map<string, CommandRecord>();
  private readonly inProgress = new Map<string, PendingCommit>();
  readonly subject: string;
  private readonly context: Mutable<CommandContext> = {
    aggregateType: '', aggregateId: '', commandId: '', commandType: '', userId: undefined, correlationId: '', version: 0, now: 0,
  };

  constructor(readonly shard: number, private readonly ctx: ShardContext) {
    this.subject = shardSubject(ctx.options.subjectPrefix, shard);
  }

  get residentActors(): number {
    return this.cells.size;
  }

  get queuedCommits(): number {
    return this.buffer.length + (this.inflight?.length ?? 0);
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
    const { store, journal } = this.ctx;
    try {
      const last = await lastSequenceOf(journal, this.subject);
      await store.flushIndex(); // so the checkpoint read next is the newest one written
      let from = store.getCheckpoint(this.shard) + 1;
      if (from > last + 1) from = 1; // the cache is ahead of the log: it describes something else
      const cutoff = Date.now() - this.ctx.options.commandIdTtlMs;
      await readSubject(journal, this.subject, from, last, (data, seq) => {
        for (const c of decodeCommits(data)) this.index(c, seq, cutoff);
      });
      store.advanceCheckpoint(this.shard, last);
      await store.flushIndex();
      store.refresh();
      this.expectedSeq = last;
      this.recent.clear();
      this.state = 'ready';
    } catch (e) {
      this.state = 'broken';
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
    const [commandId, type, id, , , ts, , first, events] = c;
    const last = first + events.length - 1;
    this.ctx.store.indexCommit(type, id, last, position, true);
    if (ts >= cutoff) this.ctx.store.putCommand(commandId, [type, id, first, last, position], ts);
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
    if (this.answerDuplicate(cmd)) return;
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
      this.activate(cell);
    }
    if (cell.phase === 'activating') {
      (cell.stash ??= []).push(cmd);
      return;
    }
    cell.phase = 'running';
    if (cmd.spans) this.tracedDecide(cell, cmd);
    else this.decide(cell, cmd);
  }

  /** A command already processed (or in flight) gets its first result again, and nothing is appended. */
  private answerDuplicate(cmd: InboundCommand): boolean {
    if (cmd.idUse !== IdUse.GIVEN) return false;
    const inFlight = this.inProgress.get(cmd.commandId);
    if (inFlight !== undefined) {
      (inFlight.followers ??= []).push(() => cmd.reply(null, this.resultOf(inFlight, true)));
      (inFlight.failFollowers ??= []).push((e) => cmd.reply(e, null));
      return true;
    }
    const rec = this.recent.get(cmd.commandId) ?? this.ctx.store.getCommand(cmd.commandId);
    if (rec === undefined) return false;
    const [type, id] = rec;
    if (type !== cmd.aggregateType || id !== cmd.aggregateId) {
      cmd.reply(toWire(new ValidationError('VALIDATION', `commandId ${cmd.commandId} was already used for ${type} ${id}; use a new commandId for a new command`, { commandId: cmd.commandId, aggregateType: cmd.aggregateType, aggregateId: cmd.aggregateId })), null);
      return true;
    }
    this.storedResult(cmd.commandId, rec).then((r) => cmd.reply(null, r), (e) => cmd.reply(toWire(e), null));
    return true;
  }

  private async storedResult(commandId: string, rec: CommandRecord): Promise<CommandResult> {
    const [type, id, first, last, position] = rec;
    const msg = await readMessage(this.ctx.journal, position);
    const commit = decodeCommits(msg.data).find((c) => c[0] === commandId);
    const events = commit === undefined ? [] : commit[8].map(([eventId, eventType], i) => ({ eventId: String(eventId), eventType, sequence: first + i }));
    return { commandId, aggregateType: type, aggregateId: id, version: last, events, position, duplicate: true };
  }

  private activate(cell: ActorCell): void {
    const { store } = this.ctx;
    this.ctx.actorActivated?.();
    const def = cell.reg.def;
    // Unsealed and upcast to the current state version, or undefined (rebuild from the log): contracts/contract.ts.
    const snap = readSnapshot(cell.reg, store.getSnapshot(def.type, cell.id), cell.id);
    const usable = snap !== undefined;
    let state = usable ? snap.state : def.initialState();
    let version = usable ? snap.version : 0;
    const entries = store.historyAfter(def.type, cell.id, version);
    const ready = () => {
      cell.state = cell.pending = state;
      cell.version = cell.pendingVersion = version;
      cell.snapshotVersion = usable ? snap.version : 0;
      cell.phase = 'running';
      cell.lastUsed = Date.now();
    };
    if (entries.length === 0) {
      ready();
      return;
    }
    // Replay the commits after the snapshot, read from the log.
    cell.activated = (async () => {
      try {
        for await (const { data } of this.messagesAt(entries)) {
          for (const c of decodeCommits(data)) {
            if (c[1] !== def.type || c[2] !== cell.id) continue;
            const first = c[7];
            const n = c[8].length;
            if (first + n - 1 <= version) continue;
            if (first !== version + 1) throw new InternalError(`${def.type} ${cell.id}: the log jumps from version ${version} to ${first}`, { aggregateType: def.type, aggregateId: cell.id });
            // Decrypted and upcast to the current version first (contracts/contract.ts); a promise only when keys must be loaded.
            state = await foldCommit(cell.reg, state, c);
            version = first + n - 1;
          }
        }
        if (cell.generation !== this.generation) throw new JournalUnavailableError(`shard ${this.shard} re-opened during activation`, { shard: this.shard });
        ready();
        const stash = cell.stash ?? [];
        cell.stash = null;
        for (const c of stash) if (c.spans) this.tracedDecide(cell, c); else this.decide(cell, c);
      } catch (e) {
        this.cells.remove(cell);
        const stash = cell.stash ?? [];
        cell.stash = null;
        if (cell.generation !== this.generation) {
          for (const c of stash) this.submit(c);
          return;
        }
        const err = toWire(e instanceof TroupeError ? e : new JournalUnavailableError(`${def.type} ${cell.id} could not be activated: ${(e as Error).message}`, { aggregateType: def.type, aggregateId: cell.id }, e));
        for (const c of stash) c.reply(err, null);
        throw e;
      }
    })();
    cell.activated.catch(() => {});
  }

  private decide(cell: ActorCell, cmd: InboundCommand): void {
    // Waiting for a new subject key (deferUntilKeys): later commands queue behind, in order.
    if (cell.phase === 'activating') { (cell.stash ??= []).push(cmd); return; }
    const def = cell.reg.def;
    const now = Date.now();
    cell.lastUsed = now;
    const spec = def.commands.get(cmd.type)!;
    // One context object per shard, refilled per command: decide is synchronous, and a context
    // must not be kept beyond the call (define.ts says so).
    const ctx = this.context;
    ctx.aggregateType = def.type;
    ctx.aggregateId = cell.id;
    ctx.commandId = cmd.commandId;
    ctx.commandType = cmd.type;
    ctx.userId = cmd.userId ?? undefined;
    ctx.correlationId = cmd.correlationId;
    ctx.version = cell.pendingVersion;
    ctx.now = now;
    let drafts: readonly EventDraft[];
    try {
      const out = spec.decide(cell.pending, cmd.payload, ctx);
      drafts = out === undefined || out === null ? [] : Array.isArray(out) ? out : [out as EventDraft];
    } catch (e) {
      this.replyAfterPending(cell, cmd, commandError(e, cell, cmd, 'threw'), null);
      return;
    }
    if (drafts.length === 0) {
      this.replyAfterPending(cell, cmd, null, { commandId: cmd.commandId, aggregateType: def.type, aggregateId: cell.id, version: cell.pendingVersion, events: [], position: 0, duplicate: false });
      return;
    }
    const first = cell.pendingVersion + 1;
    const wireEvents: WireEvent[] = new Array(drafts.length);
    let state = cell.pending;
    const timestamp = isoTime(now);
    try {
      for (let i = 0; i < drafts.length; i++) {
        const d = drafts[i]!;
        const spec = d !== null && typeof d === 'object' ? def.events.get(d.type) : undefined;
        if (spec === undefined) {
          throw new ValidationError('VALIDATION', `${def.type}.${cmd.type} decided an event of undeclared type ${JSON.stringify((d as EventDraft | null)?.type)}; declare it under events`, { aggregateType: def.type, aggregateId: cell.id, commandId: cmd.commandId, eventType: String((d as EventDraft | null)?.type) });
        }
        const n = this.ctx.ids.nextCounter();
        // Schema, sensitive-data guard, encryption of sensitive fields: one precompiled call (contracts/contract.ts).
        // An event id is formatted only where it is read: encryption binds it; results and logs
        // format it from its counter (eventsOf, envelope.ts readOutcome).
        const eventId = cell.reg.secrets ? formatId(this.ctx.ids.prefix, n) : '';
        const stored = cell.reg.contracts.get(d.type)!.write(d.payload, eventId, cell.id, cmd.userId, cmd.commandId);
        if (stored === KEYS_PENDING) {
          deferUntilKeys(cell, cmd, pendingKeys(), (c) => this.submit(c));
          return;
        }
        wireEvents[i] = [n, d.type, spec.version, stored];
        state = spec.evolve(state, d.payload, { sequence: first + i, eventType: d.type, timestamp });
      }
      if (cell.reg.secrets) taintDecided(cell.reg, cell.pending, state, wireEvents);
    } catch (e) {
      this.replyAfterPending(cell, cmd, commandError(e, cell, cmd, 'applying its events threw'), null);
      return;
    }
    const limit = this.ctx.options.maxCommandBytes;
    let size = COMMIT_OVERHEAD + drafts.length * EVENT_OVERHEAD;
    for (let i = 0; i < drafts.length && size <= limit; i++) size += estimateSize(drafts[i]!.payload, limit);
    // The estimate only errs high: measure exactly before refusing.
    if (size > limit / 2) size = encodeCommit(wireCommit(cmd, def.type, cell.id, now, this.ctx.options.source, first, wireEvents)).length;
    if (size > limit) {
      this.replyAfterPending(cell, cmd, toWire(new ValidationError('COMMAND_TOO_LARGE',
        `${def.type}.${cmd.type} decided ${size} bytes of events; the limit is options.maxCommandBytes = ${limit}`,
        { aggregateType: def.type, aggregateId: cell.id, commandId: cmd.commandId, bytes: size })), null);
      return;
    }
    const pc: PendingCommit = {
      cell, commandId: cmd.commandId, wire: wireEvents, timestamp: now, size, firstSeq: first, lastSeq: first + drafts.length - 1, stateAfter: state, cmd,
      followers: null, failFollowers: null,
    };
    cell.pending = state;
    cell.pendingVersion = pc.lastSeq;
    cell.lastPending = pc;
    if (cmd.idUse !== IdUse.GENERATED) this.inProgress.set(cmd.commandId, pc);
    this.buffer.push(pc);
    this.ctx.scheduleFlush(this);
  }

  /** Reply now, or once the actor's last uncommitted commit is stored (a decision may rest on it). */
  private replyAfterPending(cell: ActorCell, cmd: InboundCommand, error: WireError | null, result: CommandResult | null): void {
    const last = cell.lastPending;
    if (last === null) {
      cmd.reply(error, result);
      return;
    }
    (last.followers ??= []).push(() => cmd.reply(error, result));
    (last.failFollowers ??= []).push((e) => cmd.reply(e, null));
  }

  /** decide() for a command that carries a trace: its `troupe.decide` span (ops/tracing.ts). */
  private tracedDecide(cell: ActorCell, cmd: InboundCommand): void {
    const start = performance.now();
    this.decide(cell, cmd);
    const pc = cell.lastPending !== null && cell.lastPending.cmd === cmd ? cell.lastPending : null;
    cmd.spans!.decided(start, pc === null ? null : eventsOf(pc, this.ctx.ids.prefix), pc === null ? cell.pendingVersion : pc.lastSeq);
  }

  // ── appending ───────────────────────────────────────────────────────────────────────────

  /** Send one message of buffered commits, if none is in flight. Called by the worker's flush loop. */
  flush(): void {
    if (this.inflight !== null || this.buffer.length === 0 || this.state !== 'ready') return;
    const { maxBatchBytes, maxBatchCommits } = this.ctx.options;
    let n = 0;
    let bytes = 8;
    const buffer = this.buffer;
    while (n < buffer.length && n < maxBatchCommits && (n === 0 || bytes + buffer[n]!.size <= maxBatchBytes)) {
      bytes += buffer[n]!.size;
      n++;
    }
    const batch = n === buffer.length ? buffer : buffer.slice(0, n);
    this.buffer = n === buffer.length ? [] : buffer.slice(n);
    this.inflight = batch;
    const source = this.ctx.options.source;
    beginBatch(this.ctx.ids.prefix, batch.length);
    for (let i = 0; i < batch.length; i++) {
      const pc = batch[i]!;
      const cmd = pc.cmd;
      writeCommit(pc.commandId, pc.cell.reg.def.type, pc.cell.id, cmd.correlationId === pc.commandId ? null : cmd.correlationId, cmd.userId, pc.timestamp, source, pc.firstSeq, pc.wire, cmd.causationId);
    }
    const data = endBatch();
    const h = new AppendHeaders();
    h.set('Nats-Expected-Last-Subject-Sequence', String(this.expectedSeq));
    const msgId = `${this.ctx.writerId}.${this.shard}.${this.expectedSeq}`;
    h.set('Nats-Msg-Id', msgId);
    h.set(FORMAT_HEADER, COMMIT_BATCH_FORMAT);
    const observer = this.ctx.observer;
    observer?.flushed(this.subject, batch, h, msgId, data.length);
    const sentAt = performance.now();
    const generation = this.generation;
    this.ctx.publisher.publish(this.subject, data, h, (err, ack) => {
      if (generation !== this.generation) return;
      if (err !== null) this.onAppendFailed(err);
      else {
        observer?.appended(this.shard, batch, ack!.seq, performance.now() - sentAt);
        this.onAppended(ack!);
      }
    });
  }

  private onAppended(ack: PublishAck): void {
    const batch = this.inflight!;
    this.inflight = null;
    this.expectedSeq = ack.seq;
    const { store } = this.ctx;
    const position = ack.seq;
    const now = Date.now();
    let remembered = false;
    for (let i = 0; i < batch.length; i++) {
      const pc = batch[i]!;
      const cell = pc.cell;
      const type = cell.reg.def.type;
      cell.state = pc.stateAfter;
      cell.version = pc.lastSeq;
      if (cell.lastPending === pc) cell.lastPending = null;
      store.indexCommit(type, cell.id, pc.lastSeq, position);
      if (pc.cmd.idUse !== IdUse.GENERATED) {
        this.inProgress.delete(pc.commandId);
        const rec: CommandRecord = [type, cell.id, pc.firstSeq, pc.lastSeq, position];
        this.recent.set(pc.commandId, rec);
        store.rememberCommand(pc.commandId, rec, now);
        remembered = true;
      }
      if (cell.version - cell.snapshotVersion >= cell.reg.def.snapshotEvery && cell.lastPending === null) {
        void store.putSnapshot(type, cell.id, sealSnapshot(type, cell.id, { sv: cell.reg.def.stateVersion, version: cell.version, position, state: cell.state }));
        cell.snapshotVersion = cell.version;
      }
      pc.cmd.replyStored(pc, position, this.ctx.ids.prefix);
      if (pc.followers !== null) for (const f of pc.followers) f();
    }
    store.advanceCheckpoint(this.shard, position);
    // Once these puts are committed LMDB answers duplicates; until then `recent` does.
    if (remembered) store.whenIndexed(() => { for (const pc of batch) this.recent.delete(pc.commandId); });
    // Through the flush loop, not at once: the next messages of all shards then leave in one socket write.
    if (this.buffer.length > 0) this.ctx.scheduleFlush(this);
  }

  private resultOf(pc: PendingCommit, duplicate: boolean): CommandResult {
    return commitResult(pc, this.expectedSeq, this.ctx.ids.prefix, duplicate);
  }

  /** Everything uncommitted fails; actors are dropped; the next use re-opens from the log. */
  private onAppendFailed(cause: TroupeError): void {
    const fenced = cause.code === 'CONCURRENCY';
    const error = toWire(fenced
      ? new ConcurrencyError('CONCURRENCY', `another writer appended to shard ${this.shard} (${cause.message}); nothing of this command was stored. Retry: the actor is reloaded from the log`, { shard: this.shard }, cause)
      : new JournalUnavailableError(`${cause.message}; retry with the same commandId: it is answered once, whatever happened`, { shard: this.shard }, cause));
    const failed = [...(this.inflight ?? []), ...this.buffer];
    this.ctx.observer?.appendFailed(this.shard, cause, failed);
    this.inflight = null;
    this.buffer = [];
    this.state = 'broken';
    this.generation++;
    for (const cell of this.cells.values()) {
      if (cell.stash !== null) {
        const stash = cell.stash;
        cell.stash = null;
        for (const c of stash) this.stash.push(c);
      }
    }
    this.cells.clear();
    this.inProgress.clear();
    for (const pc of failed) {
      const data = { ...error.data, commandId: pc.commandId, aggregateType: pc.cell.reg.def.type, aggregateId: pc.cell.id };
      pc.cmd.reply({ ...error, data }, null);
      if (pc.failFollowers !== null) for (const f of pc.failFollowers) f(error);
    }
    if (this.stash.length > 0) this.open().catch(() => {});
  }

  // ── reads ───────────────────────────────────────────────────────────────────────────────

  /** The committed state and version of an actor (activating it if needed). */
  async query(type: string, id: string): Promise<{ state: unknown; version: number }> {
    await this.open();
    const reg = this.ctx.registry.get(type);
    if (reg === undefined) throw this.ctx.registry.check(type, '', undefined, { aggregateId: id });
    let cell = this.cells.get(type, id);
    if (cell === undefined) {
      cell = new ActorCell(reg, id, this.generation);
      this.cells.add(cell);
      this.activate(cell);
    }
    if (cell.phase === 'activating') {
      await cell.activated;
      return this.query(type, id);
    }
    if (cell.phase === 'passivating') cell.phase = 'running';
    cell.lastUsed = Date.now();
    return { state: cell.state, version: cell.version };
  }

  /** Every committed event of an actor, in order, as full envelopes. */
  async history(type: string, id: string): Promise<EventEnvelope[]> {
    await this.open();
    await this.ctx.store.flushed();
    this.ctx.store.refresh();
    const out: EventEnvelope[] = [];
    const reg = this.ctx.registry.get(type);
    for await (const { position, data } of this.messagesAt(this.ctx.store.historyAfter(type, id, 0))) {
      for (const c of decodeCommits(data)) {
        // Decrypted (or redacted) and upcast to the current versions.
        if (c[1] === type && c[2] === id) for (const e of await readCommit(reg, c, position, this.ctx.registry.keys, 'throw')) out.push(e);
      }
    }
    return out;
  }

  /**
   * The log messages at these positions, in order. A few are fetched one by one; many are
   * streamed from the shard's subject with an ordered consumer, which reads thousands of
   * messages in the time of a few dozen single gets.
   */
  private async *messagesAt(entries: readonly { position: number }[]): AsyncGenerator<{ position: number; data: Uint8Array }> {
    const positions = [...new Set(entries.map((e) => e.position))].sort((a, b) => a - b);
    if (positions.length <= 16) {
      for (const position of positions) yield { position, data: (await readMessage(this.ctx.journal, position)).data };
      return;
    }
    const wanted = new Set(positions);
    const found: { position: number; data: Uint8Array }[] = [];
    await readSubject(this.ctx.journal, this.subject, positions[0]!, positions[positions.length - 1]!, (data, seq) => {
      if (wanted.has(seq)) found.push({ position: seq, data });
    });
    if (found.length !== positions.length) {
      throw new JournalUnavailableError(`shard ${this.shard}: ${positions.length - found.length} log messages indexed in LMDB are missing from the stream`, { shard: this.shard });
    }
    yield* found;
  }

  // ── passivation ─────────────────────────────────────────────────────────────────────────

  /** Write a snapshot if the actor moved since the last one, then free it. */
  passivate(cell: ActorCell): void {
    if (cell.phase !== 'running' || cell.lastPending !== null || cell.stash !== null) return;
    const def = cell.reg.def;
    if (cell.version > cell.snapshotVersion) {
      cell.phase = 'passivating';
      cell.snapshotVersion = cell.version;
      this.ctx.store.putSnapshot(def.type, cell.id, sealSnapshot(def.type, cell.id, { sv: def.stateVersion, version: cell.version, position: this.expectedSeq, state: cell.state }))
        .then(() => { if (cell.phase === 'passivating') this.cells.remove(cell); }, () => { cell.phase = 'running'; });
    } else {
      this.cells.remove(cell);
    }
  }

  /** Snapshot every actor that moved since its last snapshot (graceful stop). */
  snapshotAll(): void {
    for (const cell of this.cells.values()) {
      if (cell.phase !== 'running' || cell.version <= cell.snapshotVersion) continue;
      const def = cell.reg.def;
      void this.ctx.store.putSnapshot(def.type, cell.id, sealSnapshot(def.type, cell.id, { sv: def.stateVersion, version: cell.version, position: this.expectedSeq, state: cell.state }));
      cell.snapshotVersion = cell.version;
    }
  }

  /** Resolves when nothing is buffered or in flight. */
  async drain(timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    while ((this.inflight !== null || this.buffer.length > 0) && this.state === 'ready' && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  close(): void {
    const err = toWire(new StoppedError(undefined, { shard: this.shard }));
    this.state = 'closed';
    this.generation++;
    for (const c of this.stash) c.reply(err, null);
    this.stash = [];
    const failed = [...(this.inflight ?? []), ...this.buffer];
    this.inflight = null;
    this.buffer = [];
    for (const pc of failed) {
      pc.cmd.reply(err, null);
      if (pc.failFollowers !== null) for (const f of pc.failFollowers) f(err);
    }
    this.cells.clear();
  }
}

/**
 * The wire form of an error raised while deciding a command: a Troupe error (a rejection, a
 * schema violation) keeps its code and gains the ids of the actor and command; anything else
 * is a bug in the actor, DECIDE_FAILED.
 */
function commandError(e: unknown, cell: ActorCell, cmd: CommandEnvelope, what: string): WireError {
  const ids = { aggregateType: cell.reg.def.type, aggregateId: cell.id, commandId: cmd.commandId, commandType: cmd.type };
  if (e instanceof TroupeError) {
    const w = toWire(e);
    return { ...w, data: { ...ids, ...w.data } };
  }
  return toWire(new DecideFailedError(`${cell.reg.def.type}.${cmd.type} ${what}: ${(e as Error)?.message ?? String(e)}`, ids, e));
}

/** The events of a pending commit as a result lists them (ids formatted here, on demand). */
export function eventsOf(pc: PendingCommit, idPrefix: string): { eventId: string; eventType: string; sequence: number }[] {
  const out = new Array<{ eventId: string; eventType: string; sequence: number }>(pc.wire.length);
  for (let i = 0; i < pc.wire.length; i++) {
    const w = pc.wire[i]!;
    out[i] = { eventId: typeof w[0] === 'number' ? formatId(idPrefix, w[0]) : w[0], eventType: w[1], sequence: pc.firstSeq + i };
  }
  return out;
}

/** What `send` resolves with for a commit stored at `position`. */
export function commitResult(pc: PendingCommit, position: number, idPrefix: string, duplicate: boolean): CommandResult {
  return {
    commandId: pc.commandId, aggregateType: pc.cell.reg.def.type, aggregateId: pc.cell.id, version: pc.lastSeq,
    events: eventsOf(pc, idPrefix), position, duplicate,
  };
}

/** The commit tuple the log stores (codec.ts), for the rare exact size check. */
function wireCommit(cmd: CommandEnvelope, type: string, id: string, now: number, source: string, first: number, events: WireEvent[]): WireCommit {
  return [cmd.commandId, type, id, cmd.correlationId === cmd.commandId ? null : cmd.correlationId, cmd.userId, now, source, first, events, cmd.causationId];
}
