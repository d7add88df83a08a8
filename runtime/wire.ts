/**
 * Every positional layout that crosses a thread or NATS, with its offsets named once. Arrays
 * of values instead of objects with keys: msgpack and structured clone then copy values, not
 * every object's keys (measured: packing command objects took ~10% of a client's CPU,
 * unpacking them ~5% of the node's main thread; per-command objects between threads cost more
 * than the flat arrays). Read and write these layouts only through the names below.
 *
 *   layout          where                                      values
 *   COMMIT          the log (journal/codec.ts, batch-writer)    one command's commit
 *   EVENT           inside a COMMIT                             one decided event
 *   TIMER_*         inside a COMMIT; LMDB (journal/timers.ts)   what a commit did to its actor's timers
 *   BATCH           one JetStream message                       [format, idPrefix, ...commits]
 *   COMMAND         main thread → worker (node/pool.ts)         COMMAND_STRIDE per command
 *   OUTCOME         worker → main thread, node → client         OUTCOME_STRIDE per command
 *   REQUEST         TroupeClient → node (remote/service.ts)     REQUEST_STRIDE per command
 *   READ            query / history request and reply           [aggregateType, aggregateId] → [error, value]
 *   COMMAND_RECORD  LMDB (journal/store.ts)                     where a processed command's commit is
 *
 * The bytes are those of earlier versions: a node and a client of the previous version still
 * understand each other, and a log written before reads the same.
 */
import { formatId, type CommandEnvelope, type CommandResult, type IdUse } from './envelope.ts';
import type { Principal } from './principal.ts';

// ── the log ──────────────────────────────────────────────────────────────────────────────────

/** A decided event as the log keeps it. `id` is a UUID string, or a counter (the batch's idPrefix + 12 hex digits). */
export type WireEvent = [eventId: string | number, eventType: string, schemaVersion: number, payload: unknown];
export const EVENT = { id: 0, type: 1, version: 2, payload: 3 } as const;

/**
 * All the events one command decided, appended all-or-nothing. `correlationId` is null when it
 * equals the commandId; `causationId` is what caused the command (e.g. the event a workflow
 * reacted to), absent or null when nothing did.
 */
export type WireCommit = [
  commandId: string, aggregateType: string, aggregateId: string, correlationId: string | null, userId: string | null,
  timestampMs: number, source: string, firstSequence: number, events: WireEvent[], commandCausationId?: string | null,
  timers?: WireTimerOp[] | null,
];
export const COMMIT = {
  commandId: 0, type: 1, id: 2, correlationId: 3, userId: 4, timestamp: 5, source: 6, firstSeq: 7, events: 8, causationId: 9, timers: 10,
} as const;

/**
 * What a commit did to its actor's durable timers (node/timers.ts), applied in order after its
 * events; absent when it did nothing to them. They are not events: a consumer never sees them.
 *
 *   SET     [0, key, dueAt, command, payload, every (0: one-shot), scheduledBy, correlationId, traceparent | null]
 *   CANCEL  [1, key]
 *   FIRED   [2, key, dueAt, missed, refused (the error code decide refused the firing with) | null]
 *
 * A firing's commit starts with FIRED (and, for a periodic timer, the SET of its next due
 * time); the timers its decide scheduled or cancelled follow. The LMDB index keeps SET tuples
 * as they are.
 */
export type WireTimerSet = [op: 0, key: string, dueAt: number, command: string, payload: unknown, every: number, scheduledBy: string, correlationId: string, traceparent: string | null];
export type WireTimerOp = WireTimerSet | [op: 1, key: string] | [op: 2, key: string, dueAt: number, missed: number, refused: string | null];
export const TIMER_OP = { SET: 0, CANCEL: 1, FIRED: 2 } as const;
export const TIMER_SET = { op: 0, key: 1, dueAt: 2, command: 3, payload: 4, every: 5, scheduledBy: 6, correlationId: 7, traceparent: 8 } as const;
export const TIMER_FIRED = { op: 0, key: 1, dueAt: 2, missed: 3, refused: 4 } as const;

/** One JetStream message: [format, idPrefix, commit, commit, ...]. */
export const BATCH = { format: 0, idPrefix: 1, firstCommit: 2 } as const;

