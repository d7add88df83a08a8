/**
 * TroupeClient: send commands to Troupe nodes from another process, over NATS.
 *
 * Each request goes to its shard's subject (subjects.ts), which only the shard's owner
 * subscribes to: the client computes the shard from the count the stream's metadata records
 * (read once, at connect or at first use). Commands sent in one event-loop turn travel together,
 * one request message per shard (up to `maxBatch` commands), as one flat array (protocol FLAT,
 * service.ts); replies are matched by hand under one wildcard inbox.
 *
 * Every command gets a commandId on the client (UUID-shaped: random per client, then a
 * counter), and the node records it. A retryable failure (no node owns the shard yet, a shard
 * moving, JOURNAL_UNAVAILABLE, TIMEOUT, OVERLOADED, STOPPED, CONCURRENCY, SHARD_NOT_OWNED, ...)
 * is retried with the same commandId, after an exponential backoff with jitter, a bounded number
 * of times within a bounded time (`retry`); the node answers a commandId once, so a retry never
 * appends twice. A retry goes without the fresh mark: the node looks the id up. When the retries
 * are spent, the last error names the id in `data.commandId`.
 */
import { connect, credsAuthenticator, headers, nkeyAuthenticator, nuid, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { connectFailure, loginRefusal, natsConnectOptions, resolveNatsAuth, type NatsAuthOptions } from '../connection.ts';
import { decode, encode, type EventEnvelope } from '../journal/codec.ts';
import { IdGenerator, SHARDS_METADATA, isPlainPayload, payloadRefusal, shardOf, type Command, type CommandMetadata, type CommandResult } from '../envelope.ts';
import { InvalidOptionError, JournalUnavailableError, TimeoutError, ValidationError, fromWire, type WireError } from '../errors.ts';
import { FLAT, OUTCOME, requestMessage, OUTCOME_STRIDE, READ_REPLY, REQUEST, REQUEST_STRIDE, pushRequest, readOutcome, readRequestOf } from '../wire.ts';
import type { RemoteOutcomes } from './service.ts';
import { commandSubject, historySubject, querySubject } from './subjects.ts';
import { refreshTracing, SendTrace, TRACEPARENT, tracing } from '../ops/tracing.ts';
import { AUTH_HEADER } from '../principal.ts';

export interface RetryOptions {
  /** Tries per command or read, the first included. Default 30 (so that `totalMs` is what bounds the default). */
  attempts?: number;
  /** The first backoff; each next one doubles, with jitter (half fixed, half random). Default 50 ms. */
  baseMs?: number;
  /** The longest backoff. Default 2 s. */
  maxMs?: number;
  /** No retry starts later than this after the first send. Default 30 s. */
  totalMs?: number;
}

export interface ClientOptions {
  servers?: string;
  /** How to authenticate to NATS (default: the NATS_* environment; see connection.ts). */
  nats?: NatsAuthOptions;
  subjectPrefix?: string;
  /** The stream whose metadata records the shard count. Default: the stream that holds `<subjectPrefix>.log.*`. */
  stream?: string;
  /** The deployment's shard count. Default: read from the stream's metadata. */
  shards?: number;
  /**
   * How long one try of a command or read may wait for its reply. Default 10 s: a request lost
   * with a nats-server that died is tried again after it, within the retry budget.
   */
  timeoutMs?: number;
  /** Commands per request message. Default 1024. */
  maxBatch?: number;
  /** Retry of retryable failures with the same commandId; `false` for none. On by default. */
  retry?: RetryOptions | false;
  /**
   * A signed token (JWT) sent with every request in the Troupe-Auth header, for a node that
   * verifies callers (options.auth). A command's `token` metadata overrides it.
   */
  token?: string;
}

/** Options of one query or history request. */
export interface ReadRequestOptions {
  /** The signed token for this read, instead of the client's `token` option. */
  token?: string;
}

export interface Retry {
  attempts: number;
  baseMs: number;
  maxMs: number;
  totalMs: number;
}

/** Commands bound for one shard: REQUEST_STRIDE values each, and per command its callbacks, tries so far, and first send time. */
interface Batch {
  shard: number;
  /** The signed token of these commands (a request carries one), or null. */
  token: string | null;
  flat: unknown[];
  resolves: ((r: CommandResult) => void)[];
  rejects: ((e: unknown) => void)[];
  tries: number[];
  since: number[];
}

interface Waiting extends Batch {
  sentAt: number;
  /** The longest wait a node asked for (RATE_LIMITED's data.retryAfterMs) among the commands to retry. */
  retryAfterMs?: number;
}

function newBatch(shard: number, token: string | null): Batch {
  return { shard, token, flat: [], resolves: [], rejects: [], tries: [], since: [] };
}

/** The wait a refusal asks for before a retry (RATE_LIMITED: data.retryAfterMs), or 0. */
function retryAfter(e: unknown): number {
  const ms = (e as { data?: { retryAfterMs?: unknown } } | null)?.data?.retryAfterMs;
  return typeof ms === 'number' && Number.isFinite(ms) && ms > 0 ? ms : 0;
}

/** One try's wait for its reply when `timeoutMs` is not set. */
export const DEFAULT_CLIENT_TIMEOUT_MS = 10_000;

/**
 * The retry in force. The defaults outlast a failover with the node's defaults (lease TTL 10 s +
 * settle 2 s, then the new owner's catch-up): a command refused while its shard has no owner is
 * retried for at least `minRetryWindowMs(resolveRetry(undefined))` (about 24 s), within
 * `totalMs` (30 s).
 */
export function resolveRetry(r: RetryOptions | false | undefined): Retry | null {
  if (r === false) return null;
  const o = r ?? {};
  const num = (field: keyof RetryOptions, fallback: number, min: number): number => {
    const v = o[field] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min) throw new InvalidOptionError(`retry.${field} must be a number >= ${min}, got ${JSON.stringify(v)}`, { field: `retry.${field}` });
    return v;
  };
  return { attempts: Math.floor(num('attempts', 30, 1)), baseMs: num('baseMs', 50, 0), maxMs: num('maxMs', 2_000, 0), totalMs: num('totalMs', 30_000, 0) };
}

