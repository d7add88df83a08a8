/**
 * Commands, queries and history from other processes over NATS request/reply, addressed to
 * the shard's owner (subjects.ts):
 *
 *   <prefix>.cmd.<shard>  msgpack [3, flat commands]  →  msgpack flat outcomes (see RemoteOutcomes)
 *   <prefix>.q.<shard>    msgpack [aggregateType, aggregateId]  →  [error|null, {state, version}|null]
 *   <prefix>.h.<shard>    msgpack [aggregateType, aggregateId]  →  [error|null, events|null]
 *
 * A client batches the commands it sends in one event-loop turn into one request per shard, so
 * the per-message cost of NATS is paid per batch, not per command. The node subscribes to a
 * shard's subjects once it holds the shard's lease and has opened it (`serve`), and drops them
 * when it loses or releases the shard (`drop`). A request that reaches a node for a shard it
 * does not own (a moment of a move) is answered SHARD_NOT_OWNED, which the client retries.
 *
 * Where the node allows it and asks for it (ServedNode.workerCommands: a door with nothing on the main thread, opt-in),
 * a shard's command subject is subscribed by the worker that hosts the shard (node/serving.ts)
 * and a remote command never crosses the main thread; `serve` and `drop` then ask the worker.
 * Queries and history stay here.
 *
 * The shared subjects of earlier clients (`<prefix>.cmd`, `.query`, `.history`, one queue
 * group over all nodes) are relayed to the shard subjects by whichever node takes them.
 */
