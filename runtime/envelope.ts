/**
 * Commands as they travel, ids, and shard placement.
 */
import { randomUUID } from 'node:crypto';

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
}

/** Metadata a caller may attach to a command. */
export interface CommandMetadata {
  /** Idempotency key: re-sending the same id returns the first result and appends nothing. */
  commandId?: string;
  userId?: string;
  correlationId?: string;
  causationId?: string;
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
