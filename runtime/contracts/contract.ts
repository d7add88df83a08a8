/**
 * Event contracts: what happens to an event payload on its way into the log and on its way out.
 *
 *   write (decide, before append):  validate (ajv, current version) → guard → encrypt sensitive fields
 *   read  (replay, history, consumers): decrypt (or redact) → upcast to the current version
 *
 * Each event type gets one precompiled `EventContract` in the registry, so the write path
 * costs one map lookup and one call per event (for Account: ajv's compiled check and nothing
 * else: its schema admits no text, so the guard is skipped, and it has no sensitive field).
 *
 * Also here: `validateEventSchema` / `validateCommandSchema` for contract tests, `upcastEvent`,
 * snapshot reading (state upcasters, sealed states), and `eventReader` for consumers.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { commitEvents, isoTime, type EventEnvelope } from '../journal/codec.ts';
import { COMMIT, EVENT, type WireCommit, type WireEvent } from '../wire.ts';
import type { KeyRing } from './crypto.ts';
import { definedActors, guardExempt, REDACTED, type ActorDefinition, type JsonSchema, type NormalizedEvent } from '../define.ts';
import { InternalError, KeysUnavailableError, UpcastError, ValidationError } from '../errors.ts';
import { compileGuard, guardMessage } from '../guard.ts';
import {
  carryTaint, collectKids, decryptFields, encryptValue, isSealed, setPendingKeys, unknownKids, unsealState,
  type KEYS_PENDING, type NoKeys, type ReadNotes,
} from './sensitive.ts';
import { runChain } from '../upcast.ts';

/** One event type's write and read paths, compiled once per registry. */
export interface EventContract {
  readonly aggregateType: string;
  readonly eventType: string;
  /** The version new events are written with. */
  readonly version: number;
  readonly spec: NormalizedEvent<unknown>;
  /**
   * Validate, guard and encrypt a decided payload. Returns what the log stores, or
   * KEYS_PENDING when the subject has no key yet (see `pendingKeys()`); throws a
   * ValidationError (SCHEMA_VIOLATION, SENSITIVE_DATA) naming the field and the rule.
   * `eventId` is read only by an event with sensitive fields (the ciphertexts are bound to it).
   */
  write(payload: unknown, eventId: string, aggregateId: string, userId: string | null, commandId: string): unknown;
  /** The checks of `write` without encryption: schema and guard (the test kit uses it). */
  check(payload: unknown, aggregateId: string, commandId: string): void;
  /**
   * A stored payload as the current definition reads it: decrypted (or redacted) and upcast
   * from `version`. Keys of unknown kids must be loaded first (`missingKids`).
   */
  read(version: number, payload: unknown, eventId: string, aggregateId: string, timestamp: string, ring: KeyRing | null, noKeys: NoKeys, notes: ReadNotes | null): unknown;
}

/** Who holds the key ring a contract encrypts with (the registry; it may get its ring after compiling). */
export interface KeySource {
  readonly keys: KeyRing | null;
}

export function schemaError(kind: 'command' | 'event', aggregateType: string, name: string, errors: ErrorObject[] | null | undefined, ids: Record<string, unknown>): ValidationError {
  const first = errors?.[0];
  const field = first ? `payload${first.instancePath}` : 'payload';
  const rule = first ? `${first.message ?? first.keyword}${first.keyword === 'additionalProperties' ? ` (${String((first.params as { additionalProperty?: string }).additionalProperty)})` : ''}` : 'is invalid';
  return new ValidationError('SCHEMA_VIOLATION', `${kind} ${aggregateType}.${name}: ${field} ${rule}`, { aggregateType, [kind === 'command' ? 'commandType' : 'eventType']: name, field, rule: first?.keyword, ...ids });
}

