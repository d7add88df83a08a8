/**
 * The node's /metrics: its plain-number metrics (metrics.ts) written in the Prometheus text
 * exposition format 0.0.4, by hand. No telemetry library is involved: the format is a few
 * lines per metric, and writing them directly keeps the OpenTelemetry SDK out of a node that
 * does not trace.
 *
 * What a scrape returns (names, HELP, TYPE, labels, buckets) is the same as when this output
 * went through the OpenTelemetry Prometheus exporter, so dashboards and alerts keep working:
 *
 *   # HELP target_info Target metadata                           the node's identity
 *   target_info{service_name="troupe",service_instance_id="<node>"} 1
 *   # HELP <name>_total ... / # TYPE <name>_total counter         counters: `_total` suffix
 *   # UNIT <name> s                                               when the metric has a unit
 *   <name>_count, <name>_sum, <name>_bucket{le="..."} (cumulative, up to le="+Inf")  histograms
 */
import { ops, within, addWorkerCounters, emptyWorkerCounters, type ConsumerProbe, type HistogramSnapshot, type NodeMetrics, type WorkerCounters, type WorkerMetricsSnapshot } from './metrics.ts';

export interface WorkerView {
  slot: number;
  threadId: number;
  alive: boolean;
  residentActors: number;
  inFlightAppends: number;
  /** Commands queued on the main thread for this worker. */
  queued: number;
  /** Commands sent to this worker and not answered yet. */
  inFlight: number;
  metrics: WorkerMetricsSnapshot | null;
}

/** What the node hands the renderer at each scrape. */
export interface NodeView {
  nodeName: string;
  metrics: NodeMetrics;
  workers: WorkerView[];
  ownedShards: number;
  /** Consumer probes that do not answer within this are reported as missing. */
  probeTimeoutMs: number;
}

/** Renders the node's metrics in the Prometheus text format. */
export interface MetricsRenderer {
  render(): Promise<string>;
  shutdown(): Promise<void>;
}

type Labels = Readonly<Record<string, string>>;
type Points = [Labels, number][];

