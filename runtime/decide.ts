/**
 * One command against one actor state: decide → validate the drafts → write each event (the
 * caller's compiled contract) → evolve. The node's shards (node/shard.ts) and the test kit
 * (testing/testkit.ts) both run commands through `Decider.run`, so they refuse the same
 * commands with the same codes and messages:
 *
 *   unknown command type                 → ValidationError UNKNOWN_COMMAND_TYPE
 *   an authorize rule refuses            → ForbiddenError FORBIDDEN (principal.ts; before decide, on the pending state)
 *   decide throws a TroupeError          → that error (a DomainRejection from reject())
 *   decide throws anything else          → DecideFailedError DECIDE_FAILED, the thrown value as cause
 *   decide returns a promise             → ValidationError VALIDATION (decide must be synchronous)
 *   a draft that is not { type, ... }    → ValidationError VALIDATION
 *   a draft of an undeclared event type  → ValidationError VALIDATION
 *   the contract write refuses a payload → its error (SCHEMA_VIOLATION, SENSITIVE_DATA)
 *   evolve throws                        → DecideFailedError, or the TroupeError it threw
 *   decide returns nothing or []         → no events; one draft or an array of drafts → those events
 *   ctx.schedule with a bad timer spec   → ValidationError VALIDATION (the command is refused)
 *
 * Durable timers: `ctx.schedule` and `ctx.cancel` (bound once per Decider: `schedule`, `cancel`)
 * record what decide asked for in `timers`, in order, as the log stores it (wire.ts TIMER_*);
 * nothing of it survives a refused command. A timer firing (`ctx.timer` set) is the actor's own
 * command: the `authorize` rules, which judge callers, do not apply to it.
 *
 * What differs between the two callers is a parameter of the `DecideStep` they pass: the node
 * writes through its contracts (encryption included) and defers a command whose subject key is
 * being created; the kit checks schemas and the guard only, and deep-freezes what it hands to
 * decide and evolve. A Decider is made once per shard (or kit) and reused: no object is built
 * per command on the node's path, and the results are read from its fields after `run`.
 */
import type { ActorDefinition, CommandContext, EventContext, EventDraft, TimerSpec } from './define.ts';
import { DecideFailedError, TroupeError, ValidationError, type ErrorData } from './errors.ts';
import { checkRules } from './principal.ts';
import { isPlainPayload } from './envelope.ts';
import { TIMER_OP, type WireTimerOp } from './wire.ts';

/** What `Decider.run` ended with. */
export const DecideOutcome = {
  /** Events were decided, written and applied: `state`, `drafts`. */
  DECIDED: 0,
  /** decide returned no events: nothing to append. */
  NO_EVENTS: 1,
  /** The command is refused: `error`. Nothing was applied. */
  FAILED: 2,
  /** A write asked to run the command again later (a subject key is being created). */
  DEFERRED: 3,
} as const;
export type DecideOutcome = (typeof DecideOutcome)[keyof typeof DecideOutcome];

/** The caller's part of a command. `T` is whatever the caller needs to find its command (no closure per command). */
export interface DecideStep<T> {
  /**
   * Deep-freeze the drafts' payloads and each state evolve returns, and hint at mutation when
   * decide or evolve throws a read-only TypeError (the test kit).
   */
  readonly freeze: boolean;
  /**
   * Event `i` of `count` was declared: check (and store) its payload, the caller's compiled
   * contract. Throws a TroupeError to refuse the command; returns false to defer it.
   */
  write(token: T, i: number, count: number, eventType: string, payload: unknown): boolean;
}

const NO_DRAFTS: readonly EventDraft[] = Object.freeze([]);

export class Decider<T> {
  /** After FAILED: why. */
  error: TroupeError | null = null;
  /** After DECIDED: the state after every event; after NO_EVENTS: the state given. */
  state: unknown = undefined;
  /** After DECIDED: the drafts decide returned (not copied). */
  drafts: readonly EventDraft[] = NO_DRAFTS;
  /** After DECIDED or NO_EVENTS: what decide did to the actor's timers, in order; null when nothing. */
  timers: WireTimerOp[] | null = null;
  /** Set by the caller before `run`: the command's trace context, kept with the timers it schedules. */
  traceparent: string | null = null;
  private def: ActorDefinition<unknown> | null = null;
  private ctx: CommandContext | null = null;

  /** `ctx.schedule` of the commands this Decider runs (bound once: put it on the context). */
  readonly schedule = (spec: TimerSpec): void => {
    const ctx = this.ctx;
    const def = this.def;
    if (ctx === null || def === null) throw new ValidationError('VALIDATION', 'ctx.schedule was called after decide returned; call it during decide');
    (this.timers ??= []).push(timerSet(def, ctx, spec, this.traceparent));
  };

