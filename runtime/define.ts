/**
 * `defineActor` and the types a user writes against.
 *
 * An actor type is a plain object of pure functions: `decide` turns (state, command) into
 * events or throws a rejection; `evolve` folds an event into state. Definitions live in
 * modules that every worker thread imports by path, so a definition must be a top-level
 * export of its module.
 */
import { InvalidDefinitionError } from './errors.ts';
import { DEFAULT_GUARD_PATTERNS, checkSchemaNames, guardMessage, type GuardConfig, type GuardPattern } from './guard.ts';
import { checkChain, type UpcastChain, type Upcaster } from './upcast.ts';
import { commandRules, compileRule, type AuthorizeRule, type CompiledRule, type Principal } from './principal.ts';

export const ACTOR_DEFINITION = Symbol.for('troupe.actorDefinition');

/** What `decide` returns for each event: a past-tense type and its payload. */
export interface EventDraft<T extends string = string, P = unknown> {
  type: T;
  payload: P;
}

/**
 * What a decide function knows about the command besides its payload. Valid during the call
 * only: the runtime reuses the object for the next command.
 */
export interface CommandContext {
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly commandId: string;
  readonly commandType: string;
  readonly userId: string | undefined;
  readonly correlationId: string;
  /** The actor's version (number of events) before this command. 0 means it has no history. */
  readonly version: number;
  /** Milliseconds since the epoch, fixed for the command: use it instead of Date.now(). */
  readonly now: number;
  /** The verified caller (principal.ts), or null when the command carries none. `userId` is its id. */
  readonly principal?: Principal | null;
  /**
   * Schedule a durable timer: when it falls due, the actor is sent `command` (with `payload`)
   * by its shard's owner. The timer is stored with this command's commit (nothing is scheduled
   * when the command fails), survives crashes, restarts and shard moves, and replaces a
   * pending timer of the same `key`. See TimerSpec.
   */
  schedule(timer: TimerSpec): void;
  /** Cancel the pending timer `key` (with this command's commit); nothing happens when there is none. */
  cancel(key: string): void;
  /** When this command is a timer firing: which timer, and when it was due. null otherwise. */
  readonly timer: TimerFiring | null;
}

/**
 * A durable timer, as `ctx.schedule` takes it. Give exactly one of `at` and `after`, or
 * `every` alone (first due `every` ms from now); `every` with `at` or `after` sets the first
 * due time of a periodic timer.
 */
export interface TimerSpec {
  /** Names the timer within its actor: scheduling the same key again replaces it. 1-128 printable characters. */
  key: string;
  /** When it falls due: a Date or milliseconds since the epoch. */
  at?: Date | number;
  /** Falls due this many milliseconds after `ctx.now`. */
  after?: number;
  /** Periodic: falls due again every this many milliseconds (at least 1000) until cancelled. */
  every?: number;
  /** The command the actor is sent when the timer falls due: one of its own commands. */
  command: string;
  /** The command's payload: a plain object (default `{}`). */
  payload?: Record<string, unknown>;
}

/** `ctx.timer` of a command sent by a timer. */
export interface TimerFiring {
  readonly key: string;
  /** When this firing was due (ms since the epoch). */
  readonly dueAt: number;
  /**
   * Periodic timers: how many later due times also passed before this firing (while the shard
   * was down or busy) and were folded into it; 0 when it fires on time. Always 0 for one-shot timers.
   */
  readonly missed: number;
  /** The commandId of the command that scheduled the timer. */
  readonly scheduledBy: string;
}

/** What an evolve function knows about the event besides its payload. */
export interface EventContext {
  readonly sequence: number;
  readonly eventType: string;
  readonly timestamp: string;
}

export type Decide<S, C> = (state: S, command: C, ctx: CommandContext) => EventDraft | readonly EventDraft[] | void | undefined;
export type Evolve<S, E> = (state: S, event: E, ctx: EventContext) => S;

/** JSON Schema (draft 2020-12 / 07 subset ajv accepts). */
export type JsonSchema = Record<string, unknown>;

export interface CommandSpec<S, C> {
  decide: Decide<S, C>;
  /** JSON Schema for the command payload (of the current version), checked at the door before the actor sees it. */
  schema?: JsonSchema;
  /** The current version of the command's payload. Starts at 1. */
  version?: number;
  /** Schemas of earlier versions, by version, for contract tests (`validateCommandSchema`). */
  schemas?: Record<number, JsonSchema>;
  /** Who may send this command (besides the actor type's own rule, which must allow it too): roles, or a function of the principal and the state. */
  authorize?: AuthorizeRule<S>;
}

