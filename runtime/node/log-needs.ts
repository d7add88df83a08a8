/**
 * One shard's part in mixed-version placement (journal/shard-needs.ts): keep the shard's
 * record of "event versions its log holds" ahead of the log, and refuse to serve a log this
 * node cannot read.
 *
 * - Appending: `wrote(contract)` is a set lookup per event; the first time the shard writes an
 *   event version above its record, the record is raised in KV and the shard's next append
 *   waits for it (`holding`, Appender.flush), so the record is never behind the log even if
 *   this node dies right after the append. If the KV write fails, the append goes ahead (the
 *   log is the authority; the next catch-up of the shard raises the record) and the write is
 *   tried again with the next such event.
 * - Catching up: `saw(commit)` notes the versions of every event read; `caughtUp()` raises the
 *   record to them, and throws a retryable SHARD_NOT_OWNED when the record names a version
 *   this node cannot read. The node then hands the shard to a node that can (placement sees
 *   the raised record), instead of failing on the actors one by one.
 */
import { ConcurrencyError } from '../errors.ts';
import { mergeReads, unreadable, type Reads } from '../placement.ts';
import { COMMIT, EVENT, type WireCommit } from '../wire.ts';
import type { ShardNeeds } from '../journal/shard-needs.ts';
import type { EventContract } from '../contracts/contract.ts';

export interface NeedsContext {
  /** The stream's records (null: no leases, a single node: nothing is tracked). */
  readonly store: ShardNeeds;
  /** What this node reads (Registry.reads). */
  readonly reads: Reads;
}

export class LogNeeds {
  /** Contracts whose current version the record covers. */
  private readonly covered = new Set<EventContract>();
  private recorded: Reads = {};
  private writing: Promise<void> | null = null;
  private found: Map<string, number> | null = null;

  constructor(private readonly shard: number, private readonly ctx: NeedsContext | null, private readonly wake: () => void) {}

  /** True while a raised record must reach KV before the shard appends again. */
  get holding(): boolean {
    return this.writing !== null;
  }

  /** The shard decided an event of `contract` (written at its current version). */
  wrote(contract: EventContract): void {
    if (this.covered.has(contract)) return;
    this.covered.add(contract);
    if (this.ctx === null) return;
    const key = `${contract.aggregateType}.${contract.eventType}`;
    if ((this.recorded[key] ?? 0) >= contract.version) return;
    this.recorded = mergeReads(this.recorded, { [key]: contract.version });
    this.record(contract);
  }

  private record(contract: EventContract): void {
    const ctx = this.ctx!;
    const before = this.writing ?? Promise.resolve();
    const write: Promise<void> = before.then(() => ctx.store.raise(this.shard, this.recorded)).then(
      (stored) => { this.recorded = mergeReads(this.recorded, stored); },
      () => { this.covered.delete(contract); },
    ).finally(() => {
      if (this.writing === write) {
        this.writing = null;
        this.wake();
      }
    });
    this.writing = write;
  }

  /** Catch-up begins: forget what was covered (the record may have moved while the shard was elsewhere). */
  catchingUp(): void {
    this.covered.clear();
    this.found = this.ctx === null ? null : new Map();
  }

  /** Catch-up read `c`: note the versions of its events. */
  saw(c: WireCommit): void {
    const found = this.found;
    if (found === null) return;
    const type = c[COMMIT.type];
    const events = c[COMMIT.events];
    for (let i = 0; i < events.length; i++) {
      const e = events[i]!;
      const key = `${type}.${e[EVENT.type]}`;
      if ((found.get(key) ?? 0) < e[EVENT.version]) found.set(key, e[EVENT.version]);
    }
  }

  /**
   * Catch-up read the whole log: raise the record to what it found, and throw a retryable
   * SHARD_NOT_OWNED when this node cannot read what the log holds.
   */
  async caughtUp(): Promise<void> {
    const ctx = this.ctx;
    const found = this.found;
    this.found = null;
    if (ctx === null || found === null) return;
    await this.writing;
    const seen: Reads = Object.fromEntries(found);
    let recorded = await ctx.store.read(this.shard) ?? {};
    if (mergeReads(recorded, seen) !== recorded) recorded = await ctx.store.raise(this.shard, seen);
    this.recorded = recorded;
    const missing = unreadable(ctx.reads, recorded);
    if (missing.length > 0) {
      throw new ConcurrencyError('SHARD_NOT_OWNED',
        `shard ${this.shard}'s log holds ${missing.join(', ')}, which this node's definitions cannot read; the shard goes to a node that can (deploy the newer definitions here to serve it)`,
        { shard: this.shard, unreadable: missing });
    }
  }
}
