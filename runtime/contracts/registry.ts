/**
 * The actor types a node hosts: loaded from module paths (so every worker thread loads the
 * same definitions), with compiled JSON Schema validators for command payloads and one
 * compiled contract per event type (validate, guard, encrypt on the way in; decrypt, upcast
 * on the way out: contracts/contract.ts), and the key ring when any type has sensitive fields.
 */
import type { NatsAuth } from '../connection.ts';
import { Ajv, type ValidateFunction } from 'ajv';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { compileEventContract, schemaError, type ContractsOf, type EventContract, type KeySource } from './contract.ts';
import type { KeyRing } from './crypto.ts';
import { isActorDefinition, type ActorDefinition, type JsonSchema } from '../define.ts';
import { InvalidDefinitionError, ValidationError } from '../errors.ts';
import { openKeyRing } from './keystore.ts';

export { schemaError };

export interface Registered extends ContractsOf {
  readonly def: ActorDefinition<unknown>;
  readonly commandValidators: ReadonlyMap<string, ValidateFunction>;
  readonly eventValidators: ReadonlyMap<string, ValidateFunction>;
  /** Per event type: validate + guard + encrypt before append, decrypt + upcast when read. */
  readonly contracts: ReadonlyMap<string, EventContract>;
  /** True when any of its event types declares sensitive fields. */
  readonly secrets: boolean;
  /** The registry, whose key ring (if any) the contracts use. */
  readonly keySource: KeySource;
}

export class Registry implements KeySource {
  private readonly types = new Map<string, Registered>();
  private readonly ajv = new Ajv({ allErrors: false, strict: false, coerceTypes: false, useDefaults: false });
  /** The key ring for sensitive fields; null until `useKeys` (nodes open it when a type needs it). */
  keys: KeyRing | null = null;

  add(def: ActorDefinition<unknown>): void {
    const existing = this.types.get(def.type);
    if (existing !== undefined) {
      if (existing.def === def) return;
      throw new InvalidDefinitionError(`actor type ${def.type} is defined twice; each type needs one definition`, { aggregateType: def.type });
    }
    const commandValidators = new Map<string, ValidateFunction>();
    for (const [name, spec] of def.commands) if (spec.schema !== undefined) commandValidators.set(name, this.compile(def.type, name, spec.schema));
    const eventValidators = new Map<string, ValidateFunction>();
    for (const [name, spec] of def.events) if (spec.schema !== undefined) eventValidators.set(name, this.compile(def.type, name, spec.schema));
    const contracts = new Map<string, EventContract>();
    for (const [name, spec] of def.events) contracts.set(name, compileEventContract(def, spec, eventValidators.get(name), this));
    const secrets = [...def.events.values()].some((e) => e.sensitive !== null);
    this.types.set(def.type, { def, commandValidators, eventValidators, contracts, secrets, keySource: this });
  }

  /** True when a registered type has sensitive fields, so that nodes need the key ring. */
  get needsKeys(): boolean {
    for (const r of this.types.values()) if (r.secrets) return true;
    return false;
  }

  /** Encrypt and decrypt with this ring (closed by `close()`). */
  useKeys(ring: KeyRing | null): void {
    this.keys = ring;
  }

  async close(): Promise<void> {
    const ring = this.keys;
    this.keys = null;
    await ring?.close();
  }

  private compile(type: string, name: string, schema: JsonSchema): ValidateFunction {
    try {
      return this.ajv.compile(schema);
    } catch (e) {
      throw new InvalidDefinitionError(`actor ${type}: the schema of ${name} is not valid JSON Schema: ${(e as Error).message}`, { aggregateType: type });
    }
  }

  get(type: string): Registered | undefined {
    return this.types.get(type);
  }

  names(): string[] {
    return [...this.types.keys()];
  }

  /**
   * What this process can read: per event type (`<ActorType>.<EventType>`), the highest
   * version its definitions know (older ones are upcast to it). A log holding a higher version,
   * or an event type not listed, cannot be read here. Announced by nodes and consumer
   * instances so that placement gives them only the shards they can read (placement.ts).
   */
  reads(): Record<string, number> {
    return readsOf([...this.types.values()].map((r) => r.def));
  }

