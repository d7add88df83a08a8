/**
 * Durable timers: firing the timers of the shards a worker hosts.
 *
 * An actor schedules a timer in decide (`ctx.schedule`, decide.ts); the timer travels in the
 * same commit as the command's events (wire.ts TIMER_*) and the shard's LMDB index learns it on
 * the ack, or from the log when the shard catches up (journal/timers.ts). When it falls due,
 * the shard sends the timer's command to the actor itself:
 *
 *   index ──soonest WINDOW per shard──▶ window ──due──▶ firing (a command with a deterministic id)
 *                                                          │ stored: its commit holds FIRED (and, for a
 *                                                          │ periodic timer, the SET of the next due time)
 *                                                          └ failed (shard broke, no ack): back in the window, retried
 *
 * - One setTimeout per worker, to the soonest due time of its shards (TimerClock); each tick
 *   fires at most TICK_FIRINGS, and no more than MAX_IN_FLIGHT firings wait for their commits
 *   at once: the normal command path gives the backpressure.
 * - Memory: per shard, a window of at most WINDOW soonest timers; the rest stay in LMDB and are
 *   read when the window runs dry. A million pending timers cost their LMDB entries only.
 * - A firing's commandId is derived from (key, due time, scheduling command): a firing stored
 *   but not acknowledged (a crash, a lost ack) is answered as a duplicate when it is sent
 *   again, and after a restart the index, rebuilt from the log, no longer holds it.
 * - A firing that decide refuses still consumes the timer: its commit has no events and its
 *   FIRED op names the refusal's code. A firing whose timer was cancelled or replaced in the
 *   meantime (by a commit not yet acknowledged when it was taken) is dropped without a commit.
 * - Periodic timers that missed due times (the shard was down) fire once, with `missed` = the
 *   number of later due times that passed, and re-arm at the first due time after now.
 */
import type { CommandResult } from '../envelope.ts';
import { IdUse } from '../envelope.ts';
import type { WireError } from '../errors.ts';
import type { TimerFiring } from '../define.ts';
import { byDue, type DueTimer, type TimerIndex } from '../journal/timers.ts';
import { TIMER_OP, TIMER_SET, TIMER_FIRED, type WireTimerOp, type WireTimerSet } from '../wire.ts';
import { commitResult, type InboundCommand, type PendingCommit } from './cell.ts';

/** Timers of a shard kept in memory: its soonest ones. */
export const WINDOW = 256;
/** Firings sent per tick, at most. */
export const TICK_FIRINGS = 512;
/** Firings of a worker waiting for their commits, at most. */
export const MAX_IN_FLIGHT = 4096;
/** After a firing failed (the shard broke, the log did not answer), the shard's next firing waits this long. */
export const RETRY_MS = 1000;
/** setTimeout's largest delay. */
const MAX_DELAY = 2 ** 31 - 1;

/** The commandId of the firing of timer `key` due at `dueAt`, scheduled by `scheduledBy`. */
export function timerCommandId(key: string, dueAt: number, scheduledBy: string): string {
  return `timer:${dueAt.toString(36)}:${fnv(scheduledBy)}:${key}`;
}

function fnv(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(36);
}

/** Later due times of a periodic timer that passed by `now`, beyond `dueAt` (0 for one-shot timers). */
export function missedOf(dueAt: number, every: number, now: number): number {
  return every > 0 && now > dueAt ? Math.floor((now - dueAt) / every) : 0;
}

/**
 * The ops a firing's commit starts with: FIRED, and for a periodic timer the SET of its next
 * due time (the first one after `now`), with the rest of the timer unchanged.
 */
export function firedOps(rec: WireTimerSet, missed: number, refused: string | null): WireTimerOp[] {
  const key = rec[TIMER_SET.key];
  const dueAt = rec[TIMER_SET.dueAt];
  const ops: WireTimerOp[] = [[TIMER_OP.FIRED, key, dueAt, missed, refused]];
  const every = rec[TIMER_SET.every];
  if (every > 0) {
    const next = rec.slice() as WireTimerSet;
    next[TIMER_SET.dueAt] = dueAt + (missed + 1) * every;
    ops.push(next);
  }
  return ops;
}

/** The key a commit's timer op is about. */
export function opKey(op: WireTimerOp): string {
  return op[0] === TIMER_OP.FIRED ? op[TIMER_FIRED.key] : op[TIMER_SET.key];
}

/** A pending timer as `troupe timers` and `node.timers()` list it. */
export interface PendingTimer {
  key: string;
  /** ISO-8601 due time. */
  dueAt: string;
  command: string;
  payload: unknown;
  /** ms between firings of a periodic timer; absent for a one-shot timer. */
  every?: number;
  scheduledBy: string;
}

