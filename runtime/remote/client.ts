/**
 * TroupeClient: send commands to Troupe nodes from another process, over NATS.
 *
 * Commands sent in one event-loop turn travel together in one request message (up to
 * `maxBatch`), as one flat array (protocol FLAT, service.ts); replies are matched by hand under
 * one wildcard inbox. Every command gets a commandId on the client (UUID-shaped: random per
 * client, then a counter), and the node records it. When the outcome is unknown (TIMEOUT,
 * JOURNAL_UNAVAILABLE), the error names it in `data.commandId`: sending the command again with
 * that commandId is safe, the node answers it once. An id the client made goes out marked
 * fresh, so the node records it without first looking it up (it cannot have been seen).
 */
import { connect, credsAuthenticator, headers, nkeyAuthenticator, nuid, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { connectFailure, natsConnectOptions, resolveNatsAuth, type NatsAuthOptions } from '../connection.ts';
import { decode, encode, type EventEnvelope } from '../journal/codec.ts';
import { IdGenerator, isPlainPayload, payloadRefusal, type Command, type CommandMetadata, type CommandResult } from '../envelope.ts';
import { JournalUnavailableError, TimeoutError, ValidationError, fromWire, type WireError } from '../errors.ts';
import { FLAT, OUTCOME, requestMessage, OUTCOME_STRIDE, READ_REPLY, REQUEST, REQUEST_STRIDE, pushRequest, readOutcome, readRequestOf } from '../wire.ts';
import type { RemoteOutcomes } from './service.ts';
import { refreshTracing, SendTrace, TRACEPARENT, tracing } from '../ops/tracing.ts';

export interface ClientOptions {
  servers?: string;
  /** How to authenticate to NATS (default: the NATS_* environment; see connection.ts). */
  nats?: NatsAuthOptions;
  subjectPrefix?: string;
  /** How long a command may wait for its reply. Default 30 s. */
  timeoutMs?: number;
  /** Commands per request message. Default 1024. */
  maxBatch?: number;
}

interface Waiting {
  /** The request's commands, REQUEST_STRIDE values each. */
  flat: unknown[];
  resolves: ((r: CommandResult) => void)[];
  rejects: ((e: unknown) => void)[];
  sentAt: number;
}

export class TroupeClient {
  private readonly inbox = `_INBOX.troupe-client.${nuid.next()}.`;
  private readonly sub: Subscription;
  private readonly waiting = new Map<number, Waiting>();
  private batch: unknown[] = [];
  private readonly ids = new IdGenerator();
  private resolves: ((r: CommandResult) => void)[] = [];
  private rejects: ((e: unknown) => void)[] = [];
  private scheduled = false;
  private next = 1;
  private readonly sweeper: NodeJS.Timeout;
  private readonly subject: string;
  private readonly timeoutMs: number;
  private readonly maxBatch: number;

  private constructor(readonly nc: NatsConnection, private readonly options: ClientOptions) {
    this.subject = `${options.subjectPrefix ?? 'troupe'}.cmd`;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.maxBatch = options.maxBatch ?? 1024;
    this.sub = nc.subscribe(`${this.inbox}*`, { callback: (_e, msg) => this.onReply(msg) });
    this.sweeper = setInterval(() => this.sweep(), 250);
    this.sweeper.unref();
  }

  static async connect(options: ClientOptions = {}): Promise<TroupeClient> {
    const servers = options.servers ?? process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
    const auth = resolveNatsAuth(options.nats);
    let nc: NatsConnection;
    try {
      nc = await connect(natsConnectOptions(servers, auth, { creds: credsAuthenticator, nkey: nkeyAuthenticator }, { name: 'troupe-client', maxReconnectAttempts: -1, reconnectTimeWait: 250, timeout: 5_000 }));
    } catch (e) {
      throw new JournalUnavailableError(connectFailure(servers, auth, e)); // no cause: nothing that might quote a secret
    }
    refreshTracing();
    return new TroupeClient(nc, options);
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
    return new Promise<CommandResult>((resolve, reject) => {
      pushRequest(this.batch, commandId, type, aggregateType, aggregateId, body, meta?.userId ?? null, meta?.correlationId ?? null, meta?.causationId ?? null, t === null ? null : t.traceparent, meta?.commandId === undefined);
      if (t === null) {
        this.resolves.push(resolve);
        this.rejects.push(reject);
      } else {
        this.resolves.push((r) => { t.end(null, r); resolve(r); });
        this.rejects.push((e) => { t.end(e, null); reject(e); });
      }
      if (this.resolves.length >= this.maxBatch) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    if (this.batch.length === 0) return;
    const id = this.next++;
    const flat = this.batch;
    this.waiting.set(id, { flat, resolves: this.resolves, rejects: this.rejects, sentAt: Date.now() });
    this.batch = [];
    this.resolves = [];
    this.rejects = [];
    try {
      // One traceparent per message (its first traced command); each command carries its own in the body.
      let traceparent: string | null = null;
      if (tracing.on) for (let b = REQUEST.traceparent; b < flat.length && traceparent === null; b += REQUEST_STRIDE) traceparent = flat[b] as string | null;
      let h: ReturnType<typeof headers> | undefined;
      if (traceparent !== null) {
        h = headers();
        h.set(TRACEPARENT, traceparent);
      }
      this.nc.publish(this.subject, encode(requestMessage(FLAT, flat)), h === undefined ? { reply: this.inbox + id } : { reply: this.inbox + id, headers: h });
    } catch (e) {
      this.fail(id, (commandId) => new JournalUnavailableError(`cannot send to ${this.subject}: ${(e as Error).message}; retry with the same commandId`, { commandId }, e));
    }
  }

  private onReply(msg: Msg): void {
    const id = Number(msg.subject.slice(this.inbox.length));
    const w = this.waiting.get(id);
    if (w === undefined) return;
    this.waiting.delete(id);
    if (msg.headers?.code === 503) {
      // No node took the request: nothing of it was stored.
      this.failWaiting(w, (commandId) => new JournalUnavailableError(`no Troupe node serves ${this.subject}; start one (npm start)`, { commandId }));
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
    for (let i = 0; i < w.resolves.length; i++) {
      const b = i * OUTCOME_STRIDE;
      if (b >= body.length) {
        w.rejects[i]!(fromWire({ code: 'INTERNAL', message: 'the node sent fewer results than commands', data: { commandId: w.flat[i * REQUEST_STRIDE + REQUEST.commandId] as string }, retryable: true }));
        continue;
      }
      const e = body[b + OUTCOME.error] as WireError | null;
      const c = i * REQUEST_STRIDE;
      const commandId = w.flat[c + REQUEST.commandId] as string;
      if (e === null) w.resolves[i]!(readOutcome(body, b, commandId, w.flat[c + REQUEST.aggregateType] as string, w.flat[c + REQUEST.aggregateId] as string));
      // Every error names the command's id (the node's usually do), so that a retry can use it.
      else w.rejects[i]!(fromWire(e.data?.commandId === undefined ? { ...e, data: { ...e.data, commandId } } : e));
    }
  }

  private fail(id: number, error: (commandId: string) => unknown): void {
    const w = this.waiting.get(id);
    if (w === undefined) return;
    this.waiting.delete(id);
    this.failWaiting(w, error);
  }

  /** Fail each command of a request with its own error, which names its commandId. */
  private failWaiting(w: Waiting, error: (commandId: string) => unknown): void {
    for (let i = 0; i < w.rejects.length; i++) w.rejects[i]!(error(w.flat[i * REQUEST_STRIDE + REQUEST.commandId] as string));
  }

  private sweep(): void {
    const limit = Date.now() - this.timeoutMs;
    for (const [id, w] of this.waiting) {
      if (w.sentAt > limit) break;
      this.fail(id, (commandId) => new TimeoutError(`no reply from a Troupe node within ${this.timeoutMs} ms; the command may or may not be stored: retry with the same commandId (error.data.commandId), it is answered once`, { commandId }));
    }
  }

  private async read<T>(kind: 'query' | 'history', aggregateType: string, aggregateId: string): Promise<T> {
    let reply: Msg;
    try {
      reply = await this.nc.request(`${this.options.subjectPrefix ?? 'troupe'}.${kind}`, encode(readRequestOf(aggregateType, aggregateId)), { timeout: this.timeoutMs });
    } catch (e) {
      throw new JournalUnavailableError(`${kind} of ${aggregateType} ${aggregateId} got no answer: ${(e as Error).message}`, { aggregateType, aggregateId }, e);
    }
    const answer = decode<unknown[]>(reply.data);
    const e = answer[READ_REPLY.error] as WireError | null;
    if (e !== null) throw fromWire(e);
    return answer[READ_REPLY.value] as T;
  }

  query<S = unknown>(aggregateType: string, aggregateId: string): Promise<{ state: S; version: number }> {
    return this.read('query', aggregateType, aggregateId);
  }

  history(aggregateType: string, aggregateId: string): Promise<EventEnvelope[]> {
    return this.read('history', aggregateType, aggregateId);
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    this.flush();
    const until = Date.now() + 5_000;
    while (this.waiting.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    this.sub.unsubscribe();
    await this.nc.drain().catch(() => {});
  }
}
