/**
 * Processed command ids in the LMDB cache, for idempotency:
 *
 *   commands-N  commandId → [type, id, firstSeq, lastSeq, position]   (N = time epoch)
 *
 * One database per epoch of `commandTtlMs`: a lookup reads the current epoch and the previous
 * one, so a record lives between one and two TTLs; expiry drops whole databases at once.
 */
import type { Database, RootDatabase } from 'lmdb';

export type CommandRecord = [aggregateType: string, aggregateId: string, firstSeq: number, lastSeq: number, position: number];

const PREFIX = 'commands-';

export class CommandIds {
  private readonly epochs = new Map<number, Database<CommandRecord, string>>();

  constructor(private readonly root: RootDatabase, private readonly ttlMs: number) {}

  private epochDb(epoch: number): Database<CommandRecord, string> {
    let db = this.epochs.get(epoch);
    if (db === undefined) {
      db = this.root.openDB<CommandRecord, string>({ name: `${PREFIX}${epoch}` });
      this.epochs.set(epoch, db);
    }
    return db;
  }

  /** The stored result of a processed command, if it is younger than the TTL (up to twice it). */
  get(commandId: string, now: number): CommandRecord | undefined {
    const epoch = Math.floor(now / this.ttlMs);
    return this.epochDb(epoch).get(commandId) ?? this.epochDb(epoch - 1).get(commandId);
  }

  put(commandId: string, rec: CommandRecord, now: number): void {
    void this.epochDb(Math.floor(now / this.ttlMs)).put(commandId, rec);
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
