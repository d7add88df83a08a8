/**
 * What `troupe start` prints once the node runs: the actors it loaded, where NATS is, and
 * commands to try that fit the first loaded actor (with a payload built from its schema).
 */
import type { JsonSchema } from '../define.ts';
import { DEFAULT_NATS_URL } from '../options.ts';

/** What the banner reads of an actor definition. */
export interface ActorSummary {
  readonly type: string;
  readonly commands: ReadonlyMap<string, { readonly name: string; readonly schema: JsonSchema | undefined }>;
}

export interface BannerInput {
  nodeName: string;
  workers: number;
  ownedShards: number;
  shards: number;
  definitions: readonly ActorSummary[];
  /** The URL the node uses. */
  natsUrl: string;
  /** Set when `troupe start` runs its own nats-server. */
  localNats?: { version: string; storeDir: string; secured?: string } | undefined;
  dataDir: string;
  configFile?: string | undefined;
  httpUrl: string | null;
  traces: boolean;
}

/** A command line that sends something sensible to the first actor type. */
export function suggestedCommands(definitions: readonly ActorSummary[], natsUrl: string): string[] {
  const def = definitions[0];
  if (def === undefined) return [];
  const id = `${def.type.toLowerCase().replace(/[^a-z0-9]+/g, '-')}-1`;
  const nats = natsUrl === DEFAULT_NATS_URL ? '' : ` --nats-url ${natsUrl}`;
  const lines: string[] = [];
  const first = [...def.commands.values()][0];
  if (first !== undefined) {
    const payload = payloadSkeleton(first.schema);
    const arg = payload === undefined ? '' : ` ${shellQuote(JSON.stringify(payload))}`;
    lines.push(`npx troupe send ${def.type} ${id} ${first.name}${arg}${nats}`);
  }
  lines.push(`npx troupe state ${def.type} ${id}${nats}`);
  lines.push(`npx troupe history ${def.type} ${id}${nats}`);
  return lines;
}

/**
 * A payload that fits `schema` well enough to show its shape: its required properties (all of
 * them when none is required), each with a value of its type. Undefined when the command takes
 * an empty payload or has no schema (then `send` sends {}).
 */
export function payloadSkeleton(schema: JsonSchema | undefined): Record<string, unknown> | undefined {
  if (schema === undefined) return undefined;
  const value = sampleOf(schema, 0);
  if (typeof value !== 'object' || value === null || Array.isArray(value) || Object.keys(value).length === 0) return undefined;
  return value as Record<string, unknown>;
}

type Schema = {
  type?: string | string[]; properties?: Record<string, Schema>; required?: string[];
  enum?: unknown[]; const?: unknown; default?: unknown; examples?: unknown[];
  minimum?: number; exclusiveMinimum?: number; maximum?: number; items?: Schema; oneOf?: Schema[]; anyOf?: Schema[];
};

function sampleOf(raw: unknown, depth: number): unknown {
  if (typeof raw !== 'object' || raw === null || depth > 4) return null;
  const s = raw as Schema;
  if (s.const !== undefined) return s.const;
  if (Array.isArray(s.examples) && s.examples.length > 0) return s.examples[0];
  if (s.default !== undefined) return s.default;
  if (Array.isArray(s.enum) && s.enum.length > 0) return s.enum[0];
  const alt = s.oneOf?.[0] ?? s.anyOf?.[0];
  const type = Array.isArray(s.type) ? s.type.find((t) => t !== 'null') ?? s.type[0] : s.type ?? (s.properties !== undefined ? 'object' : undefined);
  switch (type) {
    case 'object': {
      const props = s.properties ?? {};
      const names = s.required !== undefined && s.required.length > 0 ? s.required : Object.keys(props);
      const out: Record<string, unknown> = {};
      for (const n of names) out[n] = sampleOf(props[n] ?? {}, depth + 1);
      return out;
    }
    case 'integer':
    case 'number':
    {
      const low = typeof s.minimum === 'number' ? s.minimum : typeof s.exclusiveMinimum === 'number' ? s.exclusiveMinimum + 1 : undefined;
      const n = Math.max(low ?? 100, 100);
      // 100 reads as an amount; a range below it gets its lowest value.
      return typeof s.maximum === 'number' && n > s.maximum ? low ?? s.maximum : n;
    }
    case 'string': return 'text';
    case 'boolean': return true;
    case 'array': return [];
    case 'null': return null;
    default: return alt !== undefined ? sampleOf(alt, depth + 1) : 'text';
  }
}

/** `text` in single quotes for a POSIX shell. */
export function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

export function banner(b: BannerInput): string {
  const types = b.definitions.map((d) => d.type);
  const local = b.localNats;
  const nats = local !== undefined
    ? local.secured !== undefined
      ? `${b.natsUrl}, its own nats-server ${local.version}: secured: credentials in ${local.secured} (log in ${local.storeDir})`
      : `${b.natsUrl}, its own nats-server ${local.version}: local, open: for development (log in ${local.storeDir})`
    : `${b.natsUrl} (given)`;
  const tries = suggestedCommands(b.definitions, b.natsUrl);
  // A secured server answers only its users: the commands to try read the client's credentials.
  const env = local?.secured !== undefined ? `env $(cat ${shellQuote(`${local.secured}/client.env`)}) ` : '';
  return [
    `Troupe node ${b.nodeName} is running: ${b.workers} worker${b.workers === 1 ? '' : 's'}, ${b.ownedShards}/${b.shards} shards.`,
    `Actors: ${types.join(', ')}${b.configFile !== undefined ? ` (from ${b.configFile})` : ''}`,
    `NATS: ${nats}`,
    `Data: ${b.dataDir}`,
    ...(tries.length > 0 ? ['Send it a command from another terminal:', ...tries.map((t) => `  ${env}${t}`)] : []),
    b.httpUrl !== null ? `HTTP: ${b.httpUrl}/health, /ready, /metrics; traces ${b.traces ? 'on' : 'off'}.` : `HTTP: off; traces ${b.traces ? 'on' : 'off'}.`,
    `Ctrl-C stops the node${b.localNats !== undefined ? ' and its nats-server' : ''}.`,
    '',
  ].join('\n');
}