/** The shortest time over which `retry` keeps trying (every backoff at its jitter's low end), capped by its totalMs. */
export function minRetryWindowMs(r: Retry): number {
  let sum = 0;
  for (let tries = 1; tries < r.attempts; tries++) sum += Math.min(r.maxMs, r.baseMs * 2 ** Math.min(tries - 1, 30)) / 2;
  return Math.min(sum, r.totalMs);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class TroupeClient {
  private readonly inbox = `_INBOX.troupe-client.${nuid.next()}.`;
  private readonly sub: Subscription;
  private readonly waiting = new Map<number, Waiting>();
  /** The commands of this turn, by shard. */
  private batches = new Map<number, Batch>();
  private readonly ids = new IdGenerator();
  private scheduled = false;
  private next = 1;
  /** Commands waiting out a backoff. */
  private backingOff = 0;
  private readonly sweeper: NodeJS.Timeout;
  private readonly prefix: string;
  private readonly timeoutMs: number;
  private readonly maxBatch: number;
  private readonly retry: Retry | null;
  private shardCount: number | null;
  private lookingUp: Promise<number> | null = null;

  private constructor(readonly nc: NatsConnection, private readonly options: ClientOptions, shards: number | null, retry: Retry | null) {
    this.prefix = options.subjectPrefix ?? 'troupe';
    this.timeoutMs = options.timeoutMs ?? DEFAULT_CLIENT_TIMEOUT_MS;
    this.maxBatch = options.maxBatch ?? 1024;
    this.retry = retry;
    this.shardCount = shards;
    this.sub = nc.subscribe(`${this.inbox}*`, { callback: (_e, msg) => this.onReply(msg) });
    this.sweeper = setInterval(() => this.sweep(), 250);
    this.sweeper.unref();
  }

  static async connect(options: ClientOptions = {}): Promise<TroupeClient> {
    const retry = resolveRetry(options.retry);
    if (options.shards !== undefined && (!Number.isInteger(options.shards) || options.shards < 1)) {
      throw new InvalidOptionError(`options.shards must be a positive integer, got ${JSON.stringify(options.shards)}`, { field: 'shards' });
    }
    const servers = options.servers ?? process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
    const auth = resolveNatsAuth(options.nats);
    let nc: NatsConnection;
    try {
      nc = await connect(natsConnectOptions(servers, auth, { creds: credsAuthenticator, nkey: nkeyAuthenticator }, { name: 'troupe-client', maxReconnectAttempts: -1, reconnectTimeWait: 250, timeout: 5_000 }));
    } catch (e) {
      throw loginRefusal(servers, auth, e) ?? new JournalUnavailableError(connectFailure(servers, auth, e)); // no cause: nothing that might quote a secret
    }
    refreshTracing();
    const client = new TroupeClient(nc, options, options.shards ?? null, retry);
    void client.failOnDisconnect();
    // A stream no node has created yet is looked up again at first use.
    if (options.shards === undefined) await client.shards().catch(() => {});
    return client;
  }

  /** The deployment's shard count, from the stream's metadata (looked up once). */
  private shards(): Promise<number> {
    if (this.shardCount !== null) return Promise.resolve(this.shardCount);
    this.lookingUp ??= (async () => {
      // The stream that holds the log subjects of this prefix, unless options.stream names it.
      let stream = this.options.stream ?? `the stream of ${this.prefix}.log.*`;
      try {
        const jsm = await jetstreamManager(this.nc);
        if (this.options.stream === undefined) stream = await jsm.streams.find(`${this.prefix}.log.0`);
        const info = await jsm.streams.info(stream);
        const n = Number(info.config.metadata?.[SHARDS_METADATA]);
        if (!Number.isInteger(n) || n < 1) throw new Error(`stream ${stream} does not record its shard count (metadata ${SHARDS_METADATA}); start a node of this version on it, or give options.shards`);
        this.shardCount = n;
        return n;
      } catch (e) {
        throw new JournalUnavailableError(`no Troupe node serves ${this.prefix} yet: cannot learn the shard count of ${stream} (${(e as Error).message}); start a node (npm start), or check options.subjectPrefix and options.stream`, { stream }, e);
      }
    })().finally(() => { this.lookingUp = null; });
    return this.lookingUp;
  }

  send(aggregateType: string, aggregateId: string, command: Command): Promise<CommandResult>;
  send(aggregateType: string, aggregateId: string, commandType: string, payload?: unknown, metadata?: CommandMetadata): Promise<CommandResult>;
  send(aggregateType: string, aggregateId: string, command: string | Command, payload?: unknown, metadata?: CommandMetadata): Promise<CommandResult> {
    const meta: CommandMetadata | undefined = typeof command === 'string' ? metadata : command;
    const type = typeof command === 'string' ? command : command.type;
    const given = typeof command === 'string' ? payload : command.payload;
    const body = given === undefined ? {} : given;
    const commandId = meta?.commandId ?? this.ids.next();
    // Refused here, not only at the node: msgpack would turn a Map or a class instance into a plain object on the way.
    if (!isPlainPayload(body)) {
      return Promise.reject(new ValidationError('MALFORMED_COMMAND', payloadRefusal(aggregateType, String(type), body), { aggregateType, aggregateId, commandId, commandType: type }));
    }
    // When tracing, a `troupe.send` span per command; its context travels with the command.
    const t = tracing.on
      ? new SendTrace({ commandId, type, aggregateType, aggregateId, correlationId: meta?.correlationId, causationId: meta?.causationId })
      : null;
    const token = meta?.token ?? this.options.token ?? null;
    if (this.shardCount !== null) return this.enqueue(this.shardCount, aggregateType, aggregateId, type, body, commandId, meta, t, token);
    // The stream was not there at connect: learn the count first. No stream means no node ever
    // started on this prefix: that fails at once (retryable), it is not waited out.
    return this.shards().then((shards) => this.enqueue(shards, aggregateType, aggregateId, type, body, commandId, meta, t, token), (e: unknown) => {
      t?.end(e, null);
      throw e;
    });
  }

  /** A command into its shard's batch of this turn (a method, not a closure per command: the client's hot path). */
  private enqueue(
    shards: number, aggregateType: string, aggregateId: string, type: string, body: unknown, commandId: string,
    meta: CommandMetadata | undefined, t: SendTrace | null, token: string | null,
  ): Promise<CommandResult> {
    const batch = this.batchFor(shardOf(aggregateType, aggregateId, shards), token);
    pushRequest(batch.flat, commandId, type, aggregateType, aggregateId, body, meta?.userId ?? null, meta?.correlationId ?? null, meta?.causationId ?? null, t === null ? null : t.traceparent, meta?.commandId === undefined);
    batch.tries.push(1);
    batch.since.push(Date.now());
    const done = new Promise<CommandResult>((resolve, reject) => {
      if (t === null) {
        batch.resolves.push(resolve);
        batch.rejects.push(reject);
      } else {
        batch.resolves.push((r) => { t.end(null, r); resolve(r); });
        batch.rejects.push((e) => { t.end(e, null); reject(e); });
      }
    });
    this.added(batch);
    return done;
  }

  /** The shard's batch of this turn; one request carries one token, so a command with another one sends the batch first. */
  private batchFor(shard: number, token: string | null): Batch {
    let batch = this.batches.get(shard);
    if (batch !== undefined && batch.token !== token) {
      this.batches.delete(shard);
      this.sendBatch(batch);
      batch = undefined;
    }
    if (batch === undefined) this.batches.set(shard, batch = newBatch(shard, token));
    return batch;
  }

  /** A command joined `batch`: send it when full, else at the end of this turn. */
  private added(batch: Batch): void {
    if (batch.resolves.length >= this.maxBatch) {
      this.batches.delete(batch.shard);
      this.sendBatch(batch);
    } else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.scheduled = false;
    const batches = this.batches;
    if (batches.size === 0) return;
    this.batches = new Map();
    for (const batch of batches.values()) this.sendBatch(batch);
  }

  /** One request to the shard's subject: its owner answers. */
  private sendBatch(batch: Batch): void {
    const id = this.next++;
    const flat = batch.flat;
    const subject = commandSubject(this.prefix, batch.shard);
    const w = batch as Waiting;
    w.sentAt = Date.now();
    this.waiting.set(id, w);
    try {
      // One traceparent per message (its first traced command); each command carries its own in the body.
      let traceparent: string | null = null;
      if (tracing.on) for (let b = REQUEST.traceparent; b < flat.length && traceparent === null; b += REQUEST_STRIDE) traceparent = flat[b] as string | null;
      let h: ReturnType<typeof headers> | undefined;
      if (traceparent !== null) {
        h = headers();
        h.set(TRACEPARENT, traceparent);
      }
      if (batch.token !== null) {
        h ??= headers();
        h.set(AUTH_HEADER, batch.token);
      }
      this.nc.publish(subject, encode(requestMessage(FLAT, flat)), h === undefined ? { reply: this.inbox + id } : { reply: this.inbox + id, headers: h });
    } catch (e) {
      this.fail(id, (commandId) => new JournalUnavailableError(`cannot send to ${subject}: ${(e as Error).message}; retry with the same commandId`, { commandId }, e));
    }
  }

  private onReply(msg: Msg): void {
    const id = Number(msg.subject.slice(this.inbox.length));
    const w = this.waiting.get(id);
    if (w === undefined) return;
    this.waiting.delete(id);
    if (msg.headers?.code === 503) {
      // No node serves the shard (none started, or the shard is moving): nothing of it was stored.
      this.failWaiting(w, (commandId) => new JournalUnavailableError(`no Troupe node serves shard ${w.shard} (${commandSubject(this.prefix, w.shard)}): start one (npm start), or wait for the shard's move; retry with the same commandId`, { commandId, shard: w.shard }));
      return;
    }
    let body: RemoteOutcomes | { error: WireError };
    try {
      body = decode(msg.data);
    } catch (e) {
      this.failWaiting(w, (commandId) => new ValidationError('MALFORMED_COMMAND', `unreadable reply from the node: ${(e as Error).message}`, { commandId }));
      return;
    }
    if (!Array.isArray(body)) {
      const refusal = body.error;
      this.failWaiting(w, (commandId) => fromWire({ ...refusal, data: { ...refusal.data, commandId } }));
      return;
    }
    let again: number[] | null = null;
    for (let i = 0; i < w.resolves.length; i++) {
      const b = i * OUTCOME_STRIDE;
      const c = i * REQUEST_STRIDE;
      const commandId = w.flat[c + REQUEST.commandId] as string;
      if (b >= body.length) {
        if (this.settle(w, i, fromWire({ code: 'INTERNAL', message: 'the node sent fewer results than commands', data: { commandId }, retryable: true }))) (again ??= []).push(i);
        continue;
      }
      const e = body[b + OUTCOME.error] as WireError | null;
      if (e === null) w.resolves[i]!(readOutcome(body, b, commandId, w.flat[c + REQUEST.aggregateType] as string, w.flat[c + REQUEST.aggregateId] as string));
      // Every error names the command's id (the node's usually do), so that a retry can use it.
      else if (this.settle(w, i, fromWire(e.data?.commandId === undefined ? { ...e, data: { ...e.data, commandId } } : e))) (again ??= []).push(i);
    }
    if (again !== null) this.retryLater(w, again);
  }

  /** Whether a failure may be tried again now: retryable, tries and time left. */
  private mayRetry(e: unknown, tries: number, since: number): boolean {
    const r = this.retry;
    return r !== null && (e as { retryable?: unknown }).retryable === true && tries < r.attempts && Date.now() - since < r.totalMs;
  }

  /** The wait before try `tries + 1`: doubling from baseMs up to maxMs, half of it random. */
  private backoff(tries: number): number {
    const r = this.retry!;
    const d = Math.min(r.maxMs, r.baseMs * 2 ** Math.min(tries - 1, 30));
    return d / 2 + Math.random() * (d / 2);
  }

  /** Command i of w failed with e: reject it, or return true when it is to be tried again. */
  private settle(w: Waiting, i: number, e: unknown): boolean {
    if (this.mayRetry(e, w.tries[i]!, w.since[i]!)) {
      w.retryAfterMs = Math.max(w.retryAfterMs ?? 0, retryAfter(e));
      return true;
    }
    w.rejects[i]!(e);
    return false;
  }

  /** Send the commands `indices` of w again after a backoff, with their commandIds, without the fresh mark. */
  private retryLater(w: Waiting, indices: number[]): void {
    let tries = 0;
    for (const i of indices) tries = Math.max(tries, w.tries[i]!);
    this.backingOff += indices.length;
    setTimeout(() => {
      this.backingOff -= indices.length;
      for (const i of indices) {
        // added() sends a full batch and forgets it: take the shard's current one each time.
        const batch = this.batchFor(w.shard, w.token);
        const c = i * REQUEST_STRIDE;
        for (let k = 0; k < REQUEST_STRIDE; k++) batch.flat.push(k === REQUEST.fresh ? false : w.flat[c + k]);
        batch.resolves.push(w.resolves[i]!);
        batch.rejects.push(w.rejects[i]!);
        batch.tries.push(w.tries[i]! + 1);
        batch.since.push(w.since[i]!);
        this.added(batch);
      }
    }, Math.max(this.backoff(tries), w.retryAfterMs ?? 0));
  }

  /**
   * A reply sent while this connection is down never comes (e.g. its nats-server died): fail the
   * commands waiting for one at once, with a retryable error, so they are retried (same
   * commandId, answered once) as soon as the connection is back instead of after `timeoutMs`.
   */
  private async failOnDisconnect(): Promise<void> {
    try {
      for await (const s of this.nc.status()) {
        if (s.type !== 'disconnect') continue;
        for (const id of [...this.waiting.keys()]) {
          this.fail(id, (commandId) => new JournalUnavailableError('the connection to NATS was lost before the reply came; the command may or may not be stored: retry with the same commandId, it is answered once', { commandId }));
        }
      }
    } catch { /* the connection closed */ }
  }

  private fail(id: number, error: (commandId: string) => unknown): void {
    const w = this.waiting.get(id);
    if (w === undefined) return;
    this.waiting.delete(id);
    this.failWaiting(w, error);
  }

  /** Each command of a request failed with its own error (which names its commandId): retried or rejected. */
  private failWaiting(w: Waiting, error: (commandId: string) => unknown): void {
    let again: number[] | null = null;
    for (let i = 0; i < w.rejects.length; i++) {
      if (this.settle(w, i, error(w.flat[i * REQUEST_STRIDE + REQUEST.commandId] as string))) (again ??= []).push(i);
    }
    if (again !== null) this.retryLater(w, again);
  }

  private sweep(): void {
    const limit = Date.now() - this.timeoutMs;
    for (const [id, w] of this.waiting) {
      if (w.sentAt > limit) break;
      this.fail(id, (commandId) => new TimeoutError(`no reply from a Troupe node within ${this.timeoutMs} ms; the command may or may not be stored: retry with the same commandId (error.data.commandId), it is answered once`, { commandId }));
    }
  }

  /** Run `attempt` until it succeeds, or fails with an error that is not retryable, or the retries are spent. */
  private async retrying<T>(attempt: () => Promise<T>): Promise<T> {
    const since = Date.now();
    for (let tries = 1; ; tries++) {
      try {
        return await attempt();
      } catch (e) {
        if (!this.mayRetry(e, tries, since)) throw e;
        await sleep(Math.max(this.backoff(tries), retryAfter(e)));
      }
    }
  }

  /** One try of a read, at the shard's subject: only its owner answers. */
  private async readOnce<T>(subject: string, request: Uint8Array, kind: string, aggregateType: string, aggregateId: string, shard: number, token: string | null): Promise<T> {
    let reply: Msg;
    let h: ReturnType<typeof headers> | undefined;
    if (token !== null) {
      h = headers();
      h.set(AUTH_HEADER, token);
    }
    try {
      reply = await this.nc.request(subject, request, h === undefined ? { timeout: this.timeoutMs } : { timeout: this.timeoutMs, headers: h });
    } catch (e) {
      throw new JournalUnavailableError(`${kind} of ${aggregateType} ${aggregateId} got no answer: no node serves shard ${shard} (${subject}) now: ${(e as Error).message}`, { aggregateType, aggregateId, shard }, e);
    }
    const answer = decode<unknown[]>(reply.data);
    const e = answer[READ_REPLY.error] as WireError | null;
    if (e !== null) throw fromWire(e);
    return answer[READ_REPLY.value] as T;
  }

  private async read<T>(kind: 'query' | 'history', aggregateType: string, aggregateId: string, options: ReadRequestOptions): Promise<T> {
    const token = options.token ?? this.options.token ?? null;
    const request = encode(readRequestOf(aggregateType, aggregateId));
    const shards = await this.shards();
    return this.retrying(async () => {
      const shard = shardOf(aggregateType, aggregateId, shards);
      const subject = kind === 'query' ? querySubject(this.prefix, shard) : historySubject(this.prefix, shard);
      return this.readOnce<T>(subject, request, kind, aggregateType, aggregateId, shard, token);
    });
  }

  query<S = unknown>(aggregateType: string, aggregateId: string, options: ReadRequestOptions = {}): Promise<{ state: S; version: number }> {
    return this.read('query', aggregateType, aggregateId, options);
  }

  history(aggregateType: string, aggregateId: string, options: ReadRequestOptions = {}): Promise<EventEnvelope[]> {
    return this.read('history', aggregateType, aggregateId, options);
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    this.flush();
    const until = Date.now() + 5_000;
    while ((this.waiting.size > 0 || this.backingOff > 0) && Date.now() < until) {
      await sleep(5);
      this.flush();
      this.sweep();
    }
    this.sub.unsubscribe();
    await this.nc.drain().catch(() => {});
  }
}
