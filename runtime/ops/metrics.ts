/**
 * Metrics as plain numbers, and the registry of probes other parts of a process add
 * (consumer lag, DLQ depth, extra health checks).
 *
 * The hot paths count here, per batch, in plain fields: a worker adds a flush's commits and
 * events once per JetStream message, the main thread adds a task's commands once per task. No
 * telemetry library is called per command. When Prometheus scrapes /metrics, the main thread
 * asks each worker for a snapshot (the `stats` task), adds them up, and ops/prometheus.ts writes
 * the sums in the Prometheus text format.
 *
 * Counters stay monotonic across worker restarts: the last snapshot of a worker that died is
 * kept in `retired` and added to the live ones (increments since that worker's last scrape are
 * lost with it).
 */

/** Bucket bounds of latency histograms, in seconds. */
export const LATENCY_BOUNDS_S: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Bucket bounds of the commits-per-message histogram. */
export const BATCH_BOUNDS: readonly number[] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

export interface HistogramSnapshot {
  bounds: number[];
  /** counts[i] observations ≤ bounds[i] (and > bounds[i-1]); the last one is above every bound. */
  counts: number[];
  sum: number;
  count: number;
}

/** A fixed-bucket histogram; `observe(v, n)` adds n observations of v at once. */
export class PlainHistogram {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number, n = 1): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    this.counts[i]! += n;
    this.sum += value * n;
    this.count += n;
  }

  snapshot(): HistogramSnapshot {
    return { bounds: [...this.bounds], counts: Array.from(this.counts), sum: this.sum, count: this.count };
  }
}

export function emptyHistogram(bounds: readonly number[]): HistogramSnapshot {
  return { bounds: [...bounds], counts: new Array<number>(bounds.length + 1).fill(0), sum: 0, count: 0 };
}

export function addHistogram(into: HistogramSnapshot, h: HistogramSnapshot): void {
  for (let i = 0; i < into.counts.length; i++) into.counts[i]! += h.counts[i] ?? 0;
  into.sum += h.sum;
  into.count += h.count;
}

function addCounts(into: Record<string, number>, from: Readonly<Record<string, number>>): void {
  for (const k in from) into[k] = (into[k] ?? 0) + from[k]!;
}

// ── worker thread ────────────────────────────────────────────────────────────────────────────

export interface WorkerCounters {
  /** Events stored in JetStream. */
  eventsAppended: number;
  commitsAppended: number;
  /** JetStream messages acknowledged. */
  messagesAppended: number;
  bytesAppended: number;
  /** Commits failed by an append, by reason (error code). */
  appendFailures: Record<string, number>;
  batchCommits: HistogramSnapshot;
  appendSeconds: HistogramSnapshot;
  /** Durable timers fired: their firing's commit stored (node/timers.ts). */
  timersFired: number;
  /** How late each firing was: when its command was decided minus when it was due, in seconds. */
  timerLateSeconds: HistogramSnapshot;
}

export interface WorkerMetricsSnapshot extends WorkerCounters {
  /** Commands received by the worker and not answered yet: the actors' mailboxes. */
  mailboxDepth: number;
  /** Durable timers pending in the shards this worker hosts. */
  timersPending: number;
}

/** Bucket bounds of the timer lateness histogram, in seconds. */
export const LATENESS_BOUNDS_S: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600];

/** One per worker thread; the shards of the worker add to it once per flush. */
export class WorkerMetrics {
  eventsAppended = 0;
  commitsAppended = 0;
  messagesAppended = 0;
  bytesAppended = 0;
  mailboxDepth = 0;
  readonly appendFailures: Record<string, number> = {};
  readonly batchCommits = new PlainHistogram(BATCH_BOUNDS);
  readonly appendSeconds = new PlainHistogram(LATENCY_BOUNDS_S);
  timersPending = 0;
  timersFired = 0;
  readonly timerLateSeconds = new PlainHistogram(LATENESS_BOUNDS_S);

  /** A timer's firing was stored, `lateMs` after its due time. */
  timerFired(lateMs: number): void {
    this.timersFired++;
    this.timerLateSeconds.observe(Math.max(0, lateMs) / 1000);
  }

  /** A message left for JetStream with `commits` commits in `bytes` bytes. */
  flushed(commits: number, bytes: number): void {
    this.batchCommits.observe(commits);
    this.bytesAppended += bytes;
  }

  /** JetStream acknowledged a message after `ms`. */
  appended(commits: number, events: number, ms: number): void {
    this.messagesAppended++;
    this.commitsAppended += commits;
    this.eventsAppended += events;
    this.appendSeconds.observe(ms / 1000);
  }

  appendFailed(reason: string, commits: number): void {
    this.appendFailures[reason] = (this.appendFailures[reason] ?? 0) + commits;
  }

