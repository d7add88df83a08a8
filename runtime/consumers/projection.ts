/**
 * Projections: read models built from the log into LMDB, with a checkpoint, rebuild, and
 * versions that take over from each other (blue-green for read models).
 *
 * A projection is a consumer (consumers/consume.ts) whose handler writes only into its LMDB view
 * through a `View`; the writes of each task commit in one transaction with the events' de-dup
 * marks, so an event is applied exactly once even across crashes. Its JetStream consumer
 * belongs to this process's LMDB (every process that serves reads builds its own copy): it is
 * re-created at each start to deliver from the checkpoint + 1, so the checkpoint (`position`)
 * is exact — every log message up to it is applied — and `waitFor(position)` gives
 * read-your-writes after a command whose result carries that position.
 *
 *   view/<stream>/<name>/v<version>      the read model (your keys and values)
 *   projections  "<stream>/<name>"       → { active: version }   which version readers use
 *
 * Versions: v2 starts beside v1 (its own view and consumer), builds from the start of the
 * log, and becomes the active version once its checkpoint has passed both v1's and the end
 * of the log as it was when v2 started. `ReadModel` always reads the active version.
 *
 * With `scaleOut`, the instances of a version share the log's shards instead, each owned shard a
 * partition of the view served over NATS (partitions.ts, view-reader.ts).
 */
import { createHash } from 'node:crypto';
import type { Database } from 'lmdb';
import type { NatsConnection } from '../journal/journal.ts';
import type { EventEnvelope } from '../journal/codec.ts';
import { consume, type Consumer } from './consume.ts';
import { ConsumerStore, type Key } from './consumer-store.ts';
import { InvalidOptionError } from '../errors.ts';
import type { RetryOptions } from './flow.ts';
import { validateScaleOut, type ProbeOptions, type ScaleOutOptions } from './consume-options.ts';
import { serveConsumerOps, type ConsumerOpsServer } from '../ops/consumer-ops.ts';
import { DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX } from '../options.ts';
import { serveRebuilds } from './overview.ts';
import type { EventTransform, HandlerContext } from './pipeline.ts';
import { ScaledProjection } from './partitions.ts';

export interface View {
  /** The value of `key`, as this task left it. */
  get<V = unknown>(key: Key): V | undefined;
  put(key: Key, value: unknown): void;
  remove(key: Key): void;
  /** Replace the value with `fn(current)`; returning undefined removes the key. */
  update<V = unknown>(key: Key, fn: (current: V | undefined) => V | undefined): void;
}

export interface ProjectionOptions {
  /** The read model's name (letters, digits, `_`, `-`). */
  name: string;
  /** Its version; a higher version builds beside the active one and takes over once caught up. Default 1. */
  version?: number;
  eventTypes?: readonly string[];
  aggregateTypes?: readonly string[];
  /** Apply one event to the view. Runs for each event once, per aggregate in order. */
  apply: (event: EventEnvelope, view: View) => void | Promise<void>;
  /** An open store, or a data dir to open one in (`<dataDir>/consumers`). */
  store?: ConsumerStore;
  dataDir?: string;
  servers?: string;
  nc?: NatsConnection;
  stream?: string;
  subjectPrefix?: string;
  transform?: EventTransform;
  /** Events applied per LMDB transaction at most. Default 500. */
  batchSize?: number;
  retry?: RetryOptions;
  ackWaitMs?: number;
  maxAckPending?: number;
  /** Become the active version once caught up (when newer than the active one). Default true. */
  takeOver?: boolean;
  onError?: (error: unknown) => void;
  /** Thresholds of its /health checks (labelled `<name>@v<version>`), or false to report nothing. Default: reported, with the default thresholds. */
  probe?: false | ProbeOptions;
  /** Serve /health, /ready and /metrics for this process's consumers on this port (as `consume({ http })`). */
  http?: { port: number; host?: string };
  /**
   * Run several instances of this projection version (in as many processes) that share its
   * work: each owns a subset of the log's shards, and each owned shard is a partition of the
   * view in the instance's LMDB, served to readers over NATS (`reader()`). Fits views
   * whose rows belong to one aggregate (or partial rows a reader combines); a view that needs
   * every event in one place stays unscaled. Not with `takeOver` (readers name the version).
   */
  scaleOut?: true | ScaleOutOptions;
}

