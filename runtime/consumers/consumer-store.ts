/**
 * LMDB for the read side: consumer de-dup, failure records, per-aggregate versions, saga state
 * and projection read models, all in one environment so that a handler's writes, the events'
 * de-dup marks and a projection's checkpoint commit in ONE transaction (effectively-once).
 *
 * One environment per data dir (`<dataDir>/consumers`), opened once per process and shared by
 * every consumer and projection that names the same dir (reference counted). Per consumer
 * (`<stream>/<name>`):
 *
 *   c/<stream>/<name>/seen/<epoch>   eventId      → 1            handled (or dead-lettered) events; an
 *                                                                epoch lasts dedupTtlMs, old epochs are dropped whole
 *   c/<stream>/<name>/failures       [type, id]   → FailureRecord the event of that aggregate that is failing:
 *                                                                later events of the aggregate wait for it
 *   c/<stream>/<name>/versions       [type, id]   → sequence     what a handler recorded with ctx.setVersion
 *   c/<stream>/<name>/meta           string       → unknown      stream identity, checkpoint, ...
 *
 * Like the node's own LMDB cache, deleting it loses nothing that the log cannot give back —
 * except the memory of which events a handler already applied, so a consumer whose store was
 * deleted is at-least-once until it catches up.
 */
import { open, type Database, type Key, type RootDatabase } from 'lmdb';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { EventEnvelope } from '../journal/codec.ts';

export type { Key };

/** The event of one aggregate a consumer is failing on; the aggregate's later events wait for it. */
export interface FailureRecord {
  eventId: string;
  sequence: number;
  position: number;
  /** Failed attempts so far (deferrals while a circuit breaker is open do not count). */
  attempts: number;
  firstFailureAt: number;
  lastFailureAt: number;
  /** Not retried before this time (ms since the epoch). */
  nextAttemptAt: number;
  reason: string;
  error: string;
}

export const DEFAULT_DEDUP_TTL_MS = 7 * 24 * 60 * 60_000;

const REMOVED = Symbol('removed');

function overlayKey(key: Key): string {
  return typeof key === 'string' ? `s${key}` : `j${JSON.stringify(key)}`;
}

/**
 * Writes handed to the committer and not committed yet, newest value per key: what a later
 * task reads before LMDB has them (so a lane can go on while its last task commits).
 */
export class PendingWrites {
  private readonly layers = new Map<Database, Map<string, { value: unknown; gen: number }>>();

  add(ws: WriteSet, gen: number): void {
    for (const op of ws.ops) {
      let layer = this.layers.get(op.db);
      if (layer === undefined) this.layers.set(op.db, layer = new Map());
      layer.set(overlayKey(op.key), { value: op.value, gen });
    }
  }

  /** The pending value (REMOVED for a pending removal), or undefined when nothing is pending. */
  lookup(db: Database, okey: string): unknown {
    return this.layers.get(db)?.get(okey)?.value;
  }

  /** Forget what generation `gen` wrote, unless a later generation wrote the key again. */
  committed(ws: WriteSet, gen: number): void {
    for (const op of ws.ops) {
      const layer = this.layers.get(op.db);
      const okey = overlayKey(op.key);
      const e = layer?.get(okey);
      if (e !== undefined && e.gen <= gen) layer!.delete(okey);
    }
  }
}

/**
 * Writes a handler makes through its context: kept in memory (later reads of the same task see
 * them) and committed in one LMDB transaction together with the de-dup marks of the events
 * that produced them. A failed event's writes are rolled back with `rollback(mark)`.
 */
export class WriteSet {
  /** @internal */
  ops: { db: Database; key: Key; value: unknown }[] = [];
  private overlay = new Map<Database, Map<string, unknown>>();

  constructor(private readonly pending: PendingWrites | null = null) {}

  get size(): number {
    return this.ops.length;
  }

  get<V = unknown>(db: Database, key: Key): V | undefined {
    const okey = overlayKey(key);
    let v = this.overlay.get(db)?.get(okey);
    if (v === undefined && this.pending !== null) v = this.pending.lookup(db, okey);
    if (v === REMOVED) return undefined;
    if (v !== undefined) return v as V;
    return db.get(key) as V | undefined;
  }

