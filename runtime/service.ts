/**
 * Commands from other processes over NATS request/reply.
 *
 *   <prefix>.cmd      msgpack [1, [command, ...]]  →  msgpack flat outcomes (see RemoteOutcomes)
 *   <prefix>.query    msgpack [aggregateType, aggregateId]  →  [error|null, {state, version}|null]
 *   <prefix>.history  msgpack [aggregateType, aggregateId]  →  [error|null, events|null]
 *
 * A client batches the commands it sends in one event-loop turn into one request, so the
 * per-message cost of NATS is paid per batch, not per command. Nodes subscribe in one queue
 * group; a command for a shard another node owns is answered with SHARD_NOT_OWNED.
 */
import type { Msg, Subscription } from '@nats-io/transport-node';
import { decode, encode } from './codec.ts';
import { pushOutcome, type CommandEnvelope, type CommandResult } from './envelope.ts';
import { ValidationError, toWire, type WireError } from './errors.ts';
import type { NatsConnection } from './journal.ts';
import type { ResolvedOptions } from './options.ts';
import type { Command, Troupe } from './system.ts';
import { TRACEPARENT, tracing } from './telemetry.ts';

export const PROTOCOL = 1;

export interface RemoteCommand extends Command {
  aggregateType: string;
  aggregateId: string;
  /** W3C traceparent of the sender's span for this command (only when the sender traces). */
  traceparent?: string;
}

/**
 * A reply to a command request is one flat array, OUTCOME_STRIDE values per command in request
 * order (envelope.ts `pushOutcome`): msgpack then writes numbers and ids, not an object with
 * its keys per command and per event (the objects cost a quarter of the node's main thread).
 */
export type RemoteOutcomes = unknown[];

export class CommandService {
  private constructor(private readonly subs: Subscription[]) {}

  static async start(nc: NatsConnection, options: ResolvedOptions, node: Troupe): Promise<CommandService> {
    const queue = `${options.subjectPrefix}.nodes`;
    const maxRequestBytes = options.maxBatchBytes;
    const cmd = nc.subscribe(`${options.subjectPrefix}.cmd`, {
      queue,
      callback: (_err, msg) => {
        if (msg.reply === undefined || msg.reply === '') return;
        void handleCommands(node, msg, maxRequestBytes);
      },
    });
    const query = nc.subscribe(`${options.subjectPrefix}.query`, {
      queue,
      callback: (_err, msg) => void handleRead(msg, (t, id) => node.query(t, id)),
    });
    const history = nc.subscribe(`${options.subjectPrefix}.history`, {
      queue,
      callback: (_err, msg) => void handleRead(msg, (t, id) => node.history(t, id)),
    });
    await nc.flush();
    return new CommandService([cmd, query, history]);
  }

  async stop(): Promise<void> {
    await Promise.all(this.subs.map((s) => s.drain().catch(() => {})));
  }
}

async function handleCommands(node: Troupe, msg: Msg, maxRequestBytes: number): Promise<void> {
  let commands: RemoteCommand[];
  try {
    if (msg.data.length > maxRequestBytes) {
      throw new ValidationError('COMMAND_TOO_LARGE', `the request is ${msg.data.length} bytes; a request may carry at most ${maxRequestBytes}`, {});
    }
    const body = decode<unknown>(msg.data);
    if (!Array.isArray(body) || body[0] !== PROTOCOL || !Array.isArray(body[1])) {
      throw new ValidationError('MALFORMED_COMMAND', `not a Troupe command request (expected msgpack [${PROTOCOL}, [commands]])`, {});
    }
    commands = body[1] as RemoteCommand[];
  } catch (e) {
    const err = e instanceof ValidationError ? e : new ValidationError('MALFORMED_COMMAND', `the request could not be decoded: ${(e as Error).message}`, {});
    msg.respond(encode({ error: toWire(err) }));
    return;
  }
  // A request carries many commands: each has its own traceparent; the message's is the fallback.
  const traced = tracing.on;
  const messageParent = traced ? msg.headers?.get(TRACEPARENT) || null : null;
  const n = commands.length;
  const results = new Array<CommandResult | null>(n);
  const errors = new Array<WireError | null>(n);
  let remaining = n;
  const reply = () => {
    const out: RemoteOutcomes = [];
    for (let i = 0; i < n; i++) pushOutcome(out, i, errors[i] ?? null, results[i] ?? null);
    msg.respond(encode(out));
  };
  if (n === 0) return reply();
  for (let i = 0; i < n; i++) {
    const c = commands[i];
    let envelope: CommandEnvelope;
    try {
      if (typeof c !== 'object' || c === null) throw new ValidationError('MALFORMED_COMMAND', 'each command must be an object {aggregateType, aggregateId, type, payload, commandId?}', {});
      envelope = node.envelope(c.aggregateType, c.aggregateId, c);
    } catch (e) {
      node.refused(e);
      errors[i] = toWire(e);
      if (--remaining === 0) reply();
      continue;
    }
    const done = traced
      ? node.submitTraced(envelope, typeof c!.traceparent === 'string' ? c!.traceparent : messageParent, true)
      : node.submit(envelope);
    done.then((r) => { results[i] = r; }, (e: unknown) => { errors[i] = toWire(e); }).finally(() => { if (--remaining === 0) reply(); });
  }
}

async function handleRead(msg: Msg, read: (type: string, id: string) => Promise<unknown>): Promise<void> {
  try {
    const body = decode<unknown>(msg.data);
    if (!Array.isArray(body) || typeof body[0] !== 'string' || typeof body[1] !== 'string') {
      throw new ValidationError('MALFORMED_COMMAND', 'a read request is msgpack [aggregateType, aggregateId]', {});
    }
    msg.respond(encode([null, await read(body[0], body[1])]));
  } catch (e) {
    msg.respond(encode([toWire(e), null]));
  }
}