import { headers, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { decode, encode } from '../journal/codec.ts';
import { IdUse, newId, shardOf, type Command, type CommandEnvelope, type CommandMetadata, type CommandResult, type OutcomeSink } from '../envelope.ts';
import { FLAT, FLAT_2, OUTCOME, OUTCOME_STRIDE, PROTOCOL, READ_REPLY, REQUEST_MESSAGE, REQUEST_STRIDE, REQUEST_STRIDE_2, parseReadRequest, pushOutcome, readRequest } from '../wire.ts';
import { JournalUnavailableError, ValidationError, toWire, type ConcurrencyError, type TroupeError, type WireError } from '../errors.ts';
import type { ResolvedOptions } from '../options.ts';
import { TRACEPARENT, tracing } from '../ops/tracing.ts';
import { commandSubject, historySubject, querySubject, queueGroup } from './subjects.ts';

/** The subjects a worker that takes its shards' commands subscribes to (node/serving.ts). */
export { commandSubject, queueGroup } from './subjects.ts';
import { AUTH_HEADER, type Principal } from '../principal.ts';

/**
 * A command request is msgpack `[protocol, commands]` (wire.ts: PROTOCOL, FLAT, FLAT_2 and the
 * REQUEST layout). The layouts and their constants are re-exported here for older importers.
 */
export { FLAT, FLAT_2, PROTOCOL, REQUEST_STRIDE, REQUEST_STRIDE_2 } from '../wire.ts';

/** The commands of a FLAT (or FLAT_2) request, as objects without the absent fields. */
function unflatten(flat: unknown[], stride: number): RemoteCommand[] {
  const commands = readRequest(flat, stride);
  if (commands === null) {
    throw new ValidationError('MALFORMED_COMMAND', `a flat command request holds ${stride} values per command; got ${flat.length}`, {});
  }
  return commands as RemoteCommand[];
}

export interface RemoteCommand extends Command {
  aggregateType: string;
  aggregateId: string;
  /** W3C traceparent of the sender's span for this command (only when the sender traces). */
  traceparent?: string;
  /** The sender made `commandId` and sends it for the first time: record it, skip the lookup. */
  fresh?: boolean;
}

/**
 * A reply to a command request is one flat array, OUTCOME_STRIDE values per command in request
 * order (envelope.ts `pushOutcome`): msgpack then writes numbers and ids, not an object with
 * its keys per command and per event (the objects cost a quarter of the node's main thread).
 */
export type RemoteOutcomes = unknown[];

/**
 * What the service needs of the node it serves (node/system.ts's Troupe is one): build and
 * check an envelope at the door, count a refusal, submit (traced, or into an outcome sink that
 * copies the worker's outcome into the reply), and read state and history.
 */
export interface ServedNode {
  /** `principal` is the one `authenticate` verified; a principal inside `command` is never read. */
  envelope(aggregateType: string, aggregateId: string, command: Command, payload?: unknown, metadata?: CommandMetadata, principal?: Principal | null): CommandEnvelope;
  /** The principal of a request's token (header Troupe-Auth); throws UNAUTHENTICATED. */
  authenticate(token: string | null): Principal | null | Promise<Principal | null>;
  refused(e: unknown): void;
  /** RATE_LIMITED when the principal's next command would be refused (its bucket is empty), else null; takes nothing. */
  rateLimited?(principal: Principal | null): TroupeError | null;
  submitTraced(envelope: CommandEnvelope, parent: string | null, remote: boolean): Promise<CommandResult>;
  submitTo(envelope: CommandEnvelope, sink: OutcomeSink): void;
  query(aggregateType: string, aggregateId: string, options?: { principal?: Principal | null }): Promise<unknown>;
  history(aggregateType: string, aggregateId: string, options?: { principal?: Principal | null }): Promise<unknown>;
  /** When the workers that host shards subscribe to their command subjects themselves; null: this thread does. */
  readonly workerCommands?: WorkerCommands | null;
}

/** The node's workers taking the command subjects of shards (node/serving.ts). */
export interface WorkerCommands {
  serve(shards: readonly number[]): Promise<void>;
  /** Resolves once the requests the workers already received for `shards` are taken. */
  drop(shards: readonly number[]): Promise<void>;
}

export class CommandService {
  /** The subscriptions of each shard this node serves: command, query, history. */
  private readonly served = new Map<number, Subscription[]>();
  private stopped = false;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly prefix: string,
    private readonly maxRequestBytes: number,
    private readonly node: ServedNode,
    private readonly shared: Subscription[],
  ) {}

  /** Serve the shared subjects of earlier clients, and the subjects of `shards`. */
  static async start(nc: NatsConnection, options: ResolvedOptions, node: ServedNode, shards: readonly number[]): Promise<CommandService> {
    const prefix = options.subjectPrefix;
    const queue = queueGroup(prefix);
    const maxRequestBytes = options.maxBatchBytes;
    const relay: Relay = { nc, prefix, shards: options.shards, timeoutMs: options.ackTimeoutMs * 2 };
    const shared = [
      nc.subscribe(`${prefix}.cmd`, {
        queue,
        callback: (_err, msg) => {
          if (msg.reply === undefined || msg.reply === '') return;
          void handleCommands(node, msg, maxRequestBytes, relay);
        },
      }),
      nc.subscribe(`${prefix}.query`, { queue, callback: (_err, msg) => void relayRead(relay, msg, querySubject) }),
      nc.subscribe(`${prefix}.history`, { queue, callback: (_err, msg) => void relayRead(relay, msg, historySubject) }),
    ];
    const service = new CommandService(nc, prefix, maxRequestBytes, node, shared);
    await service.serve(shards);
    return service;
  }

  /** Subscribe to the subjects of shards this node now owns and has opened. */
  async serve(shards: readonly number[]): Promise<void> {
    if (this.stopped) return;
    const queue = queueGroup(this.prefix);
    const node = this.node;
    const workers = node.workerCommands ?? null;
    const added: number[] = [];
    for (const shard of shards) {
      if (this.served.has(shard)) continue;
      added.push(shard);
      const subs = [
        this.nc.subscribe(querySubject(this.prefix, shard), { queue, callback: (_err, msg) => void handleRead(node, msg, (t, id, principal) => node.query(t, id, { principal })) }),
        this.nc.subscribe(historySubject(this.prefix, shard), { queue, callback: (_err, msg) => void handleRead(node, msg, (t, id, principal) => node.history(t, id, { principal })) }),
      ];
      if (workers === null) {
        subs.push(this.nc.subscribe(commandSubject(this.prefix, shard), {
          queue,
          callback: (_err, msg) => {
            if (msg.reply === undefined || msg.reply === '') return;
            void handleCommands(node, msg, this.maxRequestBytes, null);
          },
        }));
      }
      this.served.set(shard, subs);
    }
    if (workers !== null && added.length > 0) await workers.serve(added);
    await this.nc.flush().catch(() => {});
  }

  /** Stop taking requests for shards this node lost or releases; requests already received are answered. */
  async drop(shards: readonly number[]): Promise<void> {
    const subs: Subscription[] = [];
    const dropped: number[] = [];
    for (const shard of shards) {
      const mine = this.served.get(shard);
      if (mine === undefined) continue;
      subs.push(...mine);
      dropped.push(shard);
      this.served.delete(shard);
    }
    const workers = this.node.workerCommands ?? null;
    await Promise.all([
      ...subs.map((s) => s.drain().catch(() => {})),
      workers === null || dropped.length === 0 ? Promise.resolve() : workers.drop(dropped).catch(() => {}),
    ]);
  }

  /** A replacement worker re-opened `shards`: its command subjects are subscribed again (those still served). */
  async resubscribe(shards: readonly number[]): Promise<void> {
    const workers = this.node.workerCommands ?? null;
    if (this.stopped || workers === null) return;
    const still = shards.filter((s) => this.served.has(s));
    if (still.length > 0) await workers.serve(still);
  }

  /** The shards whose subjects this node subscribes to. */
  get servedShards(): number[] {
    return [...this.served.keys()].sort((a, b) => a - b);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const subs = [...this.shared, ...[...this.served.values()].flat()];
    const shards = [...this.served.keys()];
    this.served.clear();
    const workers = this.node.workerCommands ?? null;
    await Promise.all([
      ...subs.map((s) => s.drain().catch(() => {})),
      workers === null || shards.length === 0 ? Promise.resolve() : workers.drop(shards).catch(() => {}),
    ]);
  }
}