  snapshot(): WorkerMetricsSnapshot {
    return {
      eventsAppended: this.eventsAppended, commitsAppended: this.commitsAppended, messagesAppended: this.messagesAppended,
      bytesAppended: this.bytesAppended, appendFailures: { ...this.appendFailures },
      batchCommits: this.batchCommits.snapshot(), appendSeconds: this.appendSeconds.snapshot(), mailboxDepth: this.mailboxDepth,
      timersFired: this.timersFired, timerLateSeconds: this.timerLateSeconds.snapshot(), timersPending: this.timersPending,
    };
  }
}

export function emptyWorkerCounters(): WorkerCounters {
  return {
    eventsAppended: 0, commitsAppended: 0, messagesAppended: 0, bytesAppended: 0, appendFailures: {},
    batchCommits: emptyHistogram(BATCH_BOUNDS), appendSeconds: emptyHistogram(LATENCY_BOUNDS_S),
    timersFired: 0, timerLateSeconds: emptyHistogram(LATENESS_BOUNDS_S),
  };
}

export function addWorkerCounters(into: WorkerCounters, w: WorkerCounters): void {
  into.eventsAppended += w.eventsAppended;
  into.commitsAppended += w.commitsAppended;
  into.messagesAppended += w.messagesAppended;
  into.bytesAppended += w.bytesAppended;
  addCounts(into.appendFailures, w.appendFailures);
  addHistogram(into.batchCommits, w.batchCommits);
  addHistogram(into.appendSeconds, w.appendSeconds);
  into.timersFired += w.timersFired ?? 0;
  if (w.timerLateSeconds !== undefined) addHistogram(into.timerLateSeconds, w.timerLateSeconds);
}

// ── main thread ──────────────────────────────────────────────────────────────────────────────

/** Commands as the node's callers see them, counted on the main thread in plain numbers. */
export class NodeMetrics {
  commandsOk = 0;
  /** Failed commands by error code (rejections included: DOMAIN_REJECTION). */
  readonly failures: Record<string, number> = {};
  readonly commandSeconds = new PlainHistogram(LATENCY_BOUNDS_S);
  /** Planned hand-offs of shards by this node: from the round's start to the shard's lease released. */
  readonly handOffSeconds = new PlainHistogram(LATENCY_BOUNDS_S);
  /** Shards this node took over: from the lease taken to serving the shard's subjects. */
  readonly takeOverSeconds = new PlainHistogram(LATENCY_BOUNDS_S);
  workerRestarts = 0;
  /** Counters of workers that died, so that sums never go down. */
  readonly retired = emptyWorkerCounters();
  /** The last snapshot seen of each live worker, by thread id. */
  readonly lastByThread = new Map<number, WorkerMetricsSnapshot>();

  /** A command was answered `ms` after it left for its worker (at most one event-loop turn after it was sent). */
  answered(ms: number, error: { code?: string } | null): void {
    if (error === null) this.commandsOk++;
    else this.failed(error.code ?? 'INTERNAL');
    this.commandSeconds.observe(ms / 1000);
  }

  /** Requests an `authorize` rule refused, by kind: command, query, history. */
  readonly forbidden: Record<string, number> = {};

  /** `n` commands failed with `code` (at the door, or all the commands of a lost task). */
  failed(code: string, n = 1): void {
    this.failures[code] = (this.failures[code] ?? 0) + n;
    if (code === 'FORBIDDEN') this.forbidden.command = (this.forbidden.command ?? 0) + n;
  }

  /** A query or history read was refused by an `authorize` rule. */
  forbiddenRead(kind: string): void {
    this.forbidden[kind] = (this.forbidden[kind] ?? 0) + 1;
  }

  /** A worker thread died: keep what it had counted. */
  workerLost(threadId: number): void {
    this.workerRestarts++;
    const last = this.lastByThread.get(threadId);
    if (last !== undefined) addWorkerCounters(this.retired, last);
    this.lastByThread.delete(threadId);
  }
}

// ── probes registered by other code (consumers, DLQ) ────────────────────────────────────────

export interface HealthCheckResult {
  ok: boolean;
  /** Anything that helps an operator: a value, a threshold, an error message. */
  [detail: string]: unknown;
}

export type HealthCheck = () => HealthCheckResult | Promise<HealthCheckResult>;

