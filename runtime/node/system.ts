/**
 * The facade of a Troupe node: start, send, query, history, stop.
 *
 * start: load actor modules → connect NATS (2.10+, JetStream on) → ensure the stream → check
 * the LMDB cache describes this stream → take shard leases → start the worker pool → open the
 * owned shards (catch-up from checkpoint) → serve commands over NATS.
 *
 * Why one file of ~660 lines: it is the node's one public class, and its methods are the
 * sequences that tie the parts together in order (start, stop, gaining and handing off a shard,
 * the door every command and read passes: validate, authenticate, rate-limit, authorize,
 * SHARD_NOT_OWNED). The parts themselves have their files: ownership and placement
 * (ownership.ts, membership.ts), planned hand-offs between nodes (handoff.ts), the workers (pool.ts, worker.ts), the request service
 * (remote/service.ts), health and metrics (health.ts), the operator console (console.ts,
 * series.ts), timers (timers.ts).
 */
import { estimateSize, type EventEnvelope } from '../journal/codec.ts';
import type { Command, CommandEnvelope, CommandMetadata, CommandResult, OutcomeSink } from '../envelope.ts';
import { IdGenerator, IdUse, isPlainPayload, payloadRefusal, shardOf } from '../envelope.ts';
import { ConcurrencyError, ForbiddenError, InvalidOptionError, StoppedError, ValidationError, fromWire, isTroupeError, type RateLimitedError, type WireError } from '../errors.ts';
import { forbidden, type AuthorizeRequest, type NodeAuthorize, type Principal, type RequestKind } from '../principal.ts';
import { TokenVerifier } from '../token.ts';
import { RateLimiter } from '../rate-limit.ts';
import { assertServerVersion, connectNats, ensureStream, openJournal, type Journal, type NatsConnection } from '../journal/journal.ts';
import { resolveOptions, type ResolvedOptions, type TroupeOptions } from '../options.ts';
import { Ownership } from './ownership.ts';
import { offerToNextOwners, serveHandOffs } from './handoff.ts';
import { ShardNeeds } from '../journal/shard-needs.ts';
import { Membership, readClusterStatus, troupeVersion, type ClusterStatus } from './membership.ts';
import { consumerStatus } from '../consumers/overview.ts';
import { WorkerPool } from './pool.ts';
import { resolveMasterKeys } from '../contracts/crypto.ts';
import { loadRegistry, type Registry } from '../contracts/registry.ts';
import { CommandService, type ServedNode, type WorkerCommands } from '../remote/service.ts';
import { Store, STORE_LAYOUT } from '../journal/store.ts';
import type { WorkerStats } from './worker.ts';
import type { PendingTimer } from './timers.ts';
import type { HealthReport } from '../ops/http.ts';
import { createLog, errorFields, type Log } from '../ops/log.ts';
import { NodeOps } from './health.ts';
import { refreshTracing, startCommandTrace, tracing } from '../ops/tracing.ts';
import { NodeSeries } from './series.ts';
import { NodeConsole } from './console.ts';
import { createDashboard } from '../ops/dashboard.ts';
import { serveOps } from '../remote/ops-service.ts';

export type { Command };

/** Options of a read (`query`, `history`). */
export interface ReadOptions {
  /** The verified caller: the node's and the actor type's `authorize` rules judge it. */
  principal?: Principal | null;
}

/** Options of `stop()`. */
export interface StopOptions {
  /** How long in-flight commands may take to finish. Default 10 s. */
  timeoutMs?: number;
  /**
   * true (default): hand every shard off to the other nodes (SIGTERM). false: stop to restart
   * under the same nodeName (SIGUSR2): keep the leases, move no shard.
   */
  handOff?: boolean;
}

export interface NodeStats {
  nodeName: string;
  ownedShards: number;
  queuedCommands: number;
  workers: WorkerStats[];
}

const ID = /^[\x21-\x7e]{1,256}$/;

export class Troupe implements ServedNode {
  private stopping: Promise<void> | null = null;
  /** When each shard being handed off stopped taking requests (logged with the hand-off). */
  private readonly droppedAt = new Map<number, number>();
  private readonly ids = new IdGenerator();
  private readonly expiry: NodeJS.Timeout;
  private phase: 'starting' | 'running' | 'stopping' | 'stopped' = 'starting';
  /** The node's logger (pino; options.logLevel). */
  readonly log: Log;
  private readonly ops: NodeOps;
  /** options.auth, checked: verifies the tokens of remote requests. Null: callers are not verified. */
  private verifier: TokenVerifier | null = null;
  /** options.authorize: the node's rule at the door. */
  private nodeRule: NodeAuthorize | null = null;
  /** options.rateLimits: token buckets per principal and tenant. */
  private limiter: RateLimiter | null = null;
  /** Set when the workers take remote commands from NATS themselves (node/serving.ts); null: the main thread does. */
  workerCommands: WorkerCommands | null = null;
  /** The operator console: per-second series, the dashboard's data, the NATS ops subjects (startConsole). */
  private readonly series: NodeSeries;
  private readonly console: NodeConsole;
  private stopOpsService: (() => void) | null = null;

