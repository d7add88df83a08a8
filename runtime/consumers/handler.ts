/**
 * What a consumer's handler sees: the handler types, its context (reads and writes that commit
 * atomically with the events' de-dup marks), the delivery a pipeline works on, and the
 * version-check helper.
 */
import type { Database } from 'lmdb';
import type { EventEnvelope } from '../journal/codec.ts';
import type { ConsumerState, ConsumerStore, Key, WriteSet } from './consumer-store.ts';
import { isTroupeError } from '../errors.ts';
import type { EventTransform } from './reader.ts';
import type { HeaderLike } from '../ops/tracing.ts';

/** One delivery of a log message, as the pipeline needs it. */
export interface DeliveryHandle {
  readonly seq: number;
  readonly subject: string;
  readonly deliveryCount: number;
  ack(): void;
  nak(delayMs: number): void;
  working(): void;
  headers(): Record<string, string[]>;
  /** The message's headers as they came (trace context for the consume span). */
  readonly rawHeaders: HeaderLike | undefined;
}

/** What a handler gets besides the event(s). */
export interface HandlerContext {
  readonly consumer: string;
  /** 1 on the first attempt at this event (in batch mode: the highest among the batch). */
  readonly attempt: number;
  /** Aborted when the consumer stops. */
  readonly signal: AbortSignal;
  /** The consumer's LMDB environment: open your own databases with `store.db(name)`. */
  readonly store: ConsumerStore;
  /** Read, seeing this task's own writes. */
  get<V = unknown>(db: Database, key: Key): V | undefined;
  /** Write; committed in the same LMDB transaction as the event's de-dup mark, or not at all. */
  put(db: Database, key: Key, value: unknown): void;
  remove(db: Database, key: Key): void;
  /** The version-check helper: the last sequence recorded for an aggregate with setVersion (0 if none). */
  version(aggregateType: string, aggregateId: string): number;
  setVersion(aggregateType: string, aggregateId: string, sequence: number): void;
}

export type EventHandler = (event: EventEnvelope, ctx: HandlerContext) => unknown;
export type BatchHandler = (events: EventEnvelope[], ctx: HandlerContext) => unknown;
/** Applied to every event before the handler sees it: upcasting and decryption (`eventReader()` of reader.ts). */
export type { EventTransform };

/** The context of one task: its handler calls read and write through the task's WriteSet. */
export class TaskContext implements HandlerContext {
  attempt = 1;
  readonly store: ConsumerStore;

  constructor(readonly consumer: string, readonly signal: AbortSignal, private readonly state: ConsumerState, private readonly ws: WriteSet) {
    this.store = state.store;
  }

  get<V = unknown>(db: Database, key: Key): V | undefined {
    return this.ws.get<V>(db, key);
  }

  put(db: Database, key: Key, value: unknown): void {
    this.ws.put(db, key, value);
  }

  remove(db: Database, key: Key): void {
    this.ws.remove(db, key);
  }

  version(aggregateType: string, aggregateId: string): number {
    return this.ws.get<number>(this.state.versions as unknown as Database, [aggregateType, aggregateId]) ?? 0;
  }

  setVersion(aggregateType: string, aggregateId: string, sequence: number): void {
    this.ws.put(this.state.versions as unknown as Database, [aggregateType, aggregateId], sequence);
  }
}

/** What a retry can fix: everything except errors that say they are not retryable (validation, rejections). */
export function defaultIsRetryable(e: unknown): boolean {
  return !(isTroupeError(e) && e.retryable === false);
}

/**
 * The version check for handlers that keep per-aggregate versions themselves:
 * `apply` when the event is the next one, `duplicate` when it was applied already,
 * `gap` when events are missing in between (they were filtered out, or come later).
 */
export function checkVersion(lastApplied: number, event: Pick<EventEnvelope, 'sequence'>): 'apply' | 'duplicate' | 'gap' {
  if (event.sequence <= lastApplied) return 'duplicate';
  return event.sequence === lastApplied + 1 ? 'apply' : 'gap';
}
