/**
 * Commands over NATS, taken by the worker that hosts their shard.
 *
 *   client ──<prefix>.cmd.<shard>──▶ this worker's NATS connection ──▶ shard ──▶ JetStream
 *          ◀──────────────── reply (one per request, every outcome at its place) ──┘
 *
 * Opt-in (TROUPE_REMOTE_COMMANDS=worker; not faster than the main thread in the measurements so far).
 * When a node's door needs nothing that lives on its main thread (no options.auth, authorize or
 * rateLimits, tracing off: node/system.ts decides), the worker that hosts a shard subscribes to
 * the shard's command subject itself, so a remote command never crosses the main thread: no
 * decode and envelope there, no copy to the worker and back. The main thread still says when
 * (CommandService.serve / drop, on gain, loss and hand-off): tasks `serve` and `unserve`.
 *
 * The checks are the door's (Troupe.envelope): ids, command type, plain payload, its size, the
 * actor type's contract; a refused command gets the same typed error there as here.
 */
import type { NatsConnection } from '../journal/journal.ts';
import { decode, encode, estimateSize } from '../journal/codec.ts';
import { IdUse, isPlainPayload, payloadRefusal, shardOf, type IdGenerator } from '../envelope.ts';
import { ConcurrencyError, OverloadedError, ValidationError, toWire, type WireError } from '../errors.ts';
import type { ResolvedOptions } from '../options.ts';
import type { Registry } from '../contracts/registry.ts';
import { commandSubject, queueGroup } from '../remote/service.ts';
import {
  COMMAND, COMMAND_STRIDE, FLAT, FLAT_2, OUTCOME_STRIDE, PROTOCOL, REQUEST, REQUEST_MESSAGE, REQUEST_STRIDE, REQUEST_STRIDE_2,
  writeOutcome, writeStoredOutcome,
} from '../wire.ts';
import type { CommandResult } from '../envelope.ts';
import type { PendingCommit } from './cell.ts';

type Subscription = ReturnType<NatsConnection['subscribe']>;

/** The part of a NATS message a request needs. */
interface RequestMsg {
  readonly data: Uint8Array;
  readonly reply?: string;
  respond(data: Uint8Array): boolean;
}

/** Where a worker command's outcome goes (node/outcomes.ts OutcomeStream to the main thread, or a request's reply). */
export interface OutcomeTarget {
  push(seq: number, error: WireError | null, result: CommandResult | null): void;
  pushStored(seq: number, pc: PendingCommit, position: number, idPrefix: string): void;
}

/** What the worker gives its subscriptions: take a flat COMMAND batch whose outcomes go to `target`, and count what was served. */
export interface ServingHost {
  take(flat: unknown[], target: OutcomeTarget): void;
  /** Commands in this worker not answered yet (options.maxQueuedCommands bounds them). */
  inProgress(): number;
  /** A served command was answered after `ms` (error code, or null): for the node's /metrics. */
  answered(ms: number, code: string | null): void;
}

const ID = /^[\x21-\x7e]{1,256}$/;

/** A request's reply: each command's outcome at its place, sent once the last one is in. */
class RequestReply implements OutcomeTarget {
  private readonly out: unknown[];
  private remaining: number;
  private readonly started = performance.now();

  constructor(private readonly msg: RequestMsg, n: number, private readonly host: ServingHost) {
    this.out = new Array(n * OUTCOME_STRIDE);
    this.remaining = n;
  }

  push(seq: number, error: WireError | null, result: CommandResult | null): void {
    writeOutcome(this.out, seq, error, result);
    this.done(error === null ? null : error.code);
  }

  pushStored(seq: number, pc: PendingCommit, position: number, idPrefix: string): void {
    writeStoredOutcome(this.out, seq, pc.lastSeq, position, idPrefix, pc.wire);
    this.done(null);
  }

  /** A command refused before it reached a shard. */
  refuse(seq: number, e: unknown): void {
    this.push(seq, toWire(e), null);
  }

  private done(code: string | null): void {
    this.host.answered(performance.now() - this.started, code);
    if (--this.remaining === 0) this.msg.respond(encode(this.out));
  }
}

export class WorkerSubjects {
  private readonly subs = new Map<number, Subscription>();
  private readonly queue: string;

