/**
 * `defineProcess`: a process manager, an actor whose commands come from events.
 *
 * A process definition compiles to an actor definition (it IS one: the node hosts it like any
 * actor, with snapshots, replay and idempotent commands). Its commands are Troupe's own:
 *
 *   ReceiveEvent   { event }  one event the process reacts to, sent by its consumer with
 *                             commandId `<type>:<eventId>`: each event is handled once
 *   ExpireDeadline { key }    a deadline fell due: sent by the actor's own durable timer, or
 *                             explicitly (`ProcessManager.expire`) to end a wait now
 *
 * A reaction decides the process's own events and, through its context, the commands to send
 * and the deadlines to set or cancel. All of it is recorded in the same commit, as events of
 * the process:
 *
 *   ProcessCommandsIssued  { causationId, correlationId, commands: [{ aggregateType, aggregateId, type, payload, commandId }] }
 *                          the outbox: the process's consumer sends each command, retried until answered
 *   ProcessDeadlineSet     { key, dueAt, timer }   (`timer`: a durable timer was scheduled with it)
 *   ProcessDeadlineCleared { key, reason: 'cancelled' | 'expired' }
 *
 * The actor's state is `{ state, deadlines }`: the user's state and the pending deadlines
 * (key → due time in ms since the epoch). The process starts with the first commit of a start
 * event's reaction; an event that only continues a process is ignored by one not started.
 */
import { createHash } from 'node:crypto';
import { defineActor, type ActorConfig, type ActorDefinition, type CommandContext, type EventContext, type EventDraft, type EventSpec, type Evolve } from './define.ts';
import { isPlainPayload, describePayload } from './envelope.ts';
import { InvalidDefinitionError, ValidationError } from './errors.ts';

export const PROCESS_DEFINITION = Symbol.for('troupe.processDefinition');

/** The commands of a process actor. */
export const ProcessCommand = { RECEIVE: 'ReceiveEvent', EXPIRE: 'ExpireDeadline' } as const;
/** The events Troupe records for a process: its outbox and its deadlines. */
export const ProcessEvent = { COMMANDS_ISSUED: 'ProcessCommandsIssued', DEADLINE_SET: 'ProcessDeadlineSet', DEADLINE_CLEARED: 'ProcessDeadlineCleared' } as const;

/** The event a reaction gets: the fields of the log's envelope a process needs. */
export interface ProcessInput<P = unknown> {
  readonly eventId: string;
  readonly eventType: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly sequence: number;
  readonly timestamp: string;
  readonly correlationId: string;
  readonly userId: string | null;
  readonly payload: P;
}

/** A command in a process's outbox. */
export interface IssuedCommand {
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly type: string;
  readonly payload: Record<string, unknown>;
  /** Deterministic: `<process type>:<cause>:<n>`. */
  readonly commandId: string;
}

export interface CommandsIssued {
  /** The event the process reacted to, or the ExpireDeadline command's id. */
  readonly causationId: string;
  readonly correlationId: string;
  readonly commands: readonly IssuedCommand[];
}

/** When a deadline falls due: in `after` ms from the reaction's `now`, or `at` (ms since the epoch). */
export type DeadlineWhen = { after: number; at?: never } | { at: number; after?: never };

/** What a reaction can do besides returning events. Valid during the call only. */
export interface ProcessContext {
  readonly processType: string;
  readonly processId: string;
  /** The reaction's time (the command's `now`): use it instead of Date.now(). */
  readonly now: number;
  readonly correlationId: string;
  /** Pending deadlines: key → due time (ms since the epoch), as of the start of this reaction. */
  readonly deadlines: Readonly<Record<string, number>>;
  /** Send a command once this reaction is committed (causation, correlation and commandId are set for you). */
  send(aggregateType: string, aggregateId: string, type: string, payload?: Record<string, unknown>): void;
  /** Set (or move) the deadline `key`; when it falls due, `deadlines[key]` runs. */
  deadline(key: string, when: DeadlineWhen): void;
  /** Cancel the deadline `key`, if pending. */
  cancelDeadline(key: string): void;
}

export type Reaction<S, P = unknown> = (state: S, event: ProcessInput<P>, ctx: ProcessContext) => EventDraft | readonly EventDraft[] | void | undefined;
export type DeadlineReaction<S> = (state: S, deadline: { readonly key: string; readonly dueAt: number }, ctx: ProcessContext) => EventDraft | readonly EventDraft[] | void | undefined;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyPayload = any;