  private constructor(
    readonly options: ResolvedOptions,
    private readonly registry: Registry,
    private readonly nc: NatsConnection,
    readonly journal: Journal,
    private readonly store: Store,
    private readonly pool: WorkerPool,
    private readonly ownership: Ownership | null,
    private service: CommandService | null,
    private readonly membership: Membership | null = null,
  ) {
    this.expiry = setInterval(() => void this.store.expireCommands().catch(() => {}), Math.min(options.commandIdTtlMs, 3_600_000));
    this.expiry.unref();
    this.log = createLog(options.logLevel, { node: options.nodeName });
    this.ops = new NodeOps({
      options, nc, journal, store, pool, log: this.log, ownedShards: () => this.ownedShards.length, phase: () => this.phase, cluster: () => this.cluster(),
    });
    pool.onWorkerLost = (threadId) => this.workerLost(threadId);
    this.series = new NodeSeries(pool);
    this.console = new NodeConsole({
      options, nc, pool, store, series: this.series, version: troupeVersion(), startedAt: Date.now(),
      ownedShards: () => this.ownedShards, phase: () => this.phase, actorTypes: () => this.actorTypes(), cluster: () => this.cluster(),
      query: (type, id) => this.query(type, id), history: (type, id) => this.history(type, id), timers: (type, id) => this.timers(type, id),
    });
  }

  /**
   * The operator console: the series ticks, the dashboard answers on the HTTP port (when there
   * is one; read-only without an admin token), the node answers `<prefix>.ops.*` over NATS.
   */
  private startConsole(input: TroupeOptions): void {
    const token = input.adminToken ?? process.env.TROUPE_ADMIN_TOKEN ?? null;
    if (token !== null && typeof token !== 'string') throw new InvalidOptionError('options.adminToken must be a string', { field: 'adminToken' });
    const dashboard = createDashboard(this.console, token);
    this.ops.extra = (req, res) => dashboard.handle(req, res);
    this.series.start();
    if (this.options.serve) this.stopOpsService = serveOps(this.nc, this.options.subjectPrefix, this.console);
  }

