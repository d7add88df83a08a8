/**
 * LMDB: the node's local cache of what the log says. One environment per (node, stream),
 * opened by every worker thread. Deleting it loses nothing: a shard rebuilds it from JetStream.
 * Each job has its file; this one opens the environment, composes them, and queues the hot
 * path's index writes:
 *
 *   snapshots.ts      actor snapshots
 *   history-index.ts  which log messages hold which commits of an actor
 *   command-ids.ts    processed command ids with expiry (idempotency)
 *   checkpoints.ts    per-shard checkpoints and the identity of the stream the cache describes
 *   timers.ts         durable timers: by actor, and by shard and due time (the scheduler's order)
 *
 * `exportShards` and `importShard` move one shard's part of the cache between nodes (a shard
 * checkpoint, shared-checkpoints.ts): its actors' snapshots, history entries and command ids.
 *
 * Writes are never awaited one at a time on the hot path: lmdb batches all puts of an
 * event-loop turn into one transaction (DESIGN.md: ~700k async puts/s against ~4k/s awaited).
 */
import { open, type RootDatabase } from 'lmdb';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Checkpoints } from './checkpoints.ts';
import { CommandIds, QueuedCommands, type CommandRecord } from './command-ids.ts';
import { HistoryIndex, IndexWindow } from './history-index.ts';
import { Snapshots, type SealedSnapshot, type Snapshot } from './snapshots.ts';
import { TimerIndex } from './timers.ts';
import { TIMER_FIRED, TIMER_OP, TIMER_SET, type WireTimerOp, type WireTimerSet } from '../wire.ts';
import { shardOf } from '../envelope.ts';
import { decodeCheckpoint, encodeCheckpoint } from './codec.ts';

export type { CommandRecord, SealedSnapshot, Snapshot };

/**
 * How long the hot path's index writes wait to share one LMDB transaction. The history index
 * costs one put per actor per flush, not per commit, and each put lands on its actor's page of
 * the B-tree: a window rewrites about one page per active actor, whatever its length. So the
 * longer the window, the fewer pages written per second. Measured here in interleaved runs
 * (10k accounts, one worker, 200k commands): at C = 4096, 1 s windows gave 53-64k cmds/s
 * against 48-57k with 250 ms (3 rounds, CPU per command -4 to -28%); at C = 64, throughput and
 * p99 were the same within noise (4 rounds), and 2 s windows measured no better than 1 s. In
 * the benchmark's shorter runs (100k commands, a fresh process each, 3 × 3 rounds) neither
 * concurrency moved beyond the noise. A crash loses at most the window, which the shard's
 * catch-up re-reads from the log.
 */
const INDEX_FLUSH_MS = 1000;
/**
 * A window's puts are issued in slices of this many milliseconds, one slice per event-loop
 * turn, so that a large window does not stall the thread's commands and acks. The slice grows
 * with the number of windows waiting behind it: the writer's pace must follow the rate at which
 * windows fill, whatever the turn rate. (With a fixed 250 puts a turn, a million actors
 * activating made turns long, windows queued faster than they were written, and every
 * activation searched the queued windows: with 1M accounts, 5k cmds/s instead of 21k.)
 */
const INDEX_SLICE_MS = 2;
/** Flush earlier when a window holds this many commits. */
const INDEX_FLUSH_COMMITS = 100_000;
/** Part of the cache's identity: a cache written with another layout is rebuilt from the log. */
export const STORE_LAYOUT = 3;

/** One shard's part of the cache, as a shard checkpoint carries it. */
interface ShardPart {
  snapshots: [type: string, id: string, snapshot: SealedSnapshot][];
  history: [type: string, id: string, lastSeq: number, pairs: number[]][];
  commands: [epoch: number, commandId: string, record: CommandRecord][];
  /** Absent in checkpoints written before timers: such a checkpoint is not restored (the log is read instead). */
  timers?: [type: string, id: string, record: WireTimerSet][];
}