export function compileEventContract(def: ActorDefinition<unknown>, spec: NormalizedEvent<unknown>, validate: ValidateFunction | undefined, source: KeySource): EventContract {
  const type = def.type;
  const name = spec.name;
  const version = spec.version;
  const guard = def.guard;
  const exempt = guardExempt(name, guard, spec.sensitive, spec.hashed);
  const scan = guard.mode === 'off' ? null : compileGuard(spec.schema, guard.patterns, exempt);
  const warned = new Set<string>();

  const check = (payload: unknown, aggregateId: string, commandId: string): void => {
    if (validate !== undefined && !validate(payload)) throw schemaError('event', type, name, validate.errors, { aggregateId, commandId });
    if (scan === null) return;
    const f = scan(payload);
    if (f === undefined) return;
    const message = guardMessage(`event ${type}.${name}`, f);
    if (guard.mode === 'error') {
      throw new ValidationError('SENSITIVE_DATA', message, { aggregateType: type, aggregateId, commandId, eventType: name, field: f.field, rule: f.pattern.name });
    }
    if (!warned.has(f.field)) {
      warned.add(f.field);
      process.emitWarning(message, { code: 'TROUPE_SENSITIVE_DATA' });
    }
  };

  let write: EventContract['write'];
  const sensitive = spec.sensitive;
  if (sensitive === null) {
    // The hot path: ajv's compiled function and nothing else when the guard has nothing to scan.
    write = scan === null
      ? (validate === undefined ? (p) => p : (p, _e, aggregateId, _u, commandId) => {
        if (!validate(p)) throw schemaError('event', type, name, validate.errors, { aggregateId, commandId });
        return p;
      })
      : (p, _e, aggregateId, _u, commandId) => { check(p, aggregateId, commandId); return p; };
  } else {
    const fields = sensitive.fields;
    write = (p, eventId, aggregateId, userId, commandId): unknown | typeof KEYS_PENDING => {
      check(p, aggregateId, commandId);
      if (typeof p !== 'object' || p === null || Array.isArray(p)) {
        throw new ValidationError('SCHEMA_VIOLATION', `event ${type}.${name}: payload must be an object (it has sensitive fields)`, { aggregateType: type, aggregateId, commandId, eventType: name, field: 'payload', rule: 'type' });
      }
      const ring = source.keys;
      if (ring === null) {
        throw new KeysUnavailableError(`event ${type}.${name} has sensitive fields, but this node has no key ring; start nodes through Troupe.start (it opens the <stream>_keys bucket)`, { aggregateType: type, aggregateId, eventType: name }, undefined, false);
      }
      const subject = sensitive.subject(p, { aggregateType: type, aggregateId, eventType: name, userId });
      if (typeof subject !== 'string' || subject.length === 0) {
        throw new ValidationError('VALIDATION', `event ${type}.${name}: sensitive.subject returned ${JSON.stringify(subject)}; it must name the person or tenant the data is about`, { aggregateType: type, aggregateId, commandId, eventType: name });
      }
      const cur = ring.currentKey(subject);
      if (cur === undefined) return setPendingKeys(ring.ensure(subject));
      const src = p as Record<string, unknown>;
      const out: Record<string, unknown> = { ...src };
      for (let i = 0; i < fields.length; i++) {
        const f = fields[i]!;
        const v = src[f];
        if (v === undefined || v === null) continue;
        out[f] = encryptValue(cur.key, cur.kid, v, type, aggregateId, eventId, f);
      }
      return out;
    };
  }

  const redacted = sensitive?.redacted ?? REDACTED;
  const read: EventContract['read'] = (stored, payload, eventId, aggregateId, timestamp, ring, noKeys, notes) => {
    const clear = decryptFields(payload, ring, noKeys, redacted, type, aggregateId, eventId, name, notes);
    if (stored === version) return clear;
    let result: ReturnType<typeof runChain>;
    try {
      result = runChain(spec.upcast, stored, clear, { aggregateType: type, name, aggregateId, eventId, timestamp });
    } catch (e) {
      throw new UpcastError(`${type}.${name} ${eventId}: the upcaster from v${stored} threw: ${(e as Error)?.message ?? String(e)}`, { aggregateType: type, aggregateId, eventType: name, eventId, fromVersion: stored, version }, e);
    }
    if (!result.ok) {
      throw new UpcastError(`${type}.${name} ${eventId} is version ${stored}, but this definition knows versions ${spec.upcast.oldest} to ${version}; ${stored > version ? 'deploy the definition that wrote it' : 'add the missing upcasters'}`, { aggregateType: type, aggregateId, eventType: name, eventId, fromVersion: stored, version });
    }
    return result.value;
  };

  return Object.freeze({ aggregateType: type, eventType: name, version, spec, write, check, read });
}

