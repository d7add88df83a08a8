/**
 * Durable timers in the LMDB cache (what node/timers.ts fires), rebuilt from the log like the
 * rest: every commit's timer ops (wire.ts TIMER_*) are applied in log order, on the ack and
 * again when a shard catches up.
 *
 *   timers      [type, id, key]                → the SET op as the log holds it (wire.ts WireTimerSet)
 *   timers-due  [shard, dueAt, type, id, key]  → 1      the scheduler's order: soonest first, per shard
 *
 * Each op is "last writer wins" for its (actor, key): SET replaces, CANCEL and FIRED delete. So
 * re-applying the log from a checkpoint over an index that is already ahead of it (these writes
 * are issued at once, the checkpoint with the next index window) ends in the same index.
 *
 * Writes are issued at once and never awaited (lmdb batches a turn's puts into one
 * transaction); until a write is committed, `pending` answers for its (actor, key), so a read on
 * this thread never sees an older value than the last write. Nothing is kept per timer in memory
 * beyond that.
 */
import type { Database, RootDatabase } from 'lmdb';
import { TIMER_SET, type WireTimerSet } from '../wire.ts';

type ActorKey = [type: string, id: string, key: string];
type DueKey = [shard: number, dueAt: number, type: string, id: string, key: string];

/** A timer in the scheduler's order. */
export interface DueTimer {
  shard: number;
  dueAt: number;
  type: string;
  id: string;
  key: string;
}

interface PendingWrite {
  shard: number;
  type: string;
  id: string;
  key: string;
  rec: WireTimerSet | null;
}

const MAX_TIME = Number.MAX_SAFE_INTEGER;

export class TimerIndex {
  private readonly byActor: Database<WireTimerSet, ActorKey>;
  private readonly due: Database<number, DueKey>;
  /** Writes not yet committed, by `type \0 id \0 key`. */
  private readonly pending = new Map<string, PendingWrite>();

  constructor(root: RootDatabase) {
    this.byActor = root.openDB<WireTimerSet, ActorKey>({ name: 'timers' });
    this.due = root.openDB<number, DueKey>({ name: 'timers-due' });
  }

  /** The pending timer `key` of an actor. */
  get(type: string, id: string, key: string): WireTimerSet | undefined {
    const p = this.pending.get(pendingKey(type, id, key));
    if (p !== undefined) return p.rec ?? undefined;
    return this.byActor.get([type, id, key]);
  }

  /** Replace (or add) a timer. Returns 1 when the actor had no timer of that key, else 0. */
  set(shard: number, type: string, id: string, rec: WireTimerSet): number {
    const key = rec[TIMER_SET.key];
    const old = this.get(type, id, key);
    if (old !== undefined) void this.due.remove([shard, old[TIMER_SET.dueAt], type, id, key]);
    void this.due.put([shard, rec[TIMER_SET.dueAt], type, id, key], 1);
    this.track({ shard, type, id, key, rec }, this.byActor.put([type, id, key], rec));
    return old === undefined ? 1 : 0;
  }

  /** Remove a timer. Returns -1 when there was one, else 0. */
  remove(shard: number, type: string, id: string, key: string): number {
    const old = this.get(type, id, key);
    if (old === undefined) return 0;
    void this.due.remove([shard, old[TIMER_SET.dueAt], type, id, key]);
    this.track({ shard, type, id, key, rec: null }, this.byActor.remove([type, id, key]));
    return -1;
  }

  private track(w: PendingWrite, committed: Promise<boolean>): void {
    const k = pendingKey(w.type, w.id, w.key);
    this.pending.set(k, w);
    const done = () => { if (this.pending.get(k) === w) this.pending.delete(k); };
    committed.then(done, done);
  }

  /**
   * Up to `limit` timers of `shard`, soonest first, with a due time of at least `from`,
   * including writes not yet committed.
   */
  soonest(shard: number, limit: number, from = 0): DueTimer[] {
    const out: DueTimer[] = [];
    for (const { key: k } of this.due.getRange({ start: [shard, from], end: [shard, MAX_TIME], limit: limit + this.pending.size })) {
      const [, dueAt, type, id, key] = k;
      if (this.pending.has(pendingKey(type, id, key))) continue; // answered from `pending` below
      out.push({ shard, dueAt, type, id, key });
    }
    for (const w of this.pending.values()) {
      if (w.shard === shard && w.rec !== null && w.rec[TIMER_SET.dueAt] >= from) out.push({ shard, dueAt: w.rec[TIMER_SET.dueAt], type: w.type, id: w.id, key: w.key });
    }
    out.sort(byDue);
    if (out.length > limit) out.length = limit;
    return out;
  }

  /** Timers of `shard` in LMDB (call once its writes are committed). */
  count(shard: number): number {
    return this.due.getKeysCount({ start: [shard, 0], end: [shard, MAX_TIME] });
  }

  /** The pending timers of one actor, soonest first. */
  list(type: string, id: string): WireTimerSet[] {
    const out: WireTimerSet[] = [];
    const seen = new Set<string>();
    for (const w of this.pending.values()) {
      if (w.type !== type || w.id !== id) continue;
      seen.add(w.key);
      if (w.rec !== null) out.push(w.rec);
    }
    for (const { key, value } of this.byActor.getRange({ start: [type, id, ''], end: [type, id, '\uffff'] })) {
      if (!seen.has(key[2])) out.push(value);
    }
    return out.sort((a, b) => a[TIMER_SET.dueAt] - b[TIMER_SET.dueAt]);
  }

  /** Every stored timer of the actors `belongs` accepts: [type, id, record]. */
  *entries(belongs: (type: string, id: string) => boolean): IterableIterator<[string, string, WireTimerSet]> {
    for (const { key, value } of this.byActor.getRange({})) if (belongs(key[0], key[1])) yield [key[0], key[1], value];
  }

  /** Remove every timer of `shard` (before a shard checkpoint replaces them). */
  removeShard(shard: number): void {
    for (const k of this.due.getKeys({ start: [shard, 0], end: [shard, MAX_TIME] })) {
      void this.due.remove(k);
      void this.byActor.remove([k[2], k[3], k[4]]);
    }
  }

  /** Put one timer as a shard checkpoint holds it (in the caller's transaction). */
  putEntry(shard: number, type: string, id: string, rec: WireTimerSet): void {
    void this.due.put([shard, rec[TIMER_SET.dueAt], type, id, rec[TIMER_SET.key]], 1);
    void this.byActor.put([type, id, rec[TIMER_SET.key]], rec);
  }

  async clear(): Promise<void> {
    this.pending.clear();
    await this.byActor.clearAsync();
    await this.due.clearAsync();
  }
}

function pendingKey(type: string, id: string, key: string): string {
  return `${type}\u0000${id}\u0000${key}`;
}

export function byDue(a: DueTimer, b: DueTimer): number {
  return a.dueAt - b.dueAt || (a.type < b.type ? -1 : a.type > b.type ? 1 : 0) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
}
