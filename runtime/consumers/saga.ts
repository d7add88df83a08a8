/**
 * Workflows between actors: consumers that send commands because of events.
 *
 * Every command a workflow sends carries `causationId = event.eventId`, the event's
 * `correlationId`, and a commandId derived from (workflow, eventId, step, n). A Troupe node
 * answers a re-sent commandId with the first result and appends nothing, so a redelivered
 * event — a crash after the send and before the ack — never acts twice.
 *
 * Sagas run steps in order for one triggering event; the saga's progress is kept in LMDB
 * (`saga/<stream>/<name>`, keyed by the triggering eventId) after every step, so a retry
 * resumes where it stopped. When a step fails with an error a retry cannot fix (a domain
 * rejection, by default), the steps done so far are compensated in reverse order, and the
 * saga ends `compensated`. Errors a retry can fix are thrown to the consumer, which retries
 * the event with back-off (and dead-letters it after maxRetries: a replay resumes the saga).
 *
 *   running ──all steps done──▶ completed
 *      │ step failed (not retryable)
 *      ▼
 *   compensating ──every compensation done──▶ compensated
 */
import type { Database } from 'lmdb';
import type { EventEnvelope } from '../journal/codec.ts';
import { consume, type Consumer, type ScaledConsumer, type ScaleOutOptions, type SingleConsumeOptions } from './consume.ts';
import type { ConsumerStore } from './consumer-store.ts';
import type { Command, CommandResult } from '../envelope.ts';
import { InvalidOptionError, isTroupeError } from '../errors.ts';
import { DEFAULT_STREAM } from '../options.ts';
import type { HandlerContext } from './pipeline.ts';

/** Where workflow commands go: a `Troupe` node or a `TroupeClient`. */
export interface CommandSender {
  send(aggregateType: string, aggregateId: string, command: Command): Promise<CommandResult>;
}

/** The commandId a workflow uses for the n-th command of `step` caused by `eventId`. */
export function commandIdFor(workflow: string, eventId: string, step: string, n = 0): string {
  return `${workflow}:${eventId}:${step}${n === 0 ? '' : `:${n}`}`;
}

/** Sends commands caused by one event. */
export class CausedCommands {
  private readonly counts = new Map<string, number>();

  constructor(
    private readonly sender: CommandSender,
    private readonly workflow: string,
    readonly event: EventEnvelope,
    private readonly userId: string | undefined,
  ) {}

  /**
   * Send a command with causationId = the event's id, its correlationId, and a deterministic
   * commandId (per step, numbered when a step sends several).
   */
  send(aggregateType: string, aggregateId: string, type: string, payload: object = {}, step = 'command'): Promise<CommandResult> {
    const n = this.counts.get(step) ?? 0;
    this.counts.set(step, n + 1);
    const command: Command = {
      type, payload,
      commandId: commandIdFor(this.workflow, this.event.eventId, step, n),
      causationId: this.event.eventId,
      correlationId: this.event.correlationId,
      ...(this.userId === undefined ? {} : { userId: this.userId }),
    };
    return this.sender.send(aggregateType, aggregateId, command);
  }
}

type WorkflowBase = Omit<SingleConsumeOptions, 'handler' | 'eventTypes'>;

export interface WorkflowOptions extends WorkflowBase {
  /** Where the commands go. */
  sender: CommandSender;
  /** What to do for each event type. */
  on: Record<string, (event: EventEnvelope, commands: CausedCommands, ctx: HandlerContext) => unknown>;
  /** userId on the commands. Default: the event's userId. */
  userId?: string;
}

/**
 * A consumer that reacts to events by sending commands to actors. With `scaleOut`, its
 * instances split the log's shards; a re-sent commandId is answered once, so a move between
 * instances never acts twice.
 */
export function workflow(options: WorkflowOptions & { scaleOut: true | ScaleOutOptions }): Promise<ScaledConsumer>;
export function workflow(options: WorkflowOptions): Promise<Consumer>;
export function workflow(options: WorkflowOptions): Promise<Consumer | ScaledConsumer> {
  const { sender, on, userId, ...rest } = options;
  const types = Object.keys(on ?? {});
  if (types.length === 0) throw new InvalidOptionError(`workflow ${options.name} reacts to no event type; give options.on a handler per event type`, { field: 'on' });
  return consume({
    ...rest,
    eventTypes: types,
    handler: (event, ctx) => on[event.eventType]!(event, new CausedCommands(sender, options.name, event, userId ?? event.userId ?? undefined), ctx),
  });
}

export interface SagaContext {
  readonly event: EventEnvelope;
  readonly sagaId: string;
  /** What earlier steps returned, by step name. */
  readonly data: Readonly<Record<string, unknown>>;
  /** When compensating: the step that failed and its error message. */
  readonly failure: { step: string; error: string } | null;
  /** Send a command caused by the triggering event, with this step's deterministic commandId. */
  send(aggregateType: string, aggregateId: string, type: string, payload?: object): Promise<CommandResult>;
}

export interface SagaStep {
  name: string;
  /** Do the step; what it returns is kept in `data[name]` (use plain data). */
  run: (s: SagaContext) => unknown;
  /** Undo the step after a later step failed. */
  compensate?: (s: SagaContext) => unknown;
}

