// The `troupe` command line as a user runs it: spawned the way runtime/bin/troupe.mjs spawns it
// (node runtime/bin/run-ts.cjs runtime/cli/main.ts ...), against a real nats-server.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { findNatsServer, freePorts, tempDir, useNatsServer } from '../helpers/nats.ts';

const cli = fileURLToPath(new URL('../../runtime/cli/main.ts', import.meta.url));
const runTs = fileURLToPath(new URL('../../runtime/bin/run-ts.cjs', import.meta.url));
const runtimeIndex = fileURLToPath(new URL('../../runtime/index.ts', import.meta.url));
const version = (await import('../../package.json', { with: { type: 'json' } })).default.version;

interface Ran { code: number | null; stdout: string; stderr: string }

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, TROUPE_NATS_SERVER: findNatsServer().path, OTEL_TRACES_EXPORTER: 'none', ...extra };
  for (const k of ['NATS_URL', 'TROUPE_DATA_DIR', 'TROUPE_ACTORS', 'TROUPE_NATS_PORT', 'TROUPE_HTTP_PORT']) if (!(k in extra)) delete e[k];
  return e;
}

function spawnCli(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): ChildProcess {
  return spawn(process.execPath, [runTs, cli, ...args], { cwd: opts.cwd ?? process.cwd(), env: env(opts.env), stdio: ['ignore', 'pipe', 'pipe'] });
}

function run(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): Promise<Ran> {
  const child = spawnCli(args, opts);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, stdout, stderr })));
}

/** The lines a failure printed on stderr, without Node's own warnings. */
function errorLines(r: Ran): string[] {
  return r.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('(node:') && !l.startsWith('(Use `node'));
}

