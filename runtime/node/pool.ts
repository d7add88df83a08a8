/**
 * Piscina wiring and shard placement.
 *
 * Where actor state lives: only in the worker thread that hosts the actor's shard. The main
 * thread holds no actor state; it validates commands at the door, picks the shard
 * (hash(type, id) mod S) and its slot (shard mod workers), and queues the command for that
 * slot.
 *
 * Slots map to Piscina workers by thread id, through Piscina's `loadBalancer`: every task for
 * a slot goes to its owner. At start (and when a replacement worker takes a free slot) an
 * `attach` task hands the owner one end of a MessageChannel. Commands then stream over it:
 * once per event-loop turn each slot's queue leaves as one message (never one message per
 * command), and outcomes come back in one message per worker turn as acknowledgements
 * arrive. Measured against one Piscina task per batch that resolves when its slowest command
 * is stored, the stream cut CPU per command and latency (see README, Performance).
 *
 * When a worker dies, Piscina starts another; the new one takes the free slot, and its shards
 * re-open from LMDB checkpoint plus log tail. Commands that were on the dead worker fail
 * with a retryable WORKER_LOST error.
 */
import { existsSync } from 'node:fs';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { CommandEnvelope, CommandResult, OutcomeSink } from '../envelope.ts';
import { OUTCOME_STRIDE, outcomeError, outcomeSeq, pushCommand, readOutcome } from '../wire.ts';
import { fromWire, OverloadedError, StoppedError, WorkerLostError, type WireError } from '../errors.ts';
import { NodeMetrics } from '../ops/metrics.ts';
import type { ResolvedOptions } from '../options.ts';
import { taskTraces, tracing } from '../ops/tracing.ts';
import type { WorkerTask } from './worker.ts';

type PiscinaWorkerLike = { id: number; destroyed: boolean; terminating: boolean };

type Resolve = ((r: CommandResult) => void) | OutcomeSink;
type Reject = ((e: unknown) => void) | OutcomeSink;

function fail(reject: Reject, e: unknown): void {
  if (typeof reject === 'function') reject(e);
  else reject.failed(e);
}

interface Slot {
  port: MessagePort | null;
  /** Commands not yet sent to the worker, with their promise's settle functions. */
  queue: CommandEnvelope[];
  queueResolves: Resolve[];
  queueRejects: Reject[];
  /**
   * Commands sent, at `seq & mask`: a ring larger than maxQueuedCommands, so a slot is never
   * reused while its command is unanswered (no Map and no object per command).
   */
  sent: (CommandEnvelope | undefined)[];
  resolves: (Resolve | undefined)[];
  rejects: (Reject | undefined)[];
  /** performance.now() when each sent command left (command latency for /metrics). */
  sentAt: Float64Array;
  sentCount: number;
  nextSeq: number;
  attaching: Promise<void> | null;
}

const QUEUE = Piscina.queueOptionsSymbol;

/**
 * The worker threads' module: the compiled worker.js next to this file in the installed package
 * (dist/node/), or, in a source checkout, worker-entry.cjs, which loads worker.ts through tsx (a
 * dev dependency of the repository only).
 */
const COMPILED_WORKER = new URL('./worker.js', import.meta.url);
const WORKER_FILE = existsSync(COMPILED_WORKER) ? COMPILED_WORKER.href : new URL('./worker-entry.cjs', import.meta.url).href;

/**
 * A slot's queue leaves for its worker at the end of the event-loop turn, or as soon as it
 * holds this many commands. Without the cap, a turn that answers thousands of commands sends
 * their successors as one batch: the worker waits while the main thread produces it, and the
 * main thread waits while the worker decides it. The waves then never overlap (measured at
 * C = 4096: ~45k cmds/s in one batch a turn, ~70k in batches of 256).
 */
const DISPATCH_CHUNK = 256;

export class WorkerPool {
  private readonly pool: Piscina;
  /** slot → thread id of the worker that owns it (0 = none yet). */
  private readonly owners: Int32Array;
  private readonly slots: Slot[];
  private readonly mask: number;
  private outstanding = 0;
  private scheduled = false;
  private closed = false;
  private readonly dispatchAll = () => this.dispatch();
  onWorkerLost: ((threadId: number) => void) | null = null;
  /** The log refused an append to `shard` (another writer): ownership checks its lease. */
  onFenced: ((shard: number) => void) | null = null;
  /** Commands answered, failures by reason, latency: plain numbers for /metrics. */
  readonly metrics = new NodeMetrics();

