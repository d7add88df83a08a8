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
 * A step may wait for an event instead of running (`waitFor`): the saga records what it waits
 * for (event types and a correlation key) and the event is acked; when an event of those types
 * with that key arrives, the step completes with it and the saga goes on. An event that arrives
 * before the saga waits for it is kept and ends the wait at once. A wait may carry a deadline
 * (`deadlineMs`): if no event ends it in time, the steps done so far are compensated (failure
 * reason DEADLINE). The deadline is kept with the saga's progress and watched by the saga's own
 * process, so it holds across restarts; a saga whose waits must outlive the process that runs
 * it, or be fired by the log itself, is a process manager (process-manager.ts), whose deadlines
 * are durable timers of its actor.
 *
 *   running ──all steps done──▶ completed
 *      │  ▲ the awaited event arrived
 *      ▼  │
 *   waiting ──deadline passed──▶ compensating
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
  /** Do the step; what it returns is kept in `data[name]` (use plain data). A step has `run` or `waitFor`. */
  run?: (s: SagaContext) => unknown;
  /** Undo the step after a later step failed (or a deadline passed). */
  compensate?: (s: SagaContext) => unknown;
  /**
   * Wait for an event instead of running: the step completes when an event of `eventType`
   * arrives whose `correlate(event)` equals `key(s)`; `data[name]` is then that event
   * (`{ eventId, eventType, aggregateType, aggregateId, payload }`).
   */
  waitFor?: SagaWait;
  /** With `waitFor`: compensate the steps done so far if no event ended the wait within this many ms. */
  deadlineMs?: number;
}

export interface SagaWait {
  eventType: string | readonly string[];
  /** The correlation key of an arriving event (null or '' when it belongs to no saga). */
  correlate: (event: EventEnvelope) => string | null | undefined;
  /** The key this saga waits for. */
  key: (s: SagaContext) => string;
}

/** An event a wait step received, as `data[step]` keeps it. */
export interface ReceivedEvent {
  eventId: string;
  eventType: string;
  aggregateType: string;
  aggregateId: string;
  payload: unknown;
}

export interface SagaDefinition {
  name: string;
  /** Event type(s) that start one saga each. */
  startOn: string | readonly string[];
  steps: readonly SagaStep[];
  /** Errors that end the saga with compensation instead of a retry. Default: errors a retry cannot fix. */
  compensateOn?: (error: unknown) => boolean;
}

export type SagaStatus = 'running' | 'waiting' | 'completed' | 'compensating' | 'compensated';

export interface SagaState {
  status: SagaStatus;
  /** Steps done, in order. */
  completed: string[];
  /** Steps undone, in the order they were undone. */
  compensated: string[];
  data: Record<string, unknown>;
  failure: { step: string; error: string; reason: string } | null;
  /** While `waiting`: the step, the event types and key it waits for, and its deadline (ms since the epoch), if any. */
  waiting?: { step: string; eventTypes: string[]; key: string; dueAt: number | null } | null;
  /** The event that started the saga (a wait resumes it later, from another event). */
  trigger?: EventEnvelope;
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
  constructor(readonly definition: SagaDefinition, readonly consumer: Consumer | ScaledConsumer, private readonly db: Database<SagaState, string>, private readonly onStop: () => void = () => {}) {}

  /** The state of the saga started by event `sagaId`. */
  status(sagaId: string): SagaState | undefined {
    return this.db.get(sagaId);
  }

  stop(timeoutMs?: number): Promise<void> {
    this.onStop();
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
    const runs = typeof s?.run === 'function';
    const waits = s?.waitFor !== undefined;
    if (typeof s?.name !== 'string' || s.name.length === 0 || runs === waits) throw new InvalidOptionError(`every step of saga ${def.name} needs a name and either a run function or waitFor`, { field: 'steps' });
    if (names.has(s.name)) throw new InvalidOptionError(`saga ${def.name} has two steps named ${s.name}`, { field: 'steps' });
    names.add(s.name);
    if (waits) {
      const w = s.waitFor!;
      const types = typeof w.eventType === 'string' ? [w.eventType] : w.eventType;
      if (!Array.isArray(types) || types.length === 0 || types.some((t) => typeof t !== 'string' || t === '')) throw new InvalidOptionError(`saga ${def.name}: step ${s.name}: waitFor.eventType must name the event type(s) it waits for`, { field: 'steps' });
      if (typeof w.correlate !== 'function' || typeof w.key !== 'function') throw new InvalidOptionError(`saga ${def.name}: step ${s.name}: waitFor needs correlate(event) and key(s) functions`, { field: 'steps' });
    }
    if (s.deadlineMs !== undefined && (!waits || typeof s.deadlineMs !== 'number' || !Number.isFinite(s.deadlineMs) || s.deadlineMs <= 0)) {
      throw new InvalidOptionError(`saga ${def.name}: step ${s.name}: deadlineMs must be a positive number of ms, on a waitFor step`, { field: 'steps' });
    }
  }
}

