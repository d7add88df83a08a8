/**
 * A node's operations side: health checks, readiness, the metrics view, the HTTP server.
 *
 * /health runs every check at once, each with a time limit, and reports each:
 *   nats          the main connection answers a PING
 *   jetstream     the stream answers `stream info`
 *   lmdb          the node's LMDB environment is open and readable
 *   workers       every slot has a live worker thread that answers, connected to NATS
 *   dlq_depth     each consumer probe's DLQ depth ≤ its threshold (metrics.ts registerConsumerProbe)
 *   consumer_lag  each consumer probe's lag ≤ its threshold (and its oldest unhandled message's age, when a probe sets maxLagAgeMs)
 *   <name>        each check added with registerHealthCheck()
 */
import { startHttpServer, type HealthReport, type HttpServer, type OpsEndpoints } from '../ops/http.ts';
import type { Journal, NatsConnection } from '../journal/journal.ts';
import type { Log } from '../ops/log.ts';
import { ops, within, type HealthCheckResult } from '../ops/metrics.ts';
import { consumerChecks } from '../ops/consumer-ops.ts';
import type { ResolvedOptions } from '../options.ts';
import type { WorkerPool } from './pool.ts';
import type { Store } from '../journal/store.ts';
import { createMetricsRenderer, type MetricsRenderer, type NodeView, type WorkerView } from '../ops/prometheus.ts';
import type { WorkerStats } from './worker.ts';

/** How long one health check or one worker's stats may take before it counts as failed. */
export const CHECK_TIMEOUT_MS = 2_000;

export interface OpsResources {
  options: ResolvedOptions;
  nc: NatsConnection;
  journal: Journal;
  store: Store;
  pool: WorkerPool;
  log: Log;
  ownedShards(): number;
  /** 'starting' | 'running' | 'stopping' | 'stopped' */
  phase(): string;
  /** The cluster's nodes, leases and moves (GET /cluster). */
  cluster(): Promise<unknown>;
}

type Check = () => Promise<HealthCheckResult>;

async function run(name: string, check: Check): Promise<[string, HealthCheckResult]> {
  try {
    return [name, await within(CHECK_TIMEOUT_MS, `health check ${name}`, check)];
  } catch (e) {
    return [name, { ok: false, error: (e as Error)?.message ?? String(e) }];
  }
}

export class NodeOps implements OpsEndpoints {
  private http: HttpServer | null = null;
  private renderer: Promise<MetricsRenderer> | null = null;
  /** Asked first for every HTTP request: the dashboard (system.ts startConsole). */
  extra: OpsEndpoints['extra'];

  constructor(private readonly r: OpsResources) {}

  get url(): string | null {
    return this.http?.url ?? null;
  }

  async startHttp(): Promise<void> {
    const { httpPort, httpHost } = this.r.options;
    if (httpPort === false || this.http !== null) return;
    this.http = await startHttpServer(httpHost, httpPort, this);
    if (this.r.log.info) this.r.log.logger.info({ url: this.http.url }, 'HTTP: /health, /ready, /metrics, /cluster');
  }

  ready(): { ready: boolean; phase: string; reason?: string } {
    const phase = this.r.phase();
    if (phase !== 'running') return { ready: false, phase, reason: `the node is ${phase}` };
    if (this.r.nc.isClosed()) return { ready: false, phase, reason: 'the NATS connection is closed' };
    const missing = this.r.pool.threadIds.filter((id) => id === 0).length;
    if (missing > 0) return { ready: false, phase, reason: `${missing} worker slot(s) wait for a replacement worker` };
    return { ready: true, phase };
  }

  async health(): Promise<HealthReport> {
    const { nc, journal, store, pool, options } = this.r;
    const checks: [string, Check][] = [
      ['nats', async () => {
        if (nc.isClosed()) return { ok: false, error: 'the connection is closed' };
        await nc.flush();
        return { ok: true, server: nc.getServer() };
      }],
      ['jetstream', async () => {
        const info = await journal.jsm.streams.info(options.stream);
        return { ok: true, stream: options.stream, messages: info.state.messages, lastSeq: info.state.last_seq };
      }],
      ['lmdb', async () => {
        const status = (store.root as unknown as { status?: string }).status;
        if (status !== undefined && status !== 'open') return { ok: false, status, path: options.dataDir };
        store.getStreamIdentity();
        return { ok: true, path: options.dataDir };
      }],
      ['workers', async () => {
        const ids = pool.threadIds;
        const stats = await pool.runOnAll({ kind: 'stats' }) as WorkerStats[];
        const alive = ids.filter((id) => id !== 0).length;
        const disconnected = stats.filter((s) => !s.natsConnected).map((s) => s.threadId);
        return { ok: alive === ids.length && disconnected.length === 0, alive, expected: ids.length, ...(disconnected.length > 0 ? { natsDisconnected: disconnected } : {}) };
      }],
      ...consumerChecks({ maxDlqDepth: options.maxDlqDepth, maxConsumerLag: options.maxConsumerLag }),
    ];
    for (const [name, check] of ops.checks) checks.push([name, async () => check()]);
    const results = await Promise.all(checks.map(([name, check]) => run(name, check)));
    const ok = results.every(([, r]) => r.ok === true) && this.r.phase() === 'running';
    return { status: ok ? 'ok' : 'fail', node: options.nodeName, phase: this.r.phase(), checks: Object.fromEntries(results) };
  }

  cluster(): Promise<unknown> {
    return within(CHECK_TIMEOUT_MS, 'cluster status', () => this.r.cluster());
  }

  metrics(): Promise<string> {
    this.renderer ??= createMetricsRenderer(() => this.view(), this.r.options.nodeName);
    return this.renderer.then((r) => r.render());
  }

  /** What /metrics shows: each worker's snapshot (asked now), the main thread's numbers, the probes. */
  private async view(): Promise<NodeView> {
    const { pool } = this.r;
    const ids = pool.threadIds;
    const depths = pool.slotDepths();
    const m = pool.metrics;
    const stats = await Promise.all(ids.map((id, slot) => id === 0
      ? Promise.resolve(null)
      : within(CHECK_TIMEOUT_MS, `worker ${slot} stats`, () => pool.runOn(slot, { kind: 'stats' }) as Promise<WorkerStats>).catch(() => null)));
    const workers: WorkerView[] = ids.map((id, slot) => {
      const s = stats[slot] ?? null;
      if (s !== null) m.lastByThread.set(s.threadId, s.metrics);
      return {
        slot, threadId: s?.threadId ?? id, alive: id !== 0 && s !== null, residentActors: s?.residentActors ?? 0, inFlightAppends: s?.inFlightAppends ?? 0,
        queued: depths[slot]?.queued ?? 0, inFlight: depths[slot]?.inFlight ?? 0, metrics: s?.metrics ?? m.lastByThread.get(id) ?? null,
      };
    });
    return { nodeName: this.r.options.nodeName, metrics: m, workers, ownedShards: this.r.ownedShards(), probeTimeoutMs: CHECK_TIMEOUT_MS };
  }

  async close(): Promise<void> {
    const http = this.http;
    this.http = null;
    await http?.close();
    const renderer = this.renderer;
    this.renderer = null;
    if (renderer !== null) await (await renderer.catch(() => null))?.shutdown();
  }
}
