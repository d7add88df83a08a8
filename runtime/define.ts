/**
 * `defineActor` and the types a user writes against.
 *
 * An actor type is a plain object of pure functions: `decide` turns (state, command) into
 * events or throws a rejection; `evolve` folds an event into state. Definitions live in
 * modules that every worker thread imports by path, so a definition must be a top-level
 * export of its module.
 */
import { InvalidDefinitionError } from './errors.ts';

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
  /** JSON Schema for the command payload, checked at the door before the actor sees it. */
  schema?: JsonSchema;
}

export interface EventSpec<S, E> {
  evolve: Evolve<S, E>;
  /** JSON Schema for the event payload, checked before the event is appended. */
  schema?: JsonSchema;
  /** The schema version written with new events of this type. Starts at 1. */
  version?: number;
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
  /** Version of the state's shape. Snapshots with another version are ignored and rebuilt from the log. */
  stateVersion?: number;
  /** How strictly event names are checked for the past tense. Default `error`. */
  eventNameCheck?: 'error' | 'warn' | 'off';
}

export interface NormalizedCommand<S> {
  readonly name: string;
  readonly decide: Decide<S, unknown>;
  readonly schema: JsonSchema | undefined;
}

export interface NormalizedEvent<S> {
  readonly name: string;
  readonly evolve: Evolve<S, unknown>;
  readonly schema: JsonSchema | undefined;
  readonly version: number;
}

export interface ActorDefinition<S = unknown> {
  readonly [ACTOR_DEFINITION]: true;
  readonly type: string;
  readonly initialState: () => S;
  readonly commands: ReadonlyMap<string, NormalizedCommand<S>>;
  readonly events: ReadonlyMap<string, NormalizedEvent<S>>;
  readonly snapshotEvery: number;
  readonly stateVersion: number;
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
  const commands = new Map<string, NormalizedCommand<S>>();
  for (const [name, spec] of Object.entries(config.commands ?? {})) {
    if (!TYPE_NAME.test(name)) throw new InvalidDefinitionError(`actor ${type}: command name ${JSON.stringify(name)} must match ${TYPE_NAME}`, { aggregateType: type });
    const decide = typeof spec === 'function' ? spec : spec?.decide;
    if (typeof decide !== 'function') throw new InvalidDefinitionError(`actor ${type}: command ${name} needs a decide function`, { aggregateType: type, commandType: name });
    commands.set(name, Object.freeze({ name, decide: decide as Decide<S, unknown>, schema: typeof spec === 'function' ? undefined : spec.schema }));
  }
  if (commands.size === 0) throw new InvalidDefinitionError(`actor ${type}: declare at least one command`, { aggregateType: type });

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
    const version = typeof spec === 'function' ? 1 : positiveInt(spec.version ?? 1, `events.${name}.version`, type);
    events.set(name, Object.freeze({ name, evolve: evolve as Evolve<S, unknown>, schema: typeof spec === 'function' ? undefined : spec.schema, version }));
  }
  if (events.size === 0) throw new InvalidDefinitionError(`actor ${type}: declare at least one event`, { aggregateType: type });

  return Object.freeze({
    [ACTOR_DEFINITION]: true as const,
    type,
    initialState: config.initialState,
    commands,
    events,
    snapshotEvery: positiveInt(config.snapshotEvery ?? 100, 'snapshotEvery', type),
    stateVersion: positiveInt(config.stateVersion ?? 1, 'stateVersion', type),
  });
}

export function isActorDefinition(value: unknown): value is ActorDefinition {
  return typeof value === 'object' && value !== null && (value as { [ACTOR_DEFINITION]?: unknown })[ACTOR_DEFINITION] === true;
}