export class Store {
  readonly root: RootDatabase;
  private readonly snapshots: Snapshots;
  private readonly history: HistoryIndex;
  private readonly commands: CommandIds;
  private readonly checkpoints: Checkpoints;
  /** Durable timers (timers.ts); node/timers.ts reads them. */
  readonly timers: TimerIndex;

  constructor(dataDir: string, stream: string, commandTtlMs: number) {
    const path = join(dataDir, 'lmdb', stream);
    mkdirSync(path, { recursive: true });
    this.root = open({ path, maxDbs: 32, mapSize: 2 ** 34 });
    this.snapshots = new Snapshots(this.root);
    this.history = new HistoryIndex(this.root);
    this.checkpoints = new Checkpoints(this.root);
    this.commands = new CommandIds(this.root, commandTtlMs);
    this.timers = new TimerIndex(this.root);
  }

  /**
   * Apply a commit's timer ops (wire.ts TIMER_*) of actor (type, id) on `shard`, in order.
   * Returns the change in the shard's number of pending timers. `each` sees every op applied.
   */
  applyTimerOps(shard: number, type: string, id: string, ops: readonly WireTimerOp[]): number {
    let delta = 0;
    for (const op of ops) {
      if (op[0] === TIMER_OP.SET) delta += this.timers.set(shard, type, id, op);
      else delta += this.timers.remove(shard, type, id, op[op[0] === TIMER_OP.FIRED ? TIMER_FIRED.key : TIMER_SET.key]);
    }
    return delta;
  }

  getSnapshot(type: string, id: string): Snapshot | undefined {
    return this.snapshots.get(type, id);
  }

  /** Write a sealed snapshot, or remove the actor's snapshot when given null (snapshots.ts). */
  putSnapshot(type: string, id: string, snap: SealedSnapshot | null): Promise<boolean> {
    return this.snapshots.put(type, id, snap);
  }

  /**
   * Log positions of the commits of (type, id) whose last event is after `version`, in order,
   * including index entries not yet committed to LMDB (see `indexCommit`).
   */
  historyAfter(type: string, id: string, version: number): { lastSeq: number; position: number }[] {
    return this.history.after(type, id, version, this.uncommitted);
  }

  // ── The hot path's index writes ─────────────────────────────────────────────────────────
  // Every acknowledged commit adds to its actor's history run, maybe a processed commandId, and
  // moves its shard's checkpoint. Issued at once, each ack's puts made one LMDB transaction (a
  // write thread wake-up and a sync) per ack; queued for INDEX_FLUSH_MS they share one, and an
  // actor's commits of the window share one entry. Until they are committed, historyAfter()
  // reads them from memory, and the shard answers duplicate commandIds from its own memory; a
  // crash loses only what the shard's catch-up re-reads from the log (the checkpoint is written
  // in the same transaction as the entries).

  /** The window not yet issued; also the first of `uncommitted`. */
  private window = new IndexWindow();
  /** Windows not yet committed, newest first: historyAfter() reads them from memory. */
  private uncommitted: IndexWindow[] = [this.window];
  private queuedCommands = new QueuedCommands();
  /** Queued command records being written, not committed yet: queuedCommand() reads them too. */
  private issuingCommands: QueuedCommands[] = [];
  private readonly queuedCheckpoints = new Map<number, number>();
  private afterIndexed: (() => void)[] = [];
  private indexTimer: NodeJS.Timeout | null = null;
  private indexing: Promise<void> = Promise.resolve();

  /**
   * The commit of (type, id) ending at `lastSeq` lives in the message at `position`. `replayed`:
   * indexed again while catching up with the log, so LMDB may already hold it.
   */
  indexCommit(type: string, id: string, lastSeq: number, position: number, replayed = false): void {
    this.window.add(type, id, lastSeq, position);
    if (replayed) this.window.overlaps = true;
    if (this.window.count >= INDEX_FLUSH_COMMITS) void this.flushIndex();
    else this.scheduleIndex();
  }

  rememberCommand(commandId: string, rec: CommandRecord, now: number): void {
    this.queuedCommands.push(commandId, rec, now);
    this.scheduleIndex();
  }

