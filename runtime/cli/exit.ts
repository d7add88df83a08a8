/**
 * Exit codes of the `troupe` command line, and the one line a failure prints.
 *
 *   0   success
 *   1   refused: the domain rejected the command, or a validation failed (not retryable), or
 *       the node could not start with what it was given (a port taken, a bad config file), or
 *       NATS refused the credentials (NATS_AUTH), or the node refused the caller
 *       (UNAUTHENTICATED, FORBIDDEN)
 *   2   usage: an unknown command or flag, a missing or malformed argument
 *   75  retryable: no node answered, NATS is down, or the node said unavailable, timeout,
 *       overloaded or stopped (EX_TEMPFAIL of sysexits.h)
 */
import { CommanderError } from 'commander';
import { isTroupeError } from '../errors.ts';

export const EXIT_OK = 0;
export const EXIT_REFUSED = 1;
export const EXIT_USAGE = 2;
export const EXIT_RETRYABLE = 75;

export const EXIT_CODES_HELP = `Exit codes:
  0   success
  1   refused by the domain or a validation, NATS refused the credentials, or the node
      refused the caller's token or rights (retrying the same command will not help)
  2   usage: unknown command or flag, missing or malformed argument
  75  retryable: no node answered, NATS is down, unavailable, timeout, overloaded, stopped`;

/** An expected failure of the command line: printed as one line, exits with `exitCode`. */
export class CliError extends Error {
  override name = 'CliError';
  constructor(message: string, readonly exitCode: number, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The exit code a script sees for `e`. */
export function exitCodeOf(e: unknown): number {
  if (e instanceof CliError) return e.exitCode;
  if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  if (isTroupeError(e)) return e.retryable ? EXIT_RETRYABLE : EXIT_REFUSED;
  return EXIT_REFUSED;
}

/** Whether `e` is a failure the command line expects (so no stack trace unless --debug). */
export function isExpected(e: unknown): boolean {
  return e instanceof CliError || e instanceof CommanderError || isTroupeError(e);
}

/** One line: what happened, and for a Troupe error its code (and a rejection's details). */
export function oneLine(e: unknown): string {
  let text: string;
  if (isTroupeError(e)) {
    text = `${e.code}: ${e.message}`;
    if (e.code === 'DOMAIN_REJECTION') {
      const { reason: _reason, aggregateType: _t, aggregateId: _i, commandId: _c, commandType: _ct, ...details } = e.data;
      if (Object.keys(details).length > 0) text += ` ${JSON.stringify(details)}`;
    }
  } else if (e instanceof Error) {
    text = e.message;
  } else {
    text = String(e);
  }
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