  constructor(
    private readonly nc: NatsConnection,
    private readonly options: ResolvedOptions,
    private readonly registry: Registry,
    private readonly ids: IdGenerator,
    private readonly host: ServingHost,
  ) {
    this.queue = queueGroup(options.subjectPrefix);
  }

  /** Subscribe to the command subjects of `shards` (already subscribed ones are kept). */
  async serve(shards: readonly number[]): Promise<void> {
    for (const shard of shards) {
      if (this.subs.has(shard)) continue;
      this.subs.set(shard, this.nc.subscribe(commandSubject(this.options.subjectPrefix, shard), {
        queue: this.queue,
        callback: (_err, msg) => {
          if (msg.reply === undefined || msg.reply === '') return;
          this.request(shard, msg);
        },
      }));
    }
    await this.nc.flush().catch(() => {});
  }

  /** Stop taking requests for `shards`; those already received are taken (and answered) before this resolves. */
  async unserve(shards: readonly number[]): Promise<void> {
    const subs: Subscription[] = [];
    for (const shard of shards) {
      const s = this.subs.get(shard);
      if (s === undefined) continue;
      this.subs.delete(shard);
      subs.push(s);
    }
    await Promise.all(subs.map((s) => s.drain().catch(() => {})));
  }

  get served(): number[] {
    return [...this.subs.keys()];
  }

  /** One request: decoded, each command checked at the door, the good ones taken by their shard as one batch. */
  private request(shard: number, msg: RequestMsg): void {
    const o = this.options;
    let list: unknown[];
    let stride: number;
    try {
      if (msg.data.length > o.maxBatchBytes) {
        throw new ValidationError('COMMAND_TOO_LARGE', `the request is ${msg.data.length} bytes; a request may carry at most ${o.maxBatchBytes}`, {});
      }
      const body = decode<unknown>(msg.data);
      const protocol: unknown = Array.isArray(body) ? body[REQUEST_MESSAGE.protocol] : undefined;
      const commands: unknown = Array.isArray(body) ? body[REQUEST_MESSAGE.commands] : undefined;
      if ((protocol !== PROTOCOL && protocol !== FLAT && protocol !== FLAT_2) || !Array.isArray(commands)) {
        throw new ValidationError('MALFORMED_COMMAND', `not a Troupe command request (expected msgpack [${PROTOCOL}, ${FLAT_2} or ${FLAT}, [commands]])`, {});
      }
      list = commands;
      stride = protocol === PROTOCOL ? 1 : protocol === FLAT ? REQUEST_STRIDE : REQUEST_STRIDE_2;
      if (list.length % stride !== 0) throw new ValidationError('MALFORMED_COMMAND', `a flat command request holds ${stride} values per command; got ${list.length}`, {});
    } catch (e) {
      const err = e instanceof ValidationError ? e : new ValidationError('MALFORMED_COMMAND', `the request could not be decoded: ${(e as Error).message}`, {});
      msg.respond(encode({ error: toWire(err) }));
      return;
    }
    const n = list.length / stride;
    if (n === 0) {
      msg.respond(encode([]));
      return;
    }
    const reply = new RequestReply(msg, n, this.host);
    const flat: unknown[] = [];
    const room = o.maxQueuedCommands - this.host.inProgress();
    for (let i = 0; i < n; i++) {
      const c = stride === 1 ? fromObject(list[i]) : fromFlat(list, i * stride, stride);
      if (c === null) {
        reply.refuse(i, new ValidationError('MALFORMED_COMMAND', 'each command must be an object {aggregateType, aggregateId, type, payload, commandId?}', {}));
        continue;
      }
      try {
        this.check(c, shard, i, flat, room);
      } catch (e) {
        reply.refuse(i, e);
      }
    }
    if (flat.length > 0) this.host.take(flat, reply);
  }