export interface ProcessConfig<S> {
  /** The process's actor type, e.g. `OrderFulfilment`. */
  type: string;
  /** Each event type it reacts to → the id of the process instance the event belongs to (null or '' to ignore the event). */
  correlate: Record<string, (event: ProcessInput<AnyPayload>) => string | null | undefined>;
  /** Event types that may start a process. Default: every correlated type. */
  startOn?: readonly string[];
  initialState: () => S;
  /** The process's own events and how they change its state, as for an actor. */
  events: Record<string, Evolve<S, AnyPayload> | EventSpec<S, AnyPayload>>;
  /** A reaction per correlated event type. */
  on: Record<string, Reaction<S, AnyPayload>>;
  /** A reaction per deadline key. */
  deadlines?: Record<string, DeadlineReaction<S>>;
  snapshotEvery?: number;
  stateVersion?: ActorConfig<S>['stateVersion'];
  stateUpcasters?: ActorConfig<S>['stateUpcasters'];
  guard?: ActorConfig<S>['guard'];
  authorize?: ActorConfig<ProcessState<S>>['authorize'];
}

/** The process actor's state. */
export interface ProcessState<S> {
  readonly state: S;
  readonly deadlines: Readonly<Record<string, number>>;
}

export interface ProcessSpec {
  readonly correlate: ReadonlyMap<string, (event: ProcessInput) => string | null | undefined>;
  readonly startOn: ReadonlySet<string>;
  readonly deadlineKeys: readonly string[];
}

/** An actor definition that is also a process manager. */
export type ProcessDefinition<S = unknown> = ActorDefinition<ProcessState<S>> & { readonly [PROCESS_DEFINITION]: ProcessSpec };

export function isProcessDefinition(value: unknown): value is ProcessDefinition {
  return typeof value === 'object' && value !== null && (value as { [PROCESS_DEFINITION]?: unknown })[PROCESS_DEFINITION] !== undefined;
}

const KEY = /^[A-Za-z0-9_-]{1,64}$/;
const RESERVED = new Set<string>([...Object.values(ProcessEvent), ...Object.values(ProcessCommand)]);

/** The durable-timer part of a command's context, present once the runtime has timers. */
interface TimerContext {
  schedule?: (timer: { key: string; after: number; command: string; payload?: Record<string, unknown> }) => void;
  cancel?: (key: string) => void;
  timer?: { key: string } | null;
}

function bad(type: string, message: string, data: Record<string, unknown> = {}): never {
  throw new InvalidDefinitionError(`process ${type}: ${message}`, { aggregateType: type, ...data });
}

