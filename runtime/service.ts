/**
 * Commands from other processes over NATS request/reply.
 *
 *   <prefix>.cmd      msgpack [1, [command, ...]]  →  msgpack [[error|null, result|null], ...]
 *   <prefix>.query    msgpack [aggregateType, aggregateId]  →  [error|null, {state, version}|null]
 *   <prefix>.history  msgpack [aggregateType, aggregateId]  →  [error|null, events|null]
 *
 * A client batches the commands it sends in one event-loop turn into one request, so the
 * per-message cost of NATS is paid per batch, not per command. Nodes subscribe in one queue
 * group; a command for a shard another node owns is answered with SHARD_NOT_OWNED.
 */
import type { Msg, Subscription } from '@nats-io/transport-node';
import { decode, encode } from './codec.ts';
import type { CommandEnvelope, CommandResult } from './envelope.ts';
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

export type RemoteOutcome = [WireError | null, CommandResult | null];

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
  const outcomes = await Promise.all(commands.map(async (c): Promise<RemoteOutcome> => {
    let envelope: CommandEnvelope;
    try {
      if (typeof c !== 'object' || c === null) throw new ValidationError('MALFORMED_COMMAND', 'each command must be an object {aggregateType, aggregateId, type, payload, commandId?}', {});
      envelope = node.envelope(c.aggregateType, c.aggregateId, c);
    } catch (e) {
      node.refused(e);
      return [toWire(e), null];
    }
    try {
      if (traced) return [null, await node.submitTraced(envelope, typeof c.traceparent === 'string' ? c.traceparent : messageParent, true)];
      return [null, await node.submit(envelope)];
    } catch (e) {
      return [toWire(e), null];
    }
  }));
  msg.respond(encode(outcomes));
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
