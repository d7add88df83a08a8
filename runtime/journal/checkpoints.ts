/**
 * What the LMDB cache knows about itself, in its `meta` database:
 *
 *   ['checkpoint', shard] → stream sequence up to which a shard's history and commands are complete
 *   ['stream']            → creation time of the stream this cache describes
 */
import type { Database, RootDatabase } from 'lmdb';

export class Checkpoints {
  private readonly meta: Database<unknown, (string | number)[]>;

  constructor(root: RootDatabase) {
    this.meta = root.openDB<unknown, (string | number)[]>({ name: 'meta' });
  }

  get(shard: number): number {
    return (this.meta.get(['checkpoint', shard]) as number | undefined) ?? 0;
  }

  put(shard: number, seq: number): void {
    void this.meta.put(['checkpoint', shard], seq);
  }

  streamIdentity(): string | undefined {
    return this.meta.get(['stream']) as string | undefined;
  }

  setStreamIdentity(identity: string): Promise<boolean> {
    return this.meta.put(['stream'], identity);
  }

  clear(): Promise<void> {
    return this.meta.clearAsync();
  }
}