// ── reading commits and envelopes ──────────────────────────────────────────────────────────

/** What the read paths need of a registered actor type. */
export interface ContractsOf {
  readonly def: ActorDefinition<unknown>;
  readonly contracts: ReadonlyMap<string, EventContract>;
  /** True when any event type declares sensitive fields: states are then tracked for sealing. */
  readonly secrets: boolean;
  readonly keySource: KeySource;
}

function loadKids(ring: KeyRing, kids: Set<string>): Promise<void> {
  return Promise.all([...kids].map((k) => ring.load(k))).then(() => undefined);
}

/** Kids of a commit's payloads the ring must load before the commit can be read synchronously. */
function missingKidsOfCommit(ring: KeyRing | null, c: WireCommit): Set<string> | null {
  if (ring === null) return null;
  let kids: Set<string> | null = null;
  const events = c[COMMIT.events];
  for (let i = 0; i < events.length; i++) kids = unknownKids(ring, events[i]![EVENT.payload], kids);
  return kids;
}

const readNotes: ReadNotes = { kids: [], redacted: [] };

/**
 * Fold a commit's events into state: each payload decrypted and upcast to the current version,
 * then given to evolve. Returns a promise only when keys must be loaded first.
 */
export function foldCommit(reg: ContractsOf, state: unknown, c: WireCommit): unknown {
  const ring = reg.keySource.keys;
  const missing = missingKidsOfCommit(ring, c);
  if (missing !== null) return loadKids(ring!, missing).then(() => foldCommit(reg, state, c));
  const aggregateId = c[COMMIT.id];
  const first = c[COMMIT.firstSeq];
  const timestamp = isoTime(c[COMMIT.timestamp]);
  const events = c[COMMIT.events];
  const track = reg.secrets || ring !== null;
  for (let i = 0; i < events.length; i++) {
    const [eventId, eventType, version, payload] = events[i]!;
    const contract = reg.contracts.get(eventType);
    if (contract === undefined) {
      throw new InternalError(`${reg.def.type}: the log holds event type ${eventType}, which the definition no longer declares`, { aggregateType: reg.def.type, eventType });
    }
    const notes = track ? readNotes : null;
    if (notes !== null) {
      notes.kids.length = 0;
      notes.redacted.length = 0;
    }
    const clear = contract.read(version, payload, String(eventId), aggregateId, timestamp, ring, 'throw', notes);
    const next = contract.spec.evolve(state, clear, { sequence: first + i, eventType, timestamp });
    if (notes !== null) carryTaint(state, next, ring, notes.kids);
    state = next;
  }
  return state;
}

/** After decide: the new state also carries the keys its events were encrypted with. */
export function taintDecided(reg: ContractsOf, prev: unknown, next: unknown, events: readonly WireEvent[]): void {
  const kids: string[] = [];
  for (let i = 0; i < events.length; i++) collectKids(events[i]![EVENT.payload], kids);
  carryTaint(prev, next, reg.keySource.keys, kids);
}

/** A commit's events as envelopes of the current definition (decrypted, upcast). Returns a promise only when keys must be loaded. */
export function readCommit(reg: ContractsOf | undefined, c: WireCommit, position: number, ring: KeyRing | null, noKeys: NoKeys): EventEnvelope[] | Promise<EventEnvelope[]> {
  const missing = missingKidsOfCommit(ring, c);
  if (missing !== null) return loadKids(ring!, missing).then(() => readCommit(reg, c, position, ring, noKeys));
  const out = commitEvents(c, position);
  for (let i = 0; i < out.length; i++) out[i] = readEnvelopeSync(reg, out[i]!, ring, noKeys);
  return out;
}

