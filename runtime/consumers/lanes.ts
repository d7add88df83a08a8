/**
 * Per-aggregate order: the lanes a pipeline schedules, and the gate that keeps an aggregate's
 * later events waiting after a restart.
 *
 * A lane holds one aggregate's matching events that are in memory, sorted by sequence; it runs
 * one task at a time. Two things make a lane's head wait (pipeline.ts `headReady`):
 * - the aggregate's failure record (LMDB): while one of its events is failing, later ones wait;
 * - the RestartGate: after a restart, the aggregate's events that the previous instance
 *   received and did not ack (JetStream redelivers them after newer messages) come first.
 */
import type { EventEnvelope } from '../journal/codec.ts';
import type { FailureRecord } from './consumer-store.ts';
import type { DeliveryHandle } from './handler.ts';

/** One delivered message in memory, until every matching event in it is settled. */
export interface Delivery {
  seq: number;
  handle: DeliveryHandle;
  bytes: number;
  /** Events not settled yet. */
  open: number;
  /** 0, or when the earliest event that must be retried is due (the message is nak'd until then). */
  retryAt: number;
}

export interface Item {
  e: EventEnvelope;
  d: Delivery;
}

export interface Lane {
  key: string;
  type: string;
  id: string;
  items: Item[];
  busy: boolean;
  /** The aggregate's failing event, as recorded in LMDB (loaded when the lane is created). */
  failure: FailureRecord | undefined;
  /** After a batch failed: run this lane's head alone, to find which event is at fault. */
  solo: boolean;
  /** Tasks of this lane whose commit is not written yet: the lane stays in memory until then. */
  committing: number;
}

/** A lane's share of a task: its first `n` items. */
export interface Segment {
  lane: Lane;
  n: number;
}

export function laneKey(aggregateType: string, aggregateId: string): string {
  return `${aggregateType}\u0000${aggregateId}`;
}

/** Insert keeping the lane sorted by aggregate sequence (nearly always an append); false for an event already there. */
export function insertSorted(items: Item[], item: Item): boolean {
  const s = item.e.sequence;
  let i = items.length;
  while (i > 0 && items[i - 1]!.e.sequence > s) i--;
  if (i > 0 && items[i - 1]!.e.eventId === item.e.eventId) return false;
  items.splice(i, 0, item);
  return true;
}

/**
 * After a restart, per aggregate, the sequences of its events that the previous instance
 * received and did not ack (read from the stream between the consumer's ack floor and its last
 * delivery). A later event of the aggregate waits until these were handled, or until `until`
 * (then the gate opens for everyone, reported through onError).
 */
export class RestartGate {
  private readonly expected = new Map<string, number[]>();
  until = 0;

  constructor(private readonly consumer: string, private readonly timeoutMs: number, private readonly onError: (e: unknown) => void) {}

  arm(now: number): void {
    this.until = now + this.timeoutMs;
  }

  /** Events come in log order, so each aggregate's list stays sorted. */
  expect(e: EventEnvelope): void {
    const key = laneKey(e.aggregateType, e.aggregateId);
    const list = this.expected.get(key);
    if (list === undefined) this.expected.set(key, [e.sequence]);
    else if (list[list.length - 1]! < e.sequence) list.push(e.sequence);
  }

  /** Events still awaited. */
  get size(): number {
    let n = 0;
    for (const l of this.expected.values()) n += l.length;
    return n;
  }

  /** The smallest awaited sequence of an aggregate, or Infinity. */
  first(key: string, now: number): number {
    if (this.expected.size === 0) return Infinity;
    const list = this.expected.get(key);
    if (list === undefined) return Infinity;
    if (now > this.until) {
      this.onError(new Error(`consumer ${this.consumer}: ${this.size} events un-acked before the restart were not redelivered within ${this.timeoutMs} ms; later events of their aggregates go ahead`));
      this.expected.clear();
      return Infinity;
    }
    return list[0]!;
  }

  handled(key: string, sequence: number): void {
    if (this.expected.size === 0) return;
    const list = this.expected.get(key);
    if (list === undefined) return;
    const i = list.indexOf(sequence);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.expected.delete(key);
  }

  /** How many items from the head of a ready lane may run together: up to a gap of awaited events. */
  runnablePrefix(lane: Lane, budget: number): number {
    const max = Math.min(budget, lane.items.length);
    const list = this.expected.size === 0 ? undefined : this.expected.get(lane.key);
    if (list === undefined) return max;
    let k = 0;
    for (let i = 0; i < max; i++) {
      const s = lane.items[i]!.e.sequence;
      while (k < list.length && list[k]! < s) {
        // An awaited event comes before this item and is not in memory yet.
        if (i > 0) return i;
        k++;
      }
      if (k < list.length && list[k] === s) k++;
    }
    return max;
  }
}
