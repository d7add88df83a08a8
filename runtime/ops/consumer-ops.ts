/**
 * The operator's endpoints of consumers: the health checks every consumer probe answers (used by
 * the node's /health too), and the HTTP server of a process that runs consumers, projections or
 * sagas without a node.
 *
 *   GET /health   200, or 503 naming the failing check and consumer:
 *                   consumers     each consumer of the process runs and its NATS connection is open
 *                   dlq_depth     each consumer's DLQ depth ≤ its threshold
 *                   consumer_lag  each consumer's lag ≤ its threshold (and the age of its oldest
 *                                 unhandled message, when a threshold is set)
 *                   <name>        each check added with registerHealthCheck()
 *   GET /ready    200 once a consumer runs and every consumer is running
 *   GET /metrics  the consumer series of ops/prometheus.ts (the same names as a node's)
 *
 * A process serves one server per host:port: `serveConsumerOps()` called again with the same
 * port (or `consume({ http: { port } })` for several consumers) shares it; it closes with the
 * last `close()`.
 */
import { hostname } from 'node:os';
import { DEFAULT_MAX_CONSUMER_LAG, DEFAULT_MAX_DLQ_DEPTH, DEFAULT_HTTP_HOST } from '../options.ts';
import { InvalidOptionError } from '../errors.ts';
import { startHttpServer, type HealthReport, type HttpServer, type OpsEndpoints } from './http.ts';
import { consumerKey, ops, within, type ConsumerProbe, type HealthCheckResult } from './metrics.ts';
import { renderConsumerMetrics } from './prometheus.ts';

/** How long one probe or check may take before it counts as failed. */
const PROBE_TIMEOUT_MS = 2_000;

export interface ConsumerThresholds {
  /** /health fails when a consumer's DLQ holds more events than this (unless its probe sets its own). */
  maxDlqDepth: number;
  /** /health fails when a consumer is more log messages behind than this (unless its probe sets its own). */
  maxConsumerLag: number;
  /** /health fails when a consumer's oldest unhandled message is older than this (ms). Default: not checked. */
  maxLagAgeMs?: number;
}

type Check = () => Promise<HealthCheckResult>;

function message(e: unknown): string {
  return (e as Error)?.message ?? String(e);
}

/** Each probe's reading against its threshold; the check fails naming the consumers above it. */
async function thresholdCheck(
  kind: 'dlqDepth' | 'lag', limit: (p: ConsumerProbe) => number, age: ((p: ConsumerProbe) => number | undefined) | null,
): Promise<HealthCheckResult> {
  const consumers: Record<string, unknown> = {};
  const failing: string[] = [];
  await Promise.all([...ops.consumers.values()].map(async (p) => {
    const read = p[kind];
    if (read === undefined) return;
    const key = consumerKey(p.name, p.version);
    const max = limit(p);
    const maxAgeMs = age?.(p);
    const detail: Record<string, unknown> = { ok: true, max };
    try {
      const value = await within(PROBE_TIMEOUT_MS, `consumer ${key}`, read);
      detail.value = value;
      if (!(typeof value === 'number' && value <= max)) detail.ok = false;
      if (maxAgeMs !== undefined && p.lagAgeMs !== undefined) {
        const ageMs = await within(PROBE_TIMEOUT_MS, `consumer ${key} lag age`, p.lagAgeMs);
        Object.assign(detail, { ageMs, maxAgeMs });
        if (!(ageMs <= maxAgeMs)) detail.ok = false;
      }
    } catch (e) {
      Object.assign(detail, { ok: false, error: message(e) });
    }
    if (detail.ok !== true) failing.push(key);
    consumers[key] = detail;
  }));
  failing.sort();
  return failing.length === 0 ? { ok: true, consumers } : { ok: false, failing, consumers };
}

/** The `dlq_depth` and `consumer_lag` checks over every consumer probe of the process. */
export function consumerChecks(t: ConsumerThresholds): [string, Check][] {
  return [
    ['dlq_depth', () => thresholdCheck('dlqDepth', (p) => p.maxDlqDepth ?? t.maxDlqDepth, null)],
    ['consumer_lag', () => thresholdCheck('lag', (p) => p.maxLag ?? t.maxConsumerLag, (p) => p.maxLagAgeMs ?? t.maxLagAgeMs)],
  ];
}

async function run(name: string, check: Check): Promise<[string, HealthCheckResult]> {
  try {
    return [name, await within(PROBE_TIMEOUT_MS, `health check ${name}`, check)];
  } catch (e) {
    return [name, { ok: false, error: message(e) }];
  }
}

export interface ConsumerOpsOptions {
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /** Address to listen on. Default 127.0.0.1. */
  host?: string;
  /** /health fails above this DLQ depth, per consumer (a consumer's `probe.maxDlqDepth` wins). Default 1,000. */
  maxDlqDepth?: number;
  /** /health fails above this lag in log messages, per consumer (`probe.maxLag` wins). Default 100,000. */
  maxConsumerLag?: number;
  /** /health fails when a consumer's oldest unhandled message is older than this, in ms (`probe.maxLagAgeMs` wins). Default: not checked. */
  maxLagAgeMs?: number;
  /** `service_instance_id` of target_info in /metrics. Default: host and process id. */
  instance?: string;
}