  /** The door's checks (Troupe.envelope, without principal or rules: a node with those serves on its main thread); appends the command to `flat` at seq `i`. */
  private check(c: RequestFields, shard: number, i: number, flat: unknown[], room: number): void {
    const o = this.options;
    const { aggregateType, aggregateId, type } = c;
    if (typeof aggregateType !== 'string' || aggregateType.length === 0) throw new ValidationError('MALFORMED_COMMAND', 'the actor type is missing: send(type, id, command)', {});
    if (typeof aggregateId !== 'string' || !ID.test(aggregateId)) {
      throw new ValidationError('MALFORMED_COMMAND', `the actor id must be 1-256 printable characters without spaces, got ${JSON.stringify(aggregateId)}`, { aggregateType });
    }
    if (typeof type !== 'string' || type.length === 0) throw new ValidationError('MALFORMED_COMMAND', 'the command type is missing', { aggregateType, aggregateId });
    const given = c.commandId;
    if (given != null && (typeof given !== 'string' || !ID.test(given))) throw new ValidationError('MALFORMED_COMMAND', `commandId must be 1-256 printable characters, got ${JSON.stringify(given)}`, { aggregateType, aggregateId });
    const commandId = given ?? this.ids.next();
    const payload = c.payload === undefined ? {} : c.payload;
    if (!isPlainPayload(payload)) throw new ValidationError('MALFORMED_COMMAND', payloadRefusal(aggregateType, type, payload), { aggregateType, aggregateId, commandId, commandType: type });
    if (estimateSize(payload, o.maxCommandBytes) > o.maxCommandBytes) {
      throw new ValidationError('COMMAND_TOO_LARGE', `the payload of ${aggregateType}.${type} is over options.maxCommandBytes (${o.maxCommandBytes} bytes)`, { aggregateType, aggregateId, commandId, commandType: type });
    }
    this.registry.check(aggregateType, type, payload, { aggregateId, commandId });
    const own = shardOf(aggregateType, aggregateId, o.shards);
    if (own !== shard && !this.subs.has(own)) {
      throw new ConcurrencyError('SHARD_NOT_OWNED', `shard ${own} of ${aggregateType} ${aggregateId} is not served here; send it to ${commandSubject(o.subjectPrefix, own)}`, { aggregateType, aggregateId, commandId, shard: own });
    }
    if (flat.length / COMMAND_STRIDE >= room) {
      throw new OverloadedError(`the node has ${o.maxQueuedCommands} commands in progress (options.maxQueuedCommands); retry later`, { commandId });
    }
    const idUse = given == null ? IdUse.GENERATED : c.fresh === true ? IdUse.FRESH : IdUse.GIVEN;
    const at = flat.length;
    flat.length += COMMAND_STRIDE;
    flat[at + COMMAND.commandId] = commandId;
    flat[at + COMMAND.type] = type;
    flat[at + COMMAND.aggregateType] = aggregateType;
    flat[at + COMMAND.aggregateId] = aggregateId;
    flat[at + COMMAND.payload] = payload;
    flat[at + COMMAND.userId] = c.userId ?? null;
    flat[at + COMMAND.correlationId] = c.correlationId ?? commandId;
    flat[at + COMMAND.causationId] = c.causationId ?? null;
    flat[at + COMMAND.shard] = own;
    flat[at + COMMAND.idUse] = idUse;
    flat[at + COMMAND.seq] = i;
    flat[at + COMMAND.principal] = null;
  }
}

/** The values of one command of a request, as sent (not checked yet). */
interface RequestFields {
  commandId: unknown;
  type: unknown;
  aggregateType: unknown;
  aggregateId: unknown;
  payload: unknown;
  userId: unknown;
  correlationId: unknown;
  causationId: unknown;
  fresh: unknown;
}

/** A command of a FLAT (or FLAT_2) request: REQUEST layout, `fresh` only in FLAT. */
function fromFlat(list: readonly unknown[], b: number, stride: number): RequestFields {
  return {
    commandId: list[b + REQUEST.commandId], type: list[b + REQUEST.type], aggregateType: list[b + REQUEST.aggregateType], aggregateId: list[b + REQUEST.aggregateId],
    payload: list[b + REQUEST.payload], userId: list[b + REQUEST.userId], correlationId: list[b + REQUEST.correlationId], causationId: list[b + REQUEST.causationId],
    fresh: stride === REQUEST_STRIDE ? list[b + REQUEST.fresh] : false,
  };
}

/** A command of a PROTOCOL request (objects), or null when it is not an object. */
function fromObject(c: unknown): RequestFields | null {
  if (typeof c !== 'object' || c === null || Array.isArray(c)) return null;
  const o = c as Record<string, unknown>;
  return {
    commandId: o.commandId, type: o.type, aggregateType: o.aggregateType, aggregateId: o.aggregateId, payload: o.payload,
    userId: o.userId, correlationId: o.correlationId, causationId: o.causationId, fresh: o.fresh,
  };
}
