/**
 * `troupe send`, `troupe state`, `troupe history`: talk to a running node over NATS and print
 * the answer as JSON on stdout. Failures become one line and an exit code (exit.ts).
 */
import { isTroupeError } from '../errors.ts';
import { DEFAULT_NATS_URL } from '../options.ts';
import { TroupeClient } from '../remote/client.ts';
import { describeServers, redactSecrets, resolveNatsAuth } from '../connection.ts';
import { callerToken, natsAuthOf, tokenSource, TOKEN_ENV, type NatsFlags, type TokenFlags } from './credentials.ts';
import { CliError, EXIT_REFUSED, EXIT_RETRYABLE, EXIT_USAGE } from './exit.ts';

export interface ClientFlags extends NatsFlags, TokenFlags {
  natsUrl?: string;
  timeout?: number;
}

export interface SendFlags extends ClientFlags {
  commandId?: string;
  user?: string;
}

/** The command line's payload argument: a JSON object. */
export function parsePayload(json: string | undefined): Record<string, unknown> {
  if (json === undefined) return {};
  let payload: unknown;
  try {
    payload = JSON.parse(json);
  } catch (e) {
    throw new CliError(`the payload is not JSON (${(e as Error).message}); quote it for the shell: '{"amount":100}'`, EXIT_USAGE);
  }
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
    throw new CliError(`the payload must be a JSON object, like '{"amount":100}'; got ${json}`, EXIT_USAGE);
  }
  return payload as Record<string, unknown>;
}

function natsUrlOf(flags: ClientFlags): string {
  return flags.natsUrl !== undefined && flags.natsUrl !== '' ? flags.natsUrl : DEFAULT_NATS_URL;
}

const START_ONE = 'start one with `npx troupe start`, or set NATS_URL (--nats-url) to where one runs';

/** A retryable error that means nothing answered at all: say what to do, in one line. */
function nobodyThere(e: unknown, url: string): CliError | undefined {
  if (!isTroupeError(e, 'JOURNAL_UNAVAILABLE')) return undefined;
  const cause = (e as { cause?: { name?: string; message?: string } }).cause;
  const text = `${e.message} ${cause?.name ?? ''} ${cause?.message ?? ''}`;
  if (/no Troupe node serves|no responders|NoResponders/i.test(text)) {
    return new CliError(`no Troupe node answered on ${url}: ${START_ONE}`, EXIT_RETRYABLE, { cause: e });
  }
  return undefined;
}

/** A node that verifies callers refused the token (or its absence): say how the command line sends one. */
function unauthenticated(e: unknown, flags: ClientFlags): CliError | undefined {
  if (!isTroupeError(e, 'UNAUTHENTICATED')) return undefined;
  const source = tokenSource(flags);
  const hint = source === undefined
    ? `this node verifies callers: give a signed token with ${TOKEN_ENV}, --token-file or --token`
    : `the token came from ${source}`;
  return new CliError(`UNAUTHENTICATED: ${e.message}; ${hint}`, EXIT_REFUSED, { cause: e });
}

async function withClient(flags: ClientFlags, run: (c: TroupeClient) => Promise<unknown>): Promise<void> {
  const servers = natsUrlOf(flags);
  const url = describeServers(servers); // without user:password@
  const nats = natsAuthOf(flags);
  const token = callerToken(flags);
  let client: TroupeClient;
  try {
    client = await TroupeClient.connect({ servers, timeoutMs: flags.timeout ?? 10_000, nats, ...(token !== undefined ? { token } : {}) });
  } catch (e) {
    // A refused login (NATS_AUTH) or bad credential options (INVALID_OPTION) are said as they
    // are (they name the credentials and their source, never a secret); retrying will not help.
    if (isTroupeError(e) && !e.retryable) throw e;
    const message = (e as Error).message;
    const why = redactSecrets((e as { cause?: { message?: string } }).cause?.message ?? message, resolveNatsAuth(nats), servers);
    throw new CliError(`no Troupe node answered on ${url} (NATS: ${why}): ${START_ONE}`, EXIT_RETRYABLE, { cause: e });
  }
  try {
    const result = await run(client);
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } catch (e) {
    throw nobodyThere(e, url) ?? unauthenticated(e, flags) ?? e;
  } finally {
    await client.close();
  }
}

export function send(type: string, id: string, command: string, json: string | undefined, flags: SendFlags): Promise<void> {
  const payload = parsePayload(json);
  return withClient(flags, (c) => c.send(type, id, command, payload, {
    ...(flags.commandId !== undefined ? { commandId: flags.commandId } : {}),
    ...(flags.user !== undefined ? { userId: flags.user } : {}),
  }));
}

export function state(type: string, id: string, flags: ClientFlags): Promise<void> {
  return withClient(flags, (c) => c.query(type, id));
}

export function history(type: string, id: string, flags: ClientFlags): Promise<void> {
  return withClient(flags, (c) => c.history(type, id));
}
