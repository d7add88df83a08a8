/**
 * LMDB: the node's local cache of what the log says. One environment per (node, stream),
 * opened by every worker thread. Deleting it loses nothing: a shard rebuilds it from JetStream.
 *
 *   snapshots   [type, id]            → { sv: stateVersion, version, position, state }
 *   history-runs [type, id, lastSeq]  → [lastSeq, position, ...]  (which log messages hold which commits:
 *                                       one entry per actor per index flush, keyed by its last commit)
 *   meta        ['checkpoint', shard] → stream sequence up to which `history`/commands are complete
 *               ['stream']            → creation time of the stream this cache describes
 *   commands-N  [type, id, commandId] → [type, id, firstSeq, lastSeq, position]   (N = time epoch; old epochs are dropped)
 *                                       a commandId is scoped to its actor: the same id on another actor is another command
 *
 * Writes are never awaited one at a time on the hot path: lmdb batches all puts of an
 * event-loop turn into one transaction (DESIGN.md: ~700k async puts/s against ~4k/s awaited).
 */
import { open, type Database, type RootDatabase } from 'lmdb';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { sealSnapshot } from '../contracts/sensitive.ts';
import { COMMAND_RECORD, type CommandRecord } from '../wire.ts';

export interface Snapshot {
  sv: number;
  version: number;
  position: number;
  state: unknown;
}

export type { CommandRecord } from '../wire.ts';

/** A processed command's key: [aggregateType, aggregateId, commandId]. */
type CommandKey = [aggregateType: string, aggregateId: string, commandId: string];

const MAX_SEQ = Number.MAX_SAFE_INTEGER;
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

const NO_ENTRIES: readonly (string | number)[] = Object.freeze([]);

/**
 * The history entries of one flush window, without an object per entry: numbers in typed
 * arrays, and per id a chain of its entries. A window lives up to INDEX_FLUSH_MS; small objects
 * kept that long survive young-generation collections and are copied by each (measured: with a
 * Map of per-actor arrays, the worker's scavenges grew and p99 latency at C = 64 rose ~4 ms).
 */
class IndexWindow {
  count = 0;
  /** Whether entries may repeat ones already in LMDB (catch-up): merged on write. */
  overlaps = false;
  private types: string[] = [];
  private lastSeqs = new Float64Array(1024);
  private positions = new Float64Array(1024);
  /** The previous entry of the same id, or -1. */
  private prev = new Int32Array(1024);
  /** id → its newest entry. */
  private readonly newest = new Map<string, number>();

  add(type: string, id: string, lastSeq: number, position: number): void {
    const i = this.count++;
    if (i === this.prev.length) this.grow();
    this.types.push(type);
    this.lastSeqs[i] = lastSeq;
    this.positions[i] = position;
    this.prev[i] = this.newest.get(id) ?? -1;
    this.newest.set(id, i);
  }

  private grow(): void {
    const n = this.prev.length * 2;
    const lastSeqs = new Float64Array(n);
    lastSeqs.set(this.lastSeqs);
    this.lastSeqs = lastSeqs;
    const positions = new Float64Array(n);
    positions.set(this.positions);
    this.positions = positions;
    const prev = new Int32Array(n);
    prev.set(this.prev);
    this.prev = prev;
  }

  /** Each id with its entries, oldest first: [type, lastSeq, position, ...]. */
  *runs(): IterableIterator<[string, readonly (string | number)[]]> {
    for (const [id, newest] of this.newest) yield [id, this.entriesOf(id, newest)];
  }

  entriesOf(id: string, newest = this.newest.get(id) ?? -1): readonly (string | number)[] {
    if (newest < 0) return NO_ENTRIES;
    const out: (string | number)[] = [];
    for (let i = newest; i >= 0; i = this.prev[i]!) out.push(this.positions[i]!, this.lastSeqs[i]!, this.types[i]!);
    return out.reverse();
  }
}