/** What a sensitive field's subject function knows about the event. */
export interface SubjectContext {
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly eventType: string;
  /** The user who sent the command, if any. */
  readonly userId: string | null;
}

/**
 * Fields encrypted before they leave the actor (AES-256-GCM), under the key of a subject: the
 * person or tenant the data is about. Shredding the subject's keys makes them unreadable.
 */
export interface SensitiveSpec<E = AnyPayload> {
  /** Top-level payload fields. `null` and absent values are not encrypted. */
  fields: readonly string[];
  /**
   * Whose data it is. `aggregate` (default): `<type>:<id>` of the actor; `user`: `user:<userId>`
   * of the command (the aggregate when there is no user); or a function of the payload, e.g.
   * `(e) => "tenant:" + e.tenantId`.
   */
  subject?: 'aggregate' | 'user' | ((payload: E, ctx: SubjectContext) => string);
  /** What readers get in place of a value whose key was destroyed. Default REDACTED (`'[redacted]'`). */
  redacted?: unknown;
}

export interface NormalizedSensitive {
  readonly fields: readonly string[];
  readonly subject: (payload: unknown, ctx: SubjectContext) => string;
  readonly redacted: unknown;
}

export interface EventSpec<S, E> {
  evolve: Evolve<S, E>;
  /** JSON Schema for the event payload (of the current version), checked before the event is appended. */
  schema?: JsonSchema;
  /** The schema version written with new events of this type. Starts at 1. */
  version?: number;
  /** Schemas of earlier versions, by version: for contract tests (`validateEventSchema`). */
  schemas?: Record<number, JsonSchema>;
  /** From each older version to the next: `upcast(1, 2, addField('x', 0))`. Required for every version below `version`. */
  upcasters?: readonly Upcaster[];
  /** Fields encrypted before the event leaves the actor: a list of fields (subject: the aggregate) or a SensitiveSpec. */
  sensitive?: readonly string[] | SensitiveSpec<E>;
  /** Top-level fields that hold a hash of personal data (the guard lets them pass). */
  hashed?: readonly string[];
}

// Handlers are typed loosely at the record level so that each entry can name its own payload
// type; `defineActor` keeps the state type S throughout.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyPayload = any;

export interface ActorConfig<S> {
  /** The aggregate type name, e.g. `Account`. Letters, digits, `_` and `-`. */
  type: string;
  initialState: () => S;
  commands: Record<string, Decide<S, AnyPayload> | CommandSpec<S, AnyPayload>>;
  events: Record<string, Evolve<S, AnyPayload> | EventSpec<S, AnyPayload>>;
  /** Write a snapshot after this many events since the last one (and on passivation). Default 100. */
  snapshotEvery?: number;
  /**
   * Version of the state's shape. A snapshot of an older version is brought up to date with
   * `stateUpcasters` when they reach it, and otherwise ignored and rebuilt from the log.
   */
  stateVersion?: number;
  /** From each older state version to the next: `upcast(1, 2, addField('tags', []))`. */
  stateUpcasters?: readonly Upcaster[];
  /** The sensitive-data guard for this actor's events. Default: DEFAULT_GUARD_PATTERNS, mode `error`. `false` turns it off. */
  guard?: GuardConfig | false;
  /** How strictly event names are checked for the past tense. Default `error`. */
  eventNameCheck?: 'error' | 'warn' | 'off';
  /**
   * Who may send this actor's commands and read its state and history: `{ roles: [...] }`, or a
   * function `(principal, request, ctx) => boolean` that may read `ctx.state`. A command's own
   * `authorize` must allow it too.
   */
  authorize?: AuthorizeRule<S>;
}

export interface NormalizedCommand<S> {
  readonly name: string;
  readonly decide: Decide<S, unknown>;
  readonly schema: JsonSchema | undefined;
  readonly version: number;
  /** Every known schema by version, the current one included. */
  readonly schemas: ReadonlyMap<number, JsonSchema>;
  /** The rules a sender must pass (the actor's, then the command's); null when there are none. */
  readonly authorize: readonly CompiledRule[] | null;
}

export interface NormalizedEvent<S> {
  readonly name: string;
  readonly evolve: Evolve<S, unknown>;
  readonly schema: JsonSchema | undefined;
  readonly version: number;
  /** Every known schema by version, the current one included. */
  readonly schemas: ReadonlyMap<number, JsonSchema>;
  /** The checked upcaster chain from v1 to `version`. */
  readonly upcast: UpcastChain;
  readonly sensitive: NormalizedSensitive | null;
  readonly hashed: readonly string[];
}