/** A commit tuple from its fields (the generic encoder's input; the batch writer writes the same fields without it). */
export function commitTuple(
  commandId: string, type: string, id: string, correlationId: string, userId: string | null, timestampMs: number, source: string,
  firstSeq: number, events: WireEvent[], causationId: string | null, timers: WireTimerOp[] | null = null,
): WireCommit {
  const c: WireCommit = [commandId, type, id, correlationId === commandId ? null : correlationId, userId, timestampMs, source, firstSeq, events, causationId];
  if (timers !== null) c.push(timers);
  return c;
}

/** The sequence of a commit's last event. */
export function lastSeqOf(c: WireCommit): number {
  return c[COMMIT.firstSeq] + c[COMMIT.events].length - 1;
}

// ── main thread → worker ─────────────────────────────────────────────────────────────────────

/**
 * Commands stream to a worker as one flat array, COMMAND_STRIDE values each; `seq` is the
 * command's number on its slot (pool.ts), which its outcome carries back; `principal` is the
 * verified caller (principal.ts) or null, for the actor's `authorize` rules.
 */
export const COMMAND = {
  commandId: 0, type: 1, aggregateType: 2, aggregateId: 3, payload: 4, userId: 5, correlationId: 6, causationId: 7, shard: 8, idUse: 9, seq: 10,
  principal: 11,
} as const;
export const COMMAND_STRIDE = 12;

/** Append one command to a flat batch. */
export function pushCommand(flat: unknown[], c: CommandEnvelope, seq: number): void {
  flat.push(c.commandId, c.type, c.aggregateType, c.aggregateId, c.payload, c.userId, c.correlationId, c.causationId, c.shard, c.idUse, seq, c.principal ?? null);
}

/** The fields of the command at `b` of a flat batch (the worker's side; it keeps them on its own object). */
export interface CommandFields extends Omit<CommandEnvelope, 'trace'> {
  seq: number;
}

/** Fill `into` from the command at `b` (no object is made here: the caller's is filled). */
export function readCommand(flat: readonly unknown[], b: number, into: CommandFields): void {
  into.commandId = flat[b + COMMAND.commandId] as string;
  into.type = flat[b + COMMAND.type] as string;
  into.aggregateType = flat[b + COMMAND.aggregateType] as string;
  into.aggregateId = flat[b + COMMAND.aggregateId] as string;
  into.payload = flat[b + COMMAND.payload];
  into.userId = flat[b + COMMAND.userId] as string | null;
  into.correlationId = flat[b + COMMAND.correlationId] as string;
  into.causationId = flat[b + COMMAND.causationId] as string | null;
  into.shard = flat[b + COMMAND.shard] as number;
  into.idUse = flat[b + COMMAND.idUse] as IdUse;
  into.seq = flat[b + COMMAND.seq] as number;
  into.principal = flat[b + COMMAND.principal] as Principal | null;
}

// ── outcomes: worker → main thread, node → client ─────────────────────────────────────────────

/**
 * One command's outcome: [seq, error, version, position, events, duplicate]. `events` is
 * [eventId, eventType, ...] (even length), or [idPrefix, counter, eventType, ...] (odd length:
 * pushStoredOutcome), so a counter crosses as a small number and the reader formats the id.
 */
export const OUTCOME = { seq: 0, error: 1, version: 2, position: 3, events: 4, duplicate: 5 } as const;
export const OUTCOME_STRIDE = 6;

/** Append one outcome. */
export function pushOutcome(out: unknown[], seq: number, error: unknown, result: CommandResult | null): void {
  if (result === null) {
    out.push(seq, error, 0, 0, null, false);
    return;
  }
  const events = result.events;
  const flat = new Array<string>(events.length * 2);
  for (let i = 0; i < events.length; i++) {
    flat[2 * i] = events[i]!.eventId;
    flat[2 * i + 1] = events[i]!.eventType;
  }
  out.push(seq, null, result.version, result.position, flat, result.duplicate);
}

/**
 * Append the outcome of a stored commit straight from its wire events: the worker formats no
 * id the caller does not read.
 */