  put(db: Database, key: Key, value: unknown): void {
    if (value === undefined) throw new TypeError('WriteSet.put: value must not be undefined; use remove()');
    this.ops.push({ db, key, value });
    this.layer(db).set(overlayKey(key), value);
  }

  remove(db: Database, key: Key): void {
    this.ops.push({ db, key, value: REMOVED });
    this.layer(db).set(overlayKey(key), REMOVED);
  }

  mark(): number {
    return this.ops.length;
  }

  /** Forget every write made after `mark`. */
  rollback(mark: number): void {
    if (mark >= this.ops.length) return;
    this.ops.length = mark;
    this.overlay.clear();
    for (const op of this.ops) this.layer(op.db).set(overlayKey(op.key), op.value);
  }

  /** Perform the writes; call inside an LMDB transaction. */
  applyInTransaction(): void {
    for (const { db, key, value } of this.ops) {
      if (value === REMOVED) void db.remove(key);
      else void db.put(key, value);
    }
  }

  private layer(db: Database): Map<string, unknown> {
    let m = this.overlay.get(db);
    if (m === undefined) this.overlay.set(db, m = new Map());
    return m;
  }
}

interface OpenEnv {
  env: RootDatabase;
  refs: number;
  /** Database handles, shared by every store over this environment. */
  dbs: Map<string, Database>;
}
const environments = new Map<string, OpenEnv>();

/**
 * The LMDB environment of a data dir, for consumers, projections and sagas. `ConsumerStore.open`
 * twice on the same dir returns stores over the same environment; each must be closed.
 */
export class ConsumerStore {
  private closed = false;

  private constructor(readonly path: string, readonly env: RootDatabase, private readonly dbs: Map<string, Database>) {}

  static open(dataDir: string): ConsumerStore {
    const path = resolve(join(dataDir, 'consumers'));
    let e = environments.get(path);
    if (e === undefined) {
      mkdirSync(path, { recursive: true });
      e = { env: open({ path, maxDbs: 4096, mapSize: 2 ** 34 }), refs: 0, dbs: new Map() };
      environments.set(path, e);
    }
    e.refs++;
    return new ConsumerStore(path, e.env, e.dbs);
  }

  /** A named database of this environment (read models, your own tables). */
  db<V = unknown, K extends Key = Key>(name: string): Database<V, K> {
    let db = this.dbs.get(name);
    if (db === undefined) {
      db = this.env.openDB({ name });
      this.dbs.set(name, db);
    }
    return db as unknown as Database<V, K>;
  }

  /** Names of the databases whose name starts with `prefix`. */
  dbNames(prefix: string): string[] {
    const out: string[] = [];
    for (const key of this.env.getKeys({})) if (typeof key === 'string' && key.startsWith(prefix)) out.push(key);
    return out;
  }

  /** Delete a database and its contents. */
  async drop(name: string): Promise<void> {
    const db = this.db(name);
    this.dbs.delete(name);
    await db.drop();
  }

  /** Drop every database whose name starts with `prefix`. */
  async dropAll(prefix: string): Promise<void> {
    for (const name of this.dbNames(prefix)) await this.drop(name);
  }

  /** Run `fn` in one write transaction (writes inside it are atomic). */
  transaction<T>(fn: () => T): Promise<T> {
    return this.env.transaction(fn);
  }

  /** See writes committed by other processes at once. */
  refresh(): void {
    this.env.resetReadTxn();
  }

  state(stream: string, consumer: string, dedupTtlMs = DEFAULT_DEDUP_TTL_MS): ConsumerState {
    return new ConsumerState(this, `c/${stream}/${consumer}/`, dedupTtlMs);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const e = environments.get(this.path);
    if (e === undefined) return;
    await (e.env.flushed as unknown as Promise<void>);
    if (--e.refs === 0) {
      environments.delete(this.path);
      await e.env.close();
    }
  }
}