  /** `ctx.cancel` of the commands this Decider runs. */
  readonly cancel = (key: string): void => {
    const ctx = this.ctx;
    if (ctx === null) throw new ValidationError('VALIDATION', 'ctx.cancel was called after decide returned; call it during decide');
    checkKey(ctx, key);
    (this.timers ??= []).push([TIMER_OP.CANCEL, key]);
  };

  constructor(private readonly step: DecideStep<T>) {}

  /**
   * Run `ctx.commandType` of `def` on `state`, the actor at `version`. `ctx` is filled by the
   * caller (the node reuses one object); the first event gets sequence `version + 1`;
   * `timestamp` is the ISO form of `ctx.now`.
   */
  run(def: ActorDefinition<unknown>, state: unknown, version: number, payload: unknown, ctx: CommandContext, timestamp: string, token: T): DecideOutcome {
    this.error = null;
    this.drafts = NO_DRAFTS;
    this.state = state;
    this.timers = null;
    const command = def.commands.get(ctx.commandType);
    if (command === undefined) return this.fail(unknownCommand(def, ctx));
    if (command.authorize !== null && ctx.timer == null) {
      const refused = checkRules(command.authorize, ctx.principal ?? null,
        { kind: 'command', type: ctx.commandType, aggregateType: def.type, aggregateId: ctx.aggregateId, payload },
        { kind: 'command', state, version });
      if (refused !== null) return this.fail(refused);
    }
    let out: unknown;
    this.def = def;
    this.ctx = ctx;
    try {
      out = command.decide(state, payload, ctx);
    } catch (e) {
      return this.fail(e instanceof TroupeError ? e : new DecideFailedError(`${def.type}.${ctx.commandType} threw: ${messageOf(e)}${this.hint(e)}`, ids(ctx), e));
    } finally {
      this.def = null;
      this.ctx = null;
    }
    if (out === undefined || out === null) return DecideOutcome.NO_EVENTS;
    if (typeof (out as { then?: unknown }).then === 'function') {
      // Its rejection would otherwise be unhandled (and end a worker thread).
      (out as PromiseLike<unknown>).then(undefined, () => {});
      return this.fail(new ValidationError('VALIDATION', `${def.type}.${ctx.commandType} returned a promise; decide must be synchronous and pure: return the events, or nothing`, ids(ctx)));
    }
    const drafts = Array.isArray(out) ? out as readonly EventDraft[] : [out as EventDraft];
    const count = drafts.length;
    if (count === 0) return DecideOutcome.NO_EVENTS;
    const step = this.step;
    const freeze = step.freeze;
    let i = 0;
    try {
      for (; i < count; i++) {
        const d = drafts[i];
        const type = typeof d === 'object' && d !== null ? (d as { type?: unknown }).type : undefined;
        if (typeof type !== 'string') {
          return this.fail(new ValidationError('VALIDATION', `${def.type}.${ctx.commandType} returned ${show(d)}; return { type, payload } drafts, an array of them, or nothing`, ids(ctx)));
        }
        const spec = def.events.get(type);
        if (spec === undefined) {
          return this.fail(new ValidationError('VALIDATION', `${def.type}.${ctx.commandType} returned event type ${JSON.stringify(type)}, which is not declared in events (declared: ${[...def.events.keys()].join(', ')})`, { ...ids(ctx), eventType: type }));
        }
        const payload = d!.payload;
        if (freeze) deepFreeze(payload);
        if (!step.write(token, i, count, type, payload)) return DecideOutcome.DEFERRED;
        const ectx: EventContext = { sequence: version + i + 1, eventType: type, timestamp };
        state = spec.evolve(state, payload, freeze ? Object.freeze(ectx) : ectx);
        if (freeze) deepFreeze(state);
      }
    } catch (e) {
      if (e instanceof TroupeError) return this.fail(e);
      const type = (drafts[i] as EventDraft).type;
      return this.fail(new DecideFailedError(`${def.type}.${ctx.commandType}: evolve for ${type} (sequence ${version + i + 1}) threw while applying the events of ${ctx.commandType}: ${messageOf(e)}${this.hint(e)}`, { ...ids(ctx), eventType: type, sequence: version + i + 1 }, e));
    }
    this.state = state;
    this.drafts = drafts;
    return DecideOutcome.DECIDED;
  }

  private fail(e: TroupeError): DecideOutcome {
    this.error = e;
    this.timers = null;
    return DecideOutcome.FAILED;
  }

