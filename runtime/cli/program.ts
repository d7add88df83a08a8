/**
 * The commands, options and help of the `troupe` command line (commander). main.ts runs it.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { isLogLevel } from '../ops/log.ts';
import { CONFIG_NAMES } from './config.ts';
import { EXIT_CODES_HELP, exitCodeOf, isExpected, oneLine } from './exit.ts';
import { scaffold } from './init.ts';
import { clusterStatus, type ClusterFlags } from './cluster.ts';
import { dlqDiscard, dlqList, dlqReplay, dlqShow, dlqStats, type DlqFlags } from './dlq.ts';
import { tail, type TailFlags } from './tail.ts';
import { natsCredentialFlags, tokenFlags } from './credentials.ts';
import { actors, consumers, projections, rebuild, stats, timers, type ConsoleFlags } from './console.ts';
import { keysRetire, keysRotate, keysStatus, type KeysFlags } from './keys.ts';
import { history, send, state, type ClientFlags, type SendFlags } from './remote.ts';
import { DEFAULT_CLI_HTTP_PORT, DEFAULT_CLI_LOG_LEVEL, DEFAULT_NATS_PORT, start, type StartFlags } from './start.ts';

/** The version of the troupe package (runtime/cli/main.ts and dist/cli/main.js are two folders deep). */
export function troupeVersion(): string {
  const pkg = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'package.json');
  return (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version;
}