export function pendingTimer(rec: WireTimerSet): PendingTimer {
  const t: PendingTimer = {
    key: rec[TIMER_SET.key], dueAt: new Date(rec[TIMER_SET.dueAt]).toISOString(), command: rec[TIMER_SET.command],
    payload: rec[TIMER_SET.payload], scheduledBy: rec[TIMER_SET.scheduledBy],
  };
  if (rec[TIMER_SET.every] > 0) t.every = rec[TIMER_SET.every];
  return t;
}

function actorKey(type: string, id: string, key: string): string {
  return `${type}\u0000${id}\u0000${key}`;
}

/** What a worker counts of its timers (ops/metrics.ts WorkerMetrics). */
export interface TimerMeter {
  timersPending: number;
  timerFired(lateMs: number): void;
}

/** The timers of one shard held in memory: its soonest (WINDOW), and the firings under way. */
export class ShardTimers {
  /** Soonest first; none of them firing. */
  private window: DueTimer[] = [];
  /** Whether LMDB may hold timers after the window's last (the window was cut at WINDOW). */
  private cut = false;
  private readonly firing = new Map<string, DueTimer>();
  private holdUntil = 0;
  /** Timers the shard holds (the gauge's part). */
  private count = 0;
  loaded = false;

  constructor(private readonly shard: number, private readonly index: TimerIndex, private readonly meter: TimerMeter | null) {}

  /** The shard caught up (its LMDB writes are committed): count its timers, read its soonest. */
  load(): void {
    this.clear();
    this.setCount(this.index.count(this.shard));
    this.reload();
    this.loaded = true;
  }

  /** The shard closed or broke: forget what is in memory (LMDB keeps the timers). */
  clear(): void {
    this.window = [];
    this.cut = false;
    this.firing.clear();
    this.setCount(0);
    this.loaded = false;
  }

  private setCount(n: number): void {
    if (this.meter !== null) this.meter.timersPending += n - this.count;
    this.count = n;
  }

  private reload(): void {
    const limit = WINDOW + this.firing.size;
    const list = this.index.soonest(this.shard, limit);
    this.cut = list.length >= limit;
    this.window = this.firing.size === 0 ? list : list.filter((t) => !this.firing.has(actorKey(t.type, t.id, t.key)));
    if (this.window.length > WINDOW) {
      this.window.length = WINDOW;
      this.cut = true;
    }
  }

  /** A commit's timer ops were applied to the index (`delta`: the change in the shard's count). */
  applied(type: string, id: string, ops: readonly WireTimerOp[], delta: number): void {
    this.setCount(this.count + delta);
    if (!this.loaded) return;
    for (const op of ops) {
      const key = opKey(op);
      const w = this.window;
      for (let i = 0; i < w.length; i++) {
        const t = w[i]!;
        if (t.key === key && t.id === id && t.type === type) { w.splice(i, 1); break; }
      }
      if (op[0] === TIMER_OP.SET) this.insert({ shard: this.shard, dueAt: op[TIMER_SET.dueAt], type, id, key });
    }
  }

  private insert(t: DueTimer): void {
    const w = this.window;
    if (this.cut && w.length > 0 && t.dueAt > w[w.length - 1]!.dueAt) return; // LMDB has it; read when the window runs dry
    let i = w.length;
    while (i > 0 && byDue(w[i - 1]!, t) > 0) i--;
    w.splice(i, 0, t);
    if (w.length > WINDOW) {
      w.pop();
      this.cut = true;
    }
  }

  /** The soonest due time to fire at, or Infinity. */
  next(): number {
    const first = this.window[0];
    return first === undefined ? Infinity : Math.max(first.dueAt, this.holdUntil);
  }

  /** Move up to `max` timers due by `now` to `out`, marked firing. */
  take(now: number, max: number, out: DueTimer[]): number {
    if (this.holdUntil > now) return 0;
    const w = this.window;
    let n = 0;
    while (n < max && n < w.length && w[n]!.dueAt <= now) n++;
    if (n === 0) return 0;
    const taken = w.splice(0, n);
    for (const t of taken) {
      this.firing.set(actorKey(t.type, t.id, t.key), t);
      out.push(t);
    }
    if (w.length === 0 && this.cut) this.reload();
    return n;
  }

  /** A firing ended: stored (or dropped, or a duplicate); or failed, then it is retried after RETRY_MS. */
  done(t: DueTimer, failed: boolean): void {
    if (this.firing.get(actorKey(t.type, t.id, t.key)) !== t) return;
    this.firing.delete(actorKey(t.type, t.id, t.key));
    if (!failed || !this.loaded) return;
    this.holdUntil = Date.now() + RETRY_MS;
    this.insert(t);
  }
}