export interface NormalizedGuard {
  readonly mode: 'error' | 'warn' | 'off';
  readonly patterns: readonly GuardPattern[];
  /** Top-level field names, or `Event.field`, left alone. */
  readonly allow: ReadonlySet<string>;
}

export interface ActorDefinition<S = unknown> {
  readonly [ACTOR_DEFINITION]: true;
  readonly type: string;
  readonly initialState: () => S;
  readonly commands: ReadonlyMap<string, NormalizedCommand<S>>;
  readonly events: ReadonlyMap<string, NormalizedEvent<S>>;
  readonly snapshotEvery: number;
  readonly stateVersion: number;
  /** The checked chain of state upcasters up to `stateVersion`. */
  readonly stateUpcast: UpcastChain;
  readonly guard: NormalizedGuard;
  /** The actor type's own rule (also for query and history); null when there is none. */
  readonly authorize: CompiledRule | null;
}

const TYPE_NAME = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;

// Past participles that do not end in -ed. Event names whose last word is one of these pass.
const IRREGULAR_PAST = new Set([
  'Begun', 'Bought', 'Brought', 'Built', 'Caught', 'Chosen', 'Done', 'Drawn', 'Driven', 'Found', 'Forgotten',
  'Frozen', 'Given', 'Gone', 'Grown', 'Held', 'Hidden', 'Kept', 'Known', 'Laid', 'Led', 'Left', 'Lent', 'Lost',
  'Made', 'Meant', 'Met', 'Paid', 'Put', 'Read', 'Run', 'Said', 'Seen', 'Sent', 'Set', 'Shown', 'Shut', 'Sold',
  'Spent', 'Split', 'Spun', 'Stolen', 'Struck', 'Sworn', 'Taken', 'Thrown', 'Told', 'Undone', 'Withdrawn',
  'Won', 'Worn', 'Written', 'Reset', 'Rebuilt', 'Rewritten', 'Overridden', 'Upheld', 'Withheld', 'Cut', 'Quit',
]);

/** True when the last word of a PascalCase name reads as a past participle. */
export function looksPastTense(name: string): boolean {
  const words = name.match(/[A-Z][a-z0-9]*|[a-z0-9]+/g);
  const last = words?.[words.length - 1];
  if (last === undefined) return false;
  const cap = last[0]!.toUpperCase() + last.slice(1);
  return /ed$/.test(cap) || IRREGULAR_PAST.has(cap);
}

function positiveInt(value: unknown, name: string, type: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new InvalidDefinitionError(`actor ${type}: ${name} must be a positive integer, got ${String(value)}`, { aggregateType: type });
  }
  return value;
}

