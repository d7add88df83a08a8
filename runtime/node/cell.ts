/**
 * What a shard holds in memory: its resident actors (ActorCell, CellMap), the commits they
 * decided and that wait for their append (PendingCommit), and the commands on their way
 * (InboundCommand), with the result a stored commit answers.
 */
import type { CommandEnvelope, CommandResult } from '../envelope.ts';
import { formatId } from '../envelope.ts';
import type { WireError } from '../errors.ts';
import { EVENT, type WireEvent, type WireTimerOp } from '../wire.ts';
import type { Registered } from '../contracts/registry.ts';
import type { WorkerCommandTrace } from '../ops/tracing.ts';

/** A command inside a worker, with where its outcome goes (no closure per command on the hot path). */
export interface InboundCommand extends CommandEnvelope {
  reply(error: WireError | null, result: CommandResult | null): void;
  /**
   * The command's commit is stored at `position`: the same answer as `reply(null, result)`,
   * without building the result (the hot path). Event ids are `idPrefix` + each event's counter.
   */
  replyStored(pc: PendingCommit, position: number, idPrefix: string): void;
  /** Spans of a traced command (ops/tracing.ts); null or absent when it carries no trace. */
  readonly spans?: WorkerCommandTrace | null;
}

export type Phase = 'activating' | 'running' | 'passivating';

/** One actor in memory. `state`/`version` are committed; `pending*` include decided, unacknowledged commits. */
export class ActorCell {
  state: unknown;
  version = 0;
  pending: unknown;
  pendingVersion = 0;
  snapshotVersion = 0;
  lastUsed = 0;
  phase: Phase = 'activating';
  stash: InboundCommand[] | null = null;
  /** Settles when an asynchronous activation (replay from the log) ends. */
  activated: Promise<void> | null = null;
  lastPending: PendingCommit | null = null;
  /**
   * Timers changed by commits not yet acknowledged: key → due time, or null when removed. A
   * firing checks it before the LMDB index (node/timers.ts); null when no commit is pending.
   */
  timerEdits: Map<string, number | null> | null = null;
  constructor(readonly reg: Registered, readonly id: string, readonly generation: number) {}
}

/** Resident actors by type, then id: no key string is built per command. */
export class CellMap {
  private readonly byType = new Map<string, Map<string, ActorCell>>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(type: string, id: string): ActorCell | undefined {
    return this.byType.get(type)?.get(id);
  }

  add(cell: ActorCell): void {
    const type = cell.reg.def.type;
    let ids = this.byType.get(type);
    if (ids === undefined) this.byType.set(type, (ids = new Map()));
    if (!ids.has(cell.id)) this.count++;
    ids.set(cell.id, cell);
  }

  /** Remove this very cell (not a newer one for the same actor). */
  remove(cell: ActorCell): void {
    const ids = this.byType.get(cell.reg.def.type);
    if (ids?.get(cell.id) === cell) {
      ids.delete(cell.id);
      this.count--;
    }
  }

  *values(): IterableIterator<ActorCell> {
    for (const ids of this.byType.values()) yield* ids.values();
  }

  clear(): void {
    this.byType.clear();
    this.count = 0;
  }
}

/** A decided commit waiting for its append: its commit tuple is written from these fields. */
export interface PendingCommit {
  cell: ActorCell;
  commandId: string;
  /** Its events as the log stores them: [id counter, type, schema version, stored payload]. */
  wire: WireEvent[];
  /** When it was decided (ms). */
  timestamp: number;
  /** Upper-ish estimate of the commit's encoded size. */
  size: number;
  firstSeq: number;
  lastSeq: number;
  stateAfter: unknown;
  cmd: InboundCommand;
  /** Replies decided after this commit that must not be given before it is stored. */
  followers: (() => void)[] | null;
  failFollowers: ((e: WireError) => void)[] | null;
  /** What the commit does to the actor's durable timers (wire.ts TIMER_*), or null. */
  timers: WireTimerOp[] | null;
}

/** The events of a pending commit as a result lists them (ids formatted here, on demand). */
export function eventsOf(pc: PendingCommit, idPrefix: string): { eventId: string; eventType: string; sequence: number }[] {
  const out = new Array<{ eventId: string; eventType: string; sequence: number }>(pc.wire.length);
  for (let i = 0; i < pc.wire.length; i++) {
    const w = pc.wire[i]!;
    const id = w[EVENT.id];
    out[i] = { eventId: typeof id === 'number' ? formatId(idPrefix, id) : id, eventType: w[EVENT.type], sequence: pc.firstSeq + i };
  }
  return out;
}

/** What `send` resolves with for a commit stored at `position`. */
export function commitResult(pc: PendingCommit, position: number, idPrefix: string, duplicate: boolean): CommandResult {
  return {
    commandId: pc.commandId, aggregateType: pc.cell.reg.def.type, aggregateId: pc.cell.id, version: pc.lastSeq,
    events: eventsOf(pc, idPrefix), position, duplicate,
  };
}

/** Add a reply to give once `pc` is stored (or the error it failed with). */
export function follow(pc: PendingCommit, cmd: InboundCommand, error: WireError | null, result: CommandResult | null): void {
  (pc.followers ??= []).push(() => cmd.reply(error, result));
  (pc.failFollowers ??= []).push((e) => cmd.reply(e, null));
}
