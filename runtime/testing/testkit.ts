/**
 * An in-memory test kit for actor definitions: no NATS, no workers, no LMDB.
 *
 *   given(def, events).when('Withdraw', { amount: 5 }).thenRejects('insufficient-funds')
 *   const kit = testActor(def); kit.send('OpenAccount', {}); kit.restart();
 *
 * It runs a command with the runtime's own code (decide.ts: decide → validate the drafts →
 * contract checks → evolve), so it refuses what a node refuses, with the same code and message:
 *   unknown command type          → ValidationError 'UNKNOWN_COMMAND_TYPE'
 *   decide throws a TroupeError   → that error, unchanged (a DomainRejection from reject())
 *   decide throws anything else   → DecideFailedError with the thrown value as `cause`
 *   decide returns an undeclared event type, a non-event, or a promise → ValidationError 'VALIDATION'
 *   evolve throws                 → DecideFailedError, or the TroupeError it threw (nothing is applied)
 *   decide returns nothing or []  → no events; one draft or an array of drafts → those events
 * The command payload and the given events pass through the codec first, as they do when
 * they cross a thread or come back from the log. By default the kit deep-freezes states,
 * payloads and the context, so a decide or evolve that mutates them fails loudly here
 * instead of corrupting state in production.
 *
 * Like the runtime, the kit checks each decided event against its JSON Schema and the
 * sensitive-data guard (SCHEMA_VIOLATION, SENSITIVE_DATA), unless `contracts: false`.
 * Given events may carry an older `version`: they are upcast to the current one first
 * (and checked against that version's schema, when declared, and the current one after).
 * Durable timers: `scenario.thenTimers([...])` asserts what a command scheduled and cancelled;
 * a `testActor` keeps its pending timers (`kit.timers`) and `kit.fire(key)` fires one as a node
 * does (ctx.timer set, consumed even when refused, a periodic one moved to its next due time).
 * What the kit does not do: encrypt sensitive fields (it holds no keys), or check command
 * schemas (the runtime does at the door; test them with validateCommandSchema).
 *
 * Why one file of ~620 lines: given/when/then and testActor are two faces of one engine (the
 * resolved options, the codec round trip, the freezing, the contract cache, the pending timers
 * and their firing), and most of the lines are the assertion messages a user reads when a test
 * fails.
 */
import { AssertionError, deepStrictEqual } from 'node:assert';
import { Packr, Unpackr } from 'msgpackr';
import { compileEventContract, compileSchema, upcastEvent, validateEventSchema, type EventContract } from '../contracts/contract.ts';
import { Decider, DecideOutcome, deepFreeze, show, type DecideStep } from '../decide.ts';
import { toPrincipal, type Principal } from '../principal.ts';
import type { ActorDefinition, CommandContext, EventContext, EventDraft, TimerFiring } from '../define.ts';
import { TIMER_OP, TIMER_SET, type WireTimerOp } from '../wire.ts';
import { DecideFailedError, ValidationError, isTroupeError, type ErrorCode, type TroupeError } from '../errors.ts';

/** How snapshots, events and command payloads are encoded. Default msgpackrTestCodec. */
export interface TestCodec {
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
}