  static async start(input: TroupeOptions): Promise<Troupe> {
    const options = resolveOptions(input);
    // Not in the resolved options: functions and keys stay on the main thread (the door).
    const verifier = input.auth === undefined ? null : TokenVerifier.create(input.auth);
    const limiter = RateLimiter.create(input.rateLimits);
    if (input.authorize !== undefined && typeof input.authorize !== 'function') {
      throw new InvalidOptionError('options.authorize must be a function (principal, request) => boolean', { field: 'authorize' });
    }
    const registry = await loadRegistry(options.actors);
    if (registry.needsKeys) resolveMasterKeys(); // refuse a missing or exposed master key here, before any worker starts
    const nc = await connectNats(options.servers, `troupe-${options.nodeName}`, options.nats);
    const cleanup: (() => Promise<unknown>)[] = [() => nc.close()];
    try {
      assertServerVersion(nc);
      const journal = await openJournal(nc, {
        servers: options.servers, stream: options.stream, subjectPrefix: options.subjectPrefix, replicas: options.replicas,
        maxMessageBytes: Math.max(options.maxBatchBytes + 1024, 1024 * 1024), duplicateWindowMs: options.duplicateWindowMs, shards: options.shards,
      });
      const info = await ensureStream(journal);
      const store = new Store(options.dataDir, options.stream, options.commandIdTtlMs);
      cleanup.unshift(() => store.close());
      const identity = `${info.created} layout ${STORE_LAYOUT}`;
      if (store.getStreamIdentity() !== identity) await store.resetFor(identity);

      let ownership: Ownership | null = null;
      let membership: Membership | null = null;
      let needs: ShardNeeds | null = null;
      if (options.ownership === 'lease') {
        const o = ownership = await Ownership.open(nc, options.stream, options.nodeName, options.shards, options.leaseTtlMs, options.replicas, options);
        // Mixed versions: a shard goes only to a node that can read every event version its log holds.
        const n = needs = await ShardNeeds.open(nc, options.stream, options.replicas);
        await n.watch();
        o.useNeeds((shard) => n.needsOf(shard));
        const m = membership = await Membership.open(nc, options.stream, options.nodeName, options.leaseTtlMs, options.replicas, troupeVersion(), () => ({ shards: o.owned, moves: o.moves }), options.restartGraceMs,
          { reads: registry.reads(), actors: registry.actorVersions() });
        cleanup.unshift(() => m.leave());
        await ownership.start(membership.candidates());
        cleanup.unshift(() => o.release());
      }
      const pool = new WorkerPool(options);
      cleanup.unshift(() => pool.destroy());
      await pool.ready();
      const node = new Troupe(options, registry, nc, journal, store, pool, ownership, null, membership);
      node.verifier = verifier;
      node.nodeRule = input.authorize ?? null;
      node.limiter = limiter;
      if (ownership !== null && membership !== null) {
        node.place(ownership, membership, needs);
        // Checkpoints offered to this node: restore those of the shards it awaits, in their workers.
        const stopHandOffs = serveHandOffs(nc, options.subjectPrefix, options.nodeName, async ({ shards }) => {
          const awaited = shards.filter((s) => s < options.shards && ownership!.awaits(s));
          return (await pool.runOnShards(awaited, (list) => ({ kind: 'prefetch', shards: list })).catch(() => []) as number[][]).flat();
        });
        cleanup.unshift(async () => stopHandOffs());
      }
      else if (ownership !== null) {
        ownership.onLost = (shard) => void node.loseShards([shard]);
        ownership.onGained = (shards) => void node.gainShards(shards);
      }
      await node.openShards(ownership?.owned ?? Array.from({ length: options.shards }, (_, i) => i));
      if (options.serve) {
        node.workerCommands = node.commandsInWorkers();
        node.service = await CommandService.start(nc, options, node, node.ownedShards);
      }
      cleanup.unshift(() => node.ops.close());
      node.startConsole(input);
      cleanup.unshift(async () => { node.stopOpsService?.(); node.series.stop(); });
      await node.ops.startHttp();
      refreshTracing();
      node.phase = 'running';
      await membership?.announce('ready');
      if (node.log.info) {
        node.log.logger.info({ workers: options.workers, shards: node.ownedShards.length, stream: options.stream, actors: registry.names(), tracing: tracing.on, http: node.ops.url },
          'node started');
      }
      return node;
    } catch (e) {
      for (const c of cleanup) await c().catch(() => {});
      throw e;
    }
  }

  get nodeName(): string {
    return this.options.nodeName;
  }

  /** The URL of the node's HTTP server (/health, /ready, /metrics), or null when it serves none. */
  get httpUrl(): string | null {
    return this.ops.url;
  }

  /** Every health check with its detail; `status` is 'ok' only when all pass (GET /health). */
  health(): Promise<HealthReport> {
    return this.ops.health();
  }

  /** Whether the node takes commands (GET /ready). */
  ready(): { ready: boolean; phase: string; reason?: string } {
    return this.ops.ready();
  }

  /** The node's metrics in the Prometheus text format (GET /metrics). */
  metrics(): Promise<string> {
    return this.ops.metrics();
  }

  /**
   * Whether the workers that host shards take their command subjects themselves: a remote
   * command then never crosses this thread (measured: see the remote/ README). Not when the
   * door holds something only this thread has: token keys and the claims mapping
   * (options.auth), the node's authorize function, the rate-limit buckets every worker would
   * share, or command tracing (its spans start here). Opt-in (TROUPE_REMOTE_COMMANDS=worker):
   * measured interleaved against the main thread's path at C = 4096 on the shared 2-core
   * machine, it was not faster (remote/in-process median 0.44 against 0.56, node CPU per
   * command the same), so the main thread's path stays the default until a measurement
   * says otherwise.
   */
  private commandsInWorkers(): WorkerCommands | null {
    if (this.verifier !== null || this.nodeRule !== null || this.limiter !== null || refreshTracing()) return null;
    if (process.env.TROUPE_REMOTE_COMMANDS !== 'worker') return null;
    const run = (kind: 'serve' | 'unserve', shards: readonly number[]) => this.pool.runOnShards(shards, (list) => ({ kind, shards: list })).then(() => {});
    return { serve: (shards) => run('serve', shards), drop: (shards) => run('unserve', shards) };
  }