/** Define a process manager. Validates the definition and returns its (frozen) actor definition. */
export function defineProcess<S>(config: ProcessConfig<S>): ProcessDefinition<S> {
  const type = config?.type;
  if (typeof type !== 'string') throw new InvalidDefinitionError(`a process needs a type name, got ${JSON.stringify(type)}`);
  const correlate = new Map<string, (event: ProcessInput) => string | null | undefined>();
  for (const [name, fn] of Object.entries(config.correlate ?? {})) {
    if (typeof fn !== 'function') bad(type, `correlate.${name} must be a function of the event returning the process id`, { eventType: name });
    if (RESERVED.has(name)) bad(type, `${name} is Troupe's own event of a process; a process cannot react to it`, { eventType: name });
    correlate.set(name, fn);
  }
  if (correlate.size === 0) bad(type, 'correlate names no event type; map each event type it reacts to onto the process id, e.g. correlate: { OrderPlaced: (e) => e.payload.orderId }');
  const on = config.on ?? {};
  for (const name of correlate.keys()) {
    if (typeof on[name] !== 'function') bad(type, `correlates ${name} but has no reaction on.${name}`, { eventType: name });
  }
  for (const name of Object.keys(on)) {
    if (!correlate.has(name)) bad(type, `has a reaction on.${name} but no correlate.${name}: say how a ${name} event maps to the process id`, { eventType: name });
  }
  const startOn = new Set(config.startOn ?? correlate.keys());
  if (startOn.size === 0) bad(type, 'startOn is empty: name at least one event type that starts a process');
  for (const name of startOn) if (!correlate.has(name)) bad(type, `startOn lists ${name}, which is not correlated`, { eventType: name });
  const deadlines = config.deadlines ?? {};
  for (const [key, fn] of Object.entries(deadlines)) {
    if (!KEY.test(key)) bad(type, `deadline key ${JSON.stringify(key)} must match ${KEY}`);
    if (typeof fn !== 'function') bad(type, `deadlines.${key} must be a function (state, deadline, ctx) => events`);
  }
  if (typeof config.initialState !== 'function') bad(type, 'initialState must be a function returning the state of a new process');
  for (const name of Object.keys(config.events ?? {})) {
    if (RESERVED.has(name)) bad(type, `${name} is the name of Troupe's own event of a process; name the process's events otherwise`, { eventType: name });
  }

  // The user's events act on `state` of the wrapper.
  const events: Record<string, EventSpec<ProcessState<S>, AnyPayload>> = {};
  for (const [name, spec] of Object.entries(config.events ?? {})) {
    const evolve = typeof spec === 'function' ? spec : spec?.evolve;
    if (typeof evolve !== 'function') bad(type, `event ${name} needs an evolve function`, { eventType: name });
    const wrapped: Evolve<ProcessState<S>, AnyPayload> = (ps, e, ctx: EventContext) => ({ state: evolve(ps.state, e, ctx), deadlines: ps.deadlines });
    events[name] = typeof spec === 'function' ? { evolve: wrapped } : { ...spec, evolve: wrapped };
  }
  events[ProcessEvent.COMMANDS_ISSUED] = { evolve: (ps) => ps };
  events[ProcessEvent.DEADLINE_SET] = {
    evolve: (ps, e: { key: string; dueAt: number }) => ({ state: ps.state, deadlines: { ...ps.deadlines, [e.key]: e.dueAt } }),
  };
  events[ProcessEvent.DEADLINE_CLEARED] = {
    evolve: (ps, e: { key: string }) => {
      const { [e.key]: _gone, ...rest } = ps.deadlines;
      return { state: ps.state, deadlines: rest };
    },
  };

  const receive = (ps: ProcessState<S>, command: { event?: ProcessInput }, ctx: CommandContext): EventDraft[] | undefined => {
    const event = command?.event;
    if (typeof event !== 'object' || event === null || typeof event.eventType !== 'string' || typeof event.eventId !== 'string') {
      throw new ValidationError('VALIDATION', `${type}.${ProcessCommand.RECEIVE} needs { event: { eventId, eventType, ... } }`, ids(ctx));
    }
    const reaction = on[event.eventType];
    if (reaction === undefined) throw new ValidationError('VALIDATION', `process ${type} does not react to ${event.eventType} (it reacts to ${[...correlate.keys()].join(', ')})`, { ...ids(ctx), eventType: event.eventType });
    if (ctx.version === 0 && !startOn.has(event.eventType)) return undefined;
    const r = new Reactor(type, ps, ctx, event.eventId, deadlines);
    return r.finish(reaction(ps.state, event, r.context));
  };

  const expire = (ps: ProcessState<S>, command: { key?: string }, ctx: CommandContext): EventDraft[] | undefined => {
    const timer = (ctx as CommandContext & TimerContext).timer;
    const key = command?.key ?? timer?.key;
    if (typeof key !== 'string' || deadlines[key] === undefined) {
      throw new ValidationError('VALIDATION', `process ${type} has no deadline ${JSON.stringify(key)} (its deadlines: ${Object.keys(deadlines).join(', ') || 'none'})`, ids(ctx));
    }
    const dueAt = ps.deadlines[key];
    if (dueAt === undefined) return undefined; // cancelled, already expired, or never set
    const r = new Reactor(type, ps, ctx, ctx.commandId, deadlines);
    r.clear(key, 'expired', timer?.key !== key);
    return r.finish(deadlines[key]!(ps.state, { key, dueAt }, r.context));
  };

  const actor = defineActor<ProcessState<S>>({
    type,
    initialState: () => ({ state: config.initialState(), deadlines: {} }),
    commands: { [ProcessCommand.RECEIVE]: receive, [ProcessCommand.EXPIRE]: expire },
    events,
    ...(config.snapshotEvery === undefined ? {} : { snapshotEvery: config.snapshotEvery }),
    ...(config.stateVersion === undefined ? {} : { stateVersion: config.stateVersion }),
    ...(config.stateUpcasters === undefined ? {} : { stateUpcasters: config.stateUpcasters }),
    ...(config.guard === undefined ? {} : { guard: config.guard }),
    ...(config.authorize === undefined ? {} : { authorize: config.authorize }),
  });
  const spec: ProcessSpec = Object.freeze({ correlate, startOn, deadlineKeys: Object.freeze(Object.keys(deadlines)) });
  return Object.freeze({ ...actor, [PROCESS_DEFINITION]: spec }) as ProcessDefinition<S>;
}

function ids(ctx: CommandContext) {
  return { aggregateType: ctx.aggregateType, aggregateId: ctx.aggregateId, commandId: ctx.commandId, commandType: ctx.commandType };
}

/** The deterministic commandId of the n-th command a process issues because of `cause`. */
export function issuedCommandId(processType: string, cause: string, n: number): string {
  const id = `${processType}:${cause}:${n}`;
  return id.length <= 256 ? id : `${processType}:${createHash('sha256').update(cause).digest('hex')}:${n}`;
}

/** One reaction's outbox and deadline changes, turned into the commit's trailing events. */
class Reactor<S> {
  private readonly commands: IssuedCommand[] = [];
  private readonly marks: EventDraft[] = [];
  private readonly pending: Record<string, number>;
  readonly context: ProcessContext;