function expectOneLine(r: Ran, code: number, pattern: RegExp): void {
  const lines = errorLines(r);
  expect(r.code, r.stderr).toBe(code);
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

interface Started { child: ChildProcess; stdout: () => string; stderr: () => string; stop: () => Promise<number | null> }

async function startCli(args: string[], opts: { cwd?: string; env?: Record<string, string> }): Promise<Started> {
  const child = spawnCli(['start', '--http-port', '0', '--workers', '1', '--log-level', 'warn', ...args], opts);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  running.add(child);
  const until = Date.now() + 45_000;
  while (!stdout.includes('Ctrl-C stops')) {
    if (Date.now() > until || child.exitCode !== null) throw new Error(`troupe start did not start:\n${stdout}\n${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    child, stdout: () => stdout, stderr: () => stderr,
    stop: async () => { child.kill('SIGTERM'); const code = await exited; running.delete(child); return code; },
  };
}

const running = new Set<ChildProcess>();
afterAll(() => { for (const c of running) c.kill('SIGKILL'); });

/** An app folder with one actor, Counter, written in TypeScript against the runtime. */
function writeApp(dir: string, actorPath = 'src/counter.ts'): void {
  mkdirSync(join(dir, 'src'), { recursive: true });
  writeFileSync(join(dir, actorPath), `import { defineActor, reject } from ${JSON.stringify(runtimeIndex)};
export const counter = defineActor<{ n: number }>({
  type: 'Counter',
  initialState: () => ({ n: 0 }),
  commands: {
    Add: {
      schema: { type: 'object', properties: { by: { type: 'integer', minimum: 1 } }, required: ['by'], additionalProperties: false },
      decide: (s, c: { by: number }) => {
        if (s.n + c.by > 1000) reject('too-high', { n: s.n });
        return { type: 'Added', payload: { by: c.by } };
      },
    },
  },
  events: { Added: (s, e: { by: number }) => ({ n: s.n + e.by }) },
});
`);
}

describe('troupe help and usage', () => {
  it('prints help for --help, -h and each command, and the package version for --version', async () => {
    const [help, h, sendHelp, startHelp, v] = await Promise.all([
      run(['--help']), run(['-h']), run(['send', '--help']), run(['start', '-h']), run(['--version']),
    ]);
    for (const r of [help, h, sendHelp, startHelp, v]) expect(r.code, r.stderr).toBe(0);
    expect(help.stdout).toContain('Usage: troupe [options] [command]');
    expect(help.stdout).toMatch(/75\s+retryable/);
    expect(h.stdout).toBe(help.stdout);
    expect(sendHelp.stdout).toContain('Usage: troupe send [options] <type> <id> <command> [payload]');
    expect(sendHelp.stdout).toContain('--command-id <id>');
    expect(startHelp.stdout).toContain('--nats-port <port>');
    expect(startHelp.stdout).toContain('(env: TROUPE_NATS_PORT)');
    expect(v.stdout.trim()).toBe(version);
  });

  it('answers an unknown flag, a missing argument or an unknown command with one line and exit 2', async () => {
    const [flag, missing, unknown] = await Promise.all([
      run(['send', 'Account', 'a-1', 'Deposit', '--amount', '5']),
      run(['history', 'Account']),
      run(['sned', 'Account']),
    ]);
    expectOneLine(flag, 2, /^troupe send: unknown option '--amount'.*see `troupe send --help`$/);
    expectOneLine(missing, 2, /^troupe history: missing required argument 'id'; usage: troupe history/);
    expectOneLine(unknown, 2, /^troupe: unknown command 'sned' \(did you mean send\?\)/);
  });
});

describe('troupe send, state and history', () => {
  const nats = useNatsServer();

  it('says in one line what to do, with exit 75, when NATS is down', async () => {
    const [port] = await freePorts(1);
    const r = await run(['send', 'Account', 'a-1', 'OpenAccount', '--nats-url', `nats://127.0.0.1:${port}`]);
    expectOneLine(r, 75, new RegExp(`^troupe: no Troupe node answered on nats://127\\.0\\.0\\.1:${port} .*npx troupe start`));
  });

  it('says in one line what to do, with exit 75, when NATS runs but no node does', async () => {
    const [send, state] = await Promise.all([
      run(['send', 'Account', 'a-1', 'OpenAccount'], { env: { NATS_URL: nats.url } }),
      run(['state', 'Account', 'a-1', '--nats-url', nats.url]),
    ]);
    expectOneLine(send, 75, new RegExp(`^troupe: no Troupe node answered on ${nats.url.replace(/\./g, '\\.')}: start one with \`npx troupe start\``));
    expectOneLine(state, 75, /^troupe: no Troupe node answered on /);
  });

  it('runs the actors of troupe.config.json in the working directory and answers 0, 1 and 1 as the node decides', async () => {
    const app = tempDir('troupe-cli-app-');
    writeApp(app);
    writeFileSync(join(app, 'troupe.config.json'), JSON.stringify({ actors: ['./src/counter.ts'], shards: 4 }));
    const node = await startCli(['--shards', '2'], { cwd: app, env: { NATS_URL: nats.url } });
    try {
      const banner = node.stdout();
      expect(banner).toContain(`Actors: Counter (from ${join(app, 'troupe.config.json')})`);
      // The flag overrides the file.
      expect(banner).toMatch(/, 2\/2 shards\./);
      expect(banner).toContain(`NATS: ${nats.url} (given)`);
      expect(banner).not.toContain('Account');
      // The banner's suggestion works as printed.
      const suggested = /npx troupe send Counter (\S+) Add '(\{.*\})'/.exec(banner);
      expect(suggested, banner).not.toBeNull();
      expect(suggested![2]).toBe('{"by":100}');
      const ok = await run(['send', 'Counter', suggested![1]!, 'Add', suggested![2]!, '--nats-url', nats.url]);
      expect(ok.code, ok.stderr).toBe(0);
      expect(JSON.parse(ok.stdout)).toMatchObject({ aggregateType: 'Counter', aggregateId: 'counter-1', version: 1, events: [{ eventType: 'Added' }] });

      const rejected = await run(['send', 'Counter', 'counter-1', 'Add', '{"by":1000}', '--nats-url', nats.url]);
      expectOneLine(rejected, 1, /^troupe: DOMAIN_REJECTION: too-high \{"n":100\}$/);
      const invalid = await run(['send', 'Counter', 'counter-1', 'Add', '{"by":0}', '--nats-url', nats.url]);
      expectOneLine(invalid, 1, /^troupe: SCHEMA_VIOLATION: /);

      const state = await run(['state', 'Counter', 'counter-1', '--nats-url', nats.url]);
      expect(state.code, state.stderr).toBe(0);
      expect(JSON.parse(state.stdout)).toEqual({ state: { n: 100 }, version: 1 });
      const history = await run(['history', 'Counter', 'counter-1', '--nats-url', nats.url]);
      expect(history.code, history.stderr).toBe(0);
      expect((JSON.parse(history.stdout) as { eventType: string }[]).map((e) => e.eventType)).toEqual(['Added']);
    } finally {
      expect(await node.stop()).toBe(0);
    }
    // Data lands under the app's working directory.
    expect(existsSync(join(app, '.troupe', 'data'))).toBe(true);
  });

  it('loads an .mjs config named with --config, its actor paths relative to the file', async () => {
    const app = tempDir('troupe-cli-app-');
    writeApp(app, 'src/counter.ts');
    mkdirSync(join(app, 'deploy'));
    writeFileSync(join(app, 'deploy', 'troupe.config.mjs'), "export default { actors: ['../src/counter.ts'], shards: 2 };\n");
    const elsewhere = tempDir('troupe-cli-cwd-');
    const node = await startCli(['--config', join(app, 'deploy', 'troupe.config.mjs'), '--data-dir', join(elsewhere, 'state')], { cwd: elsewhere, env: { NATS_URL: nats.url } });
    try {
      expect(node.stdout()).toContain(`Actors: Counter (from ${join(app, 'deploy', 'troupe.config.mjs')})`);
      expect(node.stdout()).toContain(`Data: ${join(elsewhere, 'state')}`);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  });
});

describe('troupe start failures', () => {
  it('says in one line that NATS is unreachable, with exit 75, when --nats-url points nowhere', async () => {
    const [port] = await freePorts(1);
    const app = tempDir('troupe-cli-app-');
    writeApp(app);
    const r = await run(['start', '--actors', 'src/counter.ts', '--nats-url', `nats://127.0.0.1:${port}`, '--http-port', '0'], { cwd: app });
    expectOneLine(r, 75, new RegExp(`^troupe: cannot reach NATS at nats://127\\.0\\.0\\.1:${port} .*--nats-url`));
  });

  it('says which port is taken and how to choose another, with exit 1', async () => {
    const blocker: Server = createServer();
    const port = await new Promise<number>((resolve) => blocker.listen(0, '127.0.0.1', () => resolve((blocker.address() as { port: number }).port)));
    try {
      const app = tempDir('troupe-cli-app-');
      writeApp(app);
      const r = await run(['start', '--actors', 'src/counter.ts', '--nats-port', String(port), '--http-port', '0'], { cwd: app });
      expectOneLine(r, 1, new RegExp(`^troupe: port ${port} is taken .*--nats-url nats://127\\.0\\.0\\.1:${port}.*--nats-port ${port + 1}`));
    } finally {
      blocker.close();
    }
  });
});