export interface ConsumerProbe {
  /** The consumer's name (a metric label and a health check name). */
  name: string;
  /** A projection's version: the `version` label of its series; /health names it `<name>@v<version>`. */
  version?: number;
  /** Messages of the log not yet processed by the consumer (JetStream num_pending + ack pending). */
  lag?: () => number | Promise<number>;
  /** Age in ms of the oldest log message the consumer has not handled yet (0 when it has caught up). */
  lagAgeMs?: () => number | Promise<number>;
  /** Events in the consumer's dead-letter queue. */
  dlqDepth?: () => number | Promise<number>;
  /** Live numbers of the consumer in this process: held messages and their bytes, its breaker. */
  gauges?: () => ConsumerGauges;
  /** Whether the consumer runs (a consumer process's `consumers` check and /ready). */
  status?: () => HealthCheckResult;
  /** /health fails above this lag. Default: options.maxConsumerLag of the node (or of serveConsumerOps). */
  maxLag?: number;
  /** /health fails when the oldest unhandled message is older than this (ms). Default: not checked. */
  maxLagAgeMs?: number;
  /** /health fails above this DLQ depth. Default: options.maxDlqDepth of the node (or of serveConsumerOps). */
  maxDlqDepth?: number;
}

export interface ConsumerGauges {
  /** Messages received and not acked yet, held in memory. */
  bufferedMessages: number;
  bufferedBytes: number;
  /** The handler's circuit breaker: 0 closed, 1 open, 2 half-open, 3 isolated (cockatiel's CircuitState); absent without a breaker. */
  breakerState?: number;
}

/** The key of a probe or of a consumer's counters: `<name>` or `<name>@v<version>`. */
export function consumerKey(name: string, version?: number): string {
  return version === undefined ? name : `${name}@v${version}`;
}

/**
 * What one consumer (name, and version for a projection) counted in this process. Every
 * instance of the name in the process (the shards of a scaled-out consumer, a projection
 * restarted by a rebuild) adds to the same counters, so they never go down while the process
 * lives. The pipeline adds to them where it counts its own stats: a field increment per event,
 * one clock read per handler call.
 */
export class ConsumerMetrics {
  /** Events the handler completed (committed). */
  handled = 0;
  /** Failed handler attempts (events, or a batch's events at fault). */
  failed = 0;
  /** Failed attempts that will be tried again (after a back-off). */
  retried = 0;
  /** Events moved to the dead-letter queue. */
  deadLettered = 0;
  /** Events put off while the circuit breaker was open. */
  deferred = 0;
  /** One observation per handler call: an event, or a batch for a batch handler. */
  readonly handlerSeconds = new PlainHistogram(LATENCY_BOUNDS_S);
  constructor(readonly name: string, readonly version?: number) {}
}

/** Process-wide: consumers and DLQs may be created before, after or without a node. */
class OpsRegistry {
  readonly consumers = new Map<string, ConsumerProbe>();
  readonly checks = new Map<string, HealthCheck>();
  readonly deadLettered: Record<string, number> = {};
  readonly consumerMetrics = new Map<string, ConsumerMetrics>();
}

export const ops = new OpsRegistry();

/** The counters of consumer `name` (and `version`) in this process, made on first use. */
export function consumerMetrics(name: string, version?: number): ConsumerMetrics {
  const key = consumerKey(name, version);
  let m = ops.consumerMetrics.get(key);
  if (m === undefined) {
    m = new ConsumerMetrics(name, version);
    ops.consumerMetrics.set(key, m);
  }
  return m;
}

/**
 * Report a consumer's lag and DLQ depth: they become the gauges troupe_consumer_lag and
 * troupe_dlq_depth and the `consumer_lag` and `dlq_depth` checks of /health. Returns a function
 * that removes the probe (call it when the consumer stops).
 */
export function registerConsumerProbe(probe: ConsumerProbe): () => void {
  if (typeof probe?.name !== 'string' || probe.name === '') throw new TypeError('registerConsumerProbe: probe.name must be a non-empty string');
  const key = consumerKey(probe.name, probe.version);
  ops.consumers.set(key, probe);
  return () => { if (ops.consumers.get(key) === probe) ops.consumers.delete(key); };
}

/** Add a check to /health (200 only when every check is ok). Returns a function that removes it. */
export function registerHealthCheck(name: string, check: HealthCheck): () => void {
  if (typeof name !== 'string' || name === '' || typeof check !== 'function') throw new TypeError('registerHealthCheck(name, check): a non-empty name and a function');
  ops.checks.set(name, check);
  return () => { if (ops.checks.get(name) === check) ops.checks.delete(name); };
}

/** Count events a consumer moved to its dead-letter queue (troupe_events_dead_lettered_total). */
export function recordDeadLettered(consumer: string, count = 1): void {
  ops.deadLettered[consumer] = (ops.deadLettered[consumer] ?? 0) + count;
}

/** Call `fn`, giving up after `ms` with an error naming `what`. */
export async function within<T>(ms: number, what: string, fn: () => T | Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      Promise.resolve().then(fn),
      new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms); }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
