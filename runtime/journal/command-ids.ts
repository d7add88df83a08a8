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