/** How a node passes on a request that came on a shared subject: to the shard's own subject. */
interface Relay {
  nc: NatsConnection;
  prefix: string;
  shards: number;
  timeoutMs: number;
}

/**
 * Send commands of a shared-subject request whose shards this node does not own to their
 * shard's subject, one request per shard, and put the answers at their places in the reply.
 */
async function forward(to: Relay, shard: number, items: { index: number; command: RemoteCommand }[], reply: RequestReply, token: string | null): Promise<void> {
  try {
    const message: unknown[] = [];
    message[REQUEST_MESSAGE.protocol] = PROTOCOL;
    message[REQUEST_MESSAGE.commands] = items.map((x) => x.command);
    // The owner verifies the caller's token itself.
    const answer = await to.nc.request(commandSubject(to.prefix, shard), encode(message), requestOptions(to.timeoutMs, token));
    const out = decode<unknown>(answer.data);
    if (!Array.isArray(out)) throw new Error(`the owner of shard ${shard} refused the relayed commands: ${JSON.stringify((out as { error?: WireError }).error?.message)}`);
    items.forEach(({ index }, k) => {
      const b = k * OUTCOME_STRIDE;
      if (out[b + OUTCOME.error] === undefined) reply.answer(index, toWire(new JournalUnavailableError(`the owner of shard ${shard} answered fewer commands than it was sent`, { shard })), null);
      else reply.copy(index, out, b);
    });
  } catch (e) {
    const err = toWire(new JournalUnavailableError(`no node that owns shard ${shard} answered: ${(e as Error).message}; retry with the same commandId`, { shard }, e));
    for (const { index, command } of items) reply.answer(index, { ...err, data: { ...err.data, commandId: command.commandId } }, null);
  }
}

/** Request options carrying the caller's token (Troupe-Auth), when it sent one. */
function requestOptions(timeout: number, token: string | null): { timeout: number; headers?: ReturnType<typeof headers> } {
  if (token === null) return { timeout };
  const h = headers();
  h.set(AUTH_HEADER, token);
  return { timeout, headers: h };
}

/** A read on a shared subject: passed as it is to the shard's subject (with the caller's token), the owner's answer passed back. */
async function relayRead(to: Relay, msg: Msg, subjectOf: (prefix: string, shard: number) => string): Promise<void> {
  let request: [string, string] | null = null;
  try {
    request = parseReadRequest(decode<unknown>(msg.data));
  } catch {
    request = null;
  }
  if (request === null) {
    // The owner would refuse it the same way: answer here.
    await handleRead(null, msg, () => Promise.reject(new Error('unreachable')));
    return;
  }
  const shard = shardOf(request[0], request[1], to.shards);
  try {
    const answer = await to.nc.request(subjectOf(to.prefix, shard), msg.data, requestOptions(to.timeoutMs, msg.headers?.get(AUTH_HEADER) || null));
    msg.respond(answer.data);
  } catch (e) {
    respondRead(msg, toWire(new JournalUnavailableError(`no node that owns shard ${shard} answered: ${(e as Error).message}; retry`, { aggregateType: request[0], aggregateId: request[1], shard }, e)), null);
  }
}

/** The reply to one request: each command's outcome at its place, sent when the last one is in. */
class RequestReply {
  private readonly out: RemoteOutcomes;
  private remaining: number;

  constructor(private readonly msg: Msg, n: number) {
    this.out = new Array(n * OUTCOME_STRIDE);
    this.remaining = n;
  }

