/**
 * Snapshots and leaving memory. A snapshot only saves replay time (the log is the truth), so
 * none is awaited on the hot path:
 * - every `snapshotEvery` events, once the actor has no uncommitted commit (after an ack);
 * - on passivation (idle, or over the resident bound: worker.ts sweeps), then the cell is freed;
 * - for every resident actor that moved, on a graceful stop or a shard release;
 * - `sweep` picks the actors to passivate: idle ones, and the least recently used over the bound.
 *
 *   running ──passivate, moved since the last snapshot──▶ passivating ──snapshot written──▶ removed
 *      ▲                                                       │
 *      └──────────────used again, or the write failed──────────┘
 */
import { sealSnapshot } from '../contracts/sensitive.ts';
import type { Store } from '../journal/store.ts';
import type { ActorCell, CellMap } from './cell.ts';

/** After an acknowledged commit at `position`: snapshot when `snapshotEvery` events passed and nothing is pending. */
export function snapshotIfDue(store: Store, cell: ActorCell, position: number): void {
  if (cell.version - cell.snapshotVersion < cell.reg.def.snapshotEvery || cell.lastPending !== null) return;
  const def = cell.reg.def;
  void store.putSnapshot(def.type, cell.id, sealSnapshot(def.type, cell.id, { sv: def.stateVersion, version: cell.version, position, state: cell.state }));
  cell.snapshotVersion = cell.version;
}

/** Write a snapshot if the actor moved since the last one, then free it. `position`: the shard's last acknowledged message. */
export function passivate(store: Store, cells: CellMap, cell: ActorCell, position: number): void {
  if (cell.phase !== 'running' || cell.lastPending !== null || cell.stash !== null) return;
  const def = cell.reg.def;
  if (cell.version > cell.snapshotVersion) {
    cell.phase = 'passivating';
    cell.snapshotVersion = cell.version;
    store.putSnapshot(def.type, cell.id, sealSnapshot(def.type, cell.id, { sv: def.stateVersion, version: cell.version, position, state: cell.state }))
      .then(() => { if (cell.phase === 'passivating') cells.remove(cell); }, () => { cell.phase = 'running'; });
  } else {
    cells.remove(cell);
  }
}

/** Snapshot every actor that moved since its last snapshot (graceful stop, shard release). */
export function snapshotAll(store: Store, cells: CellMap, position: number): void {
  for (const cell of cells.values()) {
    if (cell.phase !== 'running' || cell.version <= cell.snapshotVersion) continue;
    const def = cell.reg.def;
    void store.putSnapshot(def.type, cell.id, sealSnapshot(def.type, cell.id, { sv: def.stateVersion, version: cell.version, position, state: cell.state }));
    cell.snapshotVersion = cell.version;
  }
}

/** The part of a shard the sweep reads (ShardHost). */
interface SweptShard {
  readonly state: string;
  readonly residentActors: number;
  readonly cells: CellMap;
  passivate(cell: ActorCell): void;
}

/**
 * Passivate actors idle for `idleActorMs`, and the least recently used when the worker holds
 * more than `maxResidentActors` (down to 90% of the bound). The worker runs it periodically,
 * and sooner when actors activate quickly (worker.ts).
 */
export function sweep(shards: Iterable<SweptShard>, idleActorMs: number, maxResidentActors: number): void {
  const list = [...shards];
  const now = Date.now();
  const idleBefore = now - idleActorMs;
  let resident = 0;
  for (const s of list) resident += s.residentActors;
  let lruBefore = -Infinity;
  if (resident > maxResidentActors) {
    // The cut-off that passivates the oldest (resident - 90% of the bound) actors, estimated
    // from an even sample instead of sorting every actor's last use.
    const step = Math.max(1, Math.floor(resident / 4096));
    const sample: number[] = [];
    let i = 0;
    for (const s of list) for (const c of s.cells.values()) if (i++ % step === 0) sample.push(c.lastUsed);
    sample.sort((a, b) => a - b);
    const evict = (resident - Math.floor(maxResidentActors * 0.9)) / resident;
    lruBefore = sample[Math.min(sample.length - 1, Math.floor(evict * sample.length))] ?? -Infinity;
  }
  for (const s of list) {
    if (s.state !== 'ready') continue;
    for (const c of s.cells.values()) {
      if (c.lastUsed < idleBefore || c.lastUsed < lruBefore) s.passivate(c);
    }
  }
}