/** What one task leaves to commit. */
export interface CommitEntry {
  writes: WriteSet | null;
  done: readonly EventEnvelope[];
  /** Aggregates whose failure record goes (their failing event was handled or dead-lettered). */
  resolved: readonly Pick<EventEnvelope, 'aggregateType' | 'aggregateId'>[];
  failures: readonly [EventEnvelope, FailureRecord][];
}

/** One consumer's records in a ConsumerStore. */
export class ConsumerState {
  readonly failures: Database<FailureRecord, [string, string]>;
  readonly versions: Database<number, [string, string]>;
  readonly meta: Database<unknown, string>;
  private readonly epochs = new Map<number, Database<number, string>>();

  constructor(readonly store: ConsumerStore, readonly prefix: string, readonly dedupTtlMs: number) {
    this.failures = store.db(`${prefix}failures`);
    this.versions = store.db(`${prefix}versions`);
    this.meta = store.db(`${prefix}meta`);
  }

  private epochDb(epoch: number): Database<number, string> {
    let db = this.epochs.get(epoch);
    if (db === undefined) {
      db = this.store.db<number, string>(`${this.prefix}seen/${epoch}`);
      this.epochs.set(epoch, db);
    }
    return db;
  }

  /** True when the event was handled (or dead-lettered) by this consumer within the de-dup TTL. */
  seen(eventId: string, now = Date.now()): boolean {
    const epoch = Math.floor(now / this.dedupTtlMs);
    return this.epochDb(epoch).get(eventId) !== undefined || this.epochDb(epoch - 1).get(eventId) !== undefined;
  }

  failure(aggregateType: string, aggregateId: string): FailureRecord | undefined {
    return this.failures.get([aggregateType, aggregateId]);
  }

  /** Aggregates whose events are failing now (retried with back-off; later events of each wait), up to `limit`. */
  failing(limit = 100): { aggregateType: string; aggregateId: string; eventId: string; attempts: number; reason: string; nextAttemptAt: string }[] {
    const out: { aggregateType: string; aggregateId: string; eventId: string; attempts: number; reason: string; nextAttemptAt: string }[] = [];
    for (const { key, value: f } of this.failures.getRange({ limit })) {
      out.push({ aggregateType: key[0], aggregateId: key[1], eventId: f.eventId, attempts: f.attempts, reason: f.reason, nextAttemptAt: new Date(f.nextAttemptAt).toISOString() });
    }
    return out;
  }

  version(aggregateType: string, aggregateId: string): number {
    return this.versions.get([aggregateType, aggregateId]) ?? 0;
  }

  getMeta<T>(key: string): T | undefined {
    return this.meta.get(key) as T | undefined;
  }

  putMeta(key: string, value: unknown): Promise<boolean> {
    return this.meta.put(key, value);
  }

  /**
   * Commit tasks in one transaction, in order: each one's handler writes, a de-dup mark per
   * done event, the removal of the failure records its events resolved, and new failure records.
   */
  commit(entries: readonly CommitEntry[]): Promise<unknown> {
    const seen = this.epochDb(Math.floor(Date.now() / this.dedupTtlMs));
    return this.store.transaction(() => {
      for (const c of entries) {
        c.writes?.applyInTransaction();
        for (const e of c.done) void seen.put(e.eventId, 1);
        for (const e of c.resolved) void this.failures.remove([e.aggregateType, e.aggregateId]);
        for (const [e, f] of c.failures) void this.failures.put([e.aggregateType, e.aggregateId], f);
      }
    });
  }

  /** Drop de-dup epochs older than the previous one: whole databases at once. */
  async expire(now = Date.now()): Promise<void> {
    const current = Math.floor(now / this.dedupTtlMs);
    const base = `${this.prefix}seen/`;
    for (const name of this.store.dbNames(base)) {
      const epoch = Number(name.slice(base.length));
      if (epoch < current - 1) {
        this.epochs.delete(epoch);
        await this.store.drop(name);
      }
    }
  }

  /** Forget everything this consumer recorded (a rebuild, or the stream was re-created). */
  async clear(): Promise<void> {
    const base = `${this.prefix}seen/`;
    this.epochs.clear();
    await this.store.dropAll(base);
    await this.failures.clearAsync();
    await this.versions.clearAsync();
    await this.meta.clearAsync();
  }
}
