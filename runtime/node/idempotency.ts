/**
 * Command ids of one shard: a command re-sent with the same id is answered with its first
 * result, and nothing is appended again.
 *
 * The idempotency key is (aggregateType, aggregateId, commandId): the same id sent to another
 * actor is another command, processed normally, in every shard. A command is answered once
 * within options.commandIdTtlMs (24 h by default; LMDB keeps ids for one to two TTLs); a
 * re-send after that is processed again.
 *
 *   in flight  decided, its append not yet acknowledged: a re-send waits for that append
 *   recent     acknowledged, its LMDB record not committed yet (store.ts batches index writes):
 *              the store's queue of records answers (Store.queuedCommand), indexed only once
 *              someone asks; a GIVEN id's record is also kept here, in `recentGiven`
 *   stored     LMDB (journal/store.ts), learned again from the log when a shard catches up
 *
 * The maps are keyed by commandId alone, so no key string is built per command; an id used by
 * two actors at once (rare) puts the second under a composite key in `others`. An id the node
 * made (GENERATED) touches none of them. An id TroupeClient made (FRESH) is unique: it is set
 * in flight without a look first, and looked up only among the GIVEN ids (a retry that
 * overtook it), kept in maps of their own that are empty most of the time; once stored it is
 * in no map (its record waits in the store's queue). While no id is shared, a delete is one
 * Map operation. Per FRESH command: one set and one delete on a map of the commits in flight;
 * a map of every command of the last second or two cost more in garbage collection than in
 * its own operations.
 */
import { readMessage, type Journal } from '../journal/journal.ts';
import { decodeCommits } from '../journal/codec.ts';
import { IdUse, type CommandResult } from '../envelope.ts';
import { toWire } from '../errors.ts';
import type { Store } from '../journal/store.ts';
import { COMMAND_RECORD, COMMIT, EVENT, type CommandRecord } from '../wire.ts';
import type { InboundCommand, PendingCommit } from './cell.ts';

/** Values keyed by commandId, scoped to an actor. */
abstract class ByCommand<V> {
  private readonly first = new Map<string, V>();
  /** Entries whose commandId `first` holds for another actor: `type \0 id \0 commandId`. */
  private readonly others = new Map<string, V>();

  protected abstract typeOf(v: V): string;
  protected abstract idOf(v: V): string;

  get(type: string, id: string, commandId: string): V | undefined {
    if (this.first.size === 0 && this.others.size === 0) return undefined;
    const v = this.first.get(commandId);
    if (v !== undefined && this.typeOf(v) === type && this.idOf(v) === id) return v;
    return this.others.size === 0 ? undefined : this.others.get(otherKey(type, id, commandId));
  }

  /** `unique`: no other actor can hold this id (TroupeClient's, or the node's own): set without looking. */
  set(commandId: string, v: V, unique: boolean): void {
    if (unique) {
      this.first.set(commandId, v);
      return;
    }
    const held = this.first.get(commandId);
    if (held === undefined || (this.typeOf(held) === this.typeOf(v) && this.idOf(held) === this.idOf(v))) this.first.set(commandId, v);
    else this.others.set(otherKey(this.typeOf(v), this.idOf(v), commandId), v);
  }

  delete(type: string, id: string, commandId: string): void {
    if (this.others.size === 0) {
      this.first.delete(commandId);
      return;
    }
    const held = this.first.get(commandId);
    if (held !== undefined && this.typeOf(held) === type && this.idOf(held) === id) this.first.delete(commandId);
    else this.others.delete(otherKey(type, id, commandId));
  }

  clear(): void {
    this.first.clear();
    this.others.clear();
  }
}

function otherKey(type: string, id: string, commandId: string): string {
  return `${type}\u0000${id}\u0000${commandId}`;
}

class PendingByCommand extends ByCommand<PendingCommit> {
  protected typeOf(pc: PendingCommit): string { return pc.cell.reg.def.type; }
  protected idOf(pc: PendingCommit): string { return pc.cell.id; }
}

class RecordsByCommand extends ByCommand<CommandRecord> {
  protected typeOf(rec: CommandRecord): string { return rec[COMMAND_RECORD.type]; }
  protected idOf(rec: CommandRecord): string { return rec[COMMAND_RECORD.id]; }
}

export class CommandIds {
  /** Commits in flight of FRESH ids; of GIVEN ids (retries, ids the caller chose: usually none). */
  private readonly inFlight = new PendingByCommand();
  private readonly inFlightGiven = new PendingByCommand();
  /**
   * Stored commands of GIVEN ids whose LMDB records are not committed yet. A FRESH id's record
   * is found in the store's queue (Store.queuedCommand) until LMDB has it: only a GIVEN id ever
   * looks for one there, so a FRESH command costs no map of its own once stored.
   */
  private readonly recentGiven = new RecordsByCommand();