function readEnvelopeSync(reg: ContractsOf | undefined, e: EventEnvelope, ring: KeyRing | null, noKeys: NoKeys): EventEnvelope {
  const notes: ReadNotes = { kids: [], redacted: [] };
  const contract = reg?.contracts.get(e.eventType);
  let payload: unknown;
  let version = e.version;
  if (contract === undefined) {
    payload = decryptFields(e.payload, ring, noKeys, REDACTED, e.aggregateType, e.aggregateId, e.eventId, e.eventType, notes);
  } else {
    payload = contract.read(e.version, e.payload, e.eventId, e.aggregateId, e.timestamp, ring, noKeys, notes);
    version = contract.version;
  }
  if (payload === e.payload && version === e.version) return e;
  const out: EventEnvelope = { ...e, version, payload };
  if (notes.redacted.length > 0) out.redacted = notes.redacted;
  return out;
}

/** One envelope as the current definition reads it. Returns a promise only when a key must be loaded. */
export function readEnvelope(reg: ContractsOf | undefined, e: EventEnvelope, ring: KeyRing | null, noKeys: NoKeys): EventEnvelope | Promise<EventEnvelope> {
  if (ring !== null) {
    const missing = unknownKids(ring, e.payload, null);
    if (missing !== null) return loadKids(ring, missing).then(() => readEnvelopeSync(reg, e, ring, noKeys));
  }
  return readEnvelopeSync(reg, e, ring, noKeys);
}

// ── snapshots ──────────────────────────────────────────────────────────────────────────────

export interface SnapshotLike {
  readonly sv: number;
  readonly version: number;
  readonly position: number;
  readonly state: unknown;
}

/**
 * A snapshot as the current definition can use it: unsealed, its state upcast to the current
 * state version; or undefined, and the actor is rebuilt from the log, when it was written by
 * a newer definition, no state upcaster reaches it, an upcaster throws, or a key it was
 * sealed with is gone. Never a state of another shape.
 */
export function readSnapshot<T extends SnapshotLike>(reg: ContractsOf, snap: T | undefined, aggregateId: string): T | undefined {
  if (snap === undefined) return undefined;
  const def = reg.def;
  let state = snap.state;
  if (isSealed(state)) {
    const opened = unsealState(reg.keySource.keys, def.type, aggregateId, state);
    if (opened === undefined) return undefined;
    state = opened.state;
  }
  if (snap.sv !== def.stateVersion) {
    let result: ReturnType<typeof runChain>;
    try {
      result = runChain(def.stateUpcast, snap.sv, state, { aggregateType: def.type, name: 'state', aggregateId });
    } catch (e) {
      process.emitWarning(`${def.type} ${aggregateId}: the state upcaster from v${snap.sv} threw (${(e as Error)?.message ?? String(e)}); rebuilding from the log`, { code: 'TROUPE_STATE_UPCAST' });
      return undefined;
    }
    if (!result.ok) return undefined;
    carryTaint(state, result.value, reg.keySource.keys, null);
    state = result.value;
  }
  return state === snap.state && snap.sv === def.stateVersion ? snap : { ...snap, sv: def.stateVersion, state };
}

// ── contract tests ─────────────────────────────────────────────────────────────────────────

export interface SchemaProblem {
  /** `payload/amount` style path of the offending value (`payload` for the whole). */
  readonly field: string;
  /** The JSON Schema keyword that failed: `required`, `type`, `maximum`, ... */
  readonly rule: string;
  readonly message: string;
}

export interface SchemaCheck {
  readonly valid: boolean;
  readonly errors: readonly SchemaProblem[];
}

const testAjv = new Ajv({ allErrors: true, strict: false });
const compiled = new WeakMap<object, ValidateFunction>();

/** A compiled validator for a schema, cached (for tests and the test kit; registries compile their own). */
export function compileSchema(schema: JsonSchema): ValidateFunction {
  return validatorFor(schema);
}

function validatorFor(schema: JsonSchema): ValidateFunction {
  let v = compiled.get(schema);
  if (v === undefined) compiled.set(schema, (v = testAjv.compile(schema)));
  return v;
}

function problems(errors: ErrorObject[] | null | undefined): SchemaProblem[] {
  return (errors ?? []).map((e) => ({
    field: `payload${e.instancePath}`,
    rule: e.keyword,
    message: `payload${e.instancePath} ${e.message ?? e.keyword}${e.keyword === 'additionalProperties' ? ` (${String((e.params as { additionalProperty?: string }).additionalProperty)})` : ''}`,
  }));
}

