/**
 * The config file of `troupe start`: `troupe.config.json`, or a `.mjs` / `.js` / `.ts` module
 * whose default export is the node options (TroupeOptions). Found in the working directory,
 * or named with --config. Paths in it (actors, dataDir) are relative to the file itself.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { TroupeOptions } from '../options.ts';
import { CliError, EXIT_REFUSED, EXIT_USAGE } from './exit.ts';

/** Looked for in this order; the first found wins. */
export const CONFIG_NAMES = ['troupe.config.json', 'troupe.config.mjs', 'troupe.config.js', 'troupe.config.ts'] as const;

/** Every key of TroupeOptions: anything else in a config file is a typo, reported as such. */
const KNOWN_KEYS: ReadonlySet<string> = new Set<keyof TroupeOptions>([
  'actors', 'servers', 'stream', 'subjectPrefix', 'shards', 'workers', 'dataDir', 'replicas', 'maxBatchBytes',
  'maxBatchCommits', 'lingerMs', 'maxCommandBytes', 'ackTimeoutMs', 'maxQueuedCommands', 'maxResidentActors',
  'idleActorMs', 'commandIdTtlMs', 'duplicateWindowMs', 'ownership', 'leaseTtlMs', 'settleMs', 'maxConcurrentMoves', 'restartGraceMs', 'nodeName', 'source', 'serve',
  'logLevel', 'httpPort', 'httpHost', 'maxDlqDepth', 'maxConsumerLag',
]);

export interface LoadedConfig {
  /** Absolute path of the file. */
  readonly path: string;
  /** Its options, with `actors` and `dataDir` made absolute. */
  readonly options: Partial<TroupeOptions>;
}

/** The config file in `dir`, if any. */
export function findConfig(dir: string): string | undefined {
  for (const name of CONFIG_NAMES) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

/**
 * ESM import, or require where there is no ESM hook for TypeScript (tsx's require hook runs
 * the command line from source on Node 20).
 */
export async function importModule(path: string): Promise<Record<string, unknown>> {
  try {
    return await import(pathToFileURL(path).href) as Record<string, unknown>;
  } catch (e) {
    if ((e as { code?: string }).code !== 'ERR_UNKNOWN_FILE_EXTENSION') throw e;
    return createRequire(pathToFileURL(path).href)(path) as Record<string, unknown>;
  }
}

/** Read and check a config file; relative module paths in it resolve against its folder. */
export async function loadConfig(file: string): Promise<LoadedConfig> {
  const path = resolve(file);
  if (!existsSync(path)) throw new CliError(`the config file ${path} does not exist`, EXIT_USAGE);
  let raw: unknown;
  if (path.endsWith('.json')) {
    try {
      raw = JSON.parse(readFileSync(path, 'utf8'));
    } catch (e) {
      throw new CliError(`${path} is not valid JSON: ${(e as Error).message}`, EXIT_REFUSED, { cause: e });
    }
  } else {
    let mod: Record<string, unknown>;
    try {
      mod = await importModule(path);
    } catch (e) {
      const hint = path.endsWith('.ts')
        ? ' (a .ts config needs Node with type stripping, or tsx installed in your app; or write troupe.config.mjs)'
        : '';
      throw new CliError(`cannot load the config file ${path}: ${(e as Error).message}${hint}`, EXIT_REFUSED, { cause: e });
    }
    raw = mod.default;
    // A CommonJS module.exports = {...} arrives as the default export; a module without one is a mistake.
    if (raw === undefined) throw new CliError(`the config file ${path} has no default export: write \`export default { actors: ['./actors.js'] }\``, EXIT_REFUSED);
  }
  return { path, options: checkConfig(raw, path) };
}

/** Check the shape of a config file's options and resolve its paths against `path`'s folder. */
export function checkConfig(raw: unknown, path: string): Partial<TroupeOptions> {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new CliError(`the config file ${path} must hold an object of node options, like { "actors": ["./actors.js"] }`, EXIT_REFUSED);
  }
  const unknown = Object.keys(raw).filter((k) => !KNOWN_KEYS.has(k));
  if (unknown.length > 0) {
    throw new CliError(`the config file ${path} has unknown option${unknown.length === 1 ? '' : 's'} ${unknown.join(', ')}; the options are those of Troupe.start (docs/cli.md)`, EXIT_REFUSED);
  }
  const base = dirname(path);
  const options = { ...(raw as Partial<TroupeOptions>) };
  if (options.actors !== undefined) {
    const list: unknown = typeof options.actors === 'string' ? [options.actors] : options.actors;
    if (!Array.isArray(list) || list.length === 0 || !list.every((a) => typeof a === 'string' || a instanceof URL)) {
      throw new CliError(`actors in ${path} must be a list of module paths, like ["./actors.js"]`, EXIT_REFUSED);
    }
    options.actors = (list as (string | URL)[]).map((a) => relativeTo(base, a));
  }
  if (typeof options.dataDir === 'string') options.dataDir = relativeTo(base, options.dataDir);
  return options;
}

function relativeTo(base: string, p: string | URL): string {
  if (p instanceof URL) return fileURLToPath(p);
  if (p.startsWith('file:')) return fileURLToPath(p);
  return isAbsolute(p) ? p : resolve(base, p);
}