  /** The actor types hosted here and their state versions (announced beside `reads`). */
  actorVersions(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [type, r] of this.types) out[type] = r.def.stateVersion;
    return out;
  }

  /** Throws a typed error unless the actor type and command type exist and the payload fits its schema. */
  check(aggregateType: string, commandType: string, payload: unknown, ids: { aggregateId?: string; commandId?: string }): Registered {
    const reg = this.types.get(aggregateType);
    if (reg === undefined) {
      throw new ValidationError('UNKNOWN_ACTOR_TYPE', `unknown actor type ${JSON.stringify(aggregateType)}; this node hosts ${this.names().join(', ') || 'no actor types'}`, { aggregateType, ...ids });
    }
    if (!reg.def.commands.has(commandType)) {
      throw new ValidationError('UNKNOWN_COMMAND_TYPE', `actor ${aggregateType} has no command ${JSON.stringify(commandType)}; it accepts ${[...reg.def.commands.keys()].join(', ')}`, { aggregateType, commandType, ...ids });
    }
    const validate = reg.commandValidators.get(commandType);
    if (validate !== undefined && !validate(payload)) {
      throw schemaError('command', aggregateType, commandType, validate.errors, ids);
    }
    return reg;
  }
}

/** What definitions can read: per `<ActorType>.<EventType>`, the current version of the event (Registry.reads). */
export function readsOf(defs: readonly { readonly type: string; readonly events: ReadonlyMap<string, { readonly version: number }> }[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const def of defs) for (const [name, spec] of def.events) out[`${def.type}.${name}`] = spec.version;
  return out;
}

/** Where a node's key ring lives: the stream's `<stream>_keys` bucket (see keystore.ts, crypto.ts for the master key). */
export interface RegistryKeyOptions {
  readonly servers: string;
  readonly nats?: NatsAuth;
  readonly stream: string;
  readonly replicas?: number;
}

/**
 * Import every module and register each exported actor definition. With `keys`, and when a
 * registered type declares sensitive fields, also open the key ring (close it with
 * `registry.close()`).
 */
export async function loadRegistry(modules: readonly string[], keys?: RegistryKeyOptions): Promise<Registry> {
  const registry = new Registry();
  for (const path of modules) {
    let mod: Record<string, unknown>;
    try {
      mod = await importModule(path);
    } catch (e) {
      if (e instanceof InvalidDefinitionError) throw e;
      throw new InvalidDefinitionError(`cannot load actor module ${path}: ${(e as Error).message}`, { module: path });
    }
    let found = 0;
    for (const value of Object.values(mod)) {
      if (isActorDefinition(value)) {
        registry.add(value as ActorDefinition<unknown>);
        found++;
      }
    }
    if (found === 0) throw new InvalidDefinitionError(`actor module ${path} exports no actor definition (export const x = defineActor({...}))`, { module: path });
  }
  if (keys !== undefined && registry.needsKeys) {
    registry.useKeys(await openKeyRing({ servers: keys.servers, stream: keys.stream, replicas: keys.replicas, ...(keys.nats === undefined ? {} : { nats: keys.nats }) }));
  }
  return registry;
}

const TS_MODULE = /\.(?:ts|mts|cts|tsx)$/;
/** Import errors that mean "this thread cannot load TypeScript as ESM" (no loader, or Node's type stripping refused the syntax). */
const NO_TS_LOADER = new Set(['ERR_UNKNOWN_FILE_EXTENSION', 'ERR_UNSUPPORTED_TYPESCRIPT_SYNTAX', 'ERR_UNSUPPORTED_NODE_MODULES_TYPE_STRIPPING']);

/**
 * Load an actor module (.js, .mjs, .cjs or TypeScript) in this thread (the main thread and each
 * worker load the modules themselves).
 *
 * JavaScript: a plain import. TypeScript: an import first, which works where Node strips types
 * itself (on by default from Node 23.6; Node 22.6+ with --experimental-strip-types) or where a
 * TypeScript hook is registered; otherwise through tsx's require hook, registered in this thread
 * from the tsx the user's project installed (resolved from the module's own folder: Troupe
 * itself does not depend on tsx). With neither, an error that names the fix.
 */
async function importModule(path: string): Promise<Record<string, unknown>> {
  const url = pathToFileURL(path).href;
  try {
    return await import(url) as Record<string, unknown>;
  } catch (e) {
    if (!TS_MODULE.test(path) || !NO_TS_LOADER.has((e as { code?: string }).code ?? '')) throw e;
  }
  const req = createRequire(url);
  if (!('.ts' in req.extensions)) {
    let tsx: string;
    try {
      tsx = req.resolve('tsx/cjs');
    } catch {
      throw new InvalidDefinitionError(
        `cannot load the TypeScript actor module ${path}: this Node.js (${process.version}) does not run TypeScript by itself, and tsx is not installed in your app. ` +
        'Install tsx in your app (npm i -D tsx), or write the actor in JavaScript (.js), or use Node.js >= 23.6 (or 22.6+ with --experimental-strip-types).',
        { module: path },
      );
    }
    req(tsx);
  }
  return req(path) as Record<string, unknown>;
}