export interface SagaDefinition {
  name: string;
  /** Event type(s) that start one saga each. */
  startOn: string | readonly string[];
  steps: readonly SagaStep[];
  /** Errors that end the saga with compensation instead of a retry. Default: errors a retry cannot fix. */
  compensateOn?: (error: unknown) => boolean;
}

export type SagaStatus = 'running' | 'completed' | 'compensating' | 'compensated';

export interface SagaState {
  status: SagaStatus;
  /** Steps done, in order. */
  completed: string[];
  /** Steps undone, in the order they were undone. */
  compensated: string[];
  data: Record<string, unknown>;
  failure: { step: string; error: string; reason: string } | null;
  startedAt: string;
  updatedAt: string;
}

export interface SagaOptions extends Omit<WorkflowBase, 'name'> {
  sender: CommandSender;
  /** userId on the commands. Default: the event's userId. */
  userId?: string;
}

function defaultCompensateOn(e: unknown): boolean {
  return isTroupeError(e) && e.retryable === false;
}

/** A running saga: its consumer and the state of each saga instance. */
export class Saga {
  constructor(readonly definition: SagaDefinition, readonly consumer: Consumer | ScaledConsumer, private readonly db: Database<SagaState, string>) {}

  /** The state of the saga started by event `sagaId`. */
  status(sagaId: string): SagaState | undefined {
    return this.db.get(sagaId);
  }

  stop(timeoutMs?: number): Promise<void> {
    return this.consumer.stop(timeoutMs);
  }
}

function validateSaga(def: SagaDefinition): void {
  if (typeof def?.name !== 'string' || !/^[A-Za-z0-9_-]{1,100}$/.test(def.name)) {
    throw new InvalidOptionError(`a saga needs a name of letters, digits, _ or -, got ${JSON.stringify(def?.name)}`, { field: 'name' });
  }
  if (!Array.isArray(def.steps) || def.steps.length === 0) throw new InvalidOptionError(`saga ${def.name} has no steps`, { field: 'steps' });
  const names = new Set<string>();
  for (const s of def.steps) {
    if (typeof s?.name !== 'string' || s.name.length === 0 || typeof s.run !== 'function') throw new InvalidOptionError(`every step of saga ${def.name} needs a name and a run function`, { field: 'steps' });
    if (names.has(s.name)) throw new InvalidOptionError(`saga ${def.name} has two steps named ${s.name}`, { field: 'steps' });
    names.add(s.name);
  }
}

/** Run a saga for every event of its start type(s). */
export async function saga(definition: SagaDefinition, options: SagaOptions): Promise<Saga> {
  validateSaga(definition);
  const startOn = typeof definition.startOn === 'string' ? [definition.startOn] : [...definition.startOn];
  const compensateOn = definition.compensateOn ?? defaultCompensateOn;
  const { sender, userId, ...rest } = options;
  let db: Database<SagaState, string> | null = null;
  const dbOf = (store: ConsumerStore) => (db ??= store.db<SagaState, string>(`saga/${options.stream ?? DEFAULT_STREAM}/${definition.name}`));
  const consumer = await consume({
    ...rest,
    name: definition.name,
    eventTypes: startOn,
    handler: async (event, ctx) => {
      const store = dbOf(ctx.store);
      await runSaga(definition, compensateOn, store, new CausedCommands(sender, definition.name, event, userId ?? event.userId ?? undefined), event);
    },
  });
  return new Saga(definition, consumer, dbOf(consumer.store));
}

async function runSaga(def: SagaDefinition, compensateOn: (e: unknown) => boolean, db: Database<SagaState, string>, commands: CausedCommands, event: EventEnvelope): Promise<void> {
  const now = () => new Date().toISOString();
  const state: SagaState = db.get(event.eventId) ?? {
    status: 'running', completed: [], compensated: [], data: {}, failure: null, startedAt: now(), updatedAt: now(),
  };
  const save = async () => {
    state.updatedAt = now();
    await db.put(event.eventId, state);
  };
  const context = (step: string): SagaContext => ({
    event, sagaId: event.eventId, data: state.data, failure: state.failure,
    send: (aggregateType, aggregateId, type, payload) => commands.send(aggregateType, aggregateId, type, payload, step),
  });

  if (state.status === 'running') {
    for (const step of def.steps) {
      if (state.completed.includes(step.name)) continue;
      try {
        const result = await step.run(context(step.name));
        state.data[step.name] = result === undefined ? null : result;
        state.completed.push(step.name);
        await save();
      } catch (e) {
        if (!compensateOn(e)) throw e;
        state.status = 'compensating';
        const code = (e as { code?: unknown })?.code;
        state.failure = { step: step.name, error: (e as Error)?.message ?? String(e), reason: typeof code === 'string' ? code : (e as Error)?.name ?? 'Error' };
        await save();
        break;
      }
    }
    if (state.status === 'running') {
      state.status = 'completed';
      await save();
      return;
    }
  }
  if (state.status === 'compensating') {
    for (const name of [...state.completed].reverse()) {
      if (state.compensated.includes(name)) continue;
      const step = def.steps.find((s) => s.name === name);
      // Errors here are retried by the consumer: a compensation must eventually succeed.
      if (step?.compensate !== undefined) await step.compensate(context(`${name}:undo`));
      state.compensated.push(name);
      await save();
    }
    state.status = 'compensated';
    await save();
  }
}
