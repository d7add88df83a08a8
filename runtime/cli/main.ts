/**
 * The `troupe` command line. runtime/bin/troupe.mjs is the process entry (it makes sure a
 * nats-server is there); argument handling starts here, one file per command group:
 *
 *   program.ts  the commands, their options and help (commander)
 *   start.ts    troupe start                  run a node (config file: config.ts; banner: banner.ts)
 *   remote.ts   troupe send | state | history talk to a running node
 *   credentials.ts  NATS credential flags and the caller's token of the commands that connect
 *   init.ts     troupe init [dir]             scaffold an app
 *   exit.ts     exit codes and the one line each failure prints
 *   paths.ts    where the data lives
 */
import { CommanderError } from 'commander';
import { exitCodeOf, isExpected, oneLine } from './exit.ts';
import { program, usageLine } from './program.ts';

async function main(argv: string[]): Promise<void> {
  const debug = argv.slice(0, argv.includes('--') ? argv.indexOf('--') : argv.length).includes('--debug');
  const p = program();
  try {
    await p.parseAsync(argv, { from: 'user' });
  } catch (e) {
    const code = exitCodeOf(e);
    if (e instanceof CommanderError) {
      // Help and version are already printed; `troupe` alone printed its help to stderr.
      if (!['commander.helpDisplayed', 'commander.version', 'commander.help'].includes(e.code)) process.stderr.write(`${usageLine(p, argv, e)}\n`);
    } else if (debug) {
      process.stderr.write(`troupe: ${(e as Error)?.stack ?? String(e)}\n`);
      for (let c = (e as { cause?: unknown })?.cause; c !== undefined; c = (c as { cause?: unknown })?.cause) {
        process.stderr.write(`caused by: ${(c as Error)?.stack ?? String(c)}\n`);
      }
    } else {
      const hint = isExpected(e) ? '' : ' (an unexpected failure: run again with --debug for the stack trace)';
      process.stderr.write(`troupe: ${oneLine(e)}${hint}\n`);
    }
    process.exit(code);
  }
}

// No top-level await: runtime/bin/run-ts.cjs loads this file through tsx's require hook.
void main(process.argv.slice(2));
