/**
 * The actor types a node hosts: loaded from module paths (so every worker thread loads the
 * same definitions), with compiled JSON Schema validators for command and event payloads.
 */
import { Ajv, type ValidateFunction, type ErrorObject } from 'ajv';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { isActorDefinition, type ActorDefinition, type JsonSchema } from './define.ts';
import { InvalidDefinitionError, ValidationError } from './errors.ts';

export interface Registered {
  readonly def: ActorDefinition<unknown>;
  readonly commandValidators: ReadonlyMap<string, ValidateFunction>;
  readonly eventValidators: ReadonlyMap<string, ValidateFunction>;
}

export class Registry {
  private readonly types = new Map<string, Registered>();
  private readonly ajv = new Ajv({ allErrors: false, strict: false, coerceTypes: false, useDefaults: false });

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
    this.types.set(def.type, { def, commandValidators, eventValidators });
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

export function schemaError(kind: 'command' | 'event', aggregateType: string, name: string, errors: ErrorObject[] | null | undefined, ids: Record<string, unknown>): ValidationError {
  const first = errors?.[0];
  const field = first ? `payload${first.instancePath}` : 'payload';
  const rule = first ? `${first.message ?? first.keyword}${first.keyword === 'additionalProperties' ? ` (${String((first.params as { additionalProperty?: string }).additionalProperty)})` : ''}` : 'is invalid';
  return new ValidationError('SCHEMA_VIOLATION', `${kind} ${aggregateType}.${name}: ${field} ${rule}`, { aggregateType, [kind === 'command' ? 'commandType' : 'eventType']: name, field, rule: first?.keyword, ...ids });
}

/** Import every module and register each exported actor definition. */
export async function loadRegistry(modules: readonly string[]): Promise<Registry> {
  const registry = new Registry();
  for (const path of modules) {
    let mod: Record<string, unknown>;
    try {
      mod = await importModule(path);
    } catch (e) {
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
  return registry;
}

/**
 * ESM import, or require where the thread has no ESM hook for TypeScript: on Node 20, worker
 * threads get tsx's require hook but not its ESM loader.
 */
async function importModule(path: string): Promise<Record<string, unknown>> {
  try {
    return await import(pathToFileURL(path).href) as Record<string, unknown>;
  } catch (e) {
    if ((e as { code?: string }).code !== 'ERR_UNKNOWN_FILE_EXTENSION') throw e;
    return createRequire(pathToFileURL(path).href)(path) as Record<string, unknown>;
  }
}