const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const CHECKPOINT_EVERY_MS = 100;

function registryOf(store: ConsumerStore): Database<{ active: number }, string> {
  return store.db<{ active: number }, string>('projections');
}

export function viewName(stream: string, name: string, version: number): string {
  return `view/${stream}/${name}/v${version}`;
}

type Delivery = Pick<ProjectionOptions, 'eventTypes' | 'aggregateTypes' | 'transform' | 'retry' | 'ackWaitMs' | 'maxAckPending'>;

/** @internal What a projection passes on to its consumers as given: which events, how they are delivered and retried. */
export function deliveryOptions(options: ProjectionOptions): Delivery {
  const out: Delivery = {};
  if (options.eventTypes !== undefined) out.eventTypes = options.eventTypes;
  if (options.aggregateTypes !== undefined) out.aggregateTypes = options.aggregateTypes;
  if (options.transform !== undefined) out.transform = options.transform;
  if (options.retry !== undefined) out.retry = options.retry;
  if (options.ackWaitMs !== undefined) out.ackWaitMs = options.ackWaitMs;
  if (options.maxAckPending !== undefined) out.maxAckPending = options.maxAckPending;
  return out;
}

/** The JetStream consumer (and records) of a projection version built in `store`. */
export function projectionConsumerName(store: ConsumerStore, name: string, version: number): string {
  const tag = createHash('sha256').update(store.path).digest('hex').slice(0, 10);
  return `proj_${name}_v${version}_${tag}`;
}

/**
 * Start (or resume) a projection. With `scaleOut`, resolves once the instance joined its
 * version's group (it may own no shard yet).
 */
export function project(options: ProjectionOptions & { scaleOut: true | ScaleOutOptions }): Promise<ScaledProjection>;
export function project(options: ProjectionOptions): Promise<Projection>;
export async function project(options: ProjectionOptions): Promise<Projection | ScaledProjection> {
  if (typeof options?.name !== 'string' || !NAME.test(options.name)) {
    throw new InvalidOptionError(`options.name must be 1-64 letters, digits, _ or -, got ${JSON.stringify(options?.name)}`, { field: 'name' });
  }
  const version = options.version ?? 1;
  if (!Number.isInteger(version) || version < 1) throw new InvalidOptionError(`options.version must be an integer >= 1, got ${JSON.stringify(version)}`, { field: 'version' });
  if (typeof options.apply !== 'function') throw new InvalidOptionError(`options.apply of projection ${options.name} must be a function`, { field: 'apply' });
  validateScaleOut(`projection ${options.name}`, options.scaleOut);
  if (options.scaleOut !== undefined && options.takeOver === true) {
    throw new InvalidOptionError(`projection ${options.name}: takeOver does not apply with scaleOut (a scaled projection has no active version to switch; readers name the version they read: build v2 beside v1, move the readers, then stop v1)`, { field: 'takeOver' });
  }
  let store = options.store;
  let ownsStore = false;
  if (store === undefined) {
    if (typeof options.dataDir !== 'string' || options.dataDir.length === 0) {
      throw new InvalidOptionError(`projection ${options.name} needs options.dataDir or options.store`, { field: 'dataDir' });
    }
    store = ConsumerStore.open(options.dataDir);
    ownsStore = true;
  }
  if (options.scaleOut !== undefined) {
    const own = store;
    return ScaledProjection.start(options, version, store, ownsStore ? [() => own.close()] : []).catch(async (e: unknown) => {
      if (ownsStore) await own.close();
      throw e;
    });
  }
  const p = new Projection(options, version, store, ownsStore);
  try {
    await p.start();
    if (options.http !== undefined) p.served(await serveConsumerOps(options.http));
  } catch (e) {
    await p.stop().catch(() => {});
    throw e;
  }
  return p;
}

export class Projection {
  readonly name: string;
  readonly stream: string;
  /** The view: read it with get/getRange (or through a ReadModel, which follows the active version). */
  readonly db: Database;
  private consumer: Consumer | null = null;
  private readonly consumerName: string;
  private timer: NodeJS.Timeout | null = null;
  private savedCheckpoint = -1;
  private builtFrom = 0;
  private readonly listeners: ((events: EventEnvelope[]) => void)[] = [];
  private unlisten: (() => void) | null = null;
  private unserve: (() => void) | null = null;
  private http: ConsumerOpsServer | null = null;
  private activation: { promise: Promise<void>; resolve: () => void };