  constructor(
    private readonly type: string,
    ps: ProcessState<S>,
    private readonly ctx: CommandContext,
    private readonly cause: string,
    private readonly handlers: Record<string, DeadlineReaction<S>>,
  ) {
    this.pending = { ...ps.deadlines };
    const self = this;
    this.context = {
      processType: type,
      processId: ctx.aggregateId,
      now: ctx.now,
      correlationId: ctx.correlationId,
      deadlines: Object.freeze({ ...ps.deadlines }),
      send: (aggregateType, aggregateId, commandType, payload = {}) => self.send(aggregateType, aggregateId, commandType, payload),
      deadline: (key, when) => self.deadline(key, when),
      cancelDeadline: (key) => {
        if (self.pending[key] !== undefined) self.clear(key, 'cancelled', true);
      },
    };
  }

  private send(aggregateType: string, aggregateId: string, commandType: string, payload: Record<string, unknown>): void {
    if (typeof aggregateType !== 'string' || aggregateType === '' || typeof aggregateId !== 'string' || aggregateId === '' || typeof commandType !== 'string' || commandType === '') {
      throw new ValidationError('VALIDATION', `process ${this.type}: send(aggregateType, aggregateId, type, payload) needs three non-empty strings, got ${JSON.stringify([aggregateType, aggregateId, commandType])}`, ids(this.ctx));
    }
    if (!isPlainPayload(payload)) throw new ValidationError('VALIDATION', `process ${this.type}: the payload of ${aggregateType}.${commandType} must be a plain object, got ${describePayload(payload)}`, ids(this.ctx));
    this.commands.push({ aggregateType, aggregateId, type: commandType, payload, commandId: issuedCommandId(this.type, this.cause, this.commands.length) });
  }

  private deadline(key: string, when: DeadlineWhen): void {
    if (this.handlers[key] === undefined) {
      throw new ValidationError('VALIDATION', `process ${this.type}: deadline ${JSON.stringify(key)} is not declared (declare deadlines.${key})`, ids(this.ctx));
    }
    const at = when?.at ?? (typeof when?.after === 'number' ? this.ctx.now + when.after : NaN);
    if (!Number.isFinite(at)) throw new ValidationError('VALIDATION', `process ${this.type}: deadline ${key} needs { after: ms } or { at: ms since the epoch }, got ${JSON.stringify(when)}`, ids(this.ctx));
    const dueAt = Math.round(at);
    const timers = this.ctx as CommandContext & TimerContext;
    const timer = typeof timers.schedule === 'function';
    if (timer) timers.schedule!({ key, after: Math.max(0, dueAt - this.ctx.now), command: ProcessCommand.EXPIRE, payload: { key } });
    this.pending[key] = dueAt;
    this.marks.push({ type: ProcessEvent.DEADLINE_SET, payload: { key, dueAt, timer } });
  }

  /** Record that `key` is no longer pending; `cancelTimer`: also cancel its durable timer. */
  clear(key: string, reason: 'cancelled' | 'expired', cancelTimer: boolean): void {
    delete this.pending[key];
    const timers = this.ctx as CommandContext & TimerContext;
    if (cancelTimer && typeof timers.cancel === 'function') timers.cancel(key);
    this.marks.push({ type: ProcessEvent.DEADLINE_CLEARED, payload: { key, reason } });
  }

  /** The reaction's events, then the deadline marks, then the outbox. */
  finish(out: EventDraft | readonly EventDraft[] | void | undefined): EventDraft[] | undefined {
    if (out !== null && typeof out === 'object' && typeof (out as { then?: unknown }).then === 'function') {
      (out as unknown as PromiseLike<unknown>).then(undefined, () => {});
      throw new ValidationError('VALIDATION', `process ${this.type}: a reaction returned a promise; reactions must be synchronous and pure`, ids(this.ctx));
    }
    const drafts: EventDraft[] = out === undefined || out === null ? [] : Array.isArray(out) ? [...out as readonly EventDraft[]] : [out as EventDraft];
    for (const d of drafts) {
      const t = (d as { type?: unknown })?.type;
      if (typeof t === 'string' && RESERVED.has(t)) throw new ValidationError('VALIDATION', `process ${this.type}: a reaction returned ${t}, Troupe's own event; use ctx.send and ctx.deadline instead`, ids(this.ctx));
    }
    drafts.push(...this.marks);
    if (this.commands.length > 0) {
      const issued: CommandsIssued = { causationId: this.cause, correlationId: this.ctx.correlationId, commands: this.commands };
      drafts.push({ type: ProcessEvent.COMMANDS_ISSUED, payload: issued });
    }
    return drafts.length === 0 ? undefined : drafts;
  }
}