function int(min: number, max: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected an integer from ${min} to ${max}.`);
    return n;
  };
}

function httpPort(value: string): number | false {
  if (value === 'off' || value === 'false') return false;
  return int(0, 65535)(value);
}

function logLevel(value: string): StartFlags['logLevel'] {
  if (!isLogLevel(value)) throw new InvalidArgumentError('expected one of fatal, error, warn, info, debug, trace, silent.');
  return value;
}

const ENVIRONMENT_HELP = `Environment:
  NATS_URL             NATS servers, comma separated (start: default runs its own nats-server;
                       send/state/history: default nats://127.0.0.1:4222)
  NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_NKEY (seed or seed file), NATS_CREDS (.creds file)
  NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY            how every command authenticates to NATS
                       (or the flags --nats-user, --nats-password, --nats-token, --nkey, --creds,
                       --tls-ca, --tls-cert, --tls-key; a flag wins over its variable)
  TROUPE_TOKEN, TROUPE_TOKEN_FILE   send/state/history: the signed token for a node that verifies
                       callers (or --token, --token-file)
  TROUPE_MASTER_KEY_FILE   master key file (chmod 600; see \`troupe keys --help\`), or TROUPE_MASTER_KEY(S)
  TROUPE_NATS_PORT     port of the nats-server that \`troupe start\` runs itself (default ${DEFAULT_NATS_PORT})
  TROUPE_ACTORS        actor modules, comma separated
  TROUPE_WORKERS, TROUPE_SHARDS, TROUPE_DATA_DIR, TROUPE_HTTP_PORT, TROUPE_LOG_LEVEL
  OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_ENDPOINT   traces (off by default)`;

function natsUrlOption(forStart: boolean): Option {
  return new Option('--nats-url <url>', forStart
    ? 'NATS servers to use, comma separated (default: run a local nats-server)'
    : 'NATS servers of the node (default: nats://127.0.0.1:4222)').env('NATS_URL');
}

/** The flags of the commands that talk to a node: NATS credentials and the caller's token. */
function remoteFlags(cmd: Command): Command {
  return tokenFlags(natsCredentialFlags(cmd));
}

function clientFlags(cmd: Command): ClientFlags {
  return cmd.opts<ClientFlags>();
}

export function program(): Command {
  const version = troupeVersion();
  const p = new Command('troupe')
    .description('Troupe: actors on worker threads, NATS JetStream as the log, LMDB snapshots.')
    .version(version, '-V, --version', 'print the version of troupe')
    .helpOption('-h, --help', 'show help (also `troupe <command> --help`)')
    .option('--debug', 'print stack traces of failures')
    .exitOverride()
    .configureOutput({ outputError: () => {} })
    .showSuggestionAfterError(true)
    .addHelpText('after', `\n${EXIT_CODES_HELP}\n\n${ENVIRONMENT_HELP}\n\nThe manual: docs/cli.md`);

  p.command('start')
    .description('run a Troupe node: your actors on worker threads, serving commands over NATS')
    .addOption(new Option('-c, --config <file>', `config file (default: ${CONFIG_NAMES.join(', ')} in the working directory)`))
    .addOption(new Option('--actors <modules>', 'actor modules, comma separated (overrides the config file)').env('TROUPE_ACTORS'))
    .addOption(natsUrlOption(true))
    .addOption(new Option('--nats-port <port>', `port of the nats-server it runs itself (default ${DEFAULT_NATS_PORT})`).env('TROUPE_NATS_PORT').argParser(int(1, 65535)))
    .addOption(new Option('--workers <n>', 'worker threads (default: cores - 1, 1 to 8)').env('TROUPE_WORKERS').argParser(int(1, 256)))
    .addOption(new Option('--shards <n>', 'shards; fixed per deployment (default 16)').env('TROUPE_SHARDS').argParser(int(1, 65536)))
    .addOption(new Option('--data-dir <dir>', 'data folder: LMDB in <dir>/data, the local nats-server\'s log in <dir>/nats (default ./.troupe)').env('TROUPE_DATA_DIR'))
    .addOption(new Option('--http-port <port>', `port of /health, /ready, /metrics; 0 = any free port, off = none (default ${DEFAULT_CLI_HTTP_PORT})`).env('TROUPE_HTTP_PORT').argParser(httpPort))
    .addOption(new Option('--log-level <level>', `fatal, error, warn, info, debug, trace or silent (default ${DEFAULT_CLI_LOG_LEVEL})`).env('TROUPE_LOG_LEVEL').argParser(logLevel))
    .addOption(new Option('--secure', 'run the local nats-server locked down: users node, client, consumer, admin with generated passwords in <data-dir>/secure').env('TROUPE_SECURE'))
    .addOption(new Option('--consumers <names>', 'with --secure: consumer names the consumer user may run, comma separated').env('TROUPE_CONSUMERS'))
    .addHelpText('after', `
Flags and environment variables override the config file. Examples:
  npx troupe start
  npx troupe start --secure --consumers audit,projector
  npx troupe start --actors ./src/actors.js --nats-port 4223
  NATS_URL=nats://nats.internal:4222 npx troupe start --config deploy/troupe.config.mjs`)
    .action((_opts, cmd: Command) => start(cmd.opts<StartFlags>()));

  remoteFlags(p.command('send')
    .description('send a command to an actor; prints the result as JSON')
    .argument('<type>', 'actor type, e.g. Account')
    .argument('<id>', 'actor id, e.g. acct-1')
    .argument('<command>', 'command type, e.g. Deposit')
    .argument('[payload]', 'the command\'s payload, a JSON object (default {})')
    .option('--command-id <id>', 'idempotency key: a command re-sent with the same id is answered once')
    .option('--user <id>', 'user id recorded with the events (ignored by a node that verifies callers: it records the token\'s principal)')
    .addOption(natsUrlOption(false))
    .addOption(new Option('--timeout <ms>', 'how long to wait for the answer (default 10000)').argParser(int(1, 3_600_000)))
    .addHelpText('after', `
Example:
  npx troupe send Account acct-1 Deposit '{"amount":100}'
  TROUPE_TOKEN=$(cat alice.jwt) NATS_CREDS=client.creds npx troupe send Account acct-1 Deposit '{"amount":100}'`))
    .action((type: string, id: string, command: string, payload: string | undefined, _opts, cmd: Command) => send(type, id, command, payload, cmd.opts<SendFlags>()));

  remoteFlags(p.command('state')
    .description('print an actor\'s state and version as JSON')
    .argument('<type>', 'actor type')
    .argument('<id>', 'actor id')
    .addOption(natsUrlOption(false))
    .addOption(new Option('--timeout <ms>', 'how long to wait for the answer (default 10000)').argParser(int(1, 3_600_000))))
    .action((type: string, id: string, _opts, cmd: Command) => state(type, id, clientFlags(cmd)));

  remoteFlags(p.command('history')
    .description('print an actor\'s events as JSON')
    .argument('<type>', 'actor type')
    .argument('<id>', 'actor id')
    .addOption(natsUrlOption(false))
    .addOption(new Option('--timeout <ms>', 'how long to wait for the answer (default 10000)').argParser(int(1, 3_600_000))))
    .action((type: string, id: string, _opts, cmd: Command) => history(type, id, clientFlags(cmd)));

  natsCredentialFlags(p.command('cluster')
    .description('look at a cluster of Troupe nodes')
    .command('status'))
    .description('nodes with their state, version and shards; moves under way; lease ages (from NATS KV)')
    .addOption(natsUrlOption(false))
    .option('--stream <name>', 'the deployment\'s stream (default TROUPE)')
    .option('--json', 'print JSON (the same as GET /cluster on a node\'s HTTP port)')
    .addHelpText('after', `
Example:
  NATS_URL=nats://nats.internal:4222 npx troupe cluster status --json`)
    .action((_opts, cmd: Command) => clusterStatus(cmd.opts<ClusterFlags>()));
  const keys = p.command('keys')
    .description('the master keys that wrap the encryption keys of sensitive fields: status, rotate, retire')
    .addHelpText('after', `
Rotating while nodes run:
  troupe keys rotate          a new master key becomes active; every stored key is wrapped under it too
  (restart nodes and consumers, so that they hold the new key)
  troupe keys retire <id>     the old key's wrappings are removed and it leaves the key file
Keys come from ${'$'}TROUPE_MASTER_KEY_FILE (or --key-file), else TROUPE_MASTER_KEYS / TROUPE_MASTER_KEY, else
the development key in the data folder. The key file must be chmod 600. See docs/security.md.`);
  const keyFlags = (c: Command) => natsCredentialFlags(c)
    .addOption(natsUrlOption(false))
    .addOption(new Option('--stream <name>', 'the stream whose key bucket (<stream>_keys) holds the keys (default TROUPE)').env('TROUPE_STREAM'))
    .addOption(new Option('--key-file <file>', 'the master key file to read and rewrite').env('TROUPE_MASTER_KEY_FILE'))
    .addOption(new Option('--data-dir <dir>', 'data folder holding the development master key (default ./.troupe)').env('TROUPE_DATA_DIR'));
  keyFlags(keys.command('status').description('print the master key ids and how many stored keys each wraps'))
    .action((_opts, cmd: Command) => keysStatus(cmd.opts<KeysFlags>()));
  keyFlags(keys.command('rotate').description('add a new, active master key and wrap every stored key under it (nodes keep running)'))
    .action((_opts, cmd: Command) => keysRotate(cmd.opts<KeysFlags>()));
  keyFlags(keys.command('retire').description('remove an old master key: rewrap what only it wraps, then drop it').argument('<id>', 'the master key id (troupe keys status)'))
    .action((id: string, _opts, cmd: Command) => keysRetire(id, cmd.opts<KeysFlags>()));

  natsCredentialFlags(p.command('tail'))
    .description('print the log as event envelopes, a readable line (or --json line) per event')
    .addOption(natsUrlOption(false))
    .addOption(new Option('--stream <name>', 'the deployment\'s stream (default TROUPE)').env('TROUPE_STREAM'))
    .option('--type <type>', 'only events of this actor type')
    .option('--id <id>', 'only events of this actor (with --type; reads only its shard)')
    .option('--from <pos|time>', 'start at a stream position (e.g. 120), a time (2026-12-03T09:00:00Z) or an age (15m, 2h); default: the beginning')
    .option('-f, --follow', 'keep printing events as they are committed (Ctrl-C stops)')
    .option('--json', 'one JSON event envelope per line')
    .addOption(new Option('--actors <modules>', 'actor modules: payloads are upcast to the current version of their event').env('TROUPE_ACTORS'))
    .addOption(new Option('--key-file <file>', 'master key file: sensitive fields are decrypted (without a key they show the redacted marker)').env('TROUPE_MASTER_KEY_FILE'))
    .addOption(new Option('--data-dir <dir>', 'data folder whose development master key to use when no key is set (default ./.troupe)').env('TROUPE_DATA_DIR'))
    .addHelpText('after', `
Examples:
  npx troupe tail --type Account --id acct-1
  npx troupe tail --from 15m --follow --json | jq .eventType`)
    .action((_opts, cmd: Command) => tail(cmd.opts<TailFlags>()));

  const dlq = p.command('dlq')
    .description('the dead-letter queue: list, show, replay, discard, stats')
    .addHelpText('after', `
Replaying runs the event through its consumer's handler again, so an instance of that consumer
must be running (it answers replay requests over NATS); on success the dead letter is deleted.`);
  const dlqFlags = (c: Command, filters: boolean) => {
    natsCredentialFlags(c).addOption(natsUrlOption(false))
      .addOption(new Option('--stream <name>', 'the deployment\'s log stream (its DLQ is <stream>_DLQ; default TROUPE)').env('TROUPE_STREAM'))
      .option('--json', 'print JSON');
    if (filters) {
      c.option('--consumer <name>', 'only dead letters of this consumer')
        .option('--aggregate <id>', 'only dead letters of this actor (an id, or Type/id)')
        .addOption(new Option('--limit <n>', 'at most n').argParser(int(1, 1_000_000)));
    }
    return c;
  };
  dlqFlags(dlq.command('list').description('list dead letters, oldest first'), true)
    .action((_opts, cmd: Command) => dlqList(cmd.opts<DlqFlags>()));
  dlqFlags(dlq.command('show').description('print one dead letter: its event, reason, error, attempts').argument('<seq>', 'its sequence (troupe dlq list)'), false)
    .action((seq: string, _opts, cmd: Command) => dlqShow(seq, cmd.opts<DlqFlags>()));
  dlqFlags(dlq.command('replay').description('run dead letters through their consumer again; each replayed one is deleted').argument('[seq]', 'its sequence').option('--all', 'every dead letter that passes the filters'), true)
    .action((seq: string | undefined, _opts, cmd: Command) => dlqReplay(seq, cmd.opts<DlqFlags>()));
  dlqFlags(dlq.command('discard').description('delete dead letters without handling them').argument('[seq]', 'its sequence').option('--all', 'every dead letter that passes the filters'), true)
    .action((seq: string | undefined, _opts, cmd: Command) => dlqDiscard(seq, cmd.opts<DlqFlags>()));
  dlqFlags(dlq.command('stats').description('how many dead letters, by consumer and by reason; the oldest one\'s age'), false)
    .action((_opts, cmd: Command) => dlqStats(cmd.opts<DlqFlags>()));

  const consoleFlags = (c: Command) => natsCredentialFlags(c)
    .addOption(natsUrlOption(false))
    .addOption(new Option('--stream <name>', 'the deployment\'s log stream (default TROUPE)').env('TROUPE_STREAM'))
    .option('--json', 'print JSON');
  consoleFlags(p.command('consumers').description('consumers of the log: instances, lag, messages handled per second, dead letters'))
    .addHelpText('after', `
Lag is log messages not yet acknowledged (JetStream pending + ack pending); MSGS/S is measured
over one second (a log message carries many commits). Example:
  npx troupe consumers --json | jq '.[] | select(.lag > 1000)'`)
    .action((_opts, cmd: Command) => consumers(cmd.opts<ConsoleFlags>()));
  consoleFlags(p.command('projections').description('projection versions: build progress, and which one readers use'))
    .addOption(new Option('--data-dir <dir>', 'data dir of the process that builds the views: tells which version is active').env('TROUPE_DATA_DIR'))
    .addHelpText('after', `
troupe rebuild <name> asks a projection's own process to rebuild it (its apply function runs
there); or deploy version n+1 beside version n. See docs/cli.md.`)
    .action((_opts, cmd: Command) => projections(cmd.opts<ConsoleFlags>()));
  consoleFlags(p.command('rebuild').description('rebuild a projection from the start of the log, in the process that runs it; shows progress').argument('<projection>', 'projection name'))
    .addOption(new Option('--version <n>', 'which version (default: the only one running)').argParser(int(1, 1_000_000)))
    .option('--no-wait', 'return once the rebuild has started')
    .addHelpText('after', `
The projection's own process does the work (its apply function runs there): it answers the
request over NATS, clears its view and reads the log again. Readers of that version see the view
fill up again; to rebuild without readers seeing it, deploy version n+1 beside n instead.`)
    .action((name: string, _opts, cmd: Command) => rebuild(name, cmd.opts<ConsoleFlags>()));
  consoleFlags(p.command('actors').description('ids of actors of a type, from every node (resident ones with --resident)').argument('<type>', 'actor type'))
    .option('--resident', 'only actors in memory now')
    .addOption(new Option('--limit <n>', 'at most n per node (default 1000)').argParser(int(1, 100_000)))
    .addOption(new Option('--window <ms>', 'how long to collect the nodes\' answers (default 750)').argParser(int(50, 60_000)))
    .action((type: string, _opts, cmd: Command) => actors(type, cmd.opts<ConsoleFlags>()));
  consoleFlags(p.command('timers').description('an actor\'s pending durable timers: key, due time, period, command').argument('<type>', 'actor type').argument('<id>', 'actor id'))
    .addOption(new Option('--window <ms>', 'how long to wait for the owner\'s answer (default 750)').argParser(int(50, 60_000)))
    .action((type: string, id: string, _opts, cmd: Command) => timers(type, id, cmd.opts<ConsoleFlags>()));
  consoleFlags(p.command('stats').description('every node: throughput, latency percentiles, shards, resident actors, passivations'))
    .addOption(new Option('--window <ms>', 'how long to collect the nodes\' answers (default 750)').argParser(int(50, 60_000)))
    .action((_opts, cmd: Command) => stats(cmd.opts<ConsoleFlags>()));

  p.command('init')
    .description('scaffold a Troupe app: package.json, a config file, one actor, one test')
    .argument('[dir]', 'folder of the new app', '.')
    .option('--force', 'write into a folder that is not empty')
    .action(async (dir: string, opts: { force?: boolean }) => {
      await scaffold(dir, { troupeVersion: version, force: opts.force === true });
      const cd = dir === '.' ? '' : `cd ${dir} && `;
      process.stdout.write(`Created a Troupe app in ${dir}. Next:\n  ${cd}npm install\n  npx troupe start\n  npm test\n`);
    });

  return p;
}

/** The name of the command `argv` runs (for messages), or undefined for the program itself. */
function commandOf(p: Command, argv: readonly string[]): Command | undefined {
  const first = argv.find((a) => !a.startsWith('-'));
  return p.commands.find((c) => c.name() === first);
}

/** One line for a usage error: what is wrong, and where the fix is. */
export function usageLine(p: Command, argv: readonly string[], e: CommanderError): string {
  const cmd = commandOf(p, argv);
  const name = cmd === undefined ? 'troupe' : `troupe ${cmd.name()}`;
  let text = e.message.replace(/^error: /, '').replace(/\.\s*$/, '').replace(/\s*\n\s*/g, ' ').replace(/\(Did you mean/, '(did you mean');
  if (e.code === 'commander.missingArgument' && cmd !== undefined) text += `; usage: ${name} ${cmd.usage()}`;
  return `${name}: ${text}; see \`${name} --help\``;
}