/** A sample value as Prometheus reads it. */
function value(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  return String(n);
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function labels(l: Labels, extra = ''): string {
  let out = '';
  for (const k in l) out += `${out === '' ? '' : ','}${k}="${escapeLabel(l[k]!)}"`;
  if (extra !== '') out += `${out === '' ? '' : ','}${extra}`;
  return out === '' ? '' : `{${out}}`;
}

/** Writes one exposition: metric after metric, each with its HELP, UNIT and TYPE lines. */
export class PrometheusText {
  private out = '';

  private head(name: string, help: string, type: string, unit: string): void {
    this.out += `# HELP ${name} ${escapeHelp(help)}\n`;
    if (unit !== '') this.out += `# UNIT ${name} ${unit}\n`;
    this.out += `# TYPE ${name} ${type}\n`;
  }

  /** A monotonic counter; its name gets the `_total` suffix. */
  counter(name: string, help: string, points: Points, unit = ''): this {
    const full = `${name}_total`;
    this.head(full, help, 'counter', unit);
    for (const [l, n] of points) this.out += `${full}${labels(l)} ${value(n)}\n`;
    return this;
  }

  gauge(name: string, help: string, points: Points, unit = ''): this {
    this.head(name, help, 'gauge', unit);
    for (const [l, n] of points) this.out += `${name}${labels(l)} ${value(n)}\n`;
    return this;
  }

  /** A histogram from per-bucket counts: written cumulative, with the `+Inf` bucket last. */
  histogram(name: string, help: string, h: HistogramSnapshot, unit = '', l: Labels = {}): this {
    return this.histograms(name, help, [[l, h]], unit);
  }

  /** One histogram family with a series per label set. */
  histograms(name: string, help: string, series: [Labels, HistogramSnapshot][], unit = ''): this {
    this.head(name, help, 'histogram', unit);
    for (const [l, h] of series) this.series(name, l, h);
    return this;
  }

  private series(name: string, l: Labels, h: HistogramSnapshot): void {
    this.out += `${name}_count${labels(l)} ${value(h.count)}\n`;
    this.out += `${name}_sum${labels(l)} ${value(h.sum)}\n`;
    let cumulative = 0;
    for (let i = 0; i < h.counts.length; i++) {
      cumulative += h.counts[i]!;
      const le = i < h.bounds.length ? value(h.bounds[i]!) : '+Inf';
      this.out += `${name}_bucket${labels(l, `le="${le}"`)} ${value(cumulative)}\n`;
    }
  }

  text(): string {
    return this.out;
  }
}

/** The node's exposition at this moment: counters, histograms, per-worker gauges, consumer probes. */
export async function renderNodeMetrics(v: NodeView): Promise<string> {
  const p = new PrometheusText();
  p.gauge('target_info', 'Target metadata', [[{ service_name: 'troupe', service_instance_id: v.nodeName }, 1]]);

  const m = v.metrics;
  const totals: WorkerCounters = emptyWorkerCounters();
  addWorkerCounters(totals, m.retired);
  for (const w of v.workers) if (w.metrics !== null) addWorkerCounters(totals, w.metrics);
  const failed = Object.values(m.failures).reduce((a, b) => a + b, 0);

  p.counter('troupe_commands', 'Commands answered by the node, by outcome (ok: stored or a no-op; error: rejected or failed)', [[{ outcome: 'ok' }, m.commandsOk], [{ outcome: 'error' }, failed]]);
  p.counter('troupe_command_failures', 'Commands that failed, by reason (the error code; DOMAIN_REJECTION is a business rule)', Object.entries(m.failures).map(([reason, n]) => [{ reason }, n]));
  p.counter('troupe_events_appended', 'Events stored in JetStream', [[{}, totals.eventsAppended]]);
  p.counter('troupe_commits_appended', 'Commits (the events of one command) stored in JetStream', [[{}, totals.commitsAppended]]);
  p.counter('troupe_append_messages', 'JetStream messages (commit batches) acknowledged', [[{}, totals.messagesAppended]]);
  p.counter('troupe_append_bytes', 'Bytes of commit batches sent to JetStream', [[{}, totals.bytesAppended]], 'By');
  p.counter('troupe_append_failures', 'Commits whose append failed, by reason (CONCURRENCY: fenced by another writer; JOURNAL_UNAVAILABLE: refused or not acknowledged)', Object.entries(totals.appendFailures).map(([reason, n]) => [{ reason }, n]));
  p.counter('troupe_events_dead_lettered', DEAD_LETTERED_HELP, deadLetteredPoints());
  p.counter('troupe_worker_restarts', 'Worker threads that died and were replaced', [[{}, m.workerRestarts]]);

  p.histogram('troupe_command_duration_seconds', 'Command latency on the node: from when its batch left for the worker (at most one event-loop turn after send) to its answer', m.commandSeconds.snapshot(), 's');
  p.histogram('troupe_append_batch_commits', 'Commits per JetStream message (batch size)', totals.batchCommits);
  p.histogram('troupe_append_duration_seconds', 'JetStream append latency, from publish to acknowledgement', totals.appendSeconds, 's');
  p.counter('troupe_timers_fired', 'Durable timers fired (their firing\'s commit stored)', [[{}, totals.timersFired]]);
  p.histogram('troupe_timer_late_seconds', 'How late durable timers fired: when the firing was decided minus when it was due', totals.timerLateSeconds, 's');
  p.gauge('troupe_timers_pending', 'Durable timers pending in the shards this node owns', [[{}, v.workers.reduce((n, w) => n + (w.metrics?.timersPending ?? 0), 0)]]);

  const byWorker = (f: (w: WorkerView) => number): Points => v.workers.map((w) => [{ worker: String(w.slot) }, f(w)]);
  p.gauge('troupe_mailbox_depth', 'Commands received by a worker and not answered yet (actor mailboxes: stashed, deciding, waiting for the append)', byWorker((w) => w.metrics?.mailboxDepth ?? 0));
  p.gauge('troupe_worker_queue_depth', 'Commands queued on the main thread for a worker', byWorker((w) => w.queued));
  p.gauge('troupe_worker_commands_in_flight', 'Commands sent to a worker and not answered yet', byWorker((w) => w.inFlight));
  p.gauge('troupe_active_actors', 'Actors resident in memory, per worker', byWorker((w) => w.residentActors));
  p.gauge('troupe_appends_in_flight', 'JetStream messages sent and not acknowledged yet, per worker', byWorker((w) => w.inFlightAppends));
  p.gauge('troupe_workers_alive', 'Worker threads alive', [[{}, v.workers.filter((w) => w.alive).length]]);
  p.gauge('troupe_owned_shards', 'Shards this node writes', [[{}, v.ownedShards]]);

  const probes = await readProbes(v.probeTimeoutMs);
  p.gauge('troupe_consumer_lag', CONSUMER_LAG_HELP, probes.lag);
  p.gauge('troupe_dlq_depth', DLQ_DEPTH_HELP, probes.dlq);
  // Added after the exporter's set: at the end, so that the metrics before keep their order.
  p.counter('troupe_requests_forbidden', 'Commands and reads an authorize rule refused (FORBIDDEN), by kind: command, query, history', Object.entries(m.forbidden).map(([kind, n]) => [{ kind }, n]));
  writeConsumerSeries(p, probes);
  p.histogram('troupe_shard_handoff_duration_seconds', 'Planned hand-offs of shards by this node: from the start of the hand-off round to the shard\'s lease released (the cut-over is the end of it plus the next owner\'s take-over)', m.handOffSeconds.snapshot(), 's');
  p.histogram('troupe_shard_takeover_duration_seconds', 'Shards this node took over: from the lease taken to serving the shard\'s subjects (catch-up with the log included)', m.takeOverSeconds.snapshot(), 's');
  return p.text();
}

// ── consumers: the node's /metrics and a consumer process's (ops/consumer-ops.ts) ──────────

const DEAD_LETTERED_HELP = 'Events consumers moved to a dead-letter queue';
const CONSUMER_LAG_HELP = 'Log messages a consumer has not processed yet';
const DLQ_DEPTH_HELP = 'Events in a consumer\'s dead-letter queue';

/** The labels of a consumer's series: `consumer`, and `version` for a projection. */
function consumerLabels(name: string, version: number | undefined): Labels {
  return version === undefined ? { consumer: name } : { consumer: name, version: String(version) };
}

/** Dead letters counted by recordDeadLettered() and by the consumers of this process, one point per label set. */
function deadLetteredPoints(): Points {
  const byKey = new Map<string, [Labels, number]>();
  const add = (l: Labels, n: number) => {
    const key = JSON.stringify(l);
    const had = byKey.get(key);
    if (had === undefined) byKey.set(key, [l, n]);
    else had[1] += n;
  };
  for (const [consumer, n] of Object.entries(ops.deadLettered)) add({ consumer }, n);
  for (const m of ops.consumerMetrics.values()) add(consumerLabels(m.name, m.version), m.deadLettered);
  return [...byKey.values()];
}

/** What the consumer probes answered at one scrape (a probe that fails or hangs reads NaN). */
export interface ProbeReadings {
  lag: Points;
  lagAge: Points;
  dlq: Points;
  bufferedMessages: Points;
  bufferedBytes: Points;
  breaker: Points;
}

/** Ask every consumer probe at once, each within `timeoutMs`. */
export async function readProbes(timeoutMs: number): Promise<ProbeReadings> {
  const r: ProbeReadings = { lag: [], lagAge: [], dlq: [], bufferedMessages: [], bufferedBytes: [], breaker: [] };
  const read = (probe: ConsumerProbe, what: string, fn: () => number | Promise<number>) => within(timeoutMs, `consumer ${probe.name} ${what}`, fn).catch(() => NaN);
  await Promise.all([...ops.consumers.values()].map(async (probe) => {
    const l = consumerLabels(probe.name, probe.version);
    const [lag, age, dlq] = await Promise.all([
      probe.lag === undefined ? undefined : read(probe, 'lag', probe.lag),
      probe.lagAgeMs === undefined ? undefined : read(probe, 'lag age', probe.lagAgeMs),
      probe.dlqDepth === undefined ? undefined : read(probe, 'DLQ depth', probe.dlqDepth),
    ]);
    if (lag !== undefined) r.lag.push([l, lag]);
    if (age !== undefined) r.lagAge.push([l, age / 1000]);
    if (dlq !== undefined) r.dlq.push([l, dlq]);
    if (probe.gauges !== undefined) {
      let g;
      try { g = probe.gauges(); } catch { g = { bufferedMessages: NaN, bufferedBytes: NaN }; }
      r.bufferedMessages.push([l, g.bufferedMessages]);
      r.bufferedBytes.push([l, g.bufferedBytes]);
      if (g.breakerState !== undefined) r.breaker.push([l, g.breakerState]);
    }
  }));
  return r;
}

/** The per-consumer series that follow the node's own (and a consumer process's base ones). */
function writeConsumerSeries(p: PrometheusText, probes: ProbeReadings): void {
  const all = [...ops.consumerMetrics.values()];
  const points = (f: (m: (typeof all)[number]) => number): Points => all.map((m) => [consumerLabels(m.name, m.version), f(m)]);
  p.counter('troupe_consumer_events_handled', 'Events a consumer\'s handler completed (committed), in this process', points((m) => m.handled));
  p.counter('troupe_consumer_events_failed', 'Failed handler attempts of a consumer (each failed attempt of an event)', points((m) => m.failed));
  p.counter('troupe_consumer_events_retried', 'Failed attempts of a consumer that will be tried again after a back-off', points((m) => m.retried));
  p.counter('troupe_consumer_events_deferred', 'Events a consumer put off while its circuit breaker was open', points((m) => m.deferred));
  p.histograms('troupe_consumer_handler_duration_seconds', 'Handler latency of a consumer: one observation per handler call (an event, or a batch for a batch handler)',
    all.map((m) => [consumerLabels(m.name, m.version), m.handlerSeconds.snapshot()]), 's');
  p.gauge('troupe_consumer_lag_seconds', 'Age of the oldest log message a consumer has not handled yet (0 when caught up)', probes.lagAge, 's');
  p.gauge('troupe_consumer_buffered_messages', 'Log messages a consumer holds in memory, received and not acked yet', probes.bufferedMessages);
  p.gauge('troupe_consumer_buffered_bytes', 'Bytes of the log messages a consumer holds in memory', probes.bufferedBytes, 'By');
  p.gauge('troupe_consumer_breaker_state', 'A consumer\'s circuit breaker: 0 closed, 1 open, 2 half-open, 3 isolated', probes.breaker);
}

/** A consumer process's /metrics: its identity, then every consumer series (the node's names and labels). */
export async function renderConsumerMetrics(instance: string, probeTimeoutMs: number): Promise<string> {
  const p = new PrometheusText();
  p.gauge('target_info', 'Target metadata', [[{ service_name: 'troupe-consumers', service_instance_id: instance }, 1]]);
  const probes = await readProbes(probeTimeoutMs);
  p.counter('troupe_events_dead_lettered', DEAD_LETTERED_HELP, deadLetteredPoints());
  p.gauge('troupe_consumer_lag', CONSUMER_LAG_HELP, probes.lag);
  p.gauge('troupe_dlq_depth', DLQ_DEPTH_HELP, probes.dlq);
  writeConsumerSeries(p, probes);
  return p.text();
}

/** A renderer over the node's view: each `render()` is one scrape. */
export async function createMetricsRenderer(view: () => Promise<NodeView>, nodeName: string): Promise<MetricsRenderer> {
  return {
    render: async () => renderNodeMetrics({ ...(await view()), nodeName }),
    shutdown: async () => {},
  };
}
