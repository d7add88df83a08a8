/**
 * Bringing an actor into memory: its LMDB snapshot (unsealed and upcast to the current state
 * version), then the commits the history index lists after it, read from the log and folded.
 *
 *   new cell ──snapshot, no later commits──▶ running
 *       │
 *       └──commits after the snapshot──▶ activating (commands stash) ──replayed──▶ running (stash decided in order)
 *                                              └──the log failed, or the shard re-opened──▶ removed (stash failed, or re-submitted)
 */
import { decodeCommits } from '../journal/codec.ts';
import { InternalError, JournalUnavailableError, TroupeError, toWire } from '../errors.ts';
import { readMessage, readSubject, readerStalled, type Journal } from '../journal/journal.ts';
import { foldCommit, readSnapshot } from '../contracts/contract.ts';
import { COMMIT, lastSeqOf } from '../wire.ts';
import type { ActorCell, InboundCommand } from './cell.ts';
import type { ShardHost } from './shard.ts';
import type { RecentLog } from './log-cache.ts';

/** Activate `cell` on `host`: at once from its snapshot, or asynchronously when commits follow it (`cell.activated`). */
export function activate(host: ShardHost, cell: ActorCell): void {
  const { store } = host.ctx;
  host.ctx.actorActivated?.();
  const def = cell.reg.def;
  // Unsealed and upcast to the current state version, or undefined (rebuild from the log): contracts/contract.ts.
  const snap = readSnapshot(cell.reg, store.getSnapshot(def.type, cell.id), cell.id);
  const usable = snap !== undefined;
  const snapshotVersion = usable ? snap.version : 0;
  const entries = store.historyAfter(def.type, cell.id, snapshotVersion);
  if (entries.length === 0) {
    ready(cell, usable ? snap.state : def.initialState(), snapshotVersion, snapshotVersion);
    return;
  }
  cell.activated = replay(host, cell, usable ? snap.state : def.initialState(), snapshotVersion, entries);
  cell.activated.catch(() => {});
}

function ready(cell: ActorCell, state: unknown, version: number, snapshotVersion: number): void {
  cell.state = cell.pending = state;
  cell.version = cell.pendingVersion = version;
  cell.snapshotVersion = snapshotVersion;
  cell.phase = 'running';
  cell.lastUsed = Date.now();
}

/** Replay the commits after the snapshot, read from the log; then decide what waited. */
async function replay(host: ShardHost, cell: ActorCell, state: unknown, snapshotVersion: number, entries: readonly { position: number }[]): Promise<void> {
  const def = cell.reg.def;
  let version = snapshotVersion;
  try {
    for await (const { data } of messagesAt(host.ctx.journal, host.subject, host.shard, entries, host.recentLog)) {
      for (const c of decodeCommits(data)) {
        if (c[COMMIT.type] !== def.type || c[COMMIT.id] !== cell.id) continue;
        const first = c[COMMIT.firstSeq];
        const last = lastSeqOf(c);
        if (last <= version) continue;
        if (first !== version + 1) throw new InternalError(`${def.type} ${cell.id}: the log jumps from version ${version} to ${first}`, { aggregateType: def.type, aggregateId: cell.id });
        // Decrypted and upcast to the current version first (contracts/contract.ts); a promise only when keys must be loaded.
        state = await foldCommit(cell.reg, state, c);
        version = last;
      }
    }
    if (cell.generation !== host.generation) throw new JournalUnavailableError(`shard ${host.shard} re-opened during activation`, { shard: host.shard });
    ready(cell, state, version, snapshotVersion);
    host.decideStash(cell);
  } catch (e) {
    host.cells.remove(cell);
    const stash: InboundCommand[] = cell.stash ?? [];
    cell.stash = null;
    if (cell.generation !== host.generation) {
      for (const c of stash) host.submit(c);
      return;
    }
    const err = toWire(e instanceof TroupeError ? e : new JournalUnavailableError(`${def.type} ${cell.id} could not be activated: ${(e as Error).message}`, { aggregateType: def.type, aggregateId: cell.id }, e));
    for (const c of stash) c.reply(err, null);
    throw e;
  }
}

/**
 * The log messages at these positions, in order. Those the shard's last catch-up read are
 * taken from `recent` (log-cache.ts); of the others, a few are fetched one by one and many are
 * streamed from the shard's subject with an ordered consumer, which reads thousands of
 * messages in the time of a few dozen single gets.
 */
export async function* messagesAt(
  journal: Journal, subject: string, shard: number, entries: readonly { position: number }[], recent: RecentLog | null = null,
): AsyncGenerator<{ position: number; data: Uint8Array }> {
  const positions = [...new Set(entries.map((e) => e.position))].sort((a, b) => a - b);
  // Taken now: the recent messages may be forgotten while this generator waits.
  const have = new Map<number, Uint8Array>();
  if (recent !== null && recent.size > 0) {
    for (const p of positions) {
      const data = recent.get(p);
      if (data !== undefined) have.set(p, data);
    }
  }
  const missing = have.size === 0 ? positions : positions.filter((p) => !have.has(p));
  if (missing.length <= 16) {
    for (const position of positions) yield { position, data: have.get(position) ?? (await readMessage(journal, position)).data };
    return;
  }
  if (readerStalled(journal, 'elected')) {
    // Ordered consumers stall for a while after the stream elects a new leader: get each message, 32 at a time.
    for (let i = 0; i < missing.length; i += 32) {
      const got = await Promise.all(missing.slice(i, i + 32).map((p) => readMessage(journal, p)));
      for (const m of got) have.set(m.seq, m.data);
    }
    for (const position of positions) yield { position, data: have.get(position)! };
    return;
  }
  const wanted = new Set(missing);
  let found = 0;
  await readSubject(journal, subject, missing[0]!, missing[missing.length - 1]!, (data, seq) => {
    if (wanted.has(seq)) {
      have.set(seq, data);
      found++;
    }
  });
  if (found !== missing.length) {
    throw new JournalUnavailableError(`shard ${shard}: ${missing.length - found} log messages indexed in LMDB are missing from the stream`, { shard });
  }
  for (const position of positions) yield { position, data: have.get(position)! };
}
