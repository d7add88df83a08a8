/**
 * The credentials of the commands that connect to NATS (`send`, `state`, `history`,
 * `cluster status`, `keys ...`): NATS credentials and TLS as flags, over the environment that
 * connection.ts reads (NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_NKEY, NATS_CREDS, NATS_TLS_*);
 * and, for the commands that talk to a node, the caller's signed token (--token, --token-file,
 * TROUPE_TOKEN, TROUPE_TOKEN_FILE) for nodes that verify callers (options.auth).
 *
 * A secret given as a flag is visible to other users of the machine in the process list: the
 * help says to prefer the environment or a file for passwords and tokens. No secret is ever
 * printed; a refused login names the flag or variable it came from.
 */
import { readFileSync, statSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { resolveNatsAuth, type CredentialField, type NatsAuthOptions } from '../connection.ts';
import { isTroupeError } from '../errors.ts';
import { connectNats, type NatsConnection } from '../journal/journal.ts';
import { DEFAULT_NATS_URL } from '../options.ts';
import { CliError, EXIT_RETRYABLE, EXIT_USAGE } from './exit.ts';

/** The NATS credential flags, as commander hands them over. */
export interface NatsFlags {
  creds?: string;
  nkey?: string;
  natsUser?: string;
  natsPassword?: string;
  natsToken?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

/** The caller-token flags. */
export interface TokenFlags {
  token?: string;
  tokenFile?: string;
}

export const TOKEN_ENV = 'TROUPE_TOKEN';
export const TOKEN_FILE_ENV = 'TROUPE_TOKEN_FILE';

const FLAG_NAMES: Readonly<Record<CredentialField, string>> = {
  user: '--nats-user', password: '--nats-password', token: '--nats-token', nkeySeed: '--nkey', credsFile: '--creds',
};

/** Add the NATS credential flags to `cmd`. None reads the environment itself: connection.ts does, so that flags win field by field. */
export function natsCredentialFlags(cmd: Command): Command {
  return cmd
    .addOption(new Option('--creds <file>', 'NATS credentials file (.creds) [env NATS_CREDS]'))
    .addOption(new Option('--nkey <seed-file>', 'NATS NKey seed file (SU...) [env NATS_NKEY]'))
    .addOption(new Option('--nats-user <user>', 'NATS user [env NATS_USER]'))
    .addOption(new Option('--nats-password <password>', 'NATS password; prefer NATS_PASSWORD: a flag shows in the process list'))
    .addOption(new Option('--nats-token <token>', 'NATS token; prefer NATS_TOKEN: a flag shows in the process list'))
    .addOption(new Option('--tls-ca <file>', 'CA certificate (PEM) of the NATS server [env NATS_TLS_CA]'))
    .addOption(new Option('--tls-cert <file>', 'client certificate (PEM), for a server that verifies clients [env NATS_TLS_CERT]'))
    .addOption(new Option('--tls-key <file>', 'the client certificate\'s key (PEM) [env NATS_TLS_KEY]'));
}

/** Add the caller-token flags to `cmd` (the commands that talk to a node). */
export function tokenFlags(cmd: Command): Command {
  return cmd
    .addOption(new Option('--token <jwt>', `signed token (JWT) for a node that verifies callers; prefer ${TOKEN_ENV} or --token-file: a flag shows in the process list`))
    .addOption(new Option('--token-file <file>', `file holding the signed token [env ${TOKEN_FILE_ENV}]`));
}

/** The flags as connection options (the environment fills what they leave out). */
export function natsAuthOf(flags: NatsFlags): NatsAuthOptions {
  const o: NatsAuthOptions = { optionNames: FLAG_NAMES };
  if (flags.natsUser !== undefined) o.user = flags.natsUser;
  if (flags.natsPassword !== undefined) o.password = flags.natsPassword;
  if (flags.natsToken !== undefined) o.token = flags.natsToken;
  if (flags.nkey !== undefined) o.nkeySeed = flags.nkey;
  if (flags.creds !== undefined) o.credsFile = flags.creds;
  const tls: { caFile?: string; certFile?: string; keyFile?: string } = {};
  if (flags.tlsCa !== undefined) tls.caFile = flags.tlsCa;
  if (flags.tlsCert !== undefined) tls.certFile = flags.tlsCert;
  if (flags.tlsKey !== undefined) tls.keyFile = flags.tlsKey;
  if (Object.keys(tls).length > 0) o.tls = tls;
  return o;
}

/**
 * The caller's signed token: --token, else --token-file, else TROUPE_TOKEN, else
 * TROUPE_TOKEN_FILE; undefined when none is given (the node decides whether it needs one).
 */
export function callerToken(flags: TokenFlags, env: Record<string, string | undefined> = process.env): string | undefined {
  if (flags.token !== undefined && flags.token !== '') return flags.token.trim();
  if (flags.tokenFile !== undefined && flags.tokenFile !== '') return readToken(flags.tokenFile, '--token-file');
  const fromEnv = env[TOKEN_ENV];
  if (fromEnv !== undefined && fromEnv.trim() !== '') return fromEnv.trim();
  const file = env[TOKEN_FILE_ENV];
  if (file !== undefined && file !== '') return readToken(file, TOKEN_FILE_ENV);
  return undefined;
}

/** Where the token came from, for messages (never the token). */
export function tokenSource(flags: TokenFlags, env: Record<string, string | undefined> = process.env): string | undefined {
  if (flags.token !== undefined && flags.token !== '') return '--token';
  if (flags.tokenFile !== undefined && flags.tokenFile !== '') return `--token-file ${flags.tokenFile}`;
  if (env[TOKEN_ENV] !== undefined && env[TOKEN_ENV]!.trim() !== '') return TOKEN_ENV;
  if (env[TOKEN_FILE_ENV] !== undefined && env[TOKEN_FILE_ENV] !== '') return `${TOKEN_FILE_ENV} ${env[TOKEN_FILE_ENV]}`;
  return undefined;
}

function readToken(file: string, what: string): string {
  let text: string;
  try {
    if (!statSync(file).isFile()) throw Object.assign(new Error('not a file'), { code: 'not a file' });
    text = readFileSync(file, 'utf8').trim();
  } catch (e) {
    throw new CliError(`cannot read the token file ${file} (${what}): ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`, EXIT_USAGE);
  }
  if (text === '') throw new CliError(`the token file ${file} (${what}) is empty`, EXIT_USAGE);
  return text;
}

/**
 * Connect an operator's command (tail, dlq, consumers, stats, ...) to the deployment's NATS with
 * these flags. A refused login stays a refusal (NATS_AUTH: exit 1); anything else is "retry"
 * (exit 75), saying where the servers were looked for.
 */
export async function connectCli(flags: NatsFlags & { natsUrl?: string }, name: string): Promise<{ nc: NatsConnection; servers: string }> {
  const servers = flags.natsUrl !== undefined && flags.natsUrl !== '' ? flags.natsUrl : DEFAULT_NATS_URL;
  try {
    return { nc: await connectNats(servers, name, resolveNatsAuth(natsAuthOf(flags))), servers };
  } catch (e) {
    if (isTroupeError(e) && !e.retryable) throw e;
    throw new CliError(`cannot reach NATS on ${servers} (${(e as Error).message}); set NATS_URL (--nats-url) to where the deployment's NATS runs`, EXIT_RETRYABLE, { cause: e });
  }
}
