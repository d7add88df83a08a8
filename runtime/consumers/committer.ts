/**
 * Group commit for a consumer's LMDB records. Tasks hand over their writes and go on; one
 * transaction at a time takes everything queued meanwhile, in order. Until their transaction
 * commits, queued writes are visible to later tasks through `pending` (WriteSet reads look
 * there before LMDB), so a lane can handle its next event while the last one is written, and
 * the acks — which wait for the commit — never get ahead of the records.
 *
 * Measured on the project machine (2 cores; 51k–101k events in the log, no-op handler, one
 * event per task, concurrency 1): awaiting each task's own transaction gave ~270 events/s (an
 * fsync per event); group commit ~40–46k events/s (README, "Consumers", has the other shapes).
 */
import type { CommitEntry, ConsumerState } from './consumer-store.ts';
import { PendingWrites } from './consumer-store.ts';

export class Committer {
  readonly pending = new PendingWrites();
  private queue: { entry: CommitEntry; gen: number; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private flushing = false;
  private generation = 0;
  /** The error of a failed transaction: after it, nothing more is committed. */
  broken: unknown = null;

  constructor(private readonly state: ConsumerState, private readonly onBroken: (e: unknown) => void) {}

  /** True while a transaction is being written or tasks wait for one. */
  get busy(): boolean {
    return this.flushing;
  }

  /** Queue a task's records for the next transaction; resolves once committed. */
  commit(entry: CommitEntry): Promise<void> {
    if (this.broken !== null) return Promise.reject(this.broken);
    const gen = ++this.generation;
    if (entry.writes !== null) this.pending.add(entry.writes, gen);
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ entry, gen, resolve, reject });
      if (!this.flushing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0);
      try {
        await this.state.commit(batch.map((b) => b.entry));
      } catch (e) {
        // LMDB refused the write (disk full, ...). Later tasks built on these writes, so
        // nothing more can be committed or acked; the held messages go to the next instance.
        this.broken = e;
        for (const b of [...batch, ...this.queue.splice(0)]) b.reject(e);
        this.onBroken(e);
        break;
      }
      for (const b of batch) {
        if (b.entry.writes !== null) this.pending.committed(b.entry.writes, b.gen);
        b.resolve();
      }
    }
    this.flushing = false;
  }
}
