/**
 * Activation time: how long the first `query` of an actor takes on a freshly started node,
 * for actors with 10, 1,000 and 100,000 events, with and without a snapshot in LMDB.
 *
 * 1. A node writes the histories (OpenAccount, then Deposit × (N − 1), pipelined) and stops
 *    (a graceful stop writes a snapshot of every actor that moved).
 * 2. A new node on the same dataDir and stream: the first `query` of each actor is timed
 *    (snapshot, then the log after it: nothing). A second query shows the resident cost.
 * 3. The snapshots are deleted from LMDB (`<dataDir>/lmdb/<stream>`, db `snapshots`, key
 *    `['Account', id]`), a new node starts, and the first query replays the whole history
 *    from the log (the history index in LMDB names the messages to read).
 *
 * Each size has `repeats` actors; the table shows medians. Before the timed queries each node
 * activates one never-used actor (no snapshot, no history) to warm the path; its time is the
 * round-trip floor.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { open } from 'lmdb';
import { Troupe } from '../runtime/node/system.ts';
import type { ServerRef } from './troupe.ts';
import { ACCOUNT_MODULE } from './troupe.ts';
import { announcePhase } from './spawn.ts';

export interface ActivationSpec {
  readonly server: ServerRef;
  readonly stream: string;
  readonly subjectPrefix: string;
  readonly dataDir: string;
  readonly sizes: readonly number[];
  readonly repeats: number;
}

export interface ActivationSample {
  readonly id: string;
  readonly events: number;
  /** First query after start: the activation. */
  readonly firstMs: number;
  /** Second query: the actor is resident. */
  readonly residentMs: number;
  /** The version the query returned equals the number of events, and the balance is right. */
  readonly stateOk: boolean;
  /** Version of the snapshot in LMDB before the node started (0 when there was none). */
  readonly snapshotVersion: number;
}

export interface ActivationResult {
  readonly writeMs: number;
  readonly eventsWritten: number;
  readonly withSnapshot: readonly ActivationSample[];
  readonly withoutSnapshot: readonly ActivationSample[];
  /** First query of a never-used actor, per node (round-trip floor). */
  readonly emptyMs: { readonly withSnapshot: number; readonly withoutSnapshot: number };
  readonly jetstreamMessages: number;
}

export interface ActivationRow {
  readonly events: number;
  readonly snapshot: boolean;
  /** Median first-query time. */
  readonly ms: number;
  readonly samplesMs: readonly number[];
  readonly residentMs: number;
  readonly stateOk: boolean;
}

function startNode(spec: ActivationSpec): Promise<Troupe> {
  return Troupe.start({
    actors: [ACCOUNT_MODULE],
    servers: spec.server.servers,
    stream: spec.stream,
    subjectPrefix: spec.subjectPrefix,
    dataDir: spec.dataDir,
    serve: false,
  });
}

/** Round-robin over the sizes, so that no size is always measured first (coldest). */
function idsOf(spec: ActivationSpec): { id: string; events: number }[] {
  const out: { id: string; events: number }[] = [];
  for (let k = 0; k < spec.repeats; k++) {
    const sizes = k % 2 === 0 ? spec.sizes : [...spec.sizes].reverse();
    for (const events of sizes) out.push({ id: `act-${events}-${k}`, events });
  }
  return out;
}

function lmdbPath(spec: ActivationSpec): string {
  return join(spec.dataDir, 'lmdb', spec.stream);
}

/** Snapshot versions by id (0 when absent); with `remove`, delete them. Only while no node runs. */
async function snapshots(spec: ActivationSpec, ids: readonly string[], remove: boolean): Promise<Map<string, number>> {
  const root = open({ path: lmdbPath(spec), maxDbs: 32, mapSize: 2 ** 34 });
  try {
    const db = root.openDB<{ version?: number }, [string, string]>({ name: 'snapshots', sharedStructuresKey: Symbol.for('troupe.structures') });
    const out = new Map<string, number>();
    for (const id of ids) {
      const snap = db.get(['Account', id]);
      out.set(id, snap?.version ?? 0);
      if (remove && snap !== undefined) await db.remove(['Account', id]);
    }
    await root.flushed;
    return out;
  } finally {
    await root.close();
  }
}

