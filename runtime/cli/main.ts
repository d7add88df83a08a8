/**
 * The `troupe` command line (run through runtime/bin/troupe.mjs, which installs what is missing).
 *
 *   troupe start [--actors a.ts,b.ts] [--workers N] [--shards N] [--http-port N] [--log-level L]
 *   troupe send <type> <id> <command> [json-payload] [--command-id ID] [--user ID]
 *   troupe state <type> <id>
 *   troupe history <type> <id>
 *
 * `start` connects to NATS_URL, or starts a local nats-server from nats.conf when NATS_URL is
 * unset. The other commands talk to a running node over NATS (NATS_URL or 127.0.0.1:4222).
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { TroupeClient } from '../remote/client.ts';
import { DATA_DIR_ENV, dataPaths } from './paths.ts';
import { isTroupeError } from '../errors.ts';
import { REPO_ROOT, startNatsServer, type NatsServerHandle } from '../testing/nats-server.ts';
import type { LogLevel } from '../ops/log.ts';
import { Troupe } from '../node/system.ts';
import { shutdownTracingSdk, startTracingSdk } from '../ops/tracing.ts';

/** `troupe start` serves /health, /ready and /metrics here unless --http-port or TROUPE_HTTP_PORT say otherwise. */
const DEFAULT_CLI_HTTP_PORT = 9464;

const USAGE = `usage:
  troupe start [--actors a.ts,b.ts] [--workers N] [--shards N] [--data-dir DIR] [--http-port N] [--log-level L]
  troupe send <type> <id> <command> [json-payload] [--command-id ID] [--user ID]
  troupe state <type> <id>
  troupe history <type> <id>

Environment: NATS_URL (default: start a local nats-server from nats.conf), TROUPE_DATA_DIR,
TROUPE_HTTP_PORT (default ${DEFAULT_CLI_HTTP_PORT}; 0 = any free port), TROUPE_LOG_LEVEL (default info),
OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_ENDPOINT (traces; off by default).`;

function fail(message: string, code = 2): never {
  process.stderr.write(`troupe: ${message}\n`);
  process.exit(code);
}

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

async function start(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      actors: { type: 'string' }, workers: { type: 'string' }, shards: { type: 'string' }, 'data-dir': { type: 'string' },
      'http-port': { type: 'string' }, 'log-level': { type: 'string' },
    },
  });
  const httpPort = Number(values['http-port'] ?? (process.env.TROUPE_HTTP_PORT || DEFAULT_CLI_HTTP_PORT));
  const logLevel = values['log-level'] ?? (process.env.TROUPE_LOG_LEVEL || 'info');
  // The entry point sets up the OpenTelemetry SDK (traces, when OTEL_* variables ask for them).
  const traced = await startTracingSdk({ serviceName: 'troupe' });
  // Data under the app's working directory (or --data-dir / TROUPE_DATA_DIR), never the package's folder.
  const paths = dataPaths({ dataDir: values['data-dir'] });
  process.env[DATA_DIR_ENV] = paths.root; // worker threads, the master key and the nats-server lookup agree
  let server: NatsServerHandle | null = null;
  let servers = process.env.NATS_URL;
  if (servers === undefined || servers === '') {
    try {
      server = await startNatsServer({ port: 4222, storeDir: paths.nats, serverName: 'troupe-local' });
    } catch (e) {
      fail(`could not start the local nats-server on 127.0.0.1:4222: ${(e as Error).message}\nIs another Troupe or nats-server running? Stop it, or set NATS_URL to use it.`, 1);
    }
    servers = server.url;
    process.stdout.write(`nats-server ${server.version} listening on ${server.url} (store ${server.storeDir})\n`);
  }
  const actors = (values.actors ?? process.env.TROUPE_ACTORS ?? join(REPO_ROOT, 'actors', 'index.ts')).split(',');
  let node: Troupe;
  try {
    node = await Troupe.start({
      actors,
      servers,
      dataDir: paths.data,
      httpPort,
      logLevel: logLevel as LogLevel,
      ...(values.workers !== undefined ? { workers: Number(values.workers) } : {}),
      ...(values.shards !== undefined ? { shards: Number(values.shards) } : {}),
    });
  } catch (e) {
    await server?.stop();
    await shutdownTracingSdk();
    fail(isTroupeError(e) ? `${e.code}: ${e.message}` : String((e as Error).stack ?? e), 1);
  }
  const types = node.actorTypes().join(', ');
  process.stdout.write(`Troupe node ${node.nodeName} is running: ${node.options.workers} worker${node.options.workers === 1 ? '' : 's'}, ${node.ownedShards.length}/${node.options.shards} shards, actors ${types}.
Send it a command from another terminal:
  npx troupe send Account acct-1 OpenAccount
  npx troupe send Account acct-1 Deposit '{"amount":100}'
  npx troupe state Account acct-1
  npx troupe history Account acct-1
HTTP: ${node.httpUrl ?? 'off'}/health, /ready, /metrics; traces ${traced ? 'on' : 'off'}.
Ctrl-C stops the node${server ? ' and its nats-server' : ''}.
`);
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) {
      process.stdout.write(`${signal}: already stopping (in-flight commits finish first)\n`);
      return;
    }
    stopping = true;
    process.stdout.write(`\n${signal}: stopping…\n`);
    try {
      await node.stop();
      await shutdownTracingSdk();
      await server?.stop();
    } catch (e) {
      process.stderr.write(`troupe: stopping failed: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    }
    process.stdout.write('stopped cleanly\n');
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
}

async function withClient<T>(run: (c: TroupeClient) => Promise<T>): Promise<void> {
  const client = await TroupeClient.connect({ timeoutMs: 10_000 });
  try {
    print(await run(client));
  } catch (e) {
    process.stderr.write(isTroupeError(e) ? `${e.code}: ${e.message}\n` : `${(e as Error).message}\n`);
    process.exitCode = 1;
  } finally {
    await client.close();
  }
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'start':
      return start(rest);
    case 'send': {
      const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { 'command-id': { type: 'string' }, user: { type: 'string' } } });
      const [type, id, command, json] = positionals;
      if (type === undefined || id === undefined || command === undefined) fail(USAGE);
      let payload: unknown = {};
      if (json !== undefined) {
        try { payload = JSON.parse(json); } catch (e) { fail(`the payload is not JSON: ${(e as Error).message}`); }
      }
      return withClient((c) => c.send(type, id, command, payload, {
        ...(values['command-id'] !== undefined ? { commandId: values['command-id'] } : {}),
        ...(values.user !== undefined ? { userId: values.user } : {}),
      }));
    }
    case 'state': {
      const [type, id] = rest;
      if (type === undefined || id === undefined) fail(USAGE);
      return withClient((c) => c.query(type, id));
    }
    case 'history': {
      const [type, id] = rest;
      if (type === undefined || id === undefined) fail(USAGE);
      return withClient((c) => c.history(type, id));
    }
    case undefined:
    case 'help':
    case '--help':
      process.stdout.write(`${USAGE}\n`);
      return;
    default:
      fail(`unknown command ${JSON.stringify(cmd)}\n${USAGE}`);
  }
}

// No top-level await: runtime/bin/run-ts.cjs loads this file through tsx's require hook.
main(process.argv.slice(2)).catch((e: unknown) => {
  process.stderr.write(`troupe: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
});