/** Register an actor type. Validates the definition and freezes it. */
export function defineActor<S>(config: ActorConfig<S>): ActorDefinition<S> {
  const type = config.type;
  if (typeof type !== 'string' || !TYPE_NAME.test(type)) {
    throw new InvalidDefinitionError(`actor type name must match ${TYPE_NAME}, got ${JSON.stringify(type)}`);
  }
  if (typeof config.initialState !== 'function') {
    throw new InvalidDefinitionError(`actor ${type}: initialState must be a function returning the state of a new actor`, { aggregateType: type });
  }
  const actorRule = compileRule(config.authorize, type, type);
  const commands = new Map<string, NormalizedCommand<S>>();
  for (const [name, spec] of Object.entries(config.commands ?? {})) {
    if (!TYPE_NAME.test(name)) throw new InvalidDefinitionError(`actor ${type}: command name ${JSON.stringify(name)} must match ${TYPE_NAME}`, { aggregateType: type });
    const decide = typeof spec === 'function' ? spec : spec?.decide;
    if (typeof decide !== 'function') throw new InvalidDefinitionError(`actor ${type}: command ${name} needs a decide function`, { aggregateType: type, commandType: name });
    const schema = typeof spec === 'function' ? undefined : spec.schema;
    const version = typeof spec === 'function' ? 1 : positiveInt(spec.version ?? 1, `commands.${name}.version`, type);
    const schemas = versionSchemas(type, `command ${name}`, version, schema, typeof spec === 'function' ? undefined : spec.schemas);
    const authorize = commandRules(actorRule, typeof spec === 'function' ? null : compileRule(spec.authorize, `${type}.${name}`, type));
    commands.set(name, Object.freeze({ name, decide: decide as Decide<S, unknown>, schema, version, schemas, authorize }));
  }
  if (commands.size === 0) throw new InvalidDefinitionError(`actor ${type}: declare at least one command`, { aggregateType: type });

  const guard = normalizeGuard(type, config.guard);
  const check = config.eventNameCheck ?? 'error';
  const events = new Map<string, NormalizedEvent<S>>();
  for (const [name, spec] of Object.entries(config.events ?? {})) {
    if (!TYPE_NAME.test(name)) throw new InvalidDefinitionError(`actor ${type}: event name ${JSON.stringify(name)} must match ${TYPE_NAME}`, { aggregateType: type });
    if (check !== 'off' && !looksPastTense(name)) {
      const message = `actor ${type}: event ${name} should be named in the past tense (e.g. ${type}Opened, FundsDeposited): events are facts that happened`;
      if (check === 'error') throw new InvalidDefinitionError(message, { aggregateType: type, eventType: name });
      process.emitWarning(message, { code: 'TROUPE_EVENT_NAME' });
    }
    if (commands.has(name)) throw new InvalidDefinitionError(`actor ${type}: ${name} is both a command and an event`, { aggregateType: type });
    const evolve = typeof spec === 'function' ? spec : spec?.evolve;
    if (typeof evolve !== 'function') throw new InvalidDefinitionError(`actor ${type}: event ${name} needs an evolve function`, { aggregateType: type, eventType: name });
    const full = typeof spec === 'function' ? undefined : spec;
    const version = full === undefined ? 1 : positiveInt(full.version ?? 1, `events.${name}.version`, type);
    const schema = full?.schema;
    const schemas = versionSchemas(type, `event ${name}`, version, schema, full?.schemas);
    const upcast = checkChain('event', type, name, version, full?.upcasters);
    const sensitive = normalizeSensitive(type, name, schema, full?.sensitive);
    const hashed = fieldList(type, name, 'hashed', full?.hashed);
    checkGuardNames(type, name, schema, guard, sensitive, hashed);
    events.set(name, Object.freeze({ name, evolve: evolve as Evolve<S, unknown>, schema, version, schemas, upcast, sensitive, hashed }));
  }
  if (events.size === 0) throw new InvalidDefinitionError(`actor ${type}: declare at least one event`, { aggregateType: type });

  const stateVersion = positiveInt(config.stateVersion ?? 1, 'stateVersion', type);
  if ([...events.values()].some((e) => e.sensitive !== null)) {
    const s = config.initialState();
    if (typeof s !== 'object' || s === null) {
      throw new InvalidDefinitionError(`actor ${type}: an actor with sensitive fields needs an object state (Troupe tracks which keys a state was built with, to seal its snapshots)`, { aggregateType: type });
    }
  }
  const def: ActorDefinition<S> = Object.freeze({
    [ACTOR_DEFINITION]: true as const,
    type,
    initialState: config.initialState,
    commands,
    events,
    snapshotEvery: positiveInt(config.snapshotEvery ?? 100, 'snapshotEvery', type),
    stateVersion,
    stateUpcast: checkChain('state', type, 'state', stateVersion, config.stateUpcasters),
    guard,
    authorize: actorRule,
  });
  catalog.set(type, def as ActorDefinition<unknown>);
  return def;
}

/** Every actor type defined in this process, the latest definition of each: what `validateEventSchema` looks in. */
const catalog = new Map<string, ActorDefinition<unknown>>();

export function definedActors(): ActorDefinition<unknown>[] {
  return [...catalog.values()];
}

/** The default redacted marker: what readers get for a value whose key was destroyed. */
export const REDACTED = '[redacted]';

function versionSchemas(type: string, what: string, version: number, current: JsonSchema | undefined, older: Record<number, JsonSchema> | undefined): ReadonlyMap<number, JsonSchema> {
  const out = new Map<number, JsonSchema>();
  for (const [key, schema] of Object.entries(older ?? {})) {
    const v = Number(key);
    if (!Number.isInteger(v) || v < 1 || v >= version) {
      throw new InvalidDefinitionError(`actor ${type}: ${what}: schemas lists version ${key}, but holds the schemas of earlier versions (1 to ${version - 1}); the current one goes in schema`, { aggregateType: type });
    }
    if (typeof schema !== 'object' || schema === null) throw new InvalidDefinitionError(`actor ${type}: ${what}: the schema of version ${v} must be a JSON Schema object`, { aggregateType: type });
    out.set(v, schema);
  }
  if (current !== undefined) out.set(version, current);
  return out;
}

function fieldList(type: string, event: string, what: string, fields: readonly string[] | undefined): readonly string[] {
  if (fields === undefined) return [];
  if (!Array.isArray(fields) || fields.some((f) => typeof f !== 'string' || !/^[A-Za-z_$][A-Za-z0-9_$-]*$/.test(f))) {
    throw new InvalidDefinitionError(`actor ${type}: event ${event}: ${what} must list top-level payload field names, got ${JSON.stringify(fields)}`, { aggregateType: type, eventType: event });
  }
  return Object.freeze([...fields]);
}

