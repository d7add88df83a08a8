/**
 * `troupe send`, `troupe state`, `troupe history`: talk to a running node over NATS and print
 * the answer as JSON on stdout. Failures become one line and an exit code (exit.ts).
 */
import { isTroupeError } from '../errors.ts';
import { DEFAULT_NATS_URL } from '../options.ts';
import { TroupeClient } from '../remote/client.ts';
import { describeServers, redactSecrets, resolveNatsAuth } from '../connection.ts';
import { CliError, EXIT_REFUSED, EXIT_RETRYABLE, EXIT_USAGE } from './exit.ts';

export interface ClientFlags {
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

async function withClient(flags: ClientFlags, run: (c: TroupeClient) => Promise<unknown>): Promise<void> {
  const servers = natsUrlOf(flags);
  const url = describeServers(servers); // without user:password@
  let client: TroupeClient;
  try {
    client = await TroupeClient.connect({ servers, timeoutMs: flags.timeout ?? 10_000 });
  } catch (e) {
    const message = (e as Error).message;
    // A refused login is said as it is (it names the credentials, never their secret); retrying will not help.
    if (/\(authorization violation\)/.test(message)) throw new CliError(message, EXIT_REFUSED);
    const why = redactSecrets((e as { cause?: { message?: string } }).cause?.message ?? message, resolveNatsAuth(), servers);
    throw new CliError(`no Troupe node answered on ${url} (NATS: ${why}): ${START_ONE}`, EXIT_RETRYABLE, { cause: e });
  }
  try {
    const result = await run(client);
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } catch (e) {
    throw nobodyThere(e, url) ?? e;
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