  answer(i: number, error: WireError | null, result: CommandResult | null): void {
    const one: unknown[] = [];
    pushOutcome(one, i, error, result);
    this.copy(i, one, 0);
  }

  /** An outcome as a worker (or another node) sent it: copied, with this request's index. */
  copy(i: number, from: readonly unknown[], b: number): void {
    const at = i * OUTCOME_STRIDE;
    this.out[at + OUTCOME.seq] = i;
    for (let k = OUTCOME.seq + 1; k < OUTCOME_STRIDE; k++) this.out[at + k] = from[b + k];
    if (--this.remaining === 0) this.msg.respond(encode(this.out));
  }
}

/** Where a command's outcome goes: straight from the worker's message into the reply (pool.ts). */
class CommandSink implements OutcomeSink {
  constructor(private readonly reply: RequestReply, private readonly index: number) {}
  outcome(out: readonly unknown[], b: number): void {
    this.reply.copy(this.index, out, b);
  }
  failed(e: unknown): void {
    this.reply.answer(this.index, toWire(e), null);
  }
}

async function handleCommands(node: ServedNode, msg: Msg, maxRequestBytes: number, forwarding: Relay | null): Promise<void> {
  // Who sends, and whether its bucket allows anything: before the request's bytes are decoded.
  const admitted = await admitRequest(node, msg);
  if (admitted === null) return;
  const { token, principal } = admitted;
  let commands: RemoteCommand[];
  try {
    if (msg.data.length > maxRequestBytes) {
      throw new ValidationError('COMMAND_TOO_LARGE', `the request is ${msg.data.length} bytes; a request may carry at most ${maxRequestBytes}`, {});
    }
    const body = decode<unknown>(msg.data);
    const protocol: unknown = Array.isArray(body) ? body[REQUEST_MESSAGE.protocol] : undefined;
    const list: unknown = Array.isArray(body) ? body[REQUEST_MESSAGE.commands] : undefined;
    if ((protocol !== PROTOCOL && protocol !== FLAT && protocol !== FLAT_2) || !Array.isArray(list)) {
      throw new ValidationError('MALFORMED_COMMAND', `not a Troupe command request (expected msgpack [${PROTOCOL}, ${FLAT_2} or ${FLAT}, [commands]])`, {});
    }
    commands = protocol === PROTOCOL ? list as RemoteCommand[] : unflatten(list as unknown[], protocol === FLAT ? REQUEST_STRIDE : REQUEST_STRIDE_2);
  } catch (e) {
    const err = e instanceof ValidationError ? e : new ValidationError('MALFORMED_COMMAND', `the request could not be decoded: ${(e as Error).message}`, {});
    msg.respond(encode({ error: toWire(err) }));
    return;
  }
  const n = commands.length;
  if (n === 0) {
    msg.respond(encode([]));
    return;
  }
  // A request carries many commands: each has its own traceparent; the message's is the fallback.
  const traced = tracing.on;
  const messageParent = traced ? msg.headers?.get(TRACEPARENT) || null : null;
  const reply = new RequestReply(msg, n);
  let elsewhere: Map<number, { index: number; command: RemoteCommand }[]> | null = null;
  let limited: WireError | null = null;
  for (let i = 0; i < n; i++) {
    const c = commands[i];
    let envelope: CommandEnvelope;
    if (limited !== null) {
      node.refused(limited);
      reply.answer(i, limited, null);
      continue;
    }
    try {
      if (typeof c !== 'object' || c === null) throw new ValidationError('MALFORMED_COMMAND', 'each command must be an object {aggregateType, aggregateId, type, payload, commandId?}', {});
      envelope = node.envelope(c.aggregateType, c.aggregateId, c, undefined, undefined, principal);
    } catch (e) {
      const shard = (e as ConcurrencyError).code === 'SHARD_NOT_OWNED' ? (e as ConcurrencyError).data.shard : undefined;
      if (forwarding !== null && typeof shard === 'number') {
        // Not ours, on a shared subject: the shard's subject reaches its owner (one hop; shard subjects never relay).
        if (c!.commandId === undefined) {
          c!.commandId = newId();
          c!.fresh = true;
        }
        elsewhere ??= new Map();
        const list = elsewhere.get(shard) ?? [];
        list.push({ index: i, command: c! });
        elsewhere.set(shard, list);
        continue;
      }
      node.refused(e);
      const w = toWire(e);
      // The principal's bucket is empty: so it is for the rest of this request.
      if (w.code === 'RATE_LIMITED') limited = restLimited(w);
      reply.answer(i, w, null);
      continue;
    }
    if (c!.fresh === true && envelope.idUse === IdUse.GIVEN) envelope.idUse = IdUse.FRESH;
    if (traced) {
      node.submitTraced(envelope, typeof c!.traceparent === 'string' ? c!.traceparent : messageParent, true)
        .then((r) => reply.answer(i, null, r), (e: unknown) => reply.answer(i, toWire(e), null));
    } else {
      node.submitTo(envelope, new CommandSink(reply, i));
    }
  }
  if (elsewhere !== null) {
    for (const [shard, items] of elsewhere) void forward(forwarding!, shard, items, reply, token);
  }
}

