/**
 * `processManager(definition, options)`: the consumer that feeds a process manager
 * (runtime/process.ts) and sends what it decided.
 *
 *   log ──(a correlated event)──▶ route: correlate → ReceiveEvent to <type>/<id>,
 *                                        commandId `<type>:<eventId>` (handled once by the node)
 *   log ──(ProcessCommandsIssued of <type>)──▶ dispatch: each command of the outbox, in order,
 *                                        with its recorded commandId, causationId, correlationId
 *
 * Both run in one consumer, so they share its order, retries, dead letters, lease and
 * scale-out. The dispatcher is a consumer of the process's own events rather than a step of
 * the node after its commit: the outbox event is in the log as soon as the reaction is
 * committed, so a crash anywhere between commit and send only delays the send until the
 * consumer (re)reads the event; and a re-sent command is answered by its actor with its first
 * result, so a redelivery never acts twice. Retryable errors (an outage, a timeout) are
 * retried with back-off, by default for as long as it takes (retry.maxRetries 1,000,000); a
 * refusal (a domain rejection) is an answer: the event goes to the dead-letter queue, where an
 * operator can replay it.
 */
import type { EventEnvelope } from '../journal/codec.ts';
import { consume, type Consumer, type ScaledConsumer, type ScaleOutOptions, type SingleConsumeOptions } from './consume.ts';
import type { CommandResult } from '../envelope.ts';
import { InvalidOptionError } from '../errors.ts';
import { isProcessDefinition, PROCESS_DEFINITION, ProcessCommand, ProcessEvent, type CommandsIssued, type ProcessDefinition, type ProcessInput } from '../process.ts';
import type { CommandSender } from './saga.ts';

export interface ProcessManagerOptions extends Omit<SingleConsumeOptions, 'handler' | 'eventTypes' | 'name'> {
  /** Where the process's commands (ReceiveEvent, ExpireDeadline) and its issued commands go: a `Troupe` node or a `TroupeClient`. */
  sender: CommandSender;
  /** The consumer's name. Default: the process type. */
  name?: string;
}

/** A running process manager: its consumer, and a way to end a wait now. */
export class ProcessManager<S = unknown> {
  constructor(readonly definition: ProcessDefinition<S>, readonly consumer: Consumer | ScaledConsumer, private readonly sender: CommandSender) {}

  /**
   * Expire the deadline `key` of process `id` now (it runs `deadlines[key]` if the deadline is
   * pending; otherwise nothing happens). Its durable timer, if any, is cancelled.
   */
  expire(id: string, key: string, commandId?: string): Promise<CommandResult> {
    return this.sender.send(this.definition.type, id, { type: ProcessCommand.EXPIRE, payload: { key }, ...(commandId === undefined ? {} : { commandId }) });
  }

  stop(timeoutMs?: number): Promise<void> {
    return this.consumer.stop(timeoutMs);
  }
}

/** The commandId of the ReceiveEvent that delivers `eventId` to a process of `processType`. */
export function receiveCommandId(processType: string, eventId: string): string {
  return `${processType}:${eventId}`;
}

/** Run a process manager: route its events to it, send what it issues. */
export async function processManager<S>(definition: ProcessDefinition<S>, options: ProcessManagerOptions & { scaleOut: true | ScaleOutOptions }): Promise<ProcessManager<S>>;
export async function processManager<S>(definition: ProcessDefinition<S>, options: ProcessManagerOptions): Promise<ProcessManager<S>>;
export async function processManager<S>(definition: ProcessDefinition<S>, options: ProcessManagerOptions): Promise<ProcessManager<S>> {
  if (!isProcessDefinition(definition as unknown)) throw new InvalidOptionError('processManager() takes a definition made by defineProcess()', { field: 'definition' });
  if (typeof options?.sender?.send !== 'function') throw new InvalidOptionError(`process ${definition.type}: options.sender must be a Troupe node or a TroupeClient`, { field: 'sender' });
  const def = definition;
  const spec = def[PROCESS_DEFINITION];
  const type = def.type;
  const { sender, name, ...rest } = options;

  const route = async (event: EventEnvelope): Promise<void> => {
    const correlate = spec.correlate.get(event.eventType);
    if (correlate === undefined) return;
    const input: ProcessInput = {
      eventId: event.eventId, eventType: event.eventType, aggregateType: event.aggregateType, aggregateId: event.aggregateId,
      sequence: event.sequence, timestamp: event.timestamp, correlationId: event.correlationId, userId: event.userId, payload: event.payload,
    };
    const id = correlate(input);
    if (id === null || id === undefined || id === '') return;
    await sender.send(type, String(id), {
      type: ProcessCommand.RECEIVE,
      payload: { event: input },
      commandId: receiveCommandId(type, event.eventId),
      causationId: event.eventId,
      correlationId: event.correlationId,
      ...(event.userId === null ? {} : { userId: event.userId }),
    });
  };

  const dispatch = async (event: EventEnvelope): Promise<void> => {
    const issued = event.payload as CommandsIssued;
    for (const c of issued.commands) {
      await sender.send(c.aggregateType, c.aggregateId, {
        type: c.type,
        payload: c.payload,
        commandId: c.commandId,
        causationId: issued.causationId,
        correlationId: issued.correlationId,
        ...(event.userId === null ? {} : { userId: event.userId }),
      });
    }
  };

  const consumer = await consume({
    retry: { maxRetries: 1_000_000 },
    ...rest,
    ...(rest.retry === undefined ? {} : { retry: { maxRetries: 1_000_000, ...rest.retry } }),
    name: name ?? type,
    eventTypes: [...spec.correlate.keys(), ProcessEvent.COMMANDS_ISSUED],
    handler: async (event) => {
      if (event.aggregateType === type) {
        if (event.eventType === ProcessEvent.COMMANDS_ISSUED) await dispatch(event);
        return;
      }
      if (event.eventType === ProcessEvent.COMMANDS_ISSUED) return; // another process's outbox
      await route(event);
    },
  } as SingleConsumeOptions);
  return new ProcessManager<S>(def, consumer, sender);
}