function normalizeSensitive(type: string, event: string, schema: JsonSchema | undefined, spec: readonly string[] | SensitiveSpec | undefined): NormalizedSensitive | null {
  if (spec === undefined) return null;
  const full: SensitiveSpec = Array.isArray(spec) ? { fields: spec as readonly string[] } : spec as SensitiveSpec;
  const fields = fieldList(type, event, 'sensitive fields', full.fields);
  if (fields.length === 0) throw new InvalidDefinitionError(`actor ${type}: event ${event}: sensitive lists no field`, { aggregateType: type, eventType: event });
  const props = (schema as { properties?: Record<string, unknown>; additionalProperties?: unknown } | undefined);
  if (props?.properties !== undefined && props.additionalProperties === false) {
    for (const f of fields) {
      if (!(f in props.properties)) throw new InvalidDefinitionError(`actor ${type}: event ${event}: sensitive field ${f} is not in its schema (${Object.keys(props.properties).join(', ')})`, { aggregateType: type, eventType: event, field: f });
    }
  }
  const s = full.subject ?? 'aggregate';
  let subject: NormalizedSensitive['subject'];
  if (s === 'aggregate') subject = (_p, c) => `${c.aggregateType}:${c.aggregateId}`;
  else if (s === 'user') subject = (_p, c) => (c.userId !== null && c.userId !== '' ? `user:${c.userId}` : `${c.aggregateType}:${c.aggregateId}`);
  else if (typeof s === 'function') subject = s as NormalizedSensitive['subject'];
  else throw new InvalidDefinitionError(`actor ${type}: event ${event}: sensitive.subject must be 'aggregate', 'user' or a function of the payload, got ${JSON.stringify(s)}`, { aggregateType: type, eventType: event });
  return Object.freeze({ fields, subject, redacted: 'redacted' in full ? full.redacted : REDACTED });
}

function normalizeGuard(type: string, g: GuardConfig | false | undefined): NormalizedGuard {
  if (g === false) return Object.freeze({ mode: 'off', patterns: [], allow: new Set<string>() });
  const mode = g?.mode ?? 'error';
  if (mode !== 'error' && mode !== 'warn' && mode !== 'off') throw new InvalidDefinitionError(`actor ${type}: guard.mode must be 'error', 'warn' or 'off', got ${JSON.stringify(mode)}`, { aggregateType: type });
  const patterns = g?.patterns ?? DEFAULT_GUARD_PATTERNS;
  for (const p of patterns) {
    if (typeof p?.name !== 'string' || (!(p.field instanceof RegExp) && !(p.value instanceof RegExp))) {
      throw new InvalidDefinitionError(`actor ${type}: guard.patterns entries need a name and a field or value RegExp, got ${JSON.stringify(p)}`, { aggregateType: type });
    }
  }
  return Object.freeze({ mode, patterns: mode === 'off' ? [] : Object.freeze([...patterns]), allow: new Set(g?.allow ?? []) });
}

/** The schema's property names, checked once here; values are checked before each append. */
function checkGuardNames(type: string, event: string, schema: JsonSchema | undefined, guard: NormalizedGuard, sensitive: NormalizedSensitive | null, hashed: readonly string[]): void {
  if (guard.mode === 'off' || schema === undefined) return;
  const findings = checkSchemaNames(schema, guard.patterns, guardExempt(event, guard, sensitive, hashed));
  if (findings.length === 0) return;
  const message = guardMessage(`actor ${type}: event ${event}`, findings[0]!);
  if (guard.mode === 'error') throw new InvalidDefinitionError(message, { aggregateType: type, eventType: event, field: findings[0]!.field, rule: findings[0]!.pattern.name });
  process.emitWarning(message, { code: 'TROUPE_SENSITIVE_DATA' });
}

/** Top-level fields of an event the guard leaves alone: sensitive, hashed and allowed ones. */
export function guardExempt(event: string, guard: NormalizedGuard, sensitive: NormalizedSensitive | null, hashed: readonly string[]): ReadonlySet<string> {
  const out = new Set<string>([...(sensitive?.fields ?? []), ...hashed]);
  for (const a of guard.allow) {
    const dot = a.indexOf('.');
    if (dot < 0) out.add(a);
    else if (a.slice(0, dot) === event) out.add(a.slice(dot + 1));
  }
  return out;
}

export function isActorDefinition(value: unknown): value is ActorDefinition {
  return typeof value === 'object' && value !== null && (value as { [ACTOR_DEFINITION]?: unknown })[ACTOR_DEFINITION] === true;
}