  constructor(private readonly store: Store, private readonly journal: Journal, private readonly resultOf: (pc: PendingCommit) => CommandResult) {}

  /**
   * When `cmd` was already processed (or is in flight) for its actor, arrange for it to get
   * the first result and return true; nothing is decided or appended for it. The shard asks
   * right before it decides a command, also for one that waited (the shard opening, its actor
   * replaying, keys being made): two attempts of one commandId queued together are decided
   * once, the second follows the first.
   */
  answerDuplicate(cmd: InboundCommand): boolean {
    const idUse = cmd.idUse;
    if (idUse === IdUse.GENERATED) return false;
    const type = cmd.aggregateType;
    const id = cmd.aggregateId;
    const commandId = cmd.commandId;
    const given = idUse === IdUse.GIVEN;
    // FRESH: its retry (GIVEN) may have overtaken it (another queue, another path): the
    // shard's memory of GIVEN ids answers that, and costs nothing while it is empty. A FRESH
    // id is sent fresh once, so no other FRESH command holds it. LMDB is read for GIVEN ids only.
    const pending = this.inFlightGiven.get(type, id, commandId) ?? (given ? this.inFlight.get(type, id, commandId) : undefined);
    if (pending !== undefined) {
      (pending.followers ??= []).push(() => cmd.reply(null, this.resultOf(pending)));
      (pending.failFollowers ??= []).push((e) => cmd.reply(e, null));
      return true;
    }
    const rec = this.recentGiven.get(type, id, commandId) ?? (given ? this.store.queuedCommand(type, id, commandId) ?? this.store.getCommand(type, id, commandId) : undefined);
    if (rec === undefined) return false;
    this.storedResult(cmd.commandId, rec).then((r) => cmd.reply(null, r), (e) => cmd.reply(toWire(e), null));
    return true;
  }

  /** A commit decided for a command whose id is recorded (GIVEN or FRESH). */
  began(pc: PendingCommit): void {
    if (pc.cmd.idUse === IdUse.GIVEN) this.inFlightGiven.set(pc.commandId, pc, false);
    else this.inFlight.set(pc.commandId, pc, true);
  }

  /**
   * Its append was acknowledged at `position`: LMDB learns it (queued, batched; the queue
   * answers lookups until then). A GIVEN id's record also goes to `recentGiven`, and its
   * commandId and record to `done`, what `indexed` takes once LMDB has them (so the wait holds
   * two references per command, not the commit with its command and events).
   */
  stored(pc: PendingCommit, position: number, now: number, done: unknown[]): void {
    const type = pc.cell.reg.def.type;
    const id = pc.cell.id;
    const rec: CommandRecord = [type, id, pc.firstSeq, pc.lastSeq, position];
    if (pc.cmd.idUse === IdUse.GIVEN) {
      this.inFlightGiven.delete(type, id, pc.commandId);
      this.recentGiven.set(pc.commandId, rec, false);
      done.push(pc.commandId, rec);
    } else {
      this.inFlight.delete(type, id, pc.commandId);
    }
    this.store.rememberCommand(pc.commandId, rec, now);
  }

  /** The LMDB records of these GIVEN ids (`stored`'s `done`: commandId, record, ...) are committed: forget them here. */
  indexed(done: readonly unknown[]): void {
    for (let i = 0; i < done.length; i += 2) {
      const rec = done[i + 1] as CommandRecord;
      this.recentGiven.delete(rec[COMMAND_RECORD.type], rec[COMMAND_RECORD.id], done[i] as string);
    }
  }

  /** A commit read from the log while catching up (its record may be older than the TTL: then it is skipped). */
  replayed(commandId: string, rec: CommandRecord, timestampMs: number, cutoff: number): void {
    if (timestampMs >= cutoff) this.store.putCommand(commandId, rec, timestampMs);
  }

  /** The shard re-opens from the log: what was in flight failed; LMDB knows the rest. */
  clearInFlight(): void {
    this.inFlight.clear();
    this.inFlightGiven.clear();
  }

  clearRecent(): void {
    this.recentGiven.clear();
  }

  private async storedResult(commandId: string, rec: CommandRecord): Promise<CommandResult> {
    const type = rec[COMMAND_RECORD.type];
    const id = rec[COMMAND_RECORD.id];
    const first = rec[COMMAND_RECORD.firstSeq];
    const position = rec[COMMAND_RECORD.position];
    const msg = await readMessage(this.journal, position);
    const commit = decodeCommits(msg.data).find((c) => c[COMMIT.commandId] === commandId && c[COMMIT.type] === type && c[COMMIT.id] === id);
    const events = commit === undefined ? [] : commit[COMMIT.events].map((e, i) => ({ eventId: String(e[EVENT.id]), eventType: e[EVENT.type], sequence: first + i }));
    return { commandId, aggregateType: type, aggregateId: id, version: rec[COMMAND_RECORD.lastSeq], events, position, duplicate: true };
  }
}