export class Store {
  readonly root: RootDatabase;
  private readonly snapshots: Database<Snapshot, [string, string]>;
  private readonly history: Database<number[], [string, string, number]>;
  private readonly meta: Database<unknown, (string | number)[]>;
  private readonly epochs = new Map<number, Database<CommandRecord, CommandKey>>();
  /** The key of a lookup, refilled per call: LMDB encodes it before `get` returns. */
  private readonly lookup: CommandKey = ['', '', ''];

  constructor(dataDir: string, stream: string, private readonly commandTtlMs: number) {
    const path = join(dataDir, 'lmdb', stream);
    mkdirSync(path, { recursive: true });
    this.root = open({ path, maxDbs: 32, mapSize: 2 ** 34 });
    this.snapshots = this.root.openDB({ name: 'snapshots', sharedStructuresKey: Symbol.for('troupe.structures') });
    this.history = this.root.openDB<number[], [string, string, number]>({ name: 'history-runs' });
    this.meta = this.root.openDB<unknown, (string | number)[]>({ name: 'meta' });
  }

  getSnapshot(type: string, id: string): Snapshot | undefined {
    return this.snapshots.get([type, id]);
  }

  /**
   * A state built from sensitive values is sealed under the keys it was built with (sensitive.ts);
   * when one of them was destroyed meanwhile, the snapshot is dropped instead: LMDB never holds a
   * sensitive value in the clear, and the actor is rebuilt from the log next time.
   */
  putSnapshot(type: string, id: string, snap: Snapshot): Promise<boolean> {
    const sealed = sealSnapshot(type, id, snap);
    if (sealed === null) return this.snapshots.remove([type, id]).then(() => false);
    return this.snapshots.put([type, id], sealed);
  }

  /**
   * Log positions of the commits of (type, id) whose last event is after `version`, in order,
   * including index entries not yet committed to LMDB (see `indexCommit`).
   */
  historyAfter(type: string, id: string, version: number): { lastSeq: number; position: number }[] {
    const out: { lastSeq: number; position: number }[] = [];
    for (const { value } of this.history.getRange({ start: [type, id, version + 1], end: [type, id, MAX_SEQ] })) {
      for (let i = 0; i < value.length; i += 2) if (value[i]! > version) out.push({ lastSeq: value[i]!, position: value[i + 1]! });
    }
    let extra = false;
    for (const window of this.uncommitted) {
      const run = window.entriesOf(id);
      for (let i = 0; i < run.length; i += 3) {
        const lastSeq = run[i + 1] as number;
        if (run[i] !== type || lastSeq <= version || out.some((e) => e.lastSeq === lastSeq)) continue;
        out.push({ lastSeq, position: run[i + 2] as number });
        extra = true;
      }
    }
    if (extra) out.sort((a, b) => a.lastSeq - b.lastSeq);
    return out;
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
  private queuedCommands: unknown[] = [];
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
    this.queuedCommands = [];
    this.afterIndexed = [];
    const checkpoints = [...this.queuedCheckpoints];
    this.queuedCheckpoints.clear();
    // Windows are issued one after another: a checkpoint must never commit before the entries
    // of an earlier window that it covers.
    const done = this.indexing.then(() => this.issue(window, commands, checkpoints)).then(() => {
      // Committed: LMDB answers for this window now.
      const i = this.uncommitted.indexOf(window);
      if (i >= 0) this.uncommitted.splice(i, 1);
      for (const fn of callbacks) fn();
    });
    this.indexing = done.catch(() => {});
    return done;
  }