/** Run a saga for every event of its start type(s). */
export async function saga(definition: SagaDefinition, options: SagaOptions): Promise<Saga> {
  validateSaga(definition);
  const startOn = typeof definition.startOn === 'string' ? [definition.startOn] : [...definition.startOn];
  const waitTypes = new Set(definition.steps.flatMap((st) => (st.waitFor === undefined ? [] : typeof st.waitFor.eventType === 'string' ? [st.waitFor.eventType] : [...st.waitFor.eventType])));
  const compensateOn = definition.compensateOn ?? defaultCompensateOn;
  const { sender, userId, ...rest } = options;
  const base = `saga/${options.stream ?? DEFAULT_STREAM}/${definition.name}`;
  let dbs: SagaDbs | null = null;
  const dbsOf = (store: ConsumerStore): SagaDbs => (dbs ??= { sagas: store.db<SagaState, string>(base), waits: store.db<string | ReceivedEvent, string>(`${base}/waits`) });
  const runner = new SagaRunner(definition, compensateOn, sender, userId);
  const consumer = await consume({
    ...rest,
    name: definition.name,
    eventTypes: [...new Set([...startOn, ...waitTypes])],
    handler: async (event, ctx) => {
      const d = dbsOf(ctx.store);
      runner.attach(d);
      if (waitTypes.has(event.eventType)) await runner.arrived(event);
      if (startOn.includes(event.eventType)) await runner.serial(event.eventId, () => runner.run(event.eventId, event));
    },
  });
  const d = dbsOf(consumer.store);
  runner.attach(d);
  if (waitTypes.size > 0) runner.watchDeadlines();
  return new Saga(definition, consumer, d.sagas, () => runner.close());
}

interface SagaDbs {
  /** Saga state by sagaId. */
  sagas: Database<SagaState, string>;
  /** `w/<eventType>/<key>` → the waiting sagaId; `e/<eventType>/<key>` → an event that arrived before its saga waited. */
  waits: Database<string | ReceivedEvent, string>;
}

const DEADLINE_CHECK_MS = 250;