  /** A worker thread died: Piscina starts another; re-open its shards now, from snapshot and log. */
  private workerLost(threadId: number): void {
    if (this.phase !== 'running') return;
    const slots = new Set(this.pool.threadIds.flatMap((id, slot) => (id === 0 ? [slot] : [])));
    const shards = this.ownedShards.filter((s) => slots.has(this.pool.slotOf(s)));
    this.log.logger.error({ threadId, slots: [...slots], shards: shards.length },
      'a worker thread died: its in-flight commands failed with WORKER_LOST (retryable); a new worker re-opens its shards from snapshot and log');
    const started = Date.now();
    const reopened = this.openShards(shards);
    // Their command subjects go with the worker (node/serving.ts): the new one subscribes again, opened or not (a shard re-opens on its next command).
    void reopened.catch(() => {}).then(() => this.service?.resubscribe(shards));
    reopened.then(
      () => { if (this.log.info) this.log.logger.info({ shards: shards.length, ms: Date.now() - started }, 'replacement worker serves the lost shards'); },
      (e: unknown) => { if (this.phase === 'running') this.log.logger.warn(errorFields(e), 're-opening the lost shards failed; they re-open on their next command'); },
    );
  }

  /**
   * Wire placement (node/ownership.ts): the live nodes from membership decide the shards this
   * node wants; shards it gains are opened, shards it hands off are drained first, shards it
   * lost (another node took them while this one was paused) are dropped.
   */
  private place(ownership: Ownership, membership: Membership, needs: ShardNeeds | null): void {
    const log = this.log;
    ownership.onBlocked = (blocked) => {
      if (blocked.length > 0 && log.warn) {
        log.logger.warn({ shards: blocked.map((b) => b.shard), needs: blocked[0]!.needs, reason: blocked[0]!.reason },
          'shards whose logs hold event versions no live node can read stay unplaced until a node that can joins');
      }
    };
    if (needs !== null) needs.onChange = () => ownership.needsChanged();
    ownership.onBlocked?.(ownership.blocked);
    ownership.onLost = (shard, holder) => {
      if (log.warn) log.logger.warn({ shard, holder }, 'lost the lease of a shard (another node holds it now): dropping it');
      void this.loseShards([shard]);
    };
    ownership.onGained = (shards) => {
      if (log.info) log.logger.info({ shards }, 'took over shards');
      const leasedAt = Date.now();
      void this.gainShards(shards).then(() => {
        // servingAt: subscribed to the shards' subjects. A move's cut-over is servingAt here minus droppedAt on the old owner.
        const ms = Date.now() - leasedAt;
        for (let i = 0; i < shards.length; i++) this.pool.metrics.takeOverSeconds.observe(ms / 1000);
        if (log.info) log.logger.info({ shards, servingAt: Date.now(), ms }, 'serving shards taken over');
      });
    };
    ownership.handOff = (shards) => this.handOffShards(shards);
    ownership.onHandedOff = (shard, ms) => {
      const droppedAt = this.droppedAt.get(shard);
      this.droppedAt.delete(shard);
      this.pool.metrics.handOffSeconds.observe(ms / 1000);
      if (log.info) log.logger.info({ shard, ms, droppedAt, releasedAt: Date.now() }, 'handed off a shard');
    };
    this.pool.onFenced = (shard) => ownership.verify(shard);
    membership.onChange = (c) => ownership.setNodes(c.candidates, c.leftOnPurpose);
    ownership.setNodes(membership.candidates(), false);
  }