// The same msgpackr settings as the log's codec (runtime/journal/codec.ts), so a state or payload that
// the log would change (a Map, a class instance, -0) fails restart() here too.
const packr = new Packr({ useRecords: false, variableMapSize: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

export const msgpackrTestCodec: TestCodec = Object.freeze({
  encode: (value: unknown): Uint8Array => packr.pack(value),
  decode: (bytes: Uint8Array): unknown => unpackr.unpack(bytes),
});

/** The fixed clock of the kit: 2025-01-01T00:00:00.000Z. */
export const DEFAULT_TEST_NOW = Date.UTC(2025, 0, 1);

export interface TestKitOptions {
  /** Default `<type in lower case>-1`, e.g. `account-1`. */
  aggregateId?: string;
  /** `ctx.now` for every command, in ms since the epoch. Default DEFAULT_TEST_NOW. */
  now?: number;
  /** `ctx.userId` for every command. Default undefined. */
  userId?: string;
  /** Deep-freeze states, payloads and contexts to catch mutation. Default true. */
  freeze?: boolean;
  /** Default msgpackrTestCodec. Pass the runtime's codec to test against it. */
  codec?: TestCodec;
  /** Check decided events against their schemas and the sensitive-data guard, as the runtime does. Default true. */
  contracts?: boolean;
}

/** A given event: a draft, optionally in an older schema version (upcast before it is folded). */
export interface GivenEvent<P = unknown> extends EventDraft<string, P> {
  version?: number;
}

/** An event as the kit records it: its type, payload and 1-based sequence in the actor. */
export interface RecordedEvent<P = unknown> {
  readonly type: string;
  readonly payload: P;
  readonly sequence: number;
}

/**
 * What `thenRejects` expects. A string in UPPER_SNAKE case is an error code
 * (`'UNKNOWN_COMMAND_TYPE'`); any other string is the reason given to `reject()`.
 * The object form matches every field given; `data` entries are compared one by one.
 */
export type RejectionMatcher = string | { code?: ErrorCode; reason?: string; data?: Record<string, unknown> };

interface Resolved {
  readonly aggregateId: string;
  readonly now: number;
  readonly userId: string | undefined;
  readonly freeze: boolean;
  readonly codec: TestCodec;
  readonly contracts: boolean;
}

function resolve(def: ActorDefinition<unknown>, opts: TestKitOptions = {}): Resolved {
  return {
    aggregateId: opts.aggregateId ?? `${def.type.toLowerCase()}-1`,
    now: opts.now ?? DEFAULT_TEST_NOW,
    userId: opts.userId,
    freeze: opts.freeze ?? true,
    codec: opts.codec ?? msgpackrTestCodec,
    contracts: opts.contracts ?? true,
  };
}

// ---------------------------------------------------------------------------------------------
// The engine: one command against one state, and folding events into state.

function roundTrip<T>(codec: TestCodec, value: T): T {
  return codec.decode(codec.encode(value)) as T;
}

function assertEqual(actual: unknown, expected: unknown, context: string): void {
  try {
    deepStrictEqual(actual, expected);
  } catch (e) {
    if (!(e instanceof AssertionError)) throw e;
    // operator 'fail' keeps Node from appending a second diff to a message that already has one.
    throw new AssertionError({ message: `${context}\n${e.message}`, actual, expected, operator: 'fail' });
  }
}

function fail(message: string, cause?: unknown): never {
  const err = new AssertionError({ message });
  if (cause !== undefined) Object.defineProperty(err, 'cause', { value: cause, enumerable: false });
  throw err;
}

class Engine<S> implements DecideStep<CommandContext> {
  readonly def: ActorDefinition<S>;
  readonly r: Resolved;
  readonly freeze: boolean;
  private readonly decider: Decider<CommandContext>;

  constructor(def: ActorDefinition<S>, r: Resolved) {
    this.def = def;
    this.r = r;
    this.freeze = r.freeze;
    this.decider = new Decider(this);
  }

  initialState(): S {
    const s = this.def.initialState();
    return this.r.freeze ? deepFreeze(s) : s;
  }

  /** Folds events into `state`; the first event gets sequence `version + 1`. */
  fold(state: S, events: readonly EventDraft[], version: number, what: string, timestamp = new Date(this.r.now).toISOString()): S {
    for (let i = 0; i < events.length; i++) {
      const e = events[i]!;
      const sequence = version + i + 1;
      const spec = this.def.events.get(e.type);
      if (spec === undefined) {
        throw new ValidationError('VALIDATION', `${what}: event #${sequence} ${show(e.type)} is not declared by actor ${this.def.type} (declared: ${[...this.def.events.keys()].join(', ')})`, {
          aggregateType: this.def.type, aggregateId: this.r.aggregateId, eventType: e.type, sequence,
        });
      }
      const ctx: EventContext = { sequence, eventType: e.type, timestamp };
      try {
        state = spec.evolve(state, e.payload, this.r.freeze ? Object.freeze(ctx) : ctx);
      } catch (err) {
        if (isTroupeError(err)) throw err;
        throw new DecideFailedError(`actor ${this.def.type}: evolve for ${e.type} (sequence ${sequence}) threw while ${what}: ${message(err)}${mutationHint(err)}`, {
          aggregateType: this.def.type, aggregateId: this.r.aggregateId, eventType: e.type, sequence,
        }, err);
      }
      if (this.r.freeze) deepFreeze(state);
    }
    return state;
  }

  /** Runs one command through decide.ts, as a node does. Throws what the runtime would reject with. */
  execute(state: S, version: number, commandType: string, payload: unknown, commandId: string, overrides: Partial<CommandContext> | undefined): { events: EventDraft[]; state: S; timers: TimerChange[] } {
    const { def, r } = this;
    const aggregateId = overrides?.aggregateId ?? r.aggregateId;
    const id = overrides?.commandId ?? commandId;
    const ctx: CommandContext = {
      userId: r.userId, correlationId: id, version, now: r.now, timer: null,
      ...overrides,
      aggregateType: def.type, aggregateId, commandId: id, commandType,
      schedule: this.decider.schedule, cancel: this.decider.cancel,
    };
    // Through the codec, as a payload crosses a thread or NATS.
    let input = def.commands.has(commandType) ? roundTrip(r.codec, payload) : payload;
    if (r.freeze) {
      input = deepFreeze(input);
      Object.freeze(ctx);
    }
    const outcome = this.decider.run(def as ActorDefinition<unknown>, state, version, input, ctx, new Date(ctx.now).toISOString(), ctx);
    if (outcome === DecideOutcome.FAILED) throw this.decider.error!;
    const timers = timerChanges(this.decider.timers);
    if (outcome !== DecideOutcome.DECIDED) return { events: [], state, timers };
    const events = this.decider.drafts.map((d) => {
      const draft = { type: d.type, payload: d.payload };
      return r.freeze ? deepFreeze(draft) : draft;
    });
    return { events, state: this.decider.state as S, timers };
  }

  /** DecideStep: the kit checks schemas and the guard (it holds no keys, so nothing is encrypted). */
  write(ctx: CommandContext, _i: number, _count: number, eventType: string, payload: unknown): boolean {
    if (this.r.contracts) contractOf(this.def as ActorDefinition<unknown>, eventType).check(payload, ctx.aggregateId, ctx.commandId);
    return true;
  }
}

/**
 * What a command did to its actor's durable timers, in order (`ctx.schedule`, `ctx.cancel`):
 * `{ schedule: key, dueAt, command, payload, every? }` or `{ cancel: key }`.
 */
export type TimerChange =
  | { readonly schedule: string; readonly dueAt: number; readonly command: string; readonly payload: unknown; readonly every?: number }
  | { readonly cancel: string };

/** A pending timer of a `testActor`. */
export interface TestTimer {
  readonly key: string;
  readonly dueAt: number;
  readonly command: string;
  readonly payload: unknown;
  readonly every?: number;
  readonly scheduledBy: string;
}

function timerChanges(ops: readonly WireTimerOp[] | null): TimerChange[] {
  if (ops === null) return [];
  return ops.map((op): TimerChange => {
    if (op[0] !== TIMER_OP.SET) return { cancel: op[1] };
    const c: { schedule: string; dueAt: number; command: string; payload: unknown; every?: number } = {
      schedule: op[TIMER_SET.key], dueAt: op[TIMER_SET.dueAt], command: op[TIMER_SET.command], payload: op[TIMER_SET.payload],
    };
    if (op[TIMER_SET.every] > 0) c.every = op[TIMER_SET.every];
    return c;
  });
}

/** The context overrides of a command sent by `principal`: its id is the command's userId, as on a node. */
function withPrincipal(principal: Principal | null, ctx: Partial<CommandContext> | undefined): Partial<CommandContext> | undefined {
  if (principal === null) return ctx;
  return { ...ctx, principal, userId: principal.id };
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function mutationHint(err: unknown): string {
  return err instanceof TypeError && /read[- ]only|not extensible|Cannot (assign|add|delete|define)/i.test(err.message)
    ? ' (the test kit freezes state, payloads and context: decide and evolve must return new objects, not mutate these)'
    : '';
}

// The runtime's compiled event contracts (schema + guard), once per definition.
const contractCache = new WeakMap<ActorDefinition<unknown>, Map<string, EventContract>>();
const noKeys = { keys: null };

function contractOf(def: ActorDefinition<unknown>, type: string): EventContract {
  let map = contractCache.get(def);
  if (map === undefined) contractCache.set(def, (map = new Map()));
  let c = map.get(type);
  if (c === undefined) {
    const spec = def.events.get(type)!;
    c = compileEventContract(def, spec, spec.schema === undefined ? undefined : compileSchema(spec.schema), noKeys);
    map.set(type, c);
  }
  return c;
}

/** Upcast given events of older versions, checking them against their versions' schemas. */
function upcastGiven(def: ActorDefinition<unknown>, events: readonly GivenEvent[]): EventDraft[] {
  return events.map((e, i) => {
    const spec = def.events.get(e.type);
    if (spec === undefined || e.version === undefined || e.version === spec.version) return { type: e.type, payload: e.payload };
    const where = `given event #${i + 1} ${e.type} v${e.version}`;
    if (spec.schemas.has(e.version)) {
      const r = validateEventSchema(`${def.type}.${e.type}`, e.version, e.payload, [def]);
      if (!r.valid) throw new ValidationError('SCHEMA_VIOLATION', `${where} does not match the v${e.version} schema: ${r.errors.map((x) => x.message).join('; ')}`, { aggregateType: def.type, eventType: e.type });
    }
    const payload = upcastEvent(def, e.type, e.version, e.payload);
    if (spec.schema !== undefined) {
      const r = validateEventSchema(`${def.type}.${e.type}`, spec.version, payload, [def]);
      if (!r.valid) throw new ValidationError('SCHEMA_VIOLATION', `${where} upcast to v${spec.version} does not match the v${spec.version} schema: ${r.errors.map((x) => x.message).join('; ')}`, { aggregateType: def.type, eventType: e.type });
    }
    return { type: e.type, payload };
  });
}

function toVersioned(events: readonly GivenEvent[]): GivenEvent[] {
  if (!Array.isArray(events)) throw new TypeError(`given(def, events) must be an array of { type, payload, version? }, got ${show(events)}`);
  return events.map((e: GivenEvent) => ({ type: e.type, payload: e.payload, version: e.version }));
}

function toDrafts(events: readonly EventDraft[] | undefined, what: string): EventDraft[] {
  if (events === undefined) return [];
  if (!Array.isArray(events)) throw new TypeError(`${what} must be an array of { type, payload }, got ${show(events)}`);
  return events.map((e: EventDraft) => ({ type: e.type, payload: e.payload }));
}

function matchRejection(error: TroupeError, expected: RejectionMatcher | undefined): string | undefined {
  const m = typeof expected === 'string'
    ? (/^[A-Z][A-Z0-9_]*$/.test(expected) ? { code: expected as ErrorCode } : { reason: expected })
    : expected ?? {};
  const code = m.code ?? (m.reason !== undefined || expected === undefined ? 'DOMAIN_REJECTION' : undefined);
  if (code !== undefined && error.code !== code) return `expected error code ${code}, got ${error.code}`;
  if (m.reason !== undefined && error.data.reason !== m.reason) return `expected reason ${show(m.reason)}, got ${show(error.data.reason)}`;
  for (const [k, v] of Object.entries(m.data ?? {})) {
    try {
      deepStrictEqual(error.data[k], v);
    } catch {
      return `expected data.${k} to be ${show(v)}, got ${show(error.data[k])}`;
    }
  }
  return undefined;
}

function describeError(e: TroupeError): string {
  return `${e.code} ${show(e.message)} data ${show(e.data)}`;
}

// ---------------------------------------------------------------------------------------------
// given / when / then

/** The state folded from the given events; call `.when()` to run a command against it. */
export class Given<S> {
  readonly #engine: Engine<S>;
  readonly #events: readonly EventDraft[];
  readonly #state: S;
  #principal: Principal | null = null;

  constructor(engine: Engine<S>, events: readonly EventDraft[], state?: S) {
    this.#engine = engine;
    this.#events = events;
    this.#state = state ?? engine.fold(engine.initialState(), events, 0, 'folding the given events');
  }

  /**
   * The same scenario, with `when` sent by `principal` (`{ id, roles, tenant? }`): the actor's
   * and the command's `authorize` rules judge it as a node does, and `ctx.userId` is its id.
   */
  as(principal: Principal): Given<S> {
    const g = new Given<S>(this.#engine, this.#events, this.#state);
    g.#principal = toPrincipal(principal, 'given(...).as(principal)');
    return g;
  }

  /** The state folded from the given events. */
  get state(): S { return this.#state; }

  /** Asserts the state folded from the given events, without running a command. */
  thenState(expected: S): this {
    assertEqual(this.#state, expected, `${this.#label()}: the state differs`);
    return this;
  }

  /** Runs the command against the folded state and records what happened, for `then*` to check. */
  when(commandType: string, payload: unknown = {}, ctx?: Partial<CommandContext>): Scenario<S> {
    const label = `${this.#label()}, when ${commandType} ${show(payload)}`;
    try {
      const out = this.#engine.execute(this.#state, this.#events.length, commandType, payload, `cmd-${this.#events.length + 1}`, withPrincipal(this.#principal, ctx));
      return new Scenario<S>(label, out.events, out.state, undefined, out.timers);
    } catch (e) {
      if (isTroupeError(e)) return new Scenario<S>(label, undefined, undefined, e, []);
      throw e;
    }
  }

  #label(): string {
    return `given ${this.#events.length === 0 ? 'no events' : `[${this.#events.map((e) => e.type).join(', ')}]`} of ${this.#engine.def.type}`;
  }
}

/** The outcome of `given(...).when(...)`. Each `then*` throws an AssertionError when it does not hold. */
export class Scenario<S> {
  readonly #label: string;
  readonly #events: readonly EventDraft[] | undefined;
  readonly #state: S | undefined;
  readonly #error: TroupeError | undefined;
  readonly #timers: readonly TimerChange[];

  constructor(label: string, events: readonly EventDraft[] | undefined, state: S | undefined, error: TroupeError | undefined, timers: readonly TimerChange[]) {
    this.#label = label;
    this.#events = events;
    this.#state = state;
    this.#error = error;
    this.#timers = timers;
  }

  /** What the command did to the actor's timers, in order (none when it failed). */
  get timers(): readonly TimerChange[] { return this.#timers; }

  /**
   * Asserts that the command succeeded and did exactly this to the actor's timers, in order:
   * `[{ schedule: 'reminder', dueAt, command: 'Remind', payload: {} }, { cancel: 'old' }]`.
   * Leave `dueAt` or `payload` out to skip comparing them.
   */
  thenTimers(expected: readonly (Partial<Extract<TimerChange, { schedule: string }>> & { schedule: string } | TimerChange)[]): this {
    this.#succeeded('expected timer changes');
    const got = this.#timers.map((t, i) => {
      const want = expected[i] as Record<string, unknown> | undefined;
      if (want === undefined || !('schedule' in t)) return t;
      const c: Record<string, unknown> = { ...t };
      if (!('dueAt' in want)) delete c.dueAt;
      if (!('payload' in want)) delete c.payload;
      return c;
    });
    assertEqual(got, expected, `${this.#label}: the timers scheduled and cancelled differ`);
    return this;
  }

  /** The events decide returned, or undefined when the command failed. */
  get events(): readonly EventDraft[] | undefined { return this.#events; }
  /** The error the command failed with, or undefined. */
  get error(): TroupeError | undefined { return this.#error; }

  /** Asserts that the command succeeded with exactly these events, in order (`[]`: no events). */
  then(expected: readonly EventDraft[]): this {
    const want = toDrafts(expected, 'then(expected)');
    const got = this.#succeeded(`expected events [${want.map((e) => e.type).join(', ')}]`);
    assertEqual(got, want, `${this.#label}: the events differ`);
    return this;
  }

  /** Asserts the state after the command's events were applied. */
  thenState(expected: S): this {
    this.#succeeded('expected a new state');
    assertEqual(this.#state, expected, `${this.#label}: the state after the command differs`);
    return this;
  }

  /**
   * Asserts that the command failed. With no argument: a domain rejection, any reason.
   * Returns the error for further checks.
   */
  thenRejects(expected?: RejectionMatcher): TroupeError {
    const error = this.#error;
    if (error === undefined) {
      fail(`${this.#label}: expected a rejection${expected === undefined ? '' : ` (${show(expected)})`}, but decide returned events ${show(this.#events)}`);
    }
    const mismatch = matchRejection(error, expected);
    if (mismatch !== undefined) fail(`${this.#label}: ${mismatch}; the error was ${describeError(error)}`, error);
    return error;
  }

  #succeeded(what: string): readonly EventDraft[] {
    if (this.#error !== undefined) fail(`${this.#label}: ${what}, but the command failed with ${describeError(this.#error)}`, this.#error);
    return this.#events!;
  }
}

/**
 * Starts a given/when/then scenario: the actor's state is folded from `events`. An event with
 * an older `version` is upcast to the current one first, as the runtime reads old events.
 */
export function given<S>(def: ActorDefinition<S>, events?: readonly GivenEvent[], opts?: TestKitOptions): Given<S> {
  const r = resolve(def as ActorDefinition<unknown>, opts);
  const engine = new Engine(def, r);
  const list = events === undefined ? undefined : upcastGiven(def as ActorDefinition<unknown>, toVersioned(events));
  const drafts = toDrafts(list, 'given(def, events)').map((e) => roundTrip(r.codec, e));
  return new Given(engine, r.freeze ? deepFreeze(drafts) : drafts);
}

// ---------------------------------------------------------------------------------------------
// testActor: a live actor with a history, snapshots and restart()

interface Snapshot {
  readonly version: number;
  readonly bytes: Uint8Array;
}

export interface RestartOptions {
  /**
   * Take the snapshot at this version (0 … events.length) instead of using the latest one the
   * kit took. The kit takes one whenever `snapshotEvery` events have passed since the last.
   */
  snapshotAt?: number;
}

export class TestActor<S> {
  readonly #engine: Engine<S>;
  #state: S;
  #events: RecordedEvent[];
  #snapshot: Snapshot | undefined;
  #commands: number;
  #principal: Principal | null = null;
  readonly #timers = new Map<string, TestTimer>();

  constructor(engine: Engine<S>, state: S, events: RecordedEvent[], snapshot: Snapshot | undefined, commands: number, timers?: ReadonlyMap<string, TestTimer>) {
    this.#engine = engine;
    this.#state = state;
    this.#events = events;
    this.#snapshot = snapshot;
    this.#commands = commands;
    if (timers !== undefined) for (const [k, t] of timers) this.#timers.set(k, t);
  }

  /** The actor's pending timers, soonest first. */
  get timers(): readonly TestTimer[] {
    return [...this.#timers.values()].sort((a, b) => a.dueAt - b.dueAt);
  }

  /**
   * Fire the pending timer `key` as the node would once it is due: its command is decided with
   * `ctx.timer` set and `ctx.now` = `opts.now` (default: its due time). The timer is consumed
   * even when decide refuses (then this throws that error); a periodic one moves to its next
   * due time after now, with `missed` = the later due times that passed. Returns the events.
   */
  fire(key: string, opts: { now?: number } = {}): readonly RecordedEvent[] {
    const t = this.#timers.get(key);
    if (t === undefined) throw new AssertionError({ message: `${this.#engine.def.type}: no pending timer ${show(key)} (pending: ${[...this.#timers.keys()].map((k) => show(k)).join(', ') || 'none'})` });
    const now = opts.now ?? t.dueAt;
    const missed = t.every !== undefined && now > t.dueAt ? Math.floor((now - t.dueAt) / t.every) : 0;
    this.#timers.delete(key);
    if (t.every !== undefined) this.#timers.set(key, { ...t, dueAt: t.dueAt + (missed + 1) * t.every });
    const timer: TimerFiring = { key, dueAt: t.dueAt, missed, scheduledBy: t.scheduledBy };
    return this.#run(t.command, t.payload, { now, timer, userId: undefined, principal: null }, `timer:${key}:${t.dueAt}`);
  }

  get state(): S { return this.#state; }
  /** Every event so far, in order. */
  get events(): readonly RecordedEvent[] { return this.#events; }
  /** The number of events so far (the sequence of the last one). */
  get version(): number { return this.#events.length; }
  /** The version of the latest snapshot the kit took, or undefined. */
  get snapshotVersion(): number | undefined { return this.#snapshot?.version; }

  /**
   * Send the next commands as `principal` (null: as nobody): the `authorize` rules judge them as
   * a node does, and `ctx.userId` is its id. Returns this actor.
   */
  as(principal: Principal | null): this {
    this.#principal = principal === null ? null : toPrincipal(principal, 'testActor(...).as(principal)');
    return this;
  }

  /** Runs a command. Returns its events (possibly none) or throws the error the runtime would. */
  send(commandType: string, payload: unknown = {}, ctx?: Partial<CommandContext>): readonly RecordedEvent[] {
    this.#commands += 1;
    return this.#run(commandType, payload, withPrincipal(this.#principal, ctx), `cmd-${this.#commands}`);
  }

  #run(commandType: string, payload: unknown, ctx: Partial<CommandContext> | undefined, commandId: string): readonly RecordedEvent[] {
    const version = this.#events.length;
    const out = this.#engine.execute(this.#state, version, commandType, payload, commandId, ctx);
    for (const c of out.timers) {
      if ('cancel' in c) this.#timers.delete(c.cancel);
      else this.#timers.set(c.schedule, { key: c.schedule, dueAt: c.dueAt, command: c.command, payload: c.payload, ...(c.every === undefined ? {} : { every: c.every }), scheduledBy: ctx?.commandId ?? commandId });
    }
    const recorded = out.events.map((e, i): RecordedEvent => {
      const rec = { type: e.type, payload: e.payload, sequence: version + i + 1 };
      return this.#engine.r.freeze ? Object.freeze(rec) : rec;
    });
    this.#state = out.state;
    this.#events.push(...recorded);
    const last = this.#snapshot?.version ?? 0;
    if (this.#events.length - last >= this.#engine.def.snapshotEvery) {
      this.#snapshot = { version: this.#events.length, bytes: this.#engine.r.codec.encode(this.#state) };
    }
    return recorded;
  }

  /**
   * Proves that the actor survives a restart: the live state, the state rebuilt from a snapshot
   * plus the events after it, and the state replayed from `initialState` over every event must
   * be deeply equal, with the snapshot and every event round-tripped through the codec.
   * Throws an AssertionError naming the path that differs; returns a kit on the rebuilt state.
   */
  restart(opts: RestartOptions = {}): TestActor<S> {
    const { def, r } = this.#engine;
    const engine = this.#engine;
    const n = this.#events.length;
    const live = this.#state;

    assertEqual(roundTrip(r.codec, live), live, `${def.type} restart: the state does not survive the codec (use plain objects, arrays, strings, numbers, booleans and null)`);

    const logged = this.#events.map((e, i) => {
      const back = roundTrip(r.codec, e);
      assertEqual(back, e, `${def.type} restart: event #${i + 1} ${e.type} does not survive the codec`);
      return r.freeze ? deepFreeze(back) : back;
    });

    let snapshot: Snapshot;
    if (opts.snapshotAt !== undefined) {
      const k = opts.snapshotAt;
      if (!Number.isInteger(k) || k < 0 || k > n) throw new RangeError(`restart: snapshotAt must be an integer from 0 to ${n} (the number of events), got ${String(k)}`);
      const atK = engine.fold(engine.initialState(), this.#events.slice(0, k), 0, 'rebuilding the state for the snapshot');
      snapshot = { version: k, bytes: r.codec.encode(atK) };
    } else {
      snapshot = this.#snapshot ?? { version: 0, bytes: r.codec.encode(engine.initialState()) };
    }

    let fromSnapshot = r.codec.decode(snapshot.bytes) as S;
    if (r.freeze) fromSnapshot = deepFreeze(fromSnapshot);
    fromSnapshot = engine.fold(fromSnapshot, logged.slice(snapshot.version), snapshot.version, 'replaying after the snapshot');
    assertEqual(fromSnapshot, live, `${def.type} restart: snapshot at version ${snapshot.version} + replay of ${n - snapshot.version} events differs from the live state`);

    const fromLog = engine.fold(engine.initialState(), logged, 0, 'replaying from the start');
    assertEqual(fromLog, live, `${def.type} restart: replaying all ${n} events from initialState differs from the live state`);

    return new TestActor(engine, fromSnapshot, logged, this.#snapshot, this.#commands, this.#timers);
  }
}

/** A live in-memory actor: send commands, read state and events, restart it. */
export function testActor<S>(def: ActorDefinition<S>, opts?: TestKitOptions): TestActor<S> {
  const engine = new Engine(def, resolve(def as ActorDefinition<unknown>, opts));
  return new TestActor(engine, engine.initialState(), [], undefined, 0);
}
