// The pure pieces of the `troupe` command line: exit codes, usage lines, payload skeletons and
// suggested commands of the start banner, config files and how flags override them.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommanderError } from 'commander';
import { describe, expect, it } from 'vitest';
import { defineActor, reject } from '../../runtime/index.ts';
import { DomainRejection, JournalUnavailableError, OverloadedError, StoppedError, TimeoutError, ValidationError } from '../../runtime/errors.ts';
import { banner, payloadSkeleton, shellQuote, suggestedCommands } from '../../runtime/cli/banner.ts';
import { checkConfig, findConfig, loadConfig } from '../../runtime/cli/config.ts';
import { CliError, exitCodeOf, oneLine } from '../../runtime/cli/exit.ts';
import { dataRoot } from '../../runtime/cli/paths.ts';
import { program, usageLine } from '../../runtime/cli/program.ts';
import { parsePayload } from '../../runtime/cli/remote.ts';
import { resolveStart } from '../../runtime/cli/start.ts';

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'troupe-cli-unit-'));
}

const counter = defineActor<{ n: number }>({
  type: 'Counter',
  initialState: () => ({ n: 0 }),
  commands: {
    Add: {
      schema: { type: 'object', properties: { by: { type: 'integer', minimum: 1 }, note: { type: 'string' } }, required: ['by'], additionalProperties: false },
      decide: (s, c: { by: number }) => {
        if (s.n + c.by > 1000) reject('too-high');
        return { type: 'Added', payload: { by: c.by } };
      },
    },
  },
  events: { Added: (s, e: { by: number }) => ({ n: s.n + e.by }) },
});

const door = defineActor<{ open: boolean }>({
  type: 'Door',
  initialState: () => ({ open: false }),
  commands: { Open: () => ({ type: 'Opened', payload: {} }) },
  events: { Opened: () => ({ open: true }) },
});

describe('exit codes', () => {
  it('gives 1 to refusals, 75 to retryable failures and 2 to usage errors', () => {
    expect(exitCodeOf(new DomainRejection('insufficient-funds'))).toBe(1);
    expect(exitCodeOf(new ValidationError('SCHEMA_VIOLATION', 'bad payload'))).toBe(1);
    expect(exitCodeOf(new JournalUnavailableError('down'))).toBe(75);
    expect(exitCodeOf(new TimeoutError('slow'))).toBe(75);
    expect(exitCodeOf(new OverloadedError('busy'))).toBe(75);
    expect(exitCodeOf(new StoppedError())).toBe(75);
    expect(exitCodeOf(new CommanderError(1, 'commander.unknownOption', "error: unknown option '--x'"))).toBe(2);
    expect(exitCodeOf(new CommanderError(0, 'commander.helpDisplayed', '(outputHelp)'))).toBe(0);
    expect(exitCodeOf(new CliError('no actors', 2))).toBe(2);
    expect(exitCodeOf(new Error('a bug'))).toBe(1);
  });

  it('prints a failure as one line with its code and a rejection\'s details', () => {
    expect(oneLine(new DomainRejection('insufficient-funds', { reason: 'insufficient-funds', balance: 0, amount: 5, aggregateId: 'a' })))
      .toBe('DOMAIN_REJECTION: insufficient-funds {"balance":0,"amount":5}');
    expect(oneLine(new Error('two\n  lines'))).toBe('two lines');
  });
});

describe('usage lines', () => {
  function usageError(argv: string[]): string {
    const p = program();
    try {
      p.parse(argv, { from: 'user' });
    } catch (e) {
      if (e instanceof CommanderError) return usageLine(p, argv, e);
      throw e;
    }
    throw new Error(`${argv.join(' ')} parsed without an error`);
  }

  it('names the unknown flag, a close match and the help of the command', () => {
    expect(usageError(['send', 'A', 'b', 'C', '--usr', 'x'])).toBe("troupe send: unknown option '--usr' (did you mean --user?); see `troupe send --help`");
  });

  it('names the missing argument and the usage of the command', () => {
    expect(usageError(['state', 'Account'])).toBe("troupe state: missing required argument 'id'; usage: troupe state [options] <type> <id>; see `troupe state --help`");
  });

  it('refuses a malformed number before anything starts', () => {
    expect(usageError(['start', '--nats-port', '70000'])).toContain("troupe start: option '--nats-port <port>' argument '70000' is invalid");
  });
});

describe('the start banner', () => {
  it('builds a payload from the required properties of a command schema', () => {
    expect(payloadSkeleton(counter.commands.get('Add')!.schema)).toEqual({ by: 100 });
    expect(payloadSkeleton({ type: 'object', properties: { kind: { enum: ['person', 'host'] }, size: { type: 'integer', minimum: 1, maximum: 5 } } }))
      .toEqual({ kind: 'person', size: 1 });
    expect(payloadSkeleton({ type: 'object', properties: {}, additionalProperties: false })).toBeUndefined();
    expect(payloadSkeleton(undefined)).toBeUndefined();
  });

  it('suggests a command of the first loaded actor, with its payload', () => {
    expect(suggestedCommands([counter, door], 'nats://127.0.0.1:4222')).toEqual([
      `npx troupe send Counter counter-1 Add '{"by":100}'`,
      'npx troupe state Counter counter-1',
      'npx troupe history Counter counter-1',
    ]);
    expect(suggestedCommands([door], 'nats://10.0.0.5:4222')[0]).toBe('npx troupe send Door door-1 Open --nats-url nats://10.0.0.5:4222');
  });

  it('quotes single quotes for the shell', () => {
    expect(shellQuote(`{"a":"it's"}`)).toBe(`'{"a":"it'\\''s"}'`);
  });

  it('names the loaded actors and says whether NATS is its own development server', () => {
    const base = { nodeName: 'n1', workers: 1, ownedShards: 16, shards: 16, definitions: [door], dataDir: '/app/.troupe', httpUrl: null, traces: false };
    const local = banner({ ...base, natsUrl: 'nats://127.0.0.1:4222', localNats: { version: '2.10.27', storeDir: '/app/.troupe/nats' } });
    expect(local).toContain('Actors: Door\n');
    expect(local).toContain('local, open: for development');
    expect(local).toContain('npx troupe send Door door-1 Open\n');
    expect(local).not.toContain('Account');
    const given = banner({ ...base, natsUrl: 'nats://nats.internal:4222' });
    expect(given).toContain('NATS: nats://nats.internal:4222 (given)');
    expect(given).not.toContain('for development');
  });
});

