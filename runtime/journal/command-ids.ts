/**
 * Processed command ids in the LMDB cache, for idempotency:
 *
 *   commands-N  [type, id, commandId] → [type, id, firstSeq, lastSeq, position]   (N = time epoch)
 *
 * A commandId is scoped to its actor: the same id on another actor is another command.
 * One database per epoch of `commandTtlMs`: a lookup reads the current epoch and the previous
 * one, so a record lives between one and two TTLs; expiry drops whole databases at once.
 */
import type { Database, RootDatabase } from 'lmdb';
import { COMMAND_RECORD, type CommandRecord } from '../wire.ts';

export type { CommandRecord };

/** A processed command's key: [aggregateType, aggregateId, commandId]. */
type CommandKey = [aggregateType: string, aggregateId: string, commandId: string];

const PREFIX = 'commands-';

export class CommandIds {
  private readonly epochs = new Map<number, Database<CommandRecord, CommandKey>>();
  /** The key of a lookup, refilled per call: LMDB encodes it before `get` returns. */
  private readonly lookup: CommandKey = ['', '', ''];

  constructor(private readonly root: RootDatabase, private readonly ttlMs: number) {}

  private epochDb(epoch: number): Database<CommandRecord, CommandKey> {
    let db = this.epochs.get(epoch);
    if (db === undefined) {
      db = this.root.openDB<CommandRecord, CommandKey>({ name: `${PREFIX}${epoch}` });
      this.epochs.set(epoch, db);
    }
    return db;
  }

  /**
   * Where the commit of `commandId` sent to actor (type, id) is stored, if it was processed
   * within the TTL (up to twice it). The same commandId on another actor is another command.
   */
  get(type: string, id: string, commandId: string, now: number): CommandRecord | undefined {
    const epoch = Math.floor(now / this.ttlMs);
    const key = this.lookup;
    key[0] = type;
    key[1] = id;
    key[2] = commandId;
    return this.epochDb(epoch).get(key) ?? this.epochDb(epoch - 1).get(key);
  }

  /** Remember a processed command: its key is (the record's type and id, commandId). */
  put(commandId: string, rec: CommandRecord, now: number): void {
    void this.epochDb(Math.floor(now / this.ttlMs)).put([rec[COMMAND_RECORD.type], rec[COMMAND_RECORD.id], commandId], rec);
  }

  /** Drop epochs older than the previous one. Cheap: whole databases go at once. */
  async expire(now: number): Promise<void> {
    const current = Math.floor(now / this.ttlMs);
    for (const epoch of this.storedEpochs()) {
      if (epoch < current - 1) {
        await this.epochDb(epoch).drop();
        this.epochs.delete(epoch);
      }
    }
  }

  /**
   * The records a lookup at `now` can still find (this epoch and the previous one) of the
   * actors `belongs` accepts: [epoch, commandId, record].
   */
  *entries(now: number, belongs: (type: string, id: string) => boolean): IterableIterator<[number, string, CommandRecord]> {
    const current = Math.floor(now / this.ttlMs);
    for (const epoch of [current - 1, current]) {
      if (!this.storedEpochs().includes(epoch)) continue;
      for (const { key, value } of this.epochDb(epoch).getRange({})) if (belongs(key[0], key[1])) yield [epoch, key[2], value];
    }
  }

  /** Put a record into the epoch it was stored in (a shard checkpoint's restore). */
  putInEpoch(epoch: number, commandId: string, rec: CommandRecord): void {
    void this.epochDb(epoch).put([rec[COMMAND_RECORD.type], rec[COMMAND_RECORD.id], commandId], rec);
  }

  async clear(): Promise<void> {
    for (const epoch of this.storedEpochs()) await this.epochDb(epoch).clearAsync();
  }

  private storedEpochs(): number[] {
    const out: number[] = [];
    for (const key of this.root.getKeys({})) {
      if (typeof key === 'string' && key.startsWith(PREFIX)) out.push(Number(key.slice(PREFIX.length)));
    }
    return out;
  }
}

/**
 * Records of processed commands on their way to LMDB (a window queued, or being written), in
 * one flat array: commandId, record, time, ... A lookup reads them before LMDB can: the node's
 * memory then needs no map of its own per command. Lookups are rare (a retry, an id the caller
 * chose), so the index by commandId is built at the first one, and extended at each next one
 * by what was queued since: nothing is indexed while nobody asks.
 */
export class QueuedCommands {
  readonly flat: unknown[] = [];
  private index: Map<string, number> | null = null;
  private indexed = 0;

  push(commandId: string, rec: CommandRecord, now: number): void {
    this.flat.push(commandId, rec, now);
  }

  get length(): number {
    return this.flat.length / 3;
  }

  /** The record of `commandId` on actor (type, id), if it is here. */
  find(type: string, id: string, commandId: string): CommandRecord | undefined {
    const flat = this.flat;
    if (flat.length === 0) return undefined;
    const index = (this.index ??= new Map());
    for (let i = this.indexed; i < flat.length; i += 3) index.set(flat[i] as string, i);
    this.indexed = flat.length;
    const at = index.get(commandId);
    if (at === undefined) return undefined;
    const rec = flat[at + 1] as CommandRecord;
    if (rec[COMMAND_RECORD.type] === type && rec[COMMAND_RECORD.id] === id) return rec;
    // The same commandId on another actor (rare): look through them all.
    for (let i = 0; i < flat.length; i += 3) {
      const r = flat[i + 1] as CommandRecord;
      if (flat[i] === commandId && r[COMMAND_RECORD.type] === type && r[COMMAND_RECORD.id] === id) return r;
    }
    return undefined;
  }
}

