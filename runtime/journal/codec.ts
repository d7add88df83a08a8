/**
 * The wire format of the log, and the only file that imports msgpackr.
 *
 * One JetStream message = one commit batch = plain msgpack array
 *   [FORMAT, idPrefix, commit, commit, ...]
 * and each commit (all the events one command decided, appended all-or-nothing) is
 *   [commandId, aggregateType, aggregateId, correlationId|null (= commandId), userId|null,
 *    timestampMs, source, firstSequence, [[eventId, eventType, schemaVersion, payload], ...],
 *    causationId|null (what caused the command: e.g. the event a workflow reacted to)]
 * An eventId is a UUID string, or an integer n meaning `idPrefix + n as 12 hex digits` (see
 * IdGenerator in envelope.ts). Fields shared by a commit's events are written once;
 * `decodeCommitBatch` expands every event to the full envelope (`EventEnvelope`). The offsets of
 * these tuples are named in wire.ts (COMMIT, EVENT, BATCH).
 */
import { Packr, Unpackr } from 'msgpackr';
import { beginCommitBatch, endCommitBatch, writeCommitBatch } from './batch-writer.ts';
import { formatId } from '../envelope.ts';
import { BATCH, COMMIT, EVENT, type WireCommit, type WireEvent } from '../wire.ts';

export type { WireCommit, WireEvent } from '../wire.ts';

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
  /** What caused that command (an event, for a workflow step), or null. */
  commandCausationId?: string | null;
  commandId: string;
  userId: string | null;
  source: string;
  /** JetStream stream sequence of the message that holds the event. */
  position: number;
  payload: P;
  /**
   * Sensitive fields of the payload that could not be decrypted (their key was destroyed, or
   * the reader holds no keys): they hold the redacted marker. Absent when there are none.
   */
  redacted?: string[];
}


export function encode(value: unknown): Buffer {
  return packr.pack(value);
}

export function decode<T = unknown>(bytes: Uint8Array): T {
  return unpackr.unpack(bytes) as T;
}

/**
 * A shard checkpoint's bytes (shared-checkpoints.ts): msgpack with records, so snapshot states
 * keep their Maps and plain objects apart, as LMDB stores them.
 */
const checkpointPackr = new Packr({ moreTypes: true });

export function encodeCheckpoint(value: unknown): Buffer {
  return checkpointPackr.pack(value);
}

export function decodeCheckpoint<T = unknown>(bytes: Uint8Array): T {
  return checkpointPackr.unpack(bytes) as T;
}

export function encodeCommit(commit: WireCommit): Buffer {
  return packr.pack(commit);
}

/**
 * One message from many commits, written by BatchWriter (batch-writer.ts): a writer for this
 * fixed layout, several times cheaper per commit than msgpackr's general pack() (bench/micro).
 */
export function encodeBatch(idPrefix: string, commits: readonly WireCommit[]): Buffer {
  return writeCommitBatch(FORMAT, idPrefix, commits);
}

/**
 * The same message written from the caller's fields (no commit tuples): `beginBatch`, then
 * `writeCommit` once per commit, then `endBatch` for the bytes (batch-writer.ts).
 */
export function beginBatch(idPrefix: string, commits: number): void {
  beginCommitBatch(FORMAT, idPrefix, commits);
}
export { writeCommit, endCommitBatch as endBatch } from './batch-writer.ts';

/** The same bytes through msgpackr, for comparison in tests and benchmarks. */
export function encodeBatchGeneric(idPrefix: string, commits: readonly WireCommit[]): Buffer {
  return packr.pack([FORMAT, idPrefix, ...commits]);
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

/** The commits of a message, with every eventId and correlationId spelled out. */
export function decodeCommits(bytes: Uint8Array): WireCommit[] {
  const all = decode<unknown[]>(bytes);
  if (!Array.isArray(all) || all[BATCH.format] !== FORMAT || typeof all[BATCH.idPrefix] !== 'string') {
    throw new CorruptBatchError(`not a Troupe commit batch (format ${Array.isArray(all) ? String(all[BATCH.format]) : typeof all})`);
  }
  const prefix = all[BATCH.idPrefix] as string;
  const commits = all.slice(BATCH.firstCommit) as WireCommit[];
  for (const c of commits) {
    if (c[COMMIT.correlationId] === null) c[COMMIT.correlationId] = c[COMMIT.commandId];
    for (const e of c[COMMIT.events]) {
      const id = e[EVENT.id];
      if (typeof id === 'number') e[EVENT.id] = formatId(prefix, id);
    }
  }
  return commits;
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
  const commandId = c[COMMIT.commandId];
  const aggregateType = c[COMMIT.type];
  const aggregateId = c[COMMIT.id];
  const correlationId = c[COMMIT.correlationId] ?? commandId;
  const userId = c[COMMIT.userId];
  const source = c[COMMIT.source];
  const first = c[COMMIT.firstSeq];
  const commandCausationId = c[COMMIT.causationId] ?? null;
  const timestamp = isoTime(c[COMMIT.timestamp]);
  return c[COMMIT.events].map((e, i) => ({
    eventId: String(e[EVENT.id]), eventType: e[EVENT.type], aggregateType, aggregateId, sequence: first + i, version: e[EVENT.version], timestamp,
    correlationId, causationId: commandId, commandCausationId, commandId, userId, source, position, payload: e[EVENT.payload],
  }));
}

/** Decode a message of the log into full event envelopes, in order. */
export function decodeCommitBatch(bytes: Uint8Array, position = 0): EventEnvelope[] {
  const out: EventEnvelope[] = [];
  for (const c of decodeCommits(bytes)) for (const e of commitEvents(c, position)) out.push(e);
  return out;
}
