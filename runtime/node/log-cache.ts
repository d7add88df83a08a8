/**
 * The log messages a shard's catch-up just read, kept for a while, within a byte bound.
 *
 * Right after a shard moves to this node (a take-over after its owner died, or a start on an
 * empty cache) nearly every command is for an actor that must first replay its commits from
 * the log (activation.ts): one JetStream API request per message, thousands at once, so the
 * shard answers nothing for seconds. The catch-up had just read those very messages; the
 * activations read them here instead. The newest messages are kept when the bound is reached
 * (an actor replays what follows its snapshot), and all are forgotten `KEEP_MS` after the
 * catch-up ended, or when the shard re-opens or closes.
 */

/** At most this many bytes of messages per shard (the newest ones). */
export const RECENT_LOG_BYTES = 4 * 1024 * 1024;
/** How long after the catch-up ended the messages are kept. */
export const RECENT_LOG_KEEP_MS = 30_000;

export class RecentLog {
  /** By log position; insertion order is position order (a catch-up reads in order). */
  private readonly byPosition = new Map<number, Uint8Array>();
  private bytes = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly maxBytes = RECENT_LOG_BYTES, private readonly keepMs = RECENT_LOG_KEEP_MS) {}

  get size(): number {
    return this.byPosition.size;
  }

  /** Keep a copy of the message at `position` (its buffer may be a view into a larger one). */
  add(position: number, data: Uint8Array): void {
    if (data.length > this.maxBytes) return;
    this.byPosition.set(position, data.slice());
    this.bytes += data.length;
    for (const [p, d] of this.byPosition) {
      if (this.bytes <= this.maxBytes) break;
      this.byPosition.delete(p);
      this.bytes -= d.length;
    }
  }

  get(position: number): Uint8Array | undefined {
    return this.byPosition.get(position);
  }

  /** The catch-up ended: forget the messages after `keepMs`. */
  hold(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.byPosition.size === 0) return;
    this.timer = setTimeout(() => this.clear(), this.keepMs);
    this.timer.unref?.();
  }

  clear(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.byPosition.clear();
    this.bytes = 0;
  }
}