function findSpec(kind: 'event' | 'command', type: string, actors: readonly ActorDefinition<unknown>[] | undefined): { def: ActorDefinition<unknown>; schemas: ReadonlyMap<number, JsonSchema>; name: string } {
  const dot = type.indexOf('.');
  const actorType = dot < 0 ? undefined : type.slice(0, dot);
  const name = dot < 0 ? type : type.slice(dot + 1);
  const defs = (actors ?? definedActors()).filter((d) => (actorType === undefined || d.type === actorType) && (kind === 'event' ? d.events.has(name) : d.commands.has(name)));
  if (defs.length === 0) {
    throw new ValidationError('VALIDATION', `no actor defined in this process declares the ${kind} ${JSON.stringify(type)}; import its module first, or pass the definitions`, { [kind === 'event' ? 'eventType' : 'commandType']: type });
  }
  if (defs.length > 1) {
    throw new ValidationError('VALIDATION', `${kind} ${name} is declared by ${defs.map((d) => d.type).join(' and ')}; name it as <actor type>.${name}`, { [kind === 'event' ? 'eventType' : 'commandType']: type });
  }
  const def = defs[0]!;
  const spec = kind === 'event' ? def.events.get(name)! : def.commands.get(name)!;
  return { def, schemas: spec.schemas, name };
}

function check(kind: 'event' | 'command', type: string, version: number, payload: unknown, actors: readonly ActorDefinition<unknown>[] | undefined): SchemaCheck {
  const { def, schemas, name } = findSpec(kind, type, actors);
  const schema = schemas.get(version);
  if (schema === undefined) {
    const known = [...schemas.keys()].sort((a, b) => a - b);
    return { valid: false, errors: [{ field: 'payload', rule: 'version', message: `${def.type}.${name} has no schema for version ${version}${known.length > 0 ? ` (it has ${known.map((v) => `v${v}`).join(', ')})` : ' (it declares no schema)'}` }] };
  }
  const validate = validatorFor(schema);
  return validate(payload) ? { valid: true, errors: [] } : { valid: false, errors: problems(validate.errors) };
}

/**
 * Contract-test helper: does `payload` satisfy the schema of event `type` (`Deposited` or
 * `Account.Deposited`) at `version`? Looks among the actors defined in this process, or
 * `actors`. Every error names the field and the JSON Schema rule.
 */
export function validateEventSchema(type: string, version: number, payload: unknown, actors?: readonly ActorDefinition<unknown>[]): SchemaCheck {
  return check('event', type, version, payload, actors);
}

/** The same for a command payload. */
export function validateCommandSchema(type: string, version: number, payload: unknown, actors?: readonly ActorDefinition<unknown>[]): SchemaCheck {
  return check('command', type, version, payload, actors);
}

/** An event payload of `version` as the current definition reads it (for tests of upcasters). */
export function upcastEvent(def: ActorDefinition<unknown>, eventType: string, version: number, payload: unknown): unknown {
  const spec = def.events.get(eventType);
  if (spec === undefined) throw new ValidationError('VALIDATION', `actor ${def.type} declares no event ${eventType}`, { aggregateType: def.type, eventType });
  let result: ReturnType<typeof runChain>;
  try {
    result = runChain(spec.upcast, version, payload, { aggregateType: def.type, name: eventType });
  } catch (e) {
    throw new UpcastError(`${def.type}.${eventType}: the upcaster from v${version} threw: ${(e as Error)?.message ?? String(e)}`, { aggregateType: def.type, eventType, fromVersion: version }, e);
  }
  if (!result.ok) throw new UpcastError(`${def.type}.${eventType} has no upcasters from v${version} to v${spec.version}`, { aggregateType: def.type, eventType, fromVersion: version });
  return result.value;
}

/** A snapshot state of `stateVersion` as the current definition reads it; undefined when no state upcaster reaches it. */
export function upcastState(def: ActorDefinition<unknown>, stateVersion: number, state: unknown): unknown {
  const result = runChain(def.stateUpcast, stateVersion, state, { aggregateType: def.type, name: 'state' });
  return result.ok ? result.value : undefined;
}
