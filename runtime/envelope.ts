/**
 * Commands as they travel, ids, and shard placement.
 */
import { randomBytes, randomUUID } from 'node:crypto';

/** A command on its way to an actor (what crosses threads and NATS). */
export interface CommandEnvelope {
  commandId: string;
  /** The command type, imperative: `OpenAccount`. */
  type: string;
  aggregateType: string;
  aggregateId: string;
  payload: unknown;
  userId: string | null;
  correlationId: string;
  /** The event or command that caused this command, if any. */
  causationId: string | null;
  shard: number;
  /** What the commandId promises: whether it is looked up, and recorded, for re-sends. */
  idUse: IdUse;
  /** The command's spans on the main thread, when tracing is on (never crosses threads). */
  trace?: EnvelopeTrace;
}

/**
 * What the node asks of a command's spans on the main thread (ops/tracing.ts's CommandTrace is
 * one): queued for a worker, handed to it (its traceparent), answered, ended.
 */
export interface EnvelopeTrace {
  enqueued(slot: number): void;
  routed(): string;
  answered(): void;
  end(error: unknown, result: CommandResult | null): void;
}

/**
 * How a command's id is used for idempotency:
 * - GENERATED: the node made it; it is never re-sent, so it is neither looked up nor recorded.
 * - GIVEN: the caller chose it (an idempotency key, or a retry): looked up first, so a re-send
 *   is answered with the first result, and recorded.
 * - FRESH: TroupeClient made it and sends it for the first time: recorded, so that a retry with
 *   it is answered once, but not looked up (two LMDB reads per command that could only miss).
 */
export const IdUse = { GENERATED: 0, GIVEN: 1, FRESH: 2 } as const;
export type IdUse = (typeof IdUse)[keyof typeof IdUse];

/**
 * Commands stream to a worker as flat arrays, COMMAND_STRIDE values each (the last is the
 * command's sequence number on its slot), and outcomes stream back the same way,
 * OUTCOME_STRIDE values each: structured clone then copies values, not thousands of small
 * objects with their keys.
 */
export const COMMAND_STRIDE = 11;
export const OUTCOME_STRIDE = 6;

/** Append one command to a flat batch. */
export function pushCommand(flat: unknown[], c: CommandEnvelope, seq: number): void {
  flat.push(c.commandId, c.type, c.aggregateType, c.aggregateId, c.payload, c.userId, c.correlationId, c.causationId, c.shard, c.idUse, seq);
}

/** Append one outcome: [seq, error, version, position, [eventId, eventType, ...], duplicate]. */
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
 * Append the outcome of a stored commit straight from its wire events: the events slot is then
 * [idPrefix, counter, eventType, ...] (odd length), and the caller's side formats the ids. A
 * counter crosses threads as a small number instead of a 36-character string, and the worker
 * formats no id the caller does not read.
 */
export function pushStoredOutcome(out: unknown[], seq: number, version: number, position: number, idPrefix: string, wire: readonly (readonly [string | number, string, ...unknown[]])[]): void {
  const flat = new Array<string | number>(1 + wire.length * 2);
  flat[0] = idPrefix;
  for (let i = 0; i < wire.length; i++) {
    flat[1 + 2 * i] = wire[i]![0];
    flat[2 + 2 * i] = wire[i]![1];
  }
  out.push(seq, null, version, position, flat, false);
}

/** Rebuild a CommandResult on the caller's side from the outcome at `b`. */
export function readOutcome(out: readonly unknown[], b: number, commandId: string, aggregateType: string, aggregateId: string): CommandResult {
  const version = out[b + 2] as number;
  const flat = out[b + 4] as (string | number)[];
  // Odd length: [idPrefix, counter or id, eventType, ...] (pushStoredOutcome); even: [id, eventType, ...].
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
    position: out[b + 3] as number, duplicate: out[b + 5] as boolean,
  };
}

/** Metadata a caller may attach to a command. */
export interface CommandMetadata {
  /** Idempotency key: re-sending the same id returns the first result and appends nothing. */
  commandId?: string;
  userId?: string;
  correlationId?: string;
  causationId?: string;
}

/** A command as one object: the form `send(type, id, command)` and the NATS client take. */
export interface Command extends CommandMetadata {
  type: string;
  payload?: unknown;
}

/**
 * Takes a command's outcome as the worker sent it, OUTCOME_STRIDE values at `out[b]` (the NATS
 * service copies them into its reply: no result object is built on the way), or a failure
 * raised on this thread (overload, stop, a lost worker).
 */
export interface OutcomeSink {
  outcome(out: readonly unknown[], b: number): void;
  failed(e: unknown): void;
}

/** What `send` resolves with once JetStream has acknowledged the command's events. */
export interface CommandResult {
  commandId: string;
  aggregateType: string;
  aggregateId: string;
  /** The actor's version (its number of events) after the command. */
  version: number;
  /** Each event's aggregate sequence number, type and id, in order. Empty for a no-op. */
  events: { eventId: string; eventType: string; sequence: number }[];
  /** Stream sequence of the JetStream message holding the events (0 when nothing was appended). */
  position: number;
  /** True when this is the stored result of an earlier send with the same commandId. */
  duplicate: boolean;
}

export function newId(): string {
  return randomUUID();
}

/**
 * UUID-shaped ids without a random draw per id: 74 random bits fixed per generator (one per
 * thread incarnation) and a 48-bit counter in the last group. In the log an event stores only
 * its counter; the message stores the prefix once (codec.ts). A UUID string costs ~0.8 µs to
 * msgpack-encode here; a small integer next to nothing (bench/micro).
 */
export class IdGenerator {
  /** `xxxxxxxx-xxxx-4xxx-yxxx-`: everything but the counter group. */
  readonly prefix: string;
  private counter = 0;

  constructor() {
    const b = randomBytes(10);
    b[6] = (b[6]! & 0x0f) | 0x40; // version 4 layout
    b[8] = (b[8]! & 0x3f) | 0x80; // RFC 4122 variant
    const h = b.toString('hex');
    this.prefix = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-`;
  }

  /** The next counter value; `format(n)` turns it into the id. */
  nextCounter(): number {
    return this.counter++;
  }

  next(): string {
    return formatId(this.prefix, this.counter++);
  }
}

export function formatId(prefix: string, counter: number): string {
  return prefix + counter.toString(16).padStart(12, '0');
}

/** FNV-1a over type and id: stable across processes, machines and Node versions. */
export function shardOf(aggregateType: string, aggregateId: string, shards: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < aggregateType.length; i++) {
    h ^= aggregateType.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= 0x1f;
  h = Math.imul(h, 0x01000193);
  for (let i = 0; i < aggregateId.length; i++) {
    h ^= aggregateId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % shards;
}