const ms = (t0: number): number => performance.now() - t0;

async function measure(spec: ActivationSpec, targets: readonly { id: string; events: number }[], snaps: Map<string, number>): Promise<{ samples: ActivationSample[]; emptyMs: number }> {
  const node = await startNode(spec);
  try {
    let t = performance.now();
    await node.query('Account', 'act-never-used');
    const emptyMs = ms(t);
    // A second never-used actor, so the timed queries do not pay for the first one's warm-up.
    await node.query('Account', 'act-never-used-2');
    const samples: ActivationSample[] = [];
    for (const { id, events } of targets) {
      t = performance.now();
      const first = await node.query<{ opened: boolean; balance: number }>('Account', id);
      const firstMs = ms(t);
      t = performance.now();
      await node.query('Account', id);
      const residentMs = ms(t);
      samples.push({
        id,
        events,
        firstMs,
        residentMs,
        stateOk: first.version === events && first.state.opened && first.state.balance === events - 1,
        snapshotVersion: snaps.get(id) ?? 0,
      });
    }
    return { samples, emptyMs };
  } finally {
    await node.stop();
  }
}

/** Runs the whole activation experiment in this process (bench/child.ts mode `activation`). */
export async function runActivation(spec: ActivationSpec): Promise<ActivationResult> {
  const targets = idsOf(spec);
  const ids = targets.map((t) => t.id);
  try {
    announcePhase('write');
    const t0 = performance.now();
    let eventsWritten = 0;
    let jetstreamMessages = 0;
    const writer = await startNode(spec);
    try {
      for (const { id, events } of targets) {
        await writer.send('Account', id, 'OpenAccount', {});
        let left = events - 1;
        while (left > 0) {
          const n = Math.min(left, 8192);
          const sends: Promise<unknown>[] = new Array(n);
          for (let i = 0; i < n; i++) sends[i] = writer.send('Account', id, 'Deposit', { amount: 1 });
          await Promise.all(sends);
          left -= n;
        }
        eventsWritten += events;
      }
      jetstreamMessages = (await writer.journal.jsm.streams.info(spec.stream)).state.messages;
    } finally {
      await writer.stop();
    }
    const writeMs = ms(t0);

    announcePhase('with snapshot');
    const withSnaps = await snapshots(spec, ids, false);
    const withSnapshot = await measure(spec, targets, withSnaps);

    announcePhase('without snapshot');
    const removed = await snapshots(spec, ids, true);
    const left = await snapshots(spec, ids, false);
    for (const [id, v] of left) if (v !== 0) throw new Error(`the snapshot of ${id} is still there after removal`);
    const withoutSnapshot = await measure(spec, targets, new Map([...removed].map(([id]) => [id, 0])));

    return {
      writeMs,
      eventsWritten,
      withSnapshot: withSnapshot.samples,
      withoutSnapshot: withoutSnapshot.samples,
      emptyMs: { withSnapshot: withSnapshot.emptyMs, withoutSnapshot: withoutSnapshot.emptyMs },
      jetstreamMessages,
    };
  } finally {
    await rm(spec.dataDir, { recursive: true, force: true }).catch(() => {});
  }
}

function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** One row per (size, with/without snapshot): medians over the repeats. */
export function activationRows(r: ActivationResult): ActivationRow[] {
  const rows: ActivationRow[] = [];
  for (const [snapshot, samples] of [[true, r.withSnapshot], [false, r.withoutSnapshot]] as const) {
    const sizes = [...new Set(samples.map((s) => s.events))];
    for (const events of sizes) {
      const of = samples.filter((s) => s.events === events);
      rows.push({
        events,
        snapshot,
        ms: median(of.map((s) => s.firstMs)),
        samplesMs: of.map((s) => s.firstMs),
        residentMs: median(of.map((s) => s.residentMs)),
        stateOk: of.every((s) => s.stateOk && (!snapshot || s.snapshotVersion > 0)),
      });
    }
  }
  return rows;
}