export function pushStoredOutcome(out: unknown[], seq: number, version: number, position: number, idPrefix: string, wire: readonly WireEvent[]): void {
  const flat = new Array<string | number>(1 + wire.length * 2);
  flat[0] = idPrefix;
  for (let i = 0; i < wire.length; i++) {
    flat[1 + 2 * i] = wire[i]![EVENT.id];
    flat[2 + 2 * i] = wire[i]![EVENT.type];
  }
  out.push(seq, null, version, position, flat, false);
}

/** Write command `i`'s outcome at its place (i × OUTCOME_STRIDE) of a reply: its seq is `i`. */
export function writeOutcome(out: unknown[], i: number, error: unknown, result: CommandResult | null): void {
  const at = i * OUTCOME_STRIDE;
  out[at + OUTCOME.seq] = i;
  out[at + OUTCOME.error] = error;
  if (result === null) {
    out[at + OUTCOME.version] = 0;
    out[at + OUTCOME.position] = 0;
    out[at + OUTCOME.events] = null;
    out[at + OUTCOME.duplicate] = false;
    return;
  }
  const events = result.events;
  const flat = new Array<string>(events.length * 2);
  for (let k = 0; k < events.length; k++) {
    flat[2 * k] = events[k]!.eventId;
    flat[2 * k + 1] = events[k]!.eventType;
  }
  out[at + OUTCOME.version] = result.version;
  out[at + OUTCOME.position] = result.position;
  out[at + OUTCOME.events] = flat;
  out[at + OUTCOME.duplicate] = result.duplicate;
}

/** The same for a stored commit, straight from its wire events (pushStoredOutcome's layout). */
export function writeStoredOutcome(out: unknown[], i: number, version: number, position: number, idPrefix: string, wire: readonly WireEvent[]): void {
  const flat = new Array<string | number>(1 + wire.length * 2);
  flat[0] = idPrefix;
  for (let k = 0; k < wire.length; k++) {
    flat[1 + 2 * k] = wire[k]![EVENT.id];
    flat[2 + 2 * k] = wire[k]![EVENT.type];
  }
  const at = i * OUTCOME_STRIDE;
  out[at + OUTCOME.seq] = i;
  out[at + OUTCOME.error] = null;
  out[at + OUTCOME.version] = version;
  out[at + OUTCOME.position] = position;
  out[at + OUTCOME.events] = flat;
  out[at + OUTCOME.duplicate] = false;
}

/** The outcome at `b`'s seq and error (null when it succeeded). */
export function outcomeSeq(out: readonly unknown[], b: number): number {
  return out[b + OUTCOME.seq] as number;
}
export function outcomeError<E>(out: readonly unknown[], b: number): E | null {
  return out[b + OUTCOME.error] as E | null;
}

/** Rebuild a CommandResult on the caller's side from the (successful) outcome at `b`. */
export function readOutcome(out: readonly unknown[], b: number, commandId: string, aggregateType: string, aggregateId: string): CommandResult {
  const version = out[b + OUTCOME.version] as number;
  const flat = out[b + OUTCOME.events] as (string | number)[];
  const from = flat.length % 2;
  const prefix = from === 1 ? flat[0] as string : '';
  const n = (flat.length - from) / 2;
  const events = new Array<{ eventId: string; eventType: string; sequence: number }>(n);
  for (let i = 0; i < n; i++) {
    const id = flat[from + 2 * i]!;
    events[i] = { eventId: typeof id === 'number' ? formatId(prefix, id) : id, eventType: flat[from + 2 * i + 1] as string, sequence: version - n + 1 + i };
  }
  return {
    commandId, aggregateType, aggregateId, version, events,
    position: out[b + OUTCOME.position] as number, duplicate: out[b + OUTCOME.duplicate] as boolean,
  };
}

// ── TroupeClient → node ──────────────────────────────────────────────────────────────────────

/**
 * A command request is msgpack `[protocol, commands]`:
 * - PROTOCOL (1): `commands` is an array of command objects (node-to-node forwarding);
 * - FLAT (3): one flat array, REQUEST_STRIDE values per command (what TroupeClient sends),
 *   absent values as nil. `fresh` is true when the client made the commandId and sends it for
 *   the first time: the node records it without looking it up (IdUse.FRESH, envelope.ts);
 * - FLAT_2 (2): the same without `fresh` (REQUEST_STRIDE_2 values; clients before FLAT):
 *   every commandId is looked up.
 */