  private hint(e: unknown): string {
    return this.step.freeze && e instanceof TypeError && /read[- ]only|not extensible|Cannot (assign|add|delete|define)/i.test(e.message)
      ? ' (the test kit freezes state, payloads and context: decide and evolve must return new objects, not mutate these)'
      : '';
  }
}

const TIMER_KEY = /^[\x21-\x7e]{1,128}$/;
/** The shortest period of a periodic timer, ms. */
export const MIN_TIMER_EVERY_MS = 1000;

function checkKey(ctx: CommandContext, key: unknown): asserts key is string {
  if (typeof key !== 'string' || !TIMER_KEY.test(key)) {
    throw new ValidationError('VALIDATION', `${ctx.aggregateType}.${ctx.commandType}: a timer key must be 1-128 printable characters without spaces, got ${show(key)}`, ids(ctx));
  }
}

/** The SET op of `ctx.schedule(spec)`, or a VALIDATION error that names what is wrong. */
function timerSet(def: ActorDefinition<unknown>, ctx: CommandContext, spec: TimerSpec, traceparent: string | null): WireTimerOp {
  const where = `${def.type}.${ctx.commandType}: ctx.schedule`;
  const bad = (what: string): never => { throw new ValidationError('VALIDATION', `${where}: ${what}`, ids(ctx)); };
  if (typeof spec !== 'object' || spec === null) bad(`takes { key, at | after | every, command, payload? }, got ${show(spec)}`);
  checkKey(ctx, spec.key);
  if (typeof spec.command !== 'string' || !def.commands.has(spec.command)) {
    bad(`command must be one of the actor's commands (${[...def.commands.keys()].join(', ')}), got ${show(spec.command)}`);
  }
  const payload = spec.payload ?? {};
  if (!isPlainPayload(payload)) bad(`payload must be a plain object, got ${show(spec.payload)}`);
  const { at, after, every } = spec;
  if (at !== undefined && after !== undefined) bad('give at or after, not both');
  if (every !== undefined && (typeof every !== 'number' || !Number.isInteger(every) || every < MIN_TIMER_EVERY_MS)) bad(`every must be an integer number of ms, at least ${MIN_TIMER_EVERY_MS}, got ${show(every)}`);
  let dueAt: number;
  if (at !== undefined) {
    dueAt = at instanceof Date ? at.getTime() : at;
    if (typeof dueAt !== 'number' || !Number.isFinite(dueAt)) bad(`at must be a Date or ms since the epoch, got ${show(at)}`);
  } else if (after !== undefined) {
    if (typeof after !== 'number' || !Number.isFinite(after) || after < 0) bad(`after must be a number of ms ≥ 0, got ${show(after)}`);
    dueAt = ctx.now + after;
  } else if (every !== undefined) {
    dueAt = ctx.now + every;
  } else {
    return bad('give at, after or every');
  }
  return [TIMER_OP.SET, spec.key, Math.round(dueAt), spec.command, payload, every ?? 0, ctx.commandId, ctx.correlationId, traceparent];
}

/** UNKNOWN_COMMAND_TYPE for a command `def` does not declare. */
export function unknownCommand(def: ActorDefinition<unknown>, ctx: Pick<CommandContext, 'aggregateType' | 'aggregateId' | 'commandId' | 'commandType'>): ValidationError {
  return new ValidationError('UNKNOWN_COMMAND_TYPE', `actor ${def.type} has no command ${JSON.stringify(ctx.commandType)}; it accepts ${[...def.commands.keys()].join(', ')}`, ids(ctx));
}

function ids(ctx: Pick<CommandContext, 'aggregateType' | 'aggregateId' | 'commandId' | 'commandType'>): ErrorData {
  return { aggregateType: ctx.aggregateType, aggregateId: ctx.aggregateId, commandId: ctx.commandId, commandType: ctx.commandType };
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A value for a message: JSON, cut at 300 characters. */
export function show(value: unknown): string {
  try {
    const s = JSON.stringify(value);
    return s === undefined ? String(value) : s.length > 300 ? `${s.slice(0, 300)}…` : s;
  } catch {
    return String(value);
  }
}

/** Freeze a value and everything it holds (typed arrays excepted: they cannot be frozen). */
export function deepFreeze<V>(value: V): V {
  if (typeof value !== 'object' || value === null || Object.isFrozen(value) || ArrayBuffer.isView(value)) return value;
  Object.freeze(value);
  for (const key of Reflect.ownKeys(value)) deepFreeze((value as Record<PropertyKey, unknown>)[key]);
  return value;
}