  /** A remembered command whose record LMDB does not hold yet (queued, or being written). */
  queuedCommand(type: string, id: string, commandId: string): CommandRecord | undefined {
    let rec = this.queuedCommands.find(type, id, commandId);
    for (let i = 0; rec === undefined && i < this.issuingCommands.length; i++) rec = this.issuingCommands[i]!.find(type, id, commandId);
    return rec;
  }

  advanceCheckpoint(shard: number, seq: number): void {
    this.queuedCheckpoints.set(shard, seq);
    this.scheduleIndex();
  }

  /** Run `fn` once everything queued so far is committed. */
  whenIndexed(fn: () => void): void {
    this.afterIndexed.push(fn);
    this.scheduleIndex();
  }

  private scheduleIndex(): void {
    if (this.indexTimer !== null) return;
    this.indexTimer = setTimeout(() => void this.flushIndex(), INDEX_FLUSH_MS);
  }

  /** Issue every queued index write now; resolves when they are committed. */
  flushIndex(): Promise<void> {
    if (this.indexTimer !== null) {
      clearTimeout(this.indexTimer);
      this.indexTimer = null;
    }
    if (this.window.count === 0 && this.queuedCommands.length === 0 && this.queuedCheckpoints.size === 0 && this.afterIndexed.length === 0) {
      return this.indexing;
    }
    const window = this.window;
    const commands = this.queuedCommands;
    const callbacks = this.afterIndexed;
    this.window = new IndexWindow();
    this.uncommitted.unshift(this.window);
    this.queuedCommands = new QueuedCommands();
    if (commands.length > 0) this.issuingCommands.push(commands);
    this.afterIndexed = [];
    const checkpoints = [...this.queuedCheckpoints];
    this.queuedCheckpoints.clear();
    // Windows are issued one after another: a checkpoint must never commit before the entries
    // of an earlier window that it covers.
    const done = this.indexing.then(() => this.issue(window, commands, checkpoints)).then(() => {
      // Committed: LMDB answers for this window now.
      const i = this.uncommitted.indexOf(window);
      if (i >= 0) this.uncommitted.splice(i, 1);
      const k = this.issuingCommands.indexOf(commands);
      if (k >= 0) this.issuingCommands.splice(k, 1);
      for (const fn of callbacks) fn();
    });
    this.indexing = done.catch(() => {});
    return done;
  }