  /** Before their leases are released: share the shards' checkpoints, then unsubscribe their subjects, let queued commands reach the worker, finish their appends, snapshot their actors. */
  private async handOffShards(shards: number[]): Promise<void> {
    // Share their checkpoints while still serving, and let the next owners restore them now
    // (handoff.ts): the cut-over below is only the drain, and the next owners read only the few
    // commits after the checkpoints from the log.
    await this.pool.runOnShards(shards, (list) => ({ kind: 'share', shards: list })).catch(() => {});
    const offered = await offerToNextOwners(this.nc, this.options.subjectPrefix, this.options.nodeName, shards, (s) => this.ownership?.nextOwner(s));
    if (offered !== null && this.log.info) this.log.logger.info(offered, 'offered shard checkpoints to their next owners');
    // Stop taking their requests (those already received are answered), then drain.
    await this.service?.drop(shards);
    const dropped = Date.now();
    for (const s of shards) this.droppedAt.set(s, dropped);
    const slots = [...new Set(shards.map((s) => this.pool.slotOf(s)))];
    const until = Date.now() + this.options.ackTimeoutMs;
    while (slots.some((slot) => (this.pool.slotDepths()[slot]?.queued ?? 0) > 0) && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    await this.pool.runOnShards(shards, (list) => ({ kind: 'release', shards: list })).catch(() => {});
  }

  /**
   * The cluster as this node sees it (GET /cluster, `troupe cluster status`): every node with
   * its state, version and shards, every lease with its age, moves under way; and the consumers
   * and scaled projections that run against the stream, with the shards each instance holds.
   */
  async cluster(): Promise<ClusterStatus & { self: string }> {
    if (this.membership === null) {
      // No leases (options.ownership 'none'): this node writes every shard, fenced by the log alone.
      return {
        self: this.options.nodeName, stream: this.options.stream, shards: this.options.shards, nodes: [], leases: [], unowned: [], moves: [], blocked: [],
        consumers: await consumerStatus(this.nc, this.options.stream).catch(() => []),
      };
    }
    const [st, consumers] = await Promise.all([readClusterStatus(this.nc, this.options.stream), consumerStatus(this.nc, this.options.stream).catch(() => [])]);
    return { self: this.options.nodeName, ...st, consumers };
  }

  /** Shards this node writes. */
  get ownedShards(): number[] {
    return this.ownership?.owned ?? Array.from({ length: this.options.shards }, (_, i) => i);
  }

  private async openShards(shards: number[]): Promise<void> {
    await this.pool.runOnShards(shards, (list) => ({ kind: 'open', shards: list }));
  }

  /**
   * Shards whose leases this node just took: open them (catch-up), then subscribe to their
   * request subjects, so a request reaches this node only once it can answer it. A shard that
   * fails to open is served anyway: it re-opens on its next command.
   */
  private async gainShards(shards: number[]): Promise<void> {
    await this.openShards(shards).catch(() => {});
    const still = shards.filter((s) => this.ownership?.owns(s) ?? true);
    await this.service?.serve(still);
  }

  /** Shards whose leases this node lost: stop taking their requests first, then release them in the workers. */
  private async loseShards(shards: number[]): Promise<void> {
    await this.service?.drop(shards);
    await this.releaseShards(shards);
  }

  private async releaseShards(shards: number[], checkpoint = false): Promise<void> {
    await Promise.all(shards.map((s) => this.pool.runOn(this.pool.slotOf(s), { kind: 'release', shards: [s], checkpoint }).catch(() => {})));
  }

  /**
   * Send a command to an actor. Resolves once JetStream has stored the events it decided,
   * with their sequence numbers and the actor's new version. Rejects with a typed error.
   */
  send(aggregateType: string, aggregateId: string, command: Command): Promise<CommandResult>;
  send(aggregateType: string, aggregateId: string, commandType: string, payload?: unknown, metadata?: CommandMetadata): Promise<CommandResult>;
  send(aggregateType: string, aggregateId: string, command: string | Command, payload?: unknown, metadata?: CommandMetadata): Promise<CommandResult> {
    let envelope: CommandEnvelope;
    try {
      // In-process callers are trusted: their principal is taken as given.
      const principal = (typeof command === 'object' && command !== null ? command.principal : metadata?.principal) ?? null;
      envelope = this.envelope(aggregateType, aggregateId, command, payload, metadata, principal);
    } catch (e) {
      this.pool.metrics.failed((e as { code?: string }).code ?? 'INTERNAL');
      return Promise.reject(e);
    }
    if (tracing.on) return this.submitTraced(envelope, null, false);
    return this.pool.submit(envelope);
  }

  /**
   * Submit with the command's spans (ops/tracing.ts), as a child of `parent` (a traceparent, or
   * the active context when null). The spans end when the command is answered.
   */
  submitTraced(envelope: CommandEnvelope, parent: string | null, remote: boolean): Promise<CommandResult> {
    const t = envelope.trace = startCommandTrace(envelope, parent, remote);
    return this.pool.submit(envelope).then((r) => { t.end(null, r); return r; }, (e: unknown) => { t.end(e, null); throw e; });
  }

  /** Count a command refused at the door (metrics: troupe_command_failures_total). */
  refused(e: unknown): void {
    this.pool.metrics.failed((e as { code?: string }).code ?? 'INTERNAL');
  }

  /**
   * The principal of a remote request's token (options.auth), or null when the node verifies
   * no one or the token is absent and not required. Throws UNAUTHENTICATED. Synchronous when
   * there is nothing to verify.
   */
  authenticate(token: string | null): Principal | null | Promise<Principal | null> {
    return this.verifier === null ? null : this.verifier.verify(token);
  }

  /** RATE_LIMITED when the next command of `principal` would be refused (options.rateLimits), else null; takes nothing. */
  rateLimited(principal: Principal | null): RateLimitedError | null {
    return this.limiter === null ? null : this.limiter.refusal(principal);
  }

  /** Run the node's rule (options.authorize); throws FORBIDDEN, logged with the principal and the ids, never the payload. */
  private authorizeAtDoor(principal: Principal | null, request: AuthorizeRequest): void {
    let allowed: unknown;
    try {
      allowed = this.nodeRule!(principal, request);
    } catch (e) {
      throw this.forbiddenHere(forbidden(principal, request, `the node's authorize rule threw (${(e as Error)?.message ?? String(e)}), so the request is refused`), principal, request);
    }
    if (allowed !== true) throw this.forbiddenHere(forbidden(principal, request, 'refused by the node\'s authorize rule'), principal, request);
  }

  /** Count and log a refusal on this thread (a worker logs the ones its actors' rules make). */
  private forbiddenHere(e: ForbiddenError, principal: Principal | null, request: AuthorizeRequest): ForbiddenError {
    if (request.kind !== 'command') this.pool.metrics.forbiddenRead(request.kind);
    if (this.log.warn) {
      this.log.logger.warn({ code: e.code, principalId: principal?.id ?? null, kind: request.kind, aggregateType: request.aggregateType, aggregateId: request.aggregateId, commandType: request.kind === 'command' ? request.type : undefined },
        'request forbidden by the node\'s authorize rule');
    }
    return e;
  }

  /**
   * Validate at the door and build the envelope; throws typed errors. `principal` is the
   * verified caller (never read from `command`, which may come from a remote request); on a
   * node with options.auth the events' userId is its id, and null without one.
   */
  envelope(aggregateType: string, aggregateId: string, command: string | Command, payload?: unknown, metadata?: CommandMetadata, principal: Principal | null = null): CommandEnvelope {
    if (this.stopping !== null) throw new StoppedError();
    let type: unknown = command;
    let meta: CommandMetadata | undefined = metadata;
    if (typeof command === 'object' && command !== null) {
      type = command.type;
      payload = command.payload;
      meta = command;
    }
    if (typeof aggregateType !== 'string' || aggregateType.length === 0) throw new ValidationError('MALFORMED_COMMAND', 'the actor type is missing: send(type, id, command)', {});
    if (typeof aggregateId !== 'string' || !ID.test(aggregateId)) {
      throw new ValidationError('MALFORMED_COMMAND', `the actor id must be 1-256 printable characters without spaces, got ${JSON.stringify(aggregateId)}`, { aggregateType });
    }
    if (typeof type !== 'string' || type.length === 0) throw new ValidationError('MALFORMED_COMMAND', 'the command type is missing', { aggregateType, aggregateId });
    const commandId = meta?.commandId ?? this.ids.next();
    if (meta?.commandId !== undefined && (typeof commandId !== 'string' || !ID.test(commandId))) throw new ValidationError('MALFORMED_COMMAND', `commandId must be 1-256 printable characters, got ${JSON.stringify(commandId)}`, { aggregateType, aggregateId });
    if (payload === undefined) payload = {};
    if (!isPlainPayload(payload)) {
      throw new ValidationError('MALFORMED_COMMAND', payloadRefusal(aggregateType, type, payload), { aggregateType, aggregateId, commandId, commandType: type });
    }
    const size = estimateSize(payload, this.options.maxCommandBytes);
    if (size > this.options.maxCommandBytes) {
      throw new ValidationError('COMMAND_TOO_LARGE', `the payload of ${aggregateType}.${type} is over options.maxCommandBytes (${this.options.maxCommandBytes} bytes)`, { aggregateType, aggregateId, commandId, commandType: type });
    }
    this.registry.check(aggregateType, type, payload, { aggregateId, commandId });
    if (this.nodeRule !== null) this.authorizeAtDoor(principal, { kind: 'command', type, aggregateType, aggregateId, payload });
    if (this.limiter !== null) this.limiter.admit(principal, { aggregateType, aggregateId, commandId, commandType: type });
    const shard = shardOf(aggregateType, aggregateId, this.options.shards);
    if (this.ownership !== null && !this.ownership.owns(shard)) {
      throw this.notOwned(shard, aggregateType, aggregateId, 'send it there', { commandId });
    }
    return {
      commandId, type, aggregateType, aggregateId, payload,
      userId: principal !== null ? principal.id : this.verifier !== null ? null : meta?.userId ?? null,
      correlationId: meta?.correlationId ?? commandId,
      causationId: meta?.causationId ?? null,
      shard,
      idUse: meta?.commandId === undefined ? IdUse.GENERATED : IdUse.GIVEN,
      principal,
    };
  }

  /** Submit an already-validated envelope (the NATS service uses this). */
  submit(envelope: CommandEnvelope): Promise<CommandResult> {
    return this.pool.submit(envelope);
  }

  /** The same, answered through a sink that takes the worker's outcome as it is (pool.ts). */
  submitTo(envelope: CommandEnvelope, sink: OutcomeSink): void {
    this.pool.submitTo(envelope, sink, sink);
  }

  /** An actor's committed state and version. A never-used actor has its initial state and version 0. */
  async query<S = unknown>(aggregateType: string, aggregateId: string, options: ReadOptions = {}): Promise<{ state: S; version: number }> {
    return this.read('query', aggregateType, aggregateId, options.principal ?? null) as Promise<{ state: S; version: number }>;
  }

  /** Every committed event of an actor, in order, with the full envelope. */
  async history(aggregateType: string, aggregateId: string, options: ReadOptions = {}): Promise<EventEnvelope[]> {
    return this.read('history', aggregateType, aggregateId, options.principal ?? null) as Promise<EventEnvelope[]>;
  }

  private async read(kind: Exclude<RequestKind, 'command'>, aggregateType: string, aggregateId: string, principal: Principal | null): Promise<unknown> {
    this.checkRead(aggregateType, aggregateId);
    if (this.nodeRule !== null) this.authorizeAtDoor(principal, { kind, type: kind, aggregateType, aggregateId, payload: undefined });
    const shard = shardOf(aggregateType, aggregateId, this.options.shards);
    try {
      return unwrap(await this.pool.runOn(this.pool.slotOf(shard), { kind, shard, aggregateType, aggregateId, principal }));
    } catch (e) {
      if (isTroupeError(e, 'FORBIDDEN')) {
        this.pool.metrics.forbiddenRead(kind);
        if (this.log.warn) this.log.logger.warn({ code: e.code, principalId: principal?.id ?? null, kind, aggregateType, aggregateId }, 'read forbidden by the actor type\'s authorize rule');
      }
      throw e;
    }
  }

  /** An actor's pending durable timers, soonest first (`troupe timers`); judged as a `query` by the authorize rules. */
  async timers(aggregateType: string, aggregateId: string, options: ReadOptions = {}): Promise<PendingTimer[]> {
    const principal = options.principal ?? null;
    this.checkRead(aggregateType, aggregateId);
    if (this.nodeRule !== null) this.authorizeAtDoor(principal, { kind: 'query', type: 'query', aggregateType, aggregateId, payload: undefined });
    const shard = shardOf(aggregateType, aggregateId, this.options.shards);
    return unwrap(await this.pool.runOn(this.pool.slotOf(shard), { kind: 'timers', shard, aggregateType, aggregateId, principal })) as PendingTimer[];
  }

  /**
   * SHARD_NOT_OWNED (retryable), saying why: another node owns the shard, or no live node may
   * own it because its log holds an event version none of them reads (placement with versions).
   */
  private notOwned(shard: number, aggregateType: string, aggregateId: string, hint: string, data: Record<string, unknown> = {}): ConcurrencyError {
    const owner = this.ownership?.holderOf(shard);
    const blocked = this.ownership?.blocked.find((b) => b.shard === shard);
    if (owner === undefined && blocked !== undefined) {
      const needs = Object.entries(blocked.needs).map(([t, v]) => `${t} v${v}`).join(', ');
      return new ConcurrencyError('SHARD_NOT_OWNED',
        `shard ${shard} of ${aggregateType} ${aggregateId} is placed on no node: its log holds ${needs}, which no live node reads (${blocked.reason}); deploy the definition that wrote it`,
        { aggregateType, aggregateId, ...data, shard, owner: null, needs: blocked.needs });
    }
    return new ConcurrencyError('SHARD_NOT_OWNED', `shard ${shard} of ${aggregateType} ${aggregateId} is owned by node ${owner ?? 'unknown'}, not ${this.options.nodeName}; ${hint}`,
      { aggregateType, aggregateId, ...data, shard, owner });
  }

  private checkRead(aggregateType: string, aggregateId: string): void {
    if (this.stopping !== null) throw new StoppedError();
    if (this.registry.get(aggregateType) === undefined) {
      throw new ValidationError('UNKNOWN_ACTOR_TYPE', `unknown actor type ${JSON.stringify(aggregateType)}; this node hosts ${this.registry.names().join(', ')}`, { aggregateType, aggregateId });
    }
    if (typeof aggregateId !== 'string' || !ID.test(aggregateId)) throw new ValidationError('MALFORMED_COMMAND', `the actor id must be 1-256 printable characters, got ${JSON.stringify(aggregateId)}`, { aggregateType });
    // Only the shard's owner answers: another node's copy could be older than the last acknowledged write.
    const shard = shardOf(aggregateType, aggregateId, this.options.shards);
    if (this.ownership !== null && !this.ownership.owns(shard)) {
      throw this.notOwned(shard, aggregateType, aggregateId, 'read it there');
    }
  }

  /** Actor types this node hosts. */
  actorTypes(): string[] {
    return this.registry.names();
  }

  async stats(): Promise<NodeStats> {
    const workers = await this.pool.runOnAll({ kind: 'stats' }) as WorkerStats[];
    return { nodeName: this.options.nodeName, ownedShards: this.ownedShards.length, queuedCommands: this.pool.queuedCommands, workers };
  }

  /** For tests of worker replacement: crash the worker that hosts `shard`. */
  async crashWorkerOf(shard: number): Promise<void> {
    await this.pool.runOn(this.pool.slotOf(shard), { kind: 'crash' });
  }

  /**
   * Graceful stop, in this order:
   *   1. stop taking commands (new ones fail with a retryable STOPPED; /ready turns 503);
   *   2. finish in-flight commits (up to `timeoutMs`; what is still unanswered then fails
   *      with a retryable STOPPED, and a retry with the same commandId is answered once);
   *   3. flush snapshots (LMDB) and telemetry (each worker's span exporter);
   *   4. drain NATS (workers', leases, then the main connection);
   *   5. close LMDB.
   * `troupe start` then exits 0.
   *
   * `handOff` (default true): the node announces `draining` first and releases every lease at
   * step 4, so the other nodes take its shards at once (SIGTERM). With `handOff: false` it stops
   * to restart (SIGUSR2): it announces `restarting`, keeps its leases and its membership entry
   * (it stops renewing them), and the others move none of its shards for
   * options.restartGraceMs; restarted with the same nodeName and data dir, it takes its leases
   * back at once and reads only the log written since, from its LMDB checkpoints.
   */
  stop(opts: number | StopOptions = {}): Promise<void> {
    const { timeoutMs = 10_000, handOff = true } = typeof opts === 'number' ? { timeoutMs: opts } : opts;
    this.stopping ??= (async () => {
      const log = this.log;
      const step = (n: number, what: string, fields: Record<string, unknown> = {}) => {
        if (log.info) log.logger.info({ step: n, ...fields }, what);
      };
      this.phase = 'stopping';
      clearInterval(this.expiry);
      this.stopOpsService?.();
      this.series.stop();
      // Draining: the other nodes place this node's shards over themselves now, and take each
      // as its lease is released below (after its appends finished and its snapshots were written).
      // Restarting: they keep this node in placement while it is away, so nothing moves.
      if (this.membership !== null) {
        this.membership.onChange = null;
        await this.membership.announce(handOff ? 'draining' : 'restarting');
      }
      // It keeps renewing its leases until it is stopped, but takes and hands off nothing more.
      if (!handOff) this.ownership?.stopMoving();
      step(1, handOff ? 'stopping: no new commands' : 'stopping to restart: no new commands, leases kept', { inProgress: this.pool.queuedCommands });
      await this.service?.stop().catch(() => {});
      await this.pool.idle(timeoutMs);
      const unfinished = this.pool.queuedCommands;
      if (unfinished > 0 && log.warn) log.logger.warn({ unfinished, timeoutMs }, 'stopping: commands not finished in time fail with STOPPED (retryable)');
      this.pool.close();
      step(2, 'stopping: in-flight commits finished', { unfinished });
      // Each worker: drain its shards, write snapshots, flush LMDB and its spans, drain its NATS connection, close LMDB.
      await this.pool.runOnAll({ kind: 'stop' }).catch((e: unknown) => { if (log.warn) log.logger.warn(errorFields(e), 'stopping: a worker did not stop cleanly'); });
      await this.pool.destroy().catch(() => {});
      step(3, 'stopping: snapshots and telemetry flushed');
      if (handOff) {
        await this.ownership?.release().catch(() => {});
        await this.membership?.leave().catch(() => {});
      } else {
        // Not renewed from now on: the leases and the entry expire unless the node is back first.
        this.ownership?.stop();
        this.membership?.close();
      }
      await this.nc.drain().catch(() => {});
      step(4, 'stopping: NATS drained');
      await this.store.close().catch(() => {});
      step(5, 'stopping: LMDB closed');
      await this.ops.close().catch(() => {});
      await this.console.close().catch(() => {});
      this.phase = 'stopped';
      if (log.info) log.logger.info('node stopped');
    })();
    return this.stopping;
  }
}

/** A worker read answers `{ value }` or `{ error }` (errors cross threads as data). */
function unwrap(answer: unknown): unknown {
  const a = answer as { value?: unknown; error?: WireError };
  if (a.error !== undefined) throw fromWire(a.error);
  return a.value;
}
