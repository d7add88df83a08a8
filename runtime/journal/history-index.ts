/**
 * The history index in the LMDB cache: which log messages hold which commits of an actor.
 *
 *   history-runs [type, id, lastSeq] → [lastSeq, position, ...]
 *
 * One entry per actor per index flush window, keyed by its last commit. Entries of windows not
 * yet committed to LMDB are kept in memory (IndexWindow) and read from there (journal/store.ts
 * owns the windows and when they are written).
 */
import type { Database, RootDatabase } from 'lmdb';

const MAX_SEQ = Number.MAX_SAFE_INTEGER;
const NO_ENTRIES: readonly (string | number)[] = Object.freeze([]);

/**
 * The history entries of one flush window, without an object per entry: numbers in typed
 * arrays, and per id a chain of its entries. A window lives up to INDEX_FLUSH_MS; small objects
 * kept that long survive young-generation collections and are copied by each (measured: with a
 * Map of per-actor arrays, the worker's scavenges grew and p99 latency at C = 64 rose ~4 ms).
 */
export class IndexWindow {
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

export class HistoryIndex {
  private readonly db: Database<number[], [string, string, number]>;

  constructor(private readonly root: RootDatabase) {
    this.db = root.openDB<number[], [string, string, number]>({ name: 'history-runs' });
  }

  /**
   * Log positions of the commits of (type, id) whose last event is after `version`, in order,
   * including the entries of windows not yet committed to LMDB.
   */
  after(type: string, id: string, version: number, uncommitted: readonly IndexWindow[]): { lastSeq: number; position: number }[] {
    const out: { lastSeq: number; position: number }[] = [];
    for (const { value } of this.db.getRange({ start: [type, id, version + 1], end: [type, id, MAX_SEQ] })) {
      for (let i = 0; i < value.length; i += 2) if (value[i]! > version) out.push({ lastSeq: value[i]!, position: value[i + 1]! });
    }
    let extra = false;
    for (const window of uncommitted) {
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

  /** One history entry per actor type in the run (an id is almost always one type's). */
  putRuns(id: string, run: readonly (string | number)[], overlaps: boolean): void {
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
      const old = this.db.get(key);
      if (old !== undefined) {
        const seen = new Map<number, number>();
        for (let i = 0; i < old.length; i += 2) seen.set(old[i]!, old[i + 1]!);
        for (let i = 0; i < pairs.length; i += 2) seen.set(pairs[i]!, pairs[i + 1]!);
        pairs = [...seen].sort((a, b) => a[0] - b[0]).flat();
      }
    }
    void this.db.put(key, pairs);
  }

  /** Every stored entry of the actors `belongs` accepts: [type, id, lastSeq, [lastSeq, position, ...]]. */
  *entries(belongs: (type: string, id: string) => boolean): IterableIterator<[string, string, number, number[]]> {
    for (const { key, value } of this.db.getRange({})) if (belongs(key[0], key[1])) yield [key[0], key[1], key[2], value];
  }

  /** Remove the entries of the actors `belongs` accepts (before a shard checkpoint replaces them). */
  removeWhere(belongs: (type: string, id: string) => boolean): void {
    for (const key of this.db.getKeys({})) if (belongs(key[0], key[1])) void this.db.remove(key);
  }

  /** Put one entry as a shard checkpoint holds it. */
  putEntry(type: string, id: string, lastSeq: number, pairs: number[]): void {
    void this.db.put([type, id, lastSeq], pairs);
  }

  /** Forget every entry, and the index of layout 1 (one entry per commit) if it is still there. */
  async clear(): Promise<void> {
    await this.db.clearAsync();
    for (const key of this.root.getKeys({})) {
      if (key === 'history') await this.root.openDB({ name: 'history' }).drop();
    }
  }
}