describe('config files', () => {
  it('finds troupe.config.json before the module forms', () => {
    const dir = tmp();
    expect(findConfig(dir)).toBeUndefined();
    writeFileSync(join(dir, 'troupe.config.mjs'), 'export default { actors: [] }');
    expect(findConfig(dir)).toBe(join(dir, 'troupe.config.mjs'));
    writeFileSync(join(dir, 'troupe.config.json'), '{}');
    expect(findConfig(dir)).toBe(join(dir, 'troupe.config.json'));
  });

  it('resolves actor modules and dataDir relative to the config file', () => {
    const options = checkConfig({ actors: ['./src/a.js', '/abs/b.js'], dataDir: 'state' }, '/app/conf/troupe.config.json');
    expect(options.actors).toEqual(['/app/conf/src/a.js', '/abs/b.js']);
    expect(options.dataDir).toBe('/app/conf/state');
  });

  it('refuses unknown options and a config that is not an object', () => {
    expect(() => checkConfig({ actors: ['./a.js'], wrokers: 2 }, '/app/troupe.config.json')).toThrow(/unknown option wrokers/);
    expect(() => checkConfig([], '/app/troupe.config.json')).toThrow(/must hold an object/);
    expect(() => checkConfig({ actors: 'x.js' }, '/app/troupe.config.json')).not.toThrow();
  });

  it('loads the default export of an .mjs config and reports JSON errors with the file', async () => {
    const dir = tmp();
    mkdirSync(join(dir, 'conf'));
    writeFileSync(join(dir, 'conf', 'troupe.config.mjs'), "export default { actors: ['../src/actors.js'], shards: 4 };\n");
    const loaded = await loadConfig(join(dir, 'conf', 'troupe.config.mjs'));
    expect(loaded.options).toEqual({ actors: [join(dir, 'src', 'actors.js')], shards: 4 });
    writeFileSync(join(dir, 'troupe.config.json'), '{ actors: [] }');
    await expect(loadConfig(join(dir, 'troupe.config.json'))).rejects.toThrow(/troupe\.config\.json is not valid JSON/);
  });

  it('lets flags override the config file', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'troupe.config.json'), JSON.stringify({ actors: ['./a.js'], shards: 4, workers: 2, servers: 'nats://file:4222', httpPort: 9000 }));
    const fromFile = await resolveStart({}, dir);
    expect(fromFile.options).toMatchObject({ actors: [join(dir, 'a.js')], shards: 4, workers: 2, servers: 'nats://file:4222', httpPort: 9000, logLevel: 'info' });
    const flags = await resolveStart({ actors: 'b.js', shards: 2, natsUrl: 'nats://flag:4222', httpPort: false, dataDir: join(dir, 'd') }, dir);
    expect(flags.options).toMatchObject({ actors: [join(dir, 'b.js')], shards: 2, workers: 2, servers: 'nats://flag:4222', httpPort: false, dataDir: join(dir, 'd', 'data') });
  });
});

describe('troupe start without actors', () => {
  it('runs the repository\'s example actors when there are any', async () => {
    const { options } = await resolveStart({}, tmp(), () => '/repo/actors/index.ts');
    expect(options.actors).toEqual(['/repo/actors/index.ts']);
  });

  it('says how to name actors, as a usage error, in an installed package', async () => {
    const failure = await resolveStart({}, tmp(), () => undefined).then(() => undefined, (e: unknown) => e);
    expect(failure).toBeInstanceOf(CliError);
    expect(exitCodeOf(failure)).toBe(2);
    expect((failure as Error).message).toMatch(/troupe\.config\.json.*--actors.*npx troupe init my-app/);
  });
});

describe('the command line\'s small parts', () => {
  it('keeps data under the working directory unless told otherwise', () => {
    const saved = process.env.TROUPE_DATA_DIR;
    delete process.env.TROUPE_DATA_DIR;
    try {
      expect(dataRoot()).toBe(join(process.cwd(), '.troupe'));
      expect(dataRoot('x')).toBe(join(process.cwd(), 'x'));
      process.env.TROUPE_DATA_DIR = '/srv/troupe';
      expect(dataRoot()).toBe('/srv/troupe');
    } finally {
      if (saved === undefined) delete process.env.TROUPE_DATA_DIR; else process.env.TROUPE_DATA_DIR = saved;
    }
  });

  it('takes a JSON object as the payload and refuses anything else as a usage error', () => {
    expect(parsePayload(undefined)).toEqual({});
    expect(parsePayload('{"amount":1}')).toEqual({ amount: 1 });
    expect(() => parsePayload('{amount:1}')).toThrow(/not JSON/);
    expect(() => parsePayload('[1]')).toThrow(/must be a JSON object/);
    let thrown: unknown;
    try { parsePayload('1'); } catch (e) { thrown = e; }
    expect(thrown).toBeInstanceOf(CliError);
    expect(exitCodeOf(thrown)).toBe(2);
  });
});