/**
 * The door of a command request, before its body is decoded: the request's token, verified
 * (options.auth), and the principal's rate limit, asked once per request. A refused request is
 * answered whole, with one error, and nothing of it is decoded, checked or built: a flood of
 * unauthenticated or rate-limited requests costs the node a header lookup, a remembered token
 * and a bucket, not the work of each command. Null when the request is answered.
 */
async function admitRequest(node: ServedNode, msg: Msg): Promise<{ token: string | null; principal: Principal | null } | null> {
  const token = msg.headers?.get(AUTH_HEADER) || null;
  let refusal: unknown;
  try {
    const p = node.authenticate(token);
    const principal = p instanceof Promise ? await p : p;
    refusal = node.rateLimited?.(principal) ?? null;
    if (refusal === null) return { token, principal };
  } catch (e) {
    refusal = e;
  }
  // Counted per command, as a refusal after decoding would be.
  const n = peekCount(msg.data);
  for (let i = 0; i < n; i++) node.refused(refusal);
  msg.respond(encode({ error: toWire(refusal) }));
  return null;
}

/**
 * How many commands a request holds, read from its msgpack header ([protocol, commands]: a
 * fixarray of 2, a small protocol number, then the commands' array header) without decoding
 * it; 1 when the bytes do not start that way.
 */
export function peekCount(data: Uint8Array): number {
  if (data.length < 3 || data[0] !== 0x92) return 1;
  const protocol = data[1];
  const h = data[2]!;
  let len: number;
  if (h >= 0x90 && h <= 0x9f) len = h & 0x0f;
  else if (h === 0xdc && data.length >= 5) len = (data[3]! << 8) | data[4]!;
  else if (h === 0xdd && data.length >= 7) len = ((data[3]! << 24) | (data[4]! << 16) | (data[5]! << 8) | data[6]!) >>> 0;
  else return 1;
  const per = protocol === FLAT ? REQUEST_STRIDE : protocol === FLAT_2 ? REQUEST_STRIDE_2 : protocol === PROTOCOL ? 1 : 0;
  return per === 0 ? 1 : Math.max(1, Math.floor(len / per));
}

/**
 * The refusal of the commands after one refused RATE_LIMITED in the same request: the same
 * error without that command's ids (the client puts each command's id back), one object for
 * all of them, so that the rest of a flooding request costs nothing to refuse.
 */
function restLimited(limited: WireError): WireError {
  const { aggregateType: _t, aggregateId: _i, commandId: _c, commandType: _ct, ...rest } = limited.data;
  return { ...limited, data: rest };
}

/** A query or history request: bytes that are not msgpack [aggregateType, aggregateId] get MALFORMED_REQUEST. */
async function handleRead(node: ServedNode | null, msg: Msg, read: (type: string, id: string, principal: Principal | null) => Promise<unknown>): Promise<void> {
  let body: unknown;
  try {
    body = decode<unknown>(msg.data);
  } catch (e) {
    body = e;
  }
  const request = parseReadRequest(body);
  if (request === null) {
    const why = body instanceof Error ? `: ${body.message}` : '';
    respondRead(msg, toWire(new ValidationError('MALFORMED_REQUEST', `a read request is msgpack [aggregateType, aggregateId]; this one could not be read${why}`, {})), null);
    return;
  }
  try {
    const p = node === null ? null : node.authenticate(msg.headers?.get(AUTH_HEADER) || null);
    const principal = p instanceof Promise ? await p : p;
    respondRead(msg, null, await read(request[0], request[1], principal));
  } catch (e) {
    respondRead(msg, toWire(e), null);
  }
}

/** A read reply: [error | null, value | null] (wire.ts READ_REPLY). */
function respondRead(msg: Msg, error: WireError | null, value: unknown): void {
  const reply: unknown[] = [null, null];
  reply[READ_REPLY.error] = error;
  reply[READ_REPLY.value] = value;
  msg.respond(encode(reply));
}