  /**
   * A window's puts, INDEX_SLICE_MS of them per event-loop turn; its checkpoints go last, then
   * wait for the commit.
   */
  private async issue(window: IndexWindow, queued: QueuedCommands, checkpoints: [number, number][]): Promise<void> {
    const commands = queued.flat;
    let n = 0;
    // The open window is uncommitted too; so is this one.
    const slice = () => performance.now() + INDEX_SLICE_MS * Math.max(1, this.uncommitted.length - 1);
    let sliceEnd = slice();
    for (const [id, run] of window.runs()) {
      this.history.putRuns(id, run, window.overlaps);
      if (++n % 32 === 0 && performance.now() >= sliceEnd) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        sliceEnd = slice();
      }
    }
    for (let i = 0; i < commands.length; i += 3) this.commands.put(commands[i] as string, commands[i + 1] as CommandRecord, commands[i + 2] as number);
    for (const [shard, seq] of checkpoints) this.checkpoints.put(shard, seq);
    await (this.root.flushed as unknown as Promise<void>);
  }

  /**
   * What the cache knows of each of `shards` (out of `count`), for a shard checkpoint: its
   * actors' snapshots (sealed as stored), history entries and the command ids a lookup can
   * still find. One pass over the cache for all of them. Call after `flushed()`.
   */
  exportShards(shards: readonly number[], count: number, now = Date.now()): Map<number, { position: number; bytes: Uint8Array }> {
    this.refresh();
    const parts = new Map<number, ShardPart>();
    for (const s of shards) parts.set(s, { snapshots: [], history: [], commands: [], timers: [] });
    const cache = new Map<string, ShardPart | undefined>();
    const partOf = (type: string, id: string): ShardPart | undefined => {
      const key = `${type}\u0000${id}`;
      if (cache.has(key)) return cache.get(key);
      const p = parts.get(shardOf(type, id, count));
      if (cache.size < 100_000) cache.set(key, p);
      return p;
    };
    const belongs = (type: string, id: string) => partOf(type, id) !== undefined;
    for (const [type, id, snap] of this.snapshots.entries(belongs)) partOf(type, id)!.snapshots.push([type, id, snap]);
    for (const [type, id, lastSeq, pairs] of this.history.entries(belongs)) partOf(type, id)!.history.push([type, id, lastSeq, pairs]);
    for (const [epoch, commandId, rec] of this.commands.entries(now, belongs)) partOf(rec[0], rec[1])!.commands.push([epoch, commandId, rec]);
    for (const [type, id, rec] of this.timers.entries(belongs)) partOf(type, id)!.timers!.push([type, id, rec]);
    const out = new Map<number, { position: number; bytes: Uint8Array }>();
    for (const [s, part] of parts) out.set(s, { position: this.checkpoints.get(s), bytes: encodeCheckpoint(part) });
    return out;
  }

  /**
   * Restore a shard checkpoint written by `exportShards` on another node, complete up to the
   * log's `position`, in one transaction with the shard's checkpoint. The shard's own history
   * entries are replaced (another node's windows cut runs differently); a local snapshot newer
   * than the checkpoint's is kept.
   */
  async importShard(shard: number, count: number, position: number, bytes: Uint8Array): Promise<{ snapshots: number; history: number; commands: number }> {
    const part = decodeCheckpoint<ShardPart>(bytes);
    if (part.timers === undefined) throw new Error(`the checkpoint of shard ${shard} holds no timers (written by an older version)`);
    await this.flushIndex();
    await this.root.transaction(() => {
      if (this.checkpoints.get(shard) > 0) this.history.removeWhere((type, id) => shardOf(type, id, count) === shard);
      this.timers.removeShard(shard);
      for (const [type, id, rec] of part.timers!) this.timers.putEntry(shard, type, id, rec);
      for (const [type, id, snap] of part.snapshots) this.snapshots.putIfNewer(type, id, snap);
      for (const [type, id, lastSeq, pairs] of part.history) this.history.putEntry(type, id, lastSeq, pairs);
      for (const [epoch, commandId, rec] of part.commands) this.commands.putInEpoch(epoch, commandId, rec);
      this.checkpoints.put(shard, position);
    });
    this.refresh();
    return { snapshots: part.snapshots.length, history: part.history.length, commands: part.commands.length };
  }

  getCheckpoint(shard: number): number {
    return this.checkpoints.get(shard);
  }

  /** The stored result of a processed command, if it is younger than the TTL (up to twice it). */
  getCommand(type: string, id: string, commandId: string, now = Date.now()): CommandRecord | undefined {
    return this.commands.get(type, id, commandId, now);
  }

  /** Remember a processed command: its key is (the record's type and id, commandId). */
  putCommand(commandId: string, rec: CommandRecord, now = Date.now()): void {
    this.commands.put(commandId, rec, now);
  }

  /** Drop command-id epochs older than the previous one. Cheap: whole databases go at once. */
  expireCommands(now = Date.now()): Promise<void> {
    return this.commands.expire(now);
  }

  getStreamIdentity(): string | undefined {
    return this.checkpoints.streamIdentity();
  }

  /** Forget everything when the cache describes another incarnation of the stream. */
  async resetFor(identity: string): Promise<void> {
    await this.snapshots.clear();
    await this.history.clear();
    await this.checkpoints.clear();
    await this.commands.clear();
    await this.timers.clear();
    await this.checkpoints.setStreamIdentity(identity);
  }

  /** Resolves when every put issued so far, queued index writes included, is committed. */
  async flushed(): Promise<void> {
    await this.flushIndex();
    await (this.root.flushed as unknown as Promise<void>);
  }

  /** Make other threads' committed writes visible to this thread's next reads. */
  refresh(): void {
    this.root.resetReadTxn();
  }

  async close(): Promise<void> {
    await this.flushed();
    await this.root.close();
  }
}
