/**
 * `troupe start`: run a node. Options come from flags, then environment variables, then the
 * config file (config.ts), then defaults. Without NATS_URL / --nats-url / `servers` in the
 * config, the node starts its own nats-server (local, open: for development) on --nats-port.
 */
import { describeServers, redactSecrets, resolveNatsAuth } from '../connection.ts';
import { existsSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { isActorDefinition, type ActorDefinition } from '../define.ts';
import { isTroupeError } from '../errors.ts';
import { Troupe } from '../node/system.ts';
import type { TroupeOptions } from '../options.ts';
import type { LogLevel } from '../ops/log.ts';
import { shutdownTracingSdk, startTracingSdk } from '../ops/tracing.ts';
import { REPO_ROOT, startNatsServer, type NatsServerHandle } from '../testing/nats-server.ts';
import { banner } from './banner.ts';
import { findConfig, importModule, loadConfig, type LoadedConfig } from './config.ts';
import { CliError, EXIT_REFUSED, EXIT_RETRYABLE, EXIT_USAGE } from './exit.ts';
import { dataRoot } from './paths.ts';
import { ensureSecureConfig, type SecureFiles } from './secure.ts';
import { DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX } from '../options.ts';

/** `troupe start` serves /health, /ready and /metrics here unless --http-port or TROUPE_HTTP_PORT say otherwise. */
export const DEFAULT_CLI_HTTP_PORT = 9464;
/** The port of the nats-server `troupe start` runs itself, unless --nats-port or TROUPE_NATS_PORT say otherwise. */
export const DEFAULT_NATS_PORT = 4222;
export const DEFAULT_CLI_LOG_LEVEL: LogLevel = 'info';

/** The flags of `troupe start`, as commander parsed them (environment variables included). */
export interface StartFlags {
  config?: string;
  actors?: string;
  natsUrl?: string;
  natsPort?: number;
  workers?: number;
  shards?: number;
  dataDir?: string;
  httpPort?: number | false;
  logLevel?: LogLevel;
  /** Run the local nats-server with the locked-down configuration (secure.ts) and connect as its `node` user. */
  secure?: boolean;
  /** With --secure: consumer names the `consumer` user may run. */
  consumers?: string;
}

/** The example actors of the Troupe repository; absent from the installed package. */
function exampleActors(): string | undefined {
  const path = join(REPO_ROOT, 'actors', 'index.ts');
  return !REPO_ROOT.split(sep).includes('node_modules') && existsSync(path) ? path : undefined;
}

const NO_ACTORS = 'no actors to run: write a troupe.config.json here ({ "actors": ["./actors.js"] }), ' +
  'pass --actors ./actors.js (or TROUPE_ACTORS), or scaffold an app with `npx troupe init my-app`';

/** The node options from flags over the config file; `servers` undefined means "start a local nats-server". */
export async function resolveStart(flags: StartFlags, cwd = process.cwd(), examples: () => string | undefined = exampleActors): Promise<{ options: TroupeOptions; config?: LoadedConfig; root: string }> {
  const file = flags.config ?? findConfig(cwd);
  const config = file !== undefined ? await loadConfig(resolve(cwd, file)) : undefined;
  const fromFile = config?.options ?? {};
  const root = dataRoot(flags.dataDir);
  let actors: readonly (string | URL)[] | undefined;
  if (flags.actors !== undefined && flags.actors !== '') actors = flags.actors.split(',').map((a) => resolve(cwd, a.trim()));
  else {
    const example = fromFile.actors === undefined ? examples() : undefined;
    actors = fromFile.actors ?? (example !== undefined ? [example] : undefined);
  }
  if (actors === undefined) throw new CliError(NO_ACTORS, EXIT_USAGE);
  const servers = flags.natsUrl !== undefined && flags.natsUrl !== '' ? flags.natsUrl : fromFile.servers;
  const options: TroupeOptions = {
    ...fromFile,
    actors,
    // --data-dir is the data folder; the node's LMDB is its `data` subfolder.
    dataDir: flags.dataDir !== undefined || fromFile.dataDir === undefined ? join(root, 'data') : fromFile.dataDir,
    httpPort: flags.httpPort ?? fromFile.httpPort ?? DEFAULT_CLI_HTTP_PORT,
    logLevel: flags.logLevel ?? fromFile.logLevel ?? DEFAULT_CLI_LOG_LEVEL,
    ...(flags.workers !== undefined ? { workers: flags.workers } : {}),
    ...(flags.shards !== undefined ? { shards: flags.shards } : {}),
  };
  if (servers === undefined) delete options.servers;
  else options.servers = servers;
  return { options, ...(config !== undefined ? { config } : {}), root };
}

async function startLocalNats(port: number, root: string, config?: string): Promise<NatsServerHandle> {
  try {
    return await startNatsServer({ port, storeDir: join(root, 'nats'), serverName: 'troupe-local', ...(config !== undefined ? { config } : {}) });
  } catch (e) {
    const text = String((e as Error)?.message ?? e);
    if (/address already in use/i.test(text)) {
      throw new CliError(`port ${port} is taken (another nats-server or Troupe node?): use that server with --nats-url nats://127.0.0.1:${port}, ` +
        `or start this one on another port with --nats-port ${port + 1} (TROUPE_NATS_PORT)`, EXIT_REFUSED, { cause: e });
    }
    const first = text.split('\n')[0] ?? text;
    throw new CliError(`could not start a local nats-server on 127.0.0.1:${port}: ${first} (set NATS_URL to use a running one)`, EXIT_REFUSED, { cause: e });
  }
}

/** The actor definitions exported by the node's modules (already imported by the node: cached). */
async function definitionsOf(modules: readonly string[]): Promise<ActorDefinition<unknown>[]> {
  const defs: ActorDefinition<unknown>[] = [];
  for (const m of modules) {
    for (const v of Object.values(await importModule(m))) if (isActorDefinition(v) && !defs.includes(v)) defs.push(v as ActorDefinition<unknown>);
  }
  return defs;
}

/** The message of the innermost cause of `e`. */
function rootCause(e: unknown): string {
  let c = e;
  while (typeof (c as { cause?: unknown })?.cause === 'object' && (c as { cause?: unknown }).cause !== null) c = (c as { cause: unknown }).cause;
  return (c as Error)?.message ?? String(c);
}

export async function start(flags: StartFlags): Promise<void> {
  const { options, config, root } = await resolveStart(flags);
  // Worker threads, the development master key and the nats-server lookup use the same folder.
  process.env.TROUPE_DATA_DIR = root;
  // The entry point sets up the OpenTelemetry SDK (traces, when OTEL_* variables ask for them).
  const traced = await startTracingSdk({ serviceName: 'troupe' });
  // Signals are handled from here on, so none kills the process half-way: one that arrives
  // while the node starts waits for it, then stops it (a supervisor may signal as soon as it
  // reads the banner, or before); a second one during start exits at once.
  let stopOn: ((signal: string, handOff: boolean) => void) | null = null;
  let early: { signal: string; handOff: boolean } | null = null;
  const onSignal = (signal: string, handOff: boolean) => {
    if (stopOn !== null) return stopOn(signal, handOff);
    if (early !== null) {
      process.stderr.write(`troupe: ${signal} again while starting: exiting now\n`);
      process.exit(1);
    }
    early = { signal, handOff };
    process.stdout.write(`${signal}: stopping as soon as the node has started (${signal} again exits now)\n`);
  };
  // SIGTERM, SIGINT: hand every shard off to the other nodes, then exit. SIGUSR2: stop to
  // restart under the same name: keep the leases, so the others move none of the shards while
  // the node is away (up to restartGraceMs); restarted, it takes them back at once.
  process.on('SIGINT', () => onSignal('SIGINT', true));
  process.on('SIGTERM', () => onSignal('SIGTERM', true));
  process.on('SIGUSR2', () => onSignal('SIGUSR2', false));
  let server: NatsServerHandle | null = null;
  let secured: SecureFiles | undefined;
  if (flags.secure === true) {
    if (options.servers !== undefined) {
      await shutdownTracingSdk();
      throw new CliError('--secure runs its own locked-down nats-server: drop --nats-url / NATS_URL (or `servers` in the config), ' +
        'or run your server with the generated configuration (docs/security.md) and give the node its credentials (NATS_USER/NATS_PASSWORD)', EXIT_USAGE);
    }
    const consumers = (flags.consumers ?? '').split(',').map((c) => c.trim()).filter((c) => c !== '');
    try {
      secured = ensureSecureConfig(join(root, 'secure'), { stream: options.stream ?? DEFAULT_STREAM, subjectPrefix: options.subjectPrefix ?? DEFAULT_SUBJECT_PREFIX, consumers });
    } catch (e) {
      await shutdownTracingSdk();
      throw new CliError(`cannot write the secure configuration in ${join(root, 'secure')}: ${(e as Error).message}`, EXIT_USAGE, { cause: e });
    }
    options.nats = { ...options.nats, user: secured.users.node.user, password: secured.users.node.password };
  }
  if (options.servers === undefined) {
    server = await startLocalNats(flags.natsPort ?? DEFAULT_NATS_PORT, root, secured?.configFile);
    options.servers = server.url;
  }
  let node: Troupe;
  try {
    node = await Troupe.start(options);
  } catch (e) {
    await server?.stop();
    await shutdownTracingSdk();
    if (isTroupeError(e, 'JOURNAL_UNAVAILABLE') && server === null) {
      const why = redactSecrets(rootCause(e), resolveNatsAuth(options.nats), options.servers);
      throw new CliError(`cannot reach NATS at ${describeServers(options.servers)} (${why}): check --nats-url / NATS_URL and NATS_USER/NATS_PASSWORD, NATS_CREDS or NATS_TOKEN, or unset NATS_URL to let \`troupe start\` run its own nats-server`, EXIT_RETRYABLE, { cause: e });
    }
    throw e;
  }
  let stopping = false;
  const shutdown = async (signal: string, handOff: boolean) => {
    if (stopping) {
      process.stdout.write(`${signal}: already stopping (in-flight commits finish first)\n`);
      return;
    }
    stopping = true;
    process.stdout.write(handOff ? `\n${signal}: stopping, handing the shards off…\n` : `\n${signal}: stopping to restart, keeping the shards…\n`);
    try {
      await node.stop({ handOff });
      await shutdownTracingSdk();
      await server?.stop();
    } catch (e) {
      process.stderr.write(`troupe: stopping failed: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    }
    process.stdout.write('stopped cleanly\n');
    process.exit(0);
  };
  stopOn = (signal, handOff) => void shutdown(signal, handOff);
  // Set by onSignal while the node started (the compiler cannot see the handler's writes).
  const pending = early as { signal: string; handOff: boolean } | null;
  if (pending !== null) {
    stopOn(pending.signal, pending.handOff);
    return;
  }
  const definitions = await definitionsOf(node.options.actors);
  process.stdout.write(banner({
    nodeName: node.nodeName,
    workers: node.options.workers,
    ownedShards: node.ownedShards.length,
    shards: node.options.shards,
    definitions: definitions.filter((d) => node.actorTypes().includes(d.type)),
    natsUrl: describeServers(node.options.servers),
    localNats: server !== null ? { version: server.version, storeDir: server.storeDir, ...(secured !== undefined ? { secured: secured.dir } : {}) } : undefined,
    dataDir: root,
    configFile: config?.path,
    httpUrl: node.httpUrl,
    traces: traced,
  }));
}