  /** @internal use project() */
  constructor(private readonly options: ProjectionOptions, readonly version: number, readonly store: ConsumerStore, private readonly ownsStore: boolean) {
    this.name = options.name;
    this.stream = options.stream ?? DEFAULT_STREAM;
    this.db = store.db(viewName(this.stream, this.name, version));
    this.consumerName = projectionConsumerName(store, this.name, version);
    let resolve!: () => void;
    this.activation = { promise: new Promise<void>((r) => { resolve = r; }), resolve };
  }

  private get registryKey(): string {
    return `${this.stream}/${this.name}`;
  }

  /** The version readers use, if any. */
  activeVersion(): number | undefined {
    return registryOf(this.store).get(this.registryKey)?.active;
  }

  get active(): boolean {
    return this.activeVersion() === this.version;
  }

  /** Resolves once this version is the one readers use. */
  activated(): Promise<void> {
    return this.activation.promise;
  }

  /** Every log message up to this stream position is applied to the view. */
  get position(): number {
    return this.consumer?.position ?? this.storedCheckpoint();
  }

  private storedCheckpoint(): number {
    return (this.store.db<number, string>(`c/${this.stream}/${this.consumerName}/meta`).get('checkpoint')) ?? 0;
  }

  /** @internal */
  async start(): Promise<void> {
    const { options } = this;
    const startAfter = this.storedCheckpoint();
    this.savedCheckpoint = startAfter;
    const db = this.db;
    const apply = options.apply;
    this.consumer = await consume({
      name: this.consumerName, startAfter,
      store: this.store, ...(options.nc === undefined ? {} : { nc: options.nc }), ...(options.servers === undefined ? {} : { servers: options.servers }),
      stream: this.stream, ...(options.subjectPrefix === undefined ? {} : { subjectPrefix: options.subjectPrefix }),
      ...deliveryOptions(options),
      ...(options.onError === undefined ? {} : { onError: options.onError }),
      batchSize: options.batchSize ?? 500,
      concurrency: 1,
      metricsAs: { name: this.name, version: this.version },
      ...(options.probe === undefined ? {} : { probe: options.probe }),
      handler: (event, ctx) => apply(event, new TaskView(ctx, db)),
      // The stream was re-created: its events are new, so is the view.
      onStreamReset: () => db.clearAsync(),
    });
    this.unlisten = this.consumer.onCommitted((events) => { for (const l of this.listeners) l(events); });
    // `troupe rebuild` asks the process that runs the apply function (overview.ts).
    const consumer = this.consumer;
    this.unserve = serveRebuilds(consumer.nc, options.subjectPrefix ?? DEFAULT_SUBJECT_PREFIX, this.name, this.version, () => consumer.logEnd(), () => this.rebuild());
    this.builtFrom = await this.consumer.logEnd();
    this.timer = setInterval(() => void this.tick().catch((e: unknown) => this.options.onError?.(e)), CHECKPOINT_EVERY_MS);
    this.timer.unref();
    await this.tick();
  }

  /** Save the checkpoint; take over when caught up. */
  private async tick(): Promise<void> {
    const c = this.consumer;
    if (c === null) return;
    const p = c.position;
    if (p !== this.savedCheckpoint) {
      this.savedCheckpoint = p;
      await c.state.putMeta('checkpoint', p);
    }
    const registry = registryOf(this.store);
    const current = registry.get(this.registryKey)?.active;
    if (current === this.version) {
      this.activation.resolve();
      return;
    }
    if (this.options.takeOver === false) return;
    if (current === undefined) {
      await registry.put(this.registryKey, { active: this.version });
      this.activation.resolve();
      return;
    }
    if (current > this.version) return;
    const activeCheckpoint = this.store.db<number, string>(`c/${this.stream}/${projectionConsumerName(this.store, this.name, current)}/meta`).get('checkpoint') ?? 0;
    if (p >= this.builtFrom && p >= activeCheckpoint) {
      await registry.put(this.registryKey, { active: this.version });
      this.activation.resolve();
    }
  }