export const PROTOCOL = 1;
export const FLAT_2 = 2;
export const FLAT = 3;
/** The request message: [protocol, commands]. A refusal of the whole request is answered as `{ error }`. */
export const REQUEST_MESSAGE = { protocol: 0, commands: 1 } as const;
export const REQUEST = {
  commandId: 0, type: 1, aggregateType: 2, aggregateId: 3, payload: 4, userId: 5, correlationId: 6, causationId: 7, traceparent: 8, fresh: 9,
} as const;
export const REQUEST_STRIDE = 10;
export const REQUEST_STRIDE_2 = 9;

/** A request message: [protocol, commands]. */
export function requestMessage(protocol: number, commands: unknown[]): [number, unknown[]] {
  return [protocol, commands];
}

/** Append one command to a FLAT request. */
export function pushRequest(
  flat: unknown[], commandId: string, type: string, aggregateType: string, aggregateId: string, payload: unknown,
  userId: string | null, correlationId: string | null, causationId: string | null, traceparent: string | null, fresh: boolean,
): void {
  flat.push(commandId, type, aggregateType, aggregateId, payload, userId, correlationId, causationId, traceparent, fresh);
}

/** A command of a request, as an object without the absent fields. */
export interface RequestCommand {
  commandId?: string;
  type: string;
  aggregateType: string;
  aggregateId: string;
  payload?: unknown;
  userId?: string;
  correlationId?: string;
  causationId?: string;
  traceparent?: string;
  fresh?: boolean;
}

/** The commands of a FLAT (or FLAT_2) request, or null when its length is not a whole number of commands. */
export function readRequest(flat: readonly unknown[], stride: number): RequestCommand[] | null {
  if (flat.length % stride !== 0) return null;
  const out = new Array<RequestCommand>(flat.length / stride);
  for (let i = 0, b = 0; b < flat.length; i++, b += stride) {
    const c = { type: flat[b + REQUEST.type], aggregateType: flat[b + REQUEST.aggregateType], aggregateId: flat[b + REQUEST.aggregateId], payload: flat[b + REQUEST.payload] } as RequestCommand;
    if (flat[b + REQUEST.commandId] != null) c.commandId = flat[b + REQUEST.commandId] as string;
    if (flat[b + REQUEST.userId] != null) c.userId = flat[b + REQUEST.userId] as string;
    if (flat[b + REQUEST.correlationId] != null) c.correlationId = flat[b + REQUEST.correlationId] as string;
    if (flat[b + REQUEST.causationId] != null) c.causationId = flat[b + REQUEST.causationId] as string;
    if (flat[b + REQUEST.traceparent] != null) c.traceparent = flat[b + REQUEST.traceparent] as string;
    if (stride === REQUEST_STRIDE && flat[b + REQUEST.fresh] === true) c.fresh = true;
    out[i] = c;
  }
  return out;
}

// ── reads: query and history ────────────────────────────────────────────────────────────────

/** A read request is [aggregateType, aggregateId]; its reply [error | null, value | null]. */
export const READ = { aggregateType: 0, aggregateId: 1 } as const;
export const READ_REPLY = { error: 0, value: 1 } as const;

export function readRequestOf(aggregateType: string, aggregateId: string): [string, string] {
  return [aggregateType, aggregateId];
}

/** The [aggregateType, aggregateId] of a decoded read request, or null when it is not one. */
export function parseReadRequest(body: unknown): [string, string] | null {
  if (!Array.isArray(body)) return null;
  const type: unknown = body[READ.aggregateType];
  const id: unknown = body[READ.aggregateId];
  return typeof type === 'string' && typeof id === 'string' ? [type, id] : null;
}

// ── LMDB ─────────────────────────────────────────────────────────────────────────────────────

/** Where a processed command's commit lives: [aggregateType, aggregateId, firstSeq, lastSeq, position]. */
export type CommandRecord = [aggregateType: string, aggregateId: string, firstSeq: number, lastSeq: number, position: number];
export const COMMAND_RECORD = { type: 0, id: 1, firstSeq: 2, lastSeq: 3, position: 4 } as const;
