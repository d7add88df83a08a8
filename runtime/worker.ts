/**
 * The worker entry: a Piscina task handler that hosts shards.
 *
 * Each worker thread keeps its own NATS connection and lean publisher, opens the node's LMDB
 * environment, and loads the actor modules by path. The main thread sends it batches of
 * commands (never one task per command); a task resolves when every command in it has an
 * outcome: stored in JetStream, rejected, or failed with a typed error.
 */
import { threadId, workerData } from 'node:worker_threads';
import type { CommandEnvelope, CommandResult } from './envelope.ts';
import { toWire, type WireError } from './errors.ts';
import { connectNats, openJournal, LeanPublisher, nuid, type Journal, type NatsConnection } from './journal.ts';
import type { ResolvedOptions } from './options.ts';
import { loadRegistry, type Registry } from './registry.ts';
import { ShardHost, type ShardContext } from './shard.ts';
import { Store } from './snapshots.ts';
import type { EventEnvelope } from './codec.ts';

export type WorkerTask =
  | { kind: 'commands'; commands: CommandEnvelope[] }
  | { kind: 'query'; shard: number; aggregateType: string; aggregateId: string }
  | { kind: 'history'; shard: number; aggregateType: string; aggregateId: string }
  | { kind: 'open'; shards: number[] }
  | { kind: 'release'; shards: number[] }
  | { kind: 'stats' }
  | { kind: 'stop' }
  | { kind: 'crash' };

/** Per command: `[null, result]` or `[error, null]`. */
export type CommandOutcome = [WireError | null, CommandResult | null];

export interface WorkerStats {
  threadId: number;
  shards: number;
  residentActors: number;
  queuedCommits: number;
  inFlightAppends: number;
  natsConnected: boolean;
}

interface WorkerState {
  nc: NatsConnection;
  journal: Journal;
  store: Store;
  registry: Registry;
  publisher: LeanPublisher;
  shards: Map<number, ShardHost>;
  ctx: ShardContext;
  sweeper: NodeJS.Timeout;
}

const options = (workerData as { options: ResolvedOptions }).options;
let state: Promise<WorkerState> | null = null;

async function init(): Promise<WorkerState> {
  const registry = await loadRegistry(options.actors);
  const store = new Store(options.dataDir, options.stream, options.commandIdTtlMs);
  const nc = await connectNats(options.servers, `troupe-${options.nodeName}-w${threadId}`);
  const journal = await openJournal(nc, {
    servers: options.servers, stream: options.stream, subjectPrefix: options.subjectPrefix, replicas: options.replicas,
    maxMessageBytes: options.maxBatchBytes, duplicateWindowMs: options.duplicateWindowMs,
  });
  const publisher = new LeanPublisher(nc, options.ackTimeoutMs);
  const shards = new Map<number, ShardHost>();
  const dirty = new Set<ShardHost>();
  let scheduled = false;
  const flushAll = () => {
    scheduled = false;
    for (const s of dirty) s.flush();
    dirty.clear();
  };
  const ctx: ShardContext = {
    options, registry, store, journal, publisher,
    writerId: `${options.nodeName}.${threadId}.${nuid.next()}`,
    scheduleFlush(shard) {
      dirty.add(shard);
      if (scheduled) return;
      scheduled = true;
      if (options.lingerMs > 0) setTimeout(flushAll, options.lingerMs);
      else setImmediate(flushAll);
    },
  };
  // A dropped connection leaves every in-flight append's outcome unknown: say so at once.
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') publisher.failAll('the NATS connection dropped before JetStream acknowledged; the outcome is unknown, retry with the same commandId');
    }
  })();
  const sweeper = setInterval(() => sweep(shards), Math.max(50, Math.min(1000, options.idleActorMs / 4)));
  sweeper.unref();
  return { nc, journal, store, registry, publisher, shards, ctx, sweeper };
}

/** Passivate idle actors, and the least recently used when over the resident bound. */
function sweep(shards: Map<number, ShardHost>): void {
  const now = Date.now();
  const idleBefore = now - options.idleActorMs;
  let resident = 0;
  for (const s of shards.values()) resident += s.residentActors;
  let lruBefore = -Infinity;
  if (resident > options.maxResidentActors) {
    const used = new Float64Array(resident);
    let i = 0;
    for (const s of shards.values()) for (const c of s.cells.values()) used[i++] = c.lastUsed;
    used.sort();
    lruBefore = used[resident - Math.floor(options.maxResidentActors * 0.9)] ?? -Infinity;
  }
  for (const s of shards.values()) {
    if (s.state !== 'ready') continue;
    for (const c of s.cells.values()) {
      if (c.lastUsed < idleBefore || c.lastUsed < lruBefore) s.passivate(c);
    }
  }
}

function shardFor(w: WorkerState, shard: number): ShardHost {
  let host = w.shards.get(shard);
  if (host === undefined) {
    host = new ShardHost(shard, w.ctx);
    w.shards.set(shard, host);
  }
  return host;
}

function runCommands(w: WorkerState, commands: CommandEnvelope[]): Promise<CommandOutcome[]> {
  return new Promise((resolve) => {
    const n = commands.length;
    const out = new Array<CommandOutcome>(n);
    let remaining = n;
    for (let i = 0; i < n; i++) {
      const cmd = commands[i]!;
      const reply = (e: WireError | null, r: CommandResult | null) => {
        out[i] = [e, r];
        if (--remaining === 0) resolve(out);
      };
      try {
        shardFor(w, cmd.shard).submit(cmd, reply);
      } catch (e) {
        reply(toWire(e), null);
      }
    }
  });
}

export default async function handle(task: WorkerTask): Promise<unknown> {
  const w = await (state ??= init());
  switch (task.kind) {
    case 'commands':
      return runCommands(w, task.commands);
    case 'query':
      return shardFor(w, task.shard).query(task.aggregateType, task.aggregateId);
    case 'history':
      return shardFor(w, task.shard).history(task.aggregateType, task.aggregateId) as Promise<EventEnvelope[]>;
    case 'open':
      await Promise.all(task.shards.map((s) => shardFor(w, s).open()));
      return true;
    case 'release':
      for (const s of task.shards) {
        const host = w.shards.get(s);
        if (host === undefined) continue;
        await host.drain(options.ackTimeoutMs);
        host.snapshotAll();
        host.close();
        w.shards.delete(s);
      }
      await w.store.flushed();
      return true;
    case 'stats': {
      let residentActors = 0;
      let queuedCommits = 0;
      for (const s of w.shards.values()) {
        residentActors += s.residentActors;
        queuedCommits += s.queuedCommits;
      }
      const stats: WorkerStats = {
        threadId, shards: w.shards.size, residentActors, queuedCommits, inFlightAppends: w.publisher.inFlight,
        natsConnected: !w.nc.isClosed() && w.nc.getServer() !== '',
      };
      return stats;
    }
    case 'stop': {
      await Promise.all([...w.shards.values()].map((s) => s.drain(options.ackTimeoutMs)));
      for (const s of w.shards.values()) {
        s.snapshotAll();
        s.close();
      }
      clearInterval(w.sweeper);
      await w.store.flushed();
      w.publisher.close();
      await w.nc.drain().catch(() => {});
      await w.store.close().catch(() => {});
      state = null;
      return true;
    }
    case 'crash':
      // For tests of worker replacement: die the way a native fault or OOM would.
      setImmediate(() => { throw new Error('worker crash requested'); });
      return true;
  }
}