export interface ConsumerOpsServer {
  /** `http://host:port` */
  readonly url: string;
  readonly port: number;
  /** Give this handle back; the server closes when the last one is closed. */
  close(): Promise<void>;
}

class ConsumerEndpoints implements OpsEndpoints {
  private readonly checks: [string, Check][];

  constructor(private readonly instance: string, t: ConsumerThresholds) {
    this.checks = [['consumers', async () => this.running()], ...consumerChecks(t)];
  }

  private running(): HealthCheckResult {
    const consumers: Record<string, unknown> = {};
    const failing: string[] = [];
    for (const p of ops.consumers.values()) {
      if (p.status === undefined) continue;
      const key = consumerKey(p.name, p.version);
      let s: HealthCheckResult;
      try { s = p.status(); } catch (e) { s = { ok: false, error: message(e) }; }
      consumers[key] = s;
      if (s.ok !== true) failing.push(key);
    }
    return failing.length === 0 ? { ok: true, consumers } : { ok: false, failing: failing.sort(), consumers };
  }

  async health(): Promise<HealthReport> {
    const checks = [...this.checks];
    for (const [name, check] of ops.checks) checks.push([name, async () => check()]);
    const results = await Promise.all(checks.map(([name, check]) => run(name, check)));
    const failing = results.filter(([, r]) => r.ok !== true).map(([name]) => name);
    return { status: failing.length === 0 ? 'ok' : 'fail', instance: this.instance, ...(failing.length === 0 ? {} : { failing }), checks: Object.fromEntries(results) };
  }

  ready(): { ready: boolean; reason?: string } {
    const r = this.running();
    if (Object.keys(r.consumers as object).length === 0) return { ready: false, reason: 'no consumer runs in this process yet' };
    if (!r.ok) return { ready: false, reason: `not running: ${(r.failing as string[]).join(', ')}` };
    return { ready: true };
  }

  metrics(): Promise<string> {
    return renderConsumerMetrics(this.instance, PROBE_TIMEOUT_MS);
  }
}

interface Shared {
  server: Promise<HttpServer>;
  refs: number;
}

const servers = new Map<string, Shared>();

function nonNegativeInt(o: Record<string, unknown>, field: string, fallback: number | undefined): number | undefined {
  const v = o[field] ?? fallback;
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new InvalidOptionError(`serveConsumerOps: options.${field} must be an integer >= 0, got ${JSON.stringify(v)}`, { field });
  return v;
}

/**
 * Serve /health, /ready and /metrics for the consumers, projections and sagas of this process
 * (those that run beside a node are already in the node's endpoints). Resolves once listening.
 */
export async function serveConsumerOps(options: ConsumerOpsOptions): Promise<ConsumerOpsServer> {
  const o = (options ?? {}) as unknown as Record<string, unknown>;
  const port = nonNegativeInt(o, 'port', undefined);
  if (port === undefined || port > 65_535) throw new InvalidOptionError(`serveConsumerOps: options.port must be a port number (0 for any free port), got ${JSON.stringify(o.port)}`, { field: 'port' });
  const host = options.host ?? DEFAULT_HTTP_HOST;
  const t: ConsumerThresholds = {
    maxDlqDepth: nonNegativeInt(o, 'maxDlqDepth', DEFAULT_MAX_DLQ_DEPTH)!,
    maxConsumerLag: nonNegativeInt(o, 'maxConsumerLag', DEFAULT_MAX_CONSUMER_LAG)!,
  };
  const maxLagAgeMs = nonNegativeInt(o, 'maxLagAgeMs', undefined);
  if (maxLagAgeMs !== undefined) t.maxLagAgeMs = maxLagAgeMs;
  let key = `${host}:${port}`;
  let shared = port === 0 ? undefined : servers.get(key);
  if (shared === undefined) {
    const endpoints = new ConsumerEndpoints(options.instance ?? `${hostname()}-${process.pid}`, t);
    const created: Shared = { server: startHttpServer(host, port, endpoints), refs: 0 };
    if (port !== 0) servers.set(key, created);
    created.server.catch(() => { if (servers.get(key) === created) servers.delete(key); });
    shared = created;
  }
  shared.refs++;
  const s = shared;
  let http: HttpServer;
  try {
    http = await s.server;
  } catch (e) {
    s.refs--;
    throw e;
  }
  if (port === 0) {
    // Later calls with the port it got share it.
    key = `${host}:${http.port}`;
    servers.set(key, s);
  }
  let closed = false;
  return {
    url: http.url,
    port: http.port,
    close: async () => {
      if (closed) return;
      closed = true;
      if (--s.refs > 0) return;
      if (servers.get(key) === s) servers.delete(key);
      await http.close();
    },
  };
}