/** Runs saga instances: steps, waits, deadlines, compensation. One instance at a time per sagaId. */
class SagaRunner {
  private dbs: SagaDbs | null = null;
  private readonly chains = new Map<string, Promise<void>>();
  /** Waiting sagas with a deadline: sagaId → due time. Loaded from LMDB when the watch starts, kept up to date after. */
  private readonly due = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly def: SagaDefinition,
    private readonly compensateOn: (e: unknown) => boolean,
    private readonly sender: CommandSender,
    private readonly userId: string | undefined,
  ) {}

  attach(dbs: SagaDbs): void {
    this.dbs ??= dbs;
  }

  /** Run `fn` after every earlier call for the same saga. */
  serial(sagaId: string, fn: () => Promise<void>): Promise<void> {
    const prev = this.chains.get(sagaId) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.then(() => {}, () => {});
    this.chains.set(sagaId, tail);
    void tail.then(() => {
      if (this.chains.get(sagaId) === tail) this.chains.delete(sagaId);
    });
    return next;
  }

  /** An event of a waited-for type: end the wait it belongs to, or keep it for the saga that will wait for it. */
  async arrived(event: EventEnvelope): Promise<void> {
    const { waits } = this.dbs!;
    const received: ReceivedEvent = { eventId: event.eventId, eventType: event.eventType, aggregateType: event.aggregateType, aggregateId: event.aggregateId, payload: event.payload };
    for (const step of this.def.steps) {
      const w = step.waitFor;
      if (w === undefined || !(typeof w.eventType === 'string' ? [w.eventType] : w.eventType).includes(event.eventType)) continue;
      const key = w.correlate(event);
      if (key === null || key === undefined || key === '') continue;
      const sagaId = waits.get(`w/${event.eventType}/${key}`);
      if (typeof sagaId !== 'string') {
        await waits.put(`e/${event.eventType}/${key}`, received);
        continue;
      }
      await this.serial(sagaId, async () => {
        const state = this.dbs!.sagas.get(sagaId);
        if (state?.status !== 'waiting' || state.waiting?.step !== step.name || state.waiting.key !== key) return;
        await this.endWait(sagaId, state, received);
        state.updatedAt = new Date().toISOString();
        await this.dbs!.sagas.put(sagaId, state);
        await this.run(sagaId, state.trigger!);
      });
    }
  }

  private async endWait(sagaId: string, state: SagaState, received: ReceivedEvent): Promise<void> {
    const w = state.waiting!;
    this.due.delete(sagaId);
    for (const t of w.eventTypes) await this.dbs!.waits.remove(`w/${t}/${w.key}`);
    state.data[w.step] = received;
    state.completed.push(w.step);
    state.status = 'running';
    state.waiting = null;
  }

  async run(sagaId: string, event: EventEnvelope): Promise<void> {
    const { sagas, waits } = this.dbs!;
    const def = this.def;
    const now = () => new Date().toISOString();
    const state: SagaState = sagas.get(sagaId) ?? {
      status: 'running', completed: [], compensated: [], data: {}, failure: null, waiting: null, trigger: event, startedAt: now(), updatedAt: now(),
    };
    const save = async () => {
      state.updatedAt = now();
      await sagas.put(sagaId, state);
    };
    const commands = new CausedCommands(this.sender, def.name, event, this.userId ?? event.userId ?? undefined);
    const context = (step: string): SagaContext => ({
      event, sagaId, data: state.data, failure: state.failure,
      send: (aggregateType, aggregateId, type, payload) => commands.send(aggregateType, aggregateId, type, payload, step),
    });

    if (state.status === 'running') {
      for (const step of def.steps) {
        if (state.completed.includes(step.name)) continue;
        if (step.waitFor !== undefined) {
          const key = step.waitFor.key(context(step.name));
          const types = typeof step.waitFor.eventType === 'string' ? [step.waitFor.eventType] : [...step.waitFor.eventType];
          state.waiting = { step: step.name, eventTypes: types, key, dueAt: step.deadlineMs === undefined ? null : Date.now() + step.deadlineMs };
          const early = types.map((t) => waits.get(`e/${t}/${key}`)).find((e): e is ReceivedEvent => typeof e === 'object' && e !== null);
          if (early !== undefined) {
            for (const t of types) await waits.remove(`e/${t}/${key}`);
            await this.endWait(sagaId, state, early);
            await save();
            continue;
          }
          for (const t of types) await waits.put(`w/${t}/${key}`, sagaId);
          state.status = 'waiting';
          await save();
          if (state.waiting.dueAt !== null) this.due.set(sagaId, state.waiting.dueAt);
          return;
        }
        try {
          const result = await step.run!(context(step.name));
          state.data[step.name] = result === undefined ? null : result;
          state.completed.push(step.name);
          await save();
        } catch (e) {
          if (!this.compensateOn(e)) throw e;
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
        const step = def.steps.find((st) => st.name === name);
        // Errors here are retried by the consumer: a compensation must eventually succeed.
        if (step?.compensate !== undefined) await step.compensate(context(`${name}:undo`));
        state.compensated.push(name);
        await save();
      }
      state.status = 'compensated';
      await save();
    }
  }

  /** Every DEADLINE_CHECK_MS: compensate the waiting sagas whose deadline passed. */
  watchDeadlines(): void {
    for (const { key, value } of this.dbs!.sagas.getRange({})) {
      const at = value?.status === 'waiting' ? value.waiting?.dueAt : null;
      if (typeof at === 'number') this.due.set(key, at);
    }
    let busy = false;
    this.timer = setInterval(() => {
      if (busy) return;
      busy = true;
      void this.expireDue().catch((e: unknown) => process.emitWarning(`saga ${this.def.name}: a deadline's compensation failed and is retried: ${(e as Error)?.message ?? String(e)}`, { code: 'TROUPE_SAGA_DEADLINE' })).finally(() => {
        busy = false;
      });
    }, DEADLINE_CHECK_MS);
    this.timer.unref();
  }

  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  private async expireDue(): Promise<void> {
    const { sagas } = this.dbs!;
    const now = Date.now();
    for (const [sagaId, at] of [...this.due]) {
      if (at > now) continue;
      await this.serial(sagaId, async () => {
        const state = sagas.get(sagaId);
        if (state?.status === 'compensating') return this.compensateAfterDeadline(sagaId, state);
        const w = state?.waiting;
        if (state?.status !== 'waiting' || w === null || w === undefined || w.dueAt === null || w.dueAt > Date.now()) {
          if (state?.status !== 'waiting') this.due.delete(sagaId);
          return;
        }
        this.due.delete(sagaId);
        for (const t of w.eventTypes) await this.dbs!.waits.remove(`w/${t}/${w.key}`);
        state.status = 'compensating';
        state.failure = { step: w.step, error: `no ${w.eventTypes.join(' or ')} for ${w.key} within ${this.def.steps.find((st) => st.name === w.step)?.deadlineMs ?? '?'} ms`, reason: 'DEADLINE' };
        state.waiting = null;
        await sagas.put(sagaId, state);
        await this.compensateAfterDeadline(sagaId, state);
      });
    }
  }

  /** Compensate; on a failure, try again on a later round (the triggering event was acked long ago). */
  private async compensateAfterDeadline(sagaId: string, state: SagaState): Promise<void> {
    this.due.delete(sagaId);
    try {
      await this.run(sagaId, state.trigger!);
    } catch (e) {
      this.due.set(sagaId, Date.now() + 1_000);
      throw e;
    }
  }
}
