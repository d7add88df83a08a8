/**
 * Commands as they travel, ids, and shard placement.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Principal } from './principal.ts';

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
  /** The verified caller, for the actor's `authorize` rules; null or absent when there is none. */
  principal?: Principal | null;
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
 *   it is answered once, and looked up in the shard's memory alone (its retry may overtake it),
 *   never in LMDB (two reads per command that could only miss).
 */
export const IdUse = { GENERATED: 0, GIVEN: 1, FRESH: 2 } as const;
export type IdUse = (typeof IdUse)[keyof typeof IdUse];

/**
 * The rule for a command payload: a plain object, whose prototype is Object.prototype or null
 * (`{ amount: 5 }`, `Object.create(null)`). A Date, Map, Set, array, class instance or
 * primitive is refused with MALFORMED_COMMAND before anything is sent or appended: msgpack
 * and structured clone would each turn them into something else on the way (a Map into an
 * object, a class instance into its fields), so the actor would decide on another value than
 * the caller sent. An absent (undefined) payload is `{}`. The rule is about the payload
 * itself; its fields may hold any value the log's codec keeps.
 */
export function isPlainPayload(payload: unknown): payload is Record<string, unknown> {
  if (typeof payload !== 'object' || payload === null) return false;
  const proto = Object.getPrototypeOf(payload) as unknown;
  return proto === Object.prototype || proto === null;
}

/** What a refused payload is, for the message: "a Date", "an array", "null", "a number". */
export function describePayload(payload: unknown): string {
  if (payload === null) return 'null';
  if (Array.isArray(payload)) return 'an array';
  if (typeof payload !== 'object') return `a ${typeof payload}`;
  const name = (Object.getPrototypeOf(payload) as { constructor?: { name?: unknown } } | null)?.constructor?.name;
  return typeof name === 'string' && name !== '' ? `a ${name}` : 'an object with a custom prototype';
}

/** The message of MALFORMED_COMMAND for a payload that is not a plain object. */
export function payloadRefusal(aggregateType: string, commandType: string, payload: unknown): string {
  return `the payload of ${aggregateType}.${commandType} must be a plain object ({ ... }), got ${describePayload(payload)}`;
}

/** Metadata a caller may attach to a command. */
export interface CommandMetadata {
  /** Idempotency key: re-sending the same id returns the first result and appends nothing. */
  commandId?: string;
  /**
   * Who sent the command, when no principal or token says it. A node that verifies callers
   * (options.auth) ignores it: the events' userId is then the principal's id.
   */
  userId?: string;
  correlationId?: string;
  causationId?: string;
  /** In-process callers (`node.send`), who are trusted: the verified caller. Never taken from a remote request. */
  principal?: Principal;
  /** TroupeClient: a signed token (JWT) for this command, instead of the client's `token` option. */
  token?: string;
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

/**
 * The stream metadata key that records how many shards route into the stream: the node writes
 * it (journal.ts), a client reads it to address each request to its shard.
 */
export const SHARDS_METADATA = 'troupe.shards';

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
