/**
 * The node's answers to operators: the dashboard's data (ops/dashboard.ts) and the NATS ops
 * subjects (remote/ops-service.ts: `troupe stats`, `troupe actors`). One object, so that the
 * page and the commands show the same numbers.
 *
 * Sources: the per-second series (series.ts), the workers' stats, the cluster view, the history
 * index in this node's LMDB (actors it has written), the workers' resident actors, the log
 * stream's JetStream consumers and the DLQ stream (consumers/overview.ts, consumers/dlq.ts).
 */
import type { Database } from 'lmdb';
import { shardOf } from '../envelope.ts';
import type { NatsConnection } from '../journal/journal.ts';
import type { Store } from '../journal/store.ts';
import type { ResolvedOptions } from '../options.ts';
import { DeadLetterQueue, requestReplay } from '../consumers/dlq.ts';
import { consumerOverview } from '../consumers/overview.ts';
import type { DashboardSources } from '../ops/dashboard.ts';
import type { ActorsRequest, OpsNode, TimersRequest } from '../remote/ops-service.ts';
import { quantileOf, type NodeSeries } from './series.ts';
import { LATENCY_BOUNDS_S } from '../ops/metrics.ts';
import type { WorkerPool } from './pool.ts';
import type { WorkerStats } from './worker.ts';

/** What the console reads of its node. */
export interface ConsoleNode {
  readonly options: ResolvedOptions;
  readonly nc: NatsConnection;
  readonly pool: WorkerPool;
  readonly store: Store;
  readonly series: NodeSeries;
  readonly version: string;
  readonly startedAt: number;
  ownedShards(): number[];
  phase(): string;
  actorTypes(): string[];
  cluster(): Promise<unknown>;
  query(type: string, id: string): Promise<{ state: unknown; version: number }>;
  history(type: string, id: string): Promise<unknown[]>;
  timers(type: string, id: string): Promise<unknown[]>;
}

export class NodeConsole implements DashboardSources, OpsNode {
  private dlq: Promise<DeadLetterQueue> | null = null;
  private index: Database<number[], [string, string, number]> | null = null;

  constructor(private readonly n: ConsoleNode) {}

  get nodeName(): string {
    return this.n.options.nodeName;
  }

  private queue(): Promise<DeadLetterQueue> {
    const { nc, options } = this.n;
    this.dlq ??= DeadLetterQueue.open({ nc, stream: options.stream, subjectPrefix: options.subjectPrefix, replicas: options.replicas })
      .catch((e: unknown) => {
        this.dlq = null;
        throw e;
      });
    return this.dlq;
  }

  // ── this node ──────────────────────────────────────────────────────────────────────────────

  async node(): Promise<Record<string, unknown>> {
    const { options } = this.n;
    return {
      node: options.nodeName, version: this.n.version, phase: this.n.phase(), stream: options.stream, subjectPrefix: options.subjectPrefix,
      shards: options.shards, ownedShards: this.n.ownedShards(), workers: options.workers, actorTypes: this.n.actorTypes(),
      ownership: options.ownership, startedAt: new Date(this.n.startedAt).toISOString(), last10s: this.n.series.summary(10),
    };
  }

  series(sinceMs: number): unknown {
    return { node: this.n.options.nodeName, intervalMs: 1000, samples: this.n.series.list(sinceMs) };
  }

  /** `troupe stats`: throughput and latency (last 10 s and since start), shards, resident actors, passivations. */
  async opsStats(): Promise<unknown> {
    const { pool, options } = this.n;
    const stats = await pool.runOnAll({ kind: 'stats' }) as WorkerStats[];
    const m = pool.metrics;
    let failed = 0;
    for (const k in m.failures) failed += m.failures[k]!;
    const q = (p: number) => {
      const v = quantileOf(m.commandSeconds.counts, LATENCY_BOUNDS_S, p);
      return v === null ? null : Math.round(v * 1e6) / 1000;
    };
    return {
      node: options.nodeName, version: this.n.version, phase: this.n.phase(), uptimeS: Math.round((Date.now() - this.n.startedAt) / 1000),
      shards: { owned: this.n.ownedShards().length, total: options.shards },
      workers: stats.length,
      residentActors: stats.reduce((a, s) => a + s.residentActors, 0),
      passivations: stats.reduce((a, s) => a + s.passivations, 0),
      queuedCommands: pool.queuedCommands,
      last10s: this.n.series.summary(10),
      sinceStart: { commands: m.commandsOk + failed, failed, p50Ms: q(0.5), p99Ms: q(0.99) },
    };
  }

  // ── actors ─────────────────────────────────────────────────────────────────────────────────

  /** Ids of actors of `type`: resident in this node's workers, or every one its history index holds (shards it owns). */
  async opsActors(r: ActorsRequest): Promise<unknown> {
    const { pool, options } = this.n;
    if (!this.n.actorTypes().includes(r.type)) return { type: r.type, resident: r.resident, ids: [], hosted: false };
    let ids: string[];
    if (r.resident) {
      const lists = await pool.runOnAll({ kind: 'resident', aggregateType: r.type, limit: r.limit }) as string[][];
      ids = lists.flat().sort().slice(0, r.limit);
    } else {
      // The history index: one entry per (type, id, commit run), sorted by type then id.
      this.index ??= this.n.store.root.openDB<number[], [string, string, number]>({ name: 'history-runs' });
      this.n.store.root.resetReadTxn();
      const owned = new Set(this.n.ownedShards());
      ids = [];
      let last: string | null = null;
      for (const key of this.index.getKeys({ start: [r.type] as unknown as [string, string, number] })) {
        const [type, id] = key;
        if (type !== r.type) break;
        if (id === last) continue;
        last = id;
        if (owned.has(shardOf(type, id, options.shards))) ids.push(id);
        if (ids.length >= r.limit) break;
      }
    }
    return { type: r.type, resident: r.resident, ids, hosted: true };
  }

  /** `troupe timers`: an actor's pending timers; only its shard's owner answers (the others refuse with SHARD_NOT_OWNED). */
  async opsTimers(r: TimersRequest): Promise<unknown> {
    return { type: r.type, id: r.id, timers: await this.n.timers(r.type, r.id) };
  }

  actors(type: string, resident: boolean, limit: number): Promise<unknown> {
    return this.opsActors({ type, resident, limit });
  }

  async actor(type: string, id: string, events: number): Promise<unknown> {
    const [q, history] = await Promise.all([this.n.query(type, id), this.n.history(type, id)]);
    return { type, id, shard: shardOf(type, id, this.n.options.shards), state: q.state, version: q.version, eventCount: history.length, events: events === 0 ? [] : history.slice(-events) };
  }

  // ── consumers and dead letters ─────────────────────────────────────────────────────────────

  async consumers(): Promise<unknown> {
    const dlq = await this.queue().catch(() => null);
    return consumerOverview(this.n.nc, this.n.options.stream, { sampleMs: 1000, dlq });
  }

  async dlqList(filter: { consumer?: string; limit: number; afterSeq?: number }): Promise<unknown[]> {
    return (await this.queue()).list(filter);
  }

  async dlqStats(): Promise<unknown> {
    return (await this.queue()).stats();
  }

  async dlqGet(seq: number): Promise<unknown> {
    return (await this.queue()).get(seq);
  }

  async dlqReplay(seq: number): Promise<void> {
    await requestReplay(await this.queue(), seq);
  }

  async dlqDiscard(seq: number): Promise<boolean> {
    return (await this.queue()).discard(seq);
  }

  async close(): Promise<void> {
    const q = this.dlq;
    this.dlq = null;
    await (await q?.catch(() => null))?.close();
  }
}