  constructor(private readonly options: ResolvedOptions) {
    const n = options.workers;
    this.owners = new Int32Array(n);
    let size = 1024;
    while (size <= options.maxQueuedCommands) size *= 2;
    this.mask = size - 1;
    this.slots = Array.from({ length: n }, () => ({
      port: null, queue: [], queueResolves: [], queueRejects: [], sent: new Array(size), resolves: new Array(size), rejects: new Array(size),
      sentAt: new Float64Array(size), sentCount: 0, nextSeq: 0, attaching: null,
    }));
    this.pool = new Piscina({
      filename: WORKER_FILE,
      minThreads: n,
      maxThreads: n,
      idleTimeout: Infinity,
      // Workers hold sockets and timers: their event loop must run between tasks.
      atomics: 'disabled',
      concurrentTasksPerWorker: 64,
      workerData: { options },
      loadBalancer: (task, workers) => this.pick((task as unknown as Record<symbol, { slot: number } | undefined>)[QUEUE]?.slot ?? 0, workers as unknown as PiscinaWorkerLike[]) as never,
    });
    this.pool.on('workerDestroy', (w: PiscinaWorkerLike) => {
      // A worker that left through process.exit() reports thread id -1: then find the slot
      // whose owner is no longer among the pool's threads.
      let slot = this.owners.indexOf(w.id);
      if (slot < 0) {
        const live = new Set(this.pool.threads.map((t) => t.threadId));
        slot = this.owners.findIndex((id) => id !== 0 && !live.has(id));
      }
      if (slot < 0) return;
      const lost = this.owners[slot]!;
      this.owners[slot] = 0;
      this.metrics.workerLost(lost);
      this.detach(slot, new WorkerLostError(`the worker hosting slot ${slot} stopped before answering; these commands may or may not be stored: retry with the same commandId`, { slot }));
      if (this.closed) return;
      this.onWorkerLost?.(lost);
      void this.attach(slot).catch(() => {});
    });
    this.pool.on('error', () => { /* a worker died; workerDestroy handles it */ });
  }

  /** The slot's owner; a worker without a slot adopts a free one; null waits for a replacement. */
  private pick(slot: number, workers: PiscinaWorkerLike[]): PiscinaWorkerLike | null {
    const owner = this.owners[slot]!;
    if (owner !== 0) {
      for (const w of workers) if (w.id === owner && !w.destroyed && !w.terminating) return w;
    }
    for (const w of workers) {
      if (w.destroyed || w.terminating || this.owners.includes(w.id)) continue;
      this.owners[slot] = w.id;
      return w;
    }
    return null;
  }

  slotOf(shard: number): number {
    return shard % this.options.workers;
  }

  /** Commands accepted and not yet answered. */
  get queuedCommands(): number {
    return this.outstanding;
  }

  get threadIds(): number[] {
    return [...this.owners];
  }

  /** Per slot: commands queued here for the worker, and sent to it without an answer yet. */
  slotDepths(): { queued: number; inFlight: number }[] {
    return this.slots.map((s) => ({ queued: s.queue.length, inFlight: s.sentCount }));
  }

  /** Give the slot's worker its end of a command stream. */
  private attach(slot: number): Promise<void> {
    const s = this.slots[slot]!;
    s.attaching ??= (async () => {
      const { port1, port2 } = new MessageChannel();
      await this.runOn(slot, { kind: 'attach', port: port2 }, [port2]);
      // Outcomes of the commands sent here, or what the worker served from NATS itself (node/serving.ts).
      port1.on('message', (out: unknown[] | { served: (number | string | null)[] }) => {
        if (Array.isArray(out)) this.settle(s, out);
        else this.served(out.served);
      });
      port1.unref();
      s.port = port1;
      if (s.queue.length > 0) this.schedule();
    })().finally(() => { s.attaching = null; });
    return s.attaching;
  }

  /** Fail what the slot's worker held, and forget its port. */
  private detach(slot: number, error: unknown): void {
    const s = this.slots[slot]!;
    s.port?.close();
    s.port = null;
    if (s.sentCount > 0) this.metrics.failed((error as { code?: string }).code ?? 'INTERNAL', s.sentCount);
    for (let i = 0; i < s.sent.length; i++) {
      const reject = s.rejects[i];
      if (reject === undefined) continue;
      s.sent[i] = s.resolves[i] = s.rejects[i] = undefined;
      fail(reject, error);
    }
    this.outstanding -= s.sentCount;
    s.sentCount = 0;
  }

  private settle(s: Slot, out: unknown[]): void {
    const mask = this.mask;
    const now = performance.now();
    for (let b = 0; b < out.length; b += OUTCOME_STRIDE) {
      const i = outcomeSeq(out, b) & mask;
      const cmd = s.sent[i];
      if (cmd === undefined) continue;
      const resolve = s.resolves[i]!;
      const reject = s.rejects[i]!;
      s.sent[i] = s.resolves[i] = s.rejects[i] = undefined;
      s.sentCount--;
      this.outstanding--;
      const e = outcomeError<WireError>(out, b);
      this.metrics.answered(now - s.sentAt[i]!, e);
      if (cmd.trace !== undefined) cmd.trace.answered();
      if (typeof resolve !== 'function') resolve.outcome(out, b);
      else if (e === null) resolve(readOutcome(out, b, cmd.commandId, cmd.aggregateType, cmd.aggregateId));
      else {
        if (e.code === 'CONCURRENCY' && this.onFenced !== null) this.onFenced(cmd.shard);
        fail(reject, fromWire(e));
      }
    }
  }