  /** Resolves once every log message up to `position` is applied; TimeoutError after `timeoutMs`. */
  waitFor(position: number, timeoutMs = 5_000): Promise<void> {
    if (this.consumer === null) return Promise.reject(new Error(`projection ${this.name} v${this.version} is stopped`));
    return this.consumer.waitFor(position, timeoutMs);
  }

  /** Resolves when nothing is left to apply. */
  caughtUp(timeoutMs = 30_000): Promise<void> {
    if (this.consumer === null) return Promise.reject(new Error(`projection ${this.name} v${this.version} is stopped`));
    return this.consumer.caughtUp(timeoutMs);
  }

  get<V = unknown>(key: Key): V | undefined {
    return this.db.get(key) as V | undefined;
  }

  getRange(options: { start?: Key; end?: Key; limit?: number; reverse?: boolean } = {}): Iterable<{ key: Key; value: unknown }> {
    return this.db.getRange(options);
  }

  /** Listen to the events each committed task applied (to invalidate caches). */
  onApplied(listener: (events: EventEnvelope[]) => void): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  /** `http://host:port` of the endpoints this projection serves (options.http), or null. */
  get httpUrl(): string | null {
    return this.http?.url ?? null;
  }

  /** @internal */
  served(http: ConsumerOpsServer): void {
    this.http = http;
  }

  /** The consumer underneath (stats, dead letters and their replay). */
  get events(): Consumer | null {
    return this.consumer;
  }

  /** Forget the view and the checkpoint and build again from the start of the log. */
  async rebuild(): Promise<void> {
    await this.halt();
    await this.db.clearAsync();
    await this.store.state(this.stream, this.consumerName).clear();
    this.savedCheckpoint = -1;
    await this.start();
  }

  private async closeHttp(): Promise<void> {
    const http = this.http;
    this.http = null;
    await http?.close();
  }

  private async halt(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.unlisten?.();
    this.unlisten = null;
    this.unserve?.();
    this.unserve = null;
    const c = this.consumer;
    this.consumer = null;
    if (c !== null) {
      const p = c.position;
      await c.stop();
      if (p > 0) await c.state.putMeta('checkpoint', p);
    }
  }

  /** Stop applying events; the view and checkpoint stay for the next start. */
  async stop(): Promise<void> {
    await this.halt();
    await this.closeHttp();
    if (this.ownsStore) await this.store.close();
  }

  /** Stop and delete this version's view and records (retire an old version). Refused for the active version. */
  async drop(): Promise<void> {
    if (this.active) throw new InvalidOptionError(`projection ${this.name} v${this.version} is the active version; start a newer one before dropping it`, { field: 'version' });
    await this.halt();
    await this.closeHttp();
    await this.store.drop(viewName(this.stream, this.name, this.version));
    await this.store.state(this.stream, this.consumerName).clear();
    if (this.ownsStore) await this.store.close();
  }
}

/** @internal A task's writes to a view (partitions.ts writes its partitions through it too). */
export class TaskView implements View {
  constructor(private readonly ctx: HandlerContext, private readonly db: Database) {}

  get<V = unknown>(key: Key): V | undefined {
    return this.ctx.get<V>(this.db, key);
  }

  put(key: Key, value: unknown): void {
    this.ctx.put(this.db, key, value);
  }

  remove(key: Key): void {
    this.ctx.remove(this.db, key);
  }

  update<V = unknown>(key: Key, fn: (current: V | undefined) => V | undefined): void {
    const next = fn(this.get<V>(key));
    if (next === undefined) this.remove(key);
    else this.put(key, next);
  }
}

/** Reads a projection's active version, whichever it is; for query handlers. */
export class ReadModel {
  constructor(readonly store: ConsumerStore, readonly name: string, readonly stream: string = DEFAULT_STREAM) {}

  activeVersion(): number | undefined {
    return registryOf(this.store).get(`${this.stream}/${this.name}`)?.active;
  }

  private view(): Database | null {
    const v = this.activeVersion();
    return v === undefined ? null : this.store.db(viewName(this.stream, this.name, v));
  }

  get<V = unknown>(key: Key): V | undefined {
    return this.view()?.get(key) as V | undefined;
  }

  getRange(options: { start?: Key; end?: Key; limit?: number; reverse?: boolean } = {}): Iterable<{ key: Key; value: unknown }> {
    return this.view()?.getRange(options) ?? [];
  }
}
