/**
 * The wire format of the log, and the only file that imports msgpackr.
 *
 * One JetStream message = one commit batch = plain msgpack array
 *   [FORMAT, commit, commit, ...]
 * and each commit (all the events one command decided, appended all-or-nothing) is
 *   [commandId, aggregateType, aggregateId, correlationId, userId|null, timestampMs, source,
 *    firstSequence, [[eventId, eventType, schemaVersion, payload], ...]]
 * Fields shared by a commit's events are written once; `decodeCommitBatch` expands every
 * event to the full envelope (`EventEnvelope`). Commits are encoded one by one as they are
 * decided (which also gives each commit's size for free) and a batch is their
 * concatenation behind an array header.
 */
import { Packr, Unpackr } from 'msgpackr';

export const FORMAT = 1;

const packr = new Packr({ useRecords: false, variableMapSize: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

/** A decided event as the log keeps it, with the full envelope. */
export interface EventEnvelope<P = unknown> {
  eventId: string;
  eventType: string;
  aggregateType: string;
  aggregateId: string;
  /** The aggregate's sequence number after this event (1 for its first event). */
  sequence: number;
  /** The event's schema version. */
  version: number;
  /** ISO-8601 time the command was decided. */
  timestamp: string;
  correlationId: string;
  /** The command that caused this event. */
  causationId: string;
  commandId: string;
  userId: string | null;
  source: string;
  /** JetStream stream sequence of the message that holds the event. */
  position: number;
  payload: P;
}

export type WireEvent = [eventId: string, eventType: string, schemaVersion: number, payload: unknown];
export type WireCommit = [
  commandId: string, aggregateType: string, aggregateId: string, correlationId: string, userId: string | null,
  timestampMs: number, source: string, firstSequence: number, events: WireEvent[],
];

export function encode(value: unknown): Buffer {
  return packr.pack(value);
}

export function decode<T = unknown>(bytes: Uint8Array): T {
  return unpackr.unpack(bytes) as T;
}

export function encodeCommit(commit: WireCommit): Buffer {
  return packr.pack(commit);
}

const batchScratch: unknown[] = [FORMAT];

/**
 * One message from many commits, in one pack() call: measured at ~1 µs per commit against
 * ~2 µs when each commit is packed alone and the parts concatenated (bench/micro).
 */
export function encodeBatch(commits: readonly WireCommit[]): Buffer {
  batchScratch.length = commits.length + 1;
  for (let i = 0; i < commits.length; i++) batchScratch[i + 1] = commits[i];
  const out = packr.pack(batchScratch);
  batchScratch.length = 1;
  return out;
}

/** Bytes a commit costs beyond its payloads, at most (ids, names, numbers, array headers). */
export const COMMIT_OVERHEAD = 160;
export const EVENT_OVERHEAD = 64;

/**
 * A cheap estimate of a JSON-like value's msgpack size, never far below the real size (strings
 * count as if every character took 3 bytes... capped at `limit`, where it stops counting).
 */
export function estimateSize(value: unknown, limit: number): number {
  let total = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0 && total <= limit) {
    const v = stack.pop();
    switch (typeof v) {
      case 'string': total += v.length + 5; break;
      case 'number': case 'boolean': case 'bigint': total += 9; break;
      case 'object':
        if (v === null) { total += 1; break; }
        if (ArrayBuffer.isView(v)) { total += v.byteLength + 5; break; }
        if (Array.isArray(v)) { total += 5; for (const x of v) stack.push(x); break; }
        for (const k in v as Record<string, unknown>) { total += k.length + 5; stack.push((v as Record<string, unknown>)[k]); }
        break;
      default: total += 1;
    }
  }
  return total;
}

export class CorruptBatchError extends Error {
  override name = 'CorruptBatchError';
}

export function decodeCommits(bytes: Uint8Array): WireCommit[] {
  const all = decode<unknown[]>(bytes);
  if (!Array.isArray(all) || all[0] !== FORMAT) {
    throw new CorruptBatchError(`not a Troupe commit batch (format ${Array.isArray(all) ? String(all[0]) : typeof all})`);
  }
  return all.slice(1) as WireCommit[];
}

const isoCache = { ms: -1, iso: '' };
export function isoTime(ms: number): string {
  if (ms !== isoCache.ms) {
    isoCache.ms = ms;
    isoCache.iso = new Date(ms).toISOString();
  }
  return isoCache.iso;
}

/** Expand one commit to full event envelopes. */
export function commitEvents(c: WireCommit, position: number): EventEnvelope[] {
  const [commandId, aggregateType, aggregateId, correlationId, userId, ts, source, first, events] = c;
  const timestamp = isoTime(ts);
  return events.map(([eventId, eventType, version, payload], i) => ({
    eventId, eventType, aggregateType, aggregateId, sequence: first + i, version, timestamp,
    correlationId, causationId: commandId, commandId, userId, source, position, payload,
  }));
}

/** Decode a message of the log into full event envelopes, in order. */
export function decodeCommitBatch(bytes: Uint8Array, position = 0): EventEnvelope[] {
  const out: EventEnvelope[] = [];
  for (const c of decodeCommits(bytes)) for (const e of commitEvents(c, position)) out.push(e);
  return out;
}
