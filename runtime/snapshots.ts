/**
 * LMDB: the node's local cache of what the log says. One environment per (node, stream),
 * opened by every worker thread. Deleting it loses nothing: a shard rebuilds it from JetStream.
 *
 *   snapshots   [type, id]            → { sv: stateVersion, version, position, state }
 *   history     [type, id, lastSeq]   → position   (which log message holds which commit)
 *   meta        ['checkpoint', shard] → stream sequence up to which `history`/commands are complete
 *               ['stream']            → creation time of the stream this cache describes
 *   commands-N  commandId             → [type, id, firstSeq, lastSeq, position]   (N = time epoch; old epochs are dropped)
 *
 * Writes are never awaited one at a time on the hot path: lmdb batches all puts of an
 * event-loop turn into one transaction (DESIGN.md: ~700k async puts/s against ~4k/s awaited).
 */
import { open, type Database, type RootDatabase } from 'lmdb';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { sealSnapshot } from './sensitive.ts';

export interface Snapshot {
  sv: number;
  version: number;
  position: number;
  state: unknown;
}

export type CommandRecord = [aggregateType: string, aggregateId: string, firstSeq: number, lastSeq: number, position: number];

const MAX_SEQ = Number.MAX_SAFE_INTEGER;

export class Store {
  readonly root: RootDatabase;
  private readonly snapshots: Database<Snapshot, [string, string]>;
  private readonly history: Database<number, [string, string, number]>;
  private readonly meta: Database<unknown, (string | number)[]>;
  private readonly epochs = new Map<number, Database<CommandRecord, string>>();

  constructor(dataDir: string, stream: string, private readonly commandTtlMs: number) {
    const path = join(dataDir, 'lmdb', stream);
    mkdirSync(path, { recursive: true });
    this.root = open({ path, maxDbs: 32, mapSize: 2 ** 34 });
    this.snapshots = this.root.openDB({ name: 'snapshots', sharedStructuresKey: Symbol.for('troupe.structures') });
    // Values are bare positions in ordered-binary: cheaper to write than a msgpack array.
    this.history = this.root.openDB<number, [string, string, number]>({ name: 'history', encoding: 'ordered-binary' });
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

  /** Log positions of the commits of (type, id) whose last event is after `version`, in order. */
  historyAfter(type: string, id: string, version: number): { lastSeq: number; position: number }[] {
    const out: { lastSeq: number; position: number }[] = [];
    for (const { key, value } of this.history.getRange({ start: [type, id, version + 1], end: [type, id, MAX_SEQ] })) {
      out.push({ lastSeq: key[2], position: value });
    }
    return out;
  }

  /** The commit of (type, id) ending at `lastSeq` lives in the message at `position`. */
  putHistory(type: string, id: string, lastSeq: number, position: number): void {
    void this.history.put([type, id, lastSeq], position);
  }

  getCheckpoint(shard: number): number {
    return (this.meta.get(['checkpoint', shard]) as number | undefined) ?? 0;
  }

  putCheckpoint(shard: number, seq: number): Promise<boolean> {
    return this.meta.put(['checkpoint', shard], seq);
  }

  private epochDb(epoch: number): Database<CommandRecord, string> {
    let db = this.epochs.get(epoch);
    if (db === undefined) {
      db = this.root.openDB<CommandRecord, string>({ name: `commands-${epoch}` });
      this.epochs.set(epoch, db);
    }
    return db;
  }

  /** The stored result of a processed command, if it is younger than the TTL (up to twice it). */
  getCommand(commandId: string, now = Date.now()): CommandRecord | undefined {
    const epoch = Math.floor(now / this.commandTtlMs);
    return this.epochDb(epoch).get(commandId) ?? this.epochDb(epoch - 1).get(commandId);
  }

  putCommand(commandId: string, rec: CommandRecord, now = Date.now()): void {
    void this.epochDb(Math.floor(now / this.commandTtlMs)).put(commandId, rec);
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
    }
    await this.meta.put(['stream'], identity);
  }

  /** Resolves when every put issued so far is committed. */
  flushed(): Promise<void> {
    return this.root.flushed as unknown as Promise<void>;
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
