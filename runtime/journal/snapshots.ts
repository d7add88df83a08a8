/**
 * Actor snapshots in the LMDB cache:  [type, id] → { sv: stateVersion, version, position, state }.
 * A lost snapshot only costs replay time: the actor is rebuilt from the log.
 */
import type { Database, RootDatabase } from 'lmdb';

export interface Snapshot {
  sv: number;
  version: number;
  position: number;
  state: unknown;
}

/**
 * A snapshot that went through contracts/sensitive.ts `sealSnapshot`. The mark exists only for
 * the compiler (nothing is stored for it): writing a snapshot that was not sealed does not
 * compile, so LMDB cannot be handed a sensitive value in the clear by mistake.
 */
export type SealedSnapshot = Snapshot & { readonly __sealed: true };

export class Snapshots {
  private readonly db: Database<Snapshot, [string, string]>;

  constructor(root: RootDatabase) {
    this.db = root.openDB({ name: 'snapshots', sharedStructuresKey: Symbol.for('troupe.structures') });
  }

  get(type: string, id: string): Snapshot | undefined {
    return this.db.get([type, id]);
  }

  /**
   * Write a snapshot as given, or remove the actor's snapshot when given null. The caller seals
   * first (contracts/sensitive.ts `sealSnapshot`): a state built from sensitive values is sealed
   * under the keys it was built with, and when one of them was destroyed meanwhile there is no
   * snapshot to write (null), so LMDB never holds a sensitive value in the clear and the actor
   * is rebuilt from the log next time.
   */
  put(type: string, id: string, snap: SealedSnapshot | null): Promise<boolean> {
    if (snap === null) return this.db.remove([type, id]).then(() => false);
    return this.db.put([type, id], snap);
  }

  /** Every stored snapshot of the actors `belongs` accepts (sealed as they were written). */
  *entries(belongs: (type: string, id: string) => boolean): IterableIterator<[string, string, SealedSnapshot]> {
    for (const { key, value } of this.db.getRange({})) if (belongs(key[0], key[1])) yield [key[0], key[1], value as SealedSnapshot];
  }

  /** Keep `snap` unless the stored snapshot of the actor is as new or newer (a shard checkpoint's restore). */
  putIfNewer(type: string, id: string, snap: SealedSnapshot): void {
    const held = this.db.get([type, id]);
    if (held === undefined || held.version < snap.version) void this.db.put([type, id], snap);
  }

  clear(): Promise<void> {
    return this.db.clearAsync();
  }
}