/** What the clock asks of a shard (ShardHost). */
export interface TimedShard {
  readonly state: string;
  readonly timers: ShardTimers;
  /** Send the firing of `t` to its actor; `done` is called once with its end. */
  fireTimer(t: DueTimer, done: (failed: boolean) => void): void;
}

/** One per worker: a single setTimeout to the soonest due time of its shards. */
export class TimerClock {
  private timer: NodeJS.Timeout | null = null;
  private armedAt = Infinity;
  private inFlight = 0;
  private ticking = false;
  private stopped = false;
  private readonly batch: DueTimer[] = [];

  constructor(private readonly shards: () => Iterable<TimedShard>, readonly meter: TimerMeter | null = null) {}

  /** A timer due at `dueAt` was added: fire sooner if it is sooner. */
  added(dueAt: number): void {
    if (dueAt < this.armedAt) this.arm();
  }

  /** Look at every shard's soonest timer and fire at the earliest. */
  arm(): void {
    if (this.stopped || this.ticking) return;
    let next = Infinity;
    for (const s of this.shards()) if (s.state === 'ready') next = Math.min(next, s.timers.next());
    if (this.timer !== null) {
      if (next === this.armedAt) return;
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.armedAt = next;
    if (next === Infinity) return;
    this.timer = setTimeout(() => this.tick(), Math.min(MAX_DELAY, Math.max(0, next - Date.now())));
  }

  private tick(): void {
    this.timer = null;
    this.armedAt = Infinity;
    if (this.stopped) return;
    this.ticking = true;
    let budget = Math.min(TICK_FIRINGS, MAX_IN_FLIGHT - this.inFlight);
    const now = Date.now();
    const batch = this.batch;
    try {
      for (const s of this.shards()) {
        if (budget <= 0) break;
        if (s.state !== 'ready' || s.timers.next() > now) continue;
        budget -= s.timers.take(now, budget, batch);
        for (const t of batch) {
          this.inFlight++;
          let ended = false;
          s.fireTimer(t, (failed) => {
            if (ended) return;
            ended = true;
            this.inFlight--;
            s.timers.done(t, failed);
            if (failed || this.inFlight === MAX_IN_FLIGHT - 1) this.arm();
          });
        }
        batch.length = 0;
      }
    } finally {
      this.ticking = false;
    }
    // More due than a tick sends: go on after the event loop had its turn (acks, commands).
    if (budget <= 0 && this.inFlight < MAX_IN_FLIGHT) {
      this.armedAt = now;
      this.timer = setTimeout(() => this.tick(), 0);
    } else if (this.inFlight < MAX_IN_FLIGHT) this.arm();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}

/**
 * A timer's firing as a command to its actor (ShardHost.fireTimer makes it): its id is
 * deterministic (GIVEN: looked up, so a firing already stored is answered as a duplicate).
 */
export class TimerCommand implements InboundCommand {
  readonly commandId: string;
  readonly type: string;
  readonly payload: unknown;
  readonly userId = null;
  readonly correlationId: string;
  readonly causationId: string;
  readonly idUse = IdUse.GIVEN;
  readonly principal = null;
  /** When the shard decided it (ms): the firing's time, for `late`. */
  firedAt = 0;
  /** `ctx.timer` of the firing, filled when it is decided. */
  firing: TimerFiring | null = null;
  private settled = false;

  constructor(
    readonly aggregateType: string, readonly aggregateId: string, readonly shard: number, readonly rec: WireTimerSet,
    private readonly end: (failed: boolean) => void, private readonly meter: TimerMeter | null, readonly spans: InboundCommand['spans'] = null,
  ) {
    this.commandId = timerCommandId(rec[TIMER_SET.key], rec[TIMER_SET.dueAt], rec[TIMER_SET.scheduledBy]);
    this.type = rec[TIMER_SET.command];
    this.payload = rec[TIMER_SET.payload];
    this.correlationId = rec[TIMER_SET.correlationId];
    this.causationId = rec[TIMER_SET.scheduledBy];
  }

  get dueAt(): number {
    return this.rec[TIMER_SET.dueAt];
  }

  replyStored(pc: PendingCommit, position: number, idPrefix: string): void {
    if (this.spans != null) this.spans.replied(null, commitResult(pc, position, idPrefix, false));
    this.settle(false, true);
  }

  reply(error: WireError | null, result: CommandResult | null): void {
    if (this.spans != null) this.spans.replied(error, result);
    // Stored before (a duplicate) or dropped (the timer changed meanwhile): done. An error: the firing is retried.
    this.settle(error !== null, false);
  }

  private settle(failed: boolean, stored: boolean): void {
    if (this.settled) return;
    this.settled = true;
    if (stored && this.meter !== null) this.meter.timerFired(this.firedAt - this.dueAt);
    this.end(failed);
  }
}