  /** Commands a worker took from NATS and answered: [ms, error code | null, ...], into /metrics. */
  private served(list: readonly (number | string | null)[]): void {
    for (let i = 0; i < list.length; i += 2) {
      const code = list[i + 1] as string | null;
      this.metrics.answered(list[i] as number, code === null ? null : { code });
    }
  }

  /** Queue a command for its shard's worker; resolves when JetStream has stored its events. */
  submit(cmd: CommandEnvelope): Promise<CommandResult> {
    return new Promise<CommandResult>((resolve, reject) => this.submitTo(cmd, resolve, reject));
  }

  /** The same, answered through a sink (or settle functions) instead of a promise. */
  submitTo(cmd: CommandEnvelope, resolve: Resolve, reject: Reject): void {
    if (this.closed) {
      this.metrics.failed('STOPPED');
      fail(reject, new StoppedError());
      return;
    }
    if (this.outstanding >= this.options.maxQueuedCommands) {
      this.metrics.failed('OVERLOADED');
      fail(reject, new OverloadedError(`the node has ${this.outstanding} commands in progress (options.maxQueuedCommands); retry later`, { commandId: cmd.commandId }));
      return;
    }
    const slot = this.slotOf(cmd.shard);
    const s = this.slots[slot]!;
    this.outstanding++;
    if (cmd.trace !== undefined) cmd.trace.enqueued(slot);
    s.queue.push(cmd);
    s.queueResolves.push(resolve);
    s.queueRejects.push(reject);
    if (s.queue.length >= DISPATCH_CHUNK) this.dispatchSlot(s);
    else if (!this.scheduled) this.schedule();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.dispatchAll);
  }

  private dispatch(): void {
    this.scheduled = false;
    for (const s of this.slots) this.dispatchSlot(s);
  }

  /** Send the slot's queued commands to its worker as one flat batch. */
  private dispatchSlot(s: Slot): void {
    if (s.queue.length === 0 || s.port === null) return;
    const now = performance.now();
    const { queue, queueResolves, queueRejects } = s;
    s.queue = [];
    s.queueResolves = [];
    s.queueRejects = [];
    const flat: unknown[] = [];
    const mask = this.mask;
    for (let k = 0; k < queue.length; k++) {
      const seq = s.nextSeq++;
      const i = seq & mask;
      s.sent[i] = queue[k];
      s.resolves[i] = queueResolves[k];
      s.rejects[i] = queueRejects[k];
      s.sentAt[i] = now;
      pushCommand(flat, queue[k]!, seq);
    }
    s.sentCount += queue.length;
    // Trace context crosses to the worker with the batch: one traceparent per traced command.
    const traces = tracing.on ? taskTraces(queue) : undefined;
    s.port.postMessage(traces === undefined ? flat : { flat, traces });
  }

  /** Run a task on the worker that owns `slot`. */
  runOn(slot: number, task: WorkerTask, transferList?: MessagePort[]): Promise<unknown> {
    (task as unknown as Record<symbol, unknown>)[QUEUE] = { slot };
    return transferList === undefined ? this.pool.run(task) : this.pool.run(task, { transferList });
  }

  /** Run `task(list)` on each worker for the shards of `shards` it hosts; resolves with their answers. */
  runOnShards(shards: readonly number[], task: (list: number[]) => WorkerTask): Promise<unknown[]> {
    const bySlot = new Map<number, number[]>();
    for (const s of shards) {
      const slot = this.slotOf(s);
      const list = bySlot.get(slot);
      if (list === undefined) bySlot.set(slot, [s]);
      else list.push(s);
    }
    return Promise.all([...bySlot].map(([slot, list]) => this.runOn(slot, task(list))));
  }

  /** Run a task on every worker; resolves with their answers in slot order. */
  runOnAll(task: WorkerTask): Promise<unknown[]> {
    return Promise.all(this.slots.map((_, slot) => this.runOn(slot, { ...task })));
  }

  /** Resolves when every slot has a live worker with its command stream attached. */
  async ready(): Promise<void> {
    await Promise.all(this.slots.map((_, slot) => this.attach(slot)));
  }

  /** Wait until no command is queued or unanswered. */
  async idle(timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (this.outstanding > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
  }

  /** Stop taking commands; fail whatever is still queued or unanswered. */
  close(): void {
    this.closed = true;
    const e = new StoppedError();
    for (let slot = 0; slot < this.slots.length; slot++) {
      const s = this.slots[slot]!;
      if (s.queue.length > 0) this.metrics.failed('STOPPED', s.queue.length);
      for (const reject of s.queueRejects) fail(reject, e);
      this.outstanding -= s.queue.length;
      s.queue = [];
      s.queueResolves = [];
      s.queueRejects = [];
      this.detach(slot, e);
    }
  }

  async destroy(): Promise<void> {
    this.closed = true;
    await this.pool.destroy();
  }
}