  /**
   * A window's puts, INDEX_SLICE_MS of them per event-loop turn; its checkpoints go last, then
   * wait for the commit.
   */
  private async issue(window: IndexWindow, commands: unknown[], checkpoints: [number, number][]): Promise<void> {
    let n = 0;
    // The open window is uncommitted too; so is this one.
    const slice = () => performance.now() + INDEX_SLICE_MS * Math.max(1, this.uncommitted.length - 1);
    let sliceEnd = slice();
    for (const [id, run] of window.runs()) {
      this.putRuns(id, run, window.overlaps);
      if (++n % 32 === 0 && performance.now() >= sliceEnd) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        sliceEnd = slice();
      }
    }
    for (let i = 0; i < commands.length; i += 3) this.putCommand(commands[i] as string, commands[i + 1] as CommandRecord, commands[i + 2] as number);
    for (const [shard, seq] of checkpoints) void this.meta.put(['checkpoint', shard], seq);
    await (this.root.flushed as unknown as Promise<void>);
  }

  /** One history entry per actor type in the run (an id is almost always one type's). */
  private putRuns(id: string, run: readonly (string | number)[], overlaps: boolean): void {
    let type = run[0] as string;
    let pairs: number[] = [];
    for (let i = 0; i < run.length; i += 3) {
      if (run[i] !== type) {
        this.putRun(type, id, pairs, overlaps);
        type = run[i] as string;
        pairs = [];
      }
      pairs.push(run[i + 1] as number, run[i + 2] as number);
    }
    this.putRun(type, id, pairs, overlaps);
  }

  private putRun(type: string, id: string, pairs: number[], overlaps: boolean): void {
    const key: [string, string, number] = [type, id, pairs[pairs.length - 2]!];
    if (overlaps) {
      // Re-indexing after a crash can meet an entry under the same key: keep the union.
      const old = this.history.get(key);
      if (old !== undefined) {
        const seen = new Map<number, number>();
        for (let i = 0; i < old.length; i += 2) seen.set(old[i]!, old[i + 1]!);
        for (let i = 0; i < pairs.length; i += 2) seen.set(pairs[i]!, pairs[i + 1]!);
        pairs = [...seen].sort((a, b) => a[0] - b[0]).flat();
      }
    }
    void this.history.put(key, pairs);
  }

  getCheckpoint(shard: number): number {
    return (this.meta.get(['checkpoint', shard]) as number | undefined) ?? 0;
  }

  private epochDb(epoch: number): Database<CommandRecord, CommandKey> {
    let db = this.epochs.get(epoch);
    if (db === undefined) {
      db = this.root.openDB<CommandRecord, CommandKey>({ name: `commands-${epoch}` });
      this.epochs.set(epoch, db);
    }
    return db;
  }

  /**
   * Where the commit of `commandId` sent to actor (type, id) is stored, if it was processed
   * within the TTL (up to twice it). The same commandId on another actor is another command.
   */
  getCommand(type: string, id: string, commandId: string, now = Date.now()): CommandRecord | undefined {
    const epoch = Math.floor(now / this.commandTtlMs);
    const key = this.lookup;
    key[0] = type;
    key[1] = id;
    key[2] = commandId;
    return this.epochDb(epoch).get(key) ?? this.epochDb(epoch - 1).get(key);
  }

  /** Remember a processed command: its key is (the record's type and id, commandId). */
  putCommand(commandId: string, rec: CommandRecord, now = Date.now()): void {
    void this.epochDb(Math.floor(now / this.commandTtlMs)).put([rec[COMMAND_RECORD.type], rec[COMMAND_RECORD.id], commandId], rec);
  }

  /** Drop command-id epochs older than the previous one. Cheap: whole databases go at once. */
  async expireCommands(now = Date.now()): Promise<void> {
    const current = Math.floor(now / this.commandTtlMs);
    for (const key of this.root.getKeys({})) {
      if (typeof key !== 'string' || !key.startsWith('commands-')) continue;
      const epoch = Number(key.slice(9));
      if (epoch < current - 1) {
        const db = this.epochDb(epoch);
        await db.drop();
        this.epochs.delete(epoch);
      }
    }
  }

  getStreamIdentity(): string | undefined {
    return this.meta.get(['stream']) as string | undefined;
  }

  /** Forget everything when the cache describes another incarnation of the stream. */
  async resetFor(identity: string): Promise<void> {
    await this.snapshots.clearAsync();
    await this.history.clearAsync();
    await this.meta.clearAsync();
    for (const key of this.root.getKeys({})) {
      if (typeof key === 'string' && key.startsWith('commands-')) await this.epochDb(Number(key.slice(9))).clearAsync();
      // The history index of layout 1 (one entry per commit).
      if (key === 'history') await this.root.openDB({ name: 'history' }).drop();
    }
    await this.meta.put(['stream'], identity);
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
