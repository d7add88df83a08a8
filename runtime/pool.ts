/**
 * Piscina wiring and shard placement.
 *
 * Where actor state lives: only in the worker thread that hosts the actor's shard. The main
 * thread holds no actor state; it validates commands at the door, picks the shard
 * (hash(type, id) mod S) and its slot (shard mod workers), and queues the command for that
 * slot. Once per event-loop turn each slot's queue is drained into one Piscina task (never
 * one task per command), routed by the `loadBalancer` to the worker that owns the slot, with
 * at most `maxTasksPerWorker` tasks in flight per worker.
 *
 * Slots map to Piscina workers by thread id. When a worker dies, Piscina starts another; the
 * new one takes the free slot, and its shards re-open from LMDB checkpoint plus log tail.
 */
import { Piscina } from 'piscina';
import { OUTCOME_STRIDE, flattenCommands, readOutcome, type CommandEnvelope, type CommandResult } from './envelope.ts';
import { fromWire, OverloadedError, StoppedError, WorkerLostError, type WireError } from './errors.ts';
import type { ResolvedOptions } from './options.ts';
import type { WorkerTask } from './worker.ts';

type PiscinaWorkerLike = { id: number; destroyed: boolean; terminating: boolean };

interface SlotQueue {
  commands: CommandEnvelope[];
  resolves: ((r: CommandResult) => void)[];
  rejects: ((e: unknown) => void)[];
  inFlight: number;
}

const QUEUE = Piscina.queueOptionsSymbol;

export class WorkerPool {
  private readonly pool: Piscina;
  /** slot → thread id of the worker that owns it (0 = none yet). */
  private readonly owners: Int32Array;
  private readonly queues: SlotQueue[];
  private queued = 0;
  private scheduled = false;
  private closed = false;
  private readonly dispatchAll = () => this.dispatch();
  onWorkerLost: ((threadId: number) => void) | null = null;

  constructor(private readonly options: ResolvedOptions) {
    const n = options.workers;
    this.owners = new Int32Array(n);
    this.queues = Array.from({ length: n }, () => ({ commands: [], resolves: [], rejects: [], inFlight: 0 }));
    this.pool = new Piscina({
      filename: new URL('./worker.ts', import.meta.url).href,
      minThreads: n,
      maxThreads: n,
      idleTimeout: Infinity,
      // Workers hold sockets and timers: their event loop must run between tasks.
      atomics: 'disabled',
      concurrentTasksPerWorker: options.maxTasksPerWorker + 4,
      execArgv: ['--import', 'tsx'],
      workerData: { options },
      loadBalancer: (task, workers) => this.pick((task as unknown as Record<symbol, { slot: number } | undefined>)[QUEUE]?.slot ?? 0, workers as unknown as PiscinaWorkerLike[]) as never,
    });
    this.pool.on('workerDestroy', (w: PiscinaWorkerLike) => {
      const slot = this.owners.indexOf(w.id);
      if (slot >= 0) this.owners[slot] = 0;
      if (!this.closed) this.onWorkerLost?.(w.id);
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

  get queuedCommands(): number {
    return this.queued;
  }

  get threadIds(): number[] {
    return [...this.owners];
  }

  /** Queue a command for its shard's worker; resolves when JetStream has stored its events. */
  submit(cmd: CommandEnvelope): Promise<CommandResult> {
    if (this.closed) return Promise.reject(new StoppedError());
    if (this.queued >= this.options.maxQueuedCommands) {
      return Promise.reject(new OverloadedError(`the node has ${this.queued} commands queued (options.maxQueuedCommands); retry later`, { commandId: cmd.commandId }));
    }
    const q = this.queues[this.slotOf(cmd.shard)]!;
    this.queued++;
    return new Promise<CommandResult>((resolve, reject) => {
      q.commands.push(cmd);
      q.resolves.push(resolve);
      q.rejects.push(reject);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(this.dispatchAll);
      }
    });
  }

  private dispatch(): void {
    this.scheduled = false;
    const max = this.options.maxCommandsPerTask;
    for (let slot = 0; slot < this.queues.length; slot++) {
      const q = this.queues[slot]!;
      while (q.commands.length > 0 && q.inFlight < this.options.maxTasksPerWorker) {
        const all = q.commands.length <= max;
        const commands = all ? q.commands : q.commands.slice(0, max);
        const resolves = all ? q.resolves : q.resolves.slice(0, max);
        const rejects = all ? q.rejects : q.rejects.slice(0, max);
        if (all) {
          q.commands = [];
          q.resolves = [];
          q.rejects = [];
        } else {
          q.commands = q.commands.slice(max);
          q.resolves = q.resolves.slice(max);
          q.rejects = q.rejects.slice(max);
        }
        q.inFlight++;
        this.queued -= commands.length;
        this.runOn(slot, { kind: 'commands', commands: flattenCommands(commands) }).then(
          (outcomes) => {
            const out = outcomes as unknown[];
            for (let i = 0; i < commands.length; i++) {
              const e = out[i * OUTCOME_STRIDE] as WireError | null;
              if (e === null) resolves[i]!(readOutcome(out, i, commands[i]!));
              else rejects[i]!(fromWire(e));
            }
          },
          (err: unknown) => {
            const e = new WorkerLostError(`the worker hosting these commands' shards stopped before answering (${(err as Error)?.message ?? String(err)}); they may or may not be stored: retry with the same commandId`, {}, err);
            for (const reject of rejects) reject(e);
          },
        ).finally(() => {
          q.inFlight--;
          if (q.commands.length > 0 && !this.scheduled) {
            this.scheduled = true;
            setImmediate(this.dispatchAll);
          }
        });
      }
    }
  }

  /** Run a task on the worker that owns `slot`. */
  runOn(slot: number, task: WorkerTask): Promise<unknown> {
    (task as unknown as Record<symbol, unknown>)[QUEUE] = { slot };
    return this.pool.run(task);
  }

  /** Run a task on every worker; resolves with their answers in slot order. */
  runOnAll(task: WorkerTask): Promise<unknown[]> {
    return Promise.all(this.queues.map((_, slot) => this.runOn(slot, { ...task })));
  }

  /** Resolves when every slot has a live worker. */
  async ready(timeoutMs = 30_000): Promise<void> {
    await this.runOnAll({ kind: 'stats' }).catch((e) => { throw e; });
    const until = Date.now() + timeoutMs;
    while (this.owners.includes(0) && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  }

  /** Wait until no command is queued or in a task. */
  async idle(timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    while ((this.queued > 0 || this.queues.some((q) => q.inFlight > 0)) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Stop taking commands; fail whatever is still queued. */
  close(): void {
    this.closed = true;
    const e = new StoppedError();
    for (const q of this.queues) {
      for (const reject of q.rejects) reject(e);
      q.commands = [];
      q.resolves = [];
      q.rejects = [];
    }
    this.queued = 0;
  }

  async destroy(): Promise<void> {
    this.closed = true;
    await this.pool.destroy();
  }
}
