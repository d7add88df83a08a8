// Troupe as another project gets it: `npm pack`, the tarball installed into a fresh app (no tsx,
// no TypeScript loader), an actor written in that app in plain JavaScript, the app's own
// TypeScript checked against the installed types, a node started from the app, and its data
// kept under the app's folder, never inside node_modules. Also `troupe init`'s app, installed
// and tested the same way.
//
// The tarball is built and installed once per file (beforeAll); npm reads the packages from its
// cache when it can (--prefer-offline) and from the registry otherwise.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../runtime/testing/nats-server.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';

const run = promisify(execFile);
const TSC = join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

/** The environment of a user's shell: none of npm's or vitest's variables, no loader in NODE_OPTIONS, no data dir. */
function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('npm_') || k.startsWith('VITEST') || k === 'NODE_OPTIONS' || k === 'TROUPE_DATA_DIR' || k === 'NATS_URL') continue;
    env[k] = v;
  }
  return { ...env, OTEL_TRACES_EXPORTER: 'none', ...extra };
}

async function npm(cwd: string, args: string[], timeout = 120_000): Promise<string> {
  try {
    const { stdout } = await run(NPM, args, { cwd, env: userEnv(), timeout, maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (e) {
    const x = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`npm ${args.join(' ')} failed in ${cwd}: ${x.message}\n${x.stdout ?? ''}\n${x.stderr ?? ''}`);
  }
}

/** Every folder named `.troupe` under `dir` (node_modules included). */
function troupeDirs(dir: string): string[] {
  const found: string[] = [];
  const walk = (d: string, depth: number): void => {
    if (depth > 8) return;
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      const p = join(d, e.name);
      if (e.name === '.troupe') found.push(p);
      walk(p, depth + 1);
    }
  };
  walk(dir, 0);
  return found;
}

const COUNTER_JS = `import { defineActor, reject } from 'troupe';

export const counter = defineActor({
  type: 'Counter',
  initialState: () => ({ value: 0 }),
  commands: {
    Increment: (state, command) => {
      if (!Number.isInteger(command.by) || command.by < 1) reject('by-must-be-positive', { by: command.by });
      return [{ type: 'Incremented', payload: { by: command.by } }];
    },
  },
  events: {
    Incremented: (state, event) => ({ value: state.value + event.by }),
  },
});
`;

/** A TypeScript file of the app, written against the installed package's types. */
const APP_TS = `import { defineActor, Troupe, TroupeClient, isTroupeError, type ActorDefinition, type TroupeOptions } from 'troupe';
import { given } from 'troupe/testing';
import { startTracingSdk } from 'troupe/ops';

interface Counter { readonly value: number }

export const counter: ActorDefinition<Counter> = defineActor<Counter>({
  type: 'Counter',
  initialState: () => ({ value: 0 }),
  commands: {
    Increment: (state: Counter, command: { by: number }) => [{ type: 'Incremented', payload: { by: command.by } }],
  },
  events: {
    Incremented: (state: Counter, event: { by: number }) => ({ value: state.value + event.by }),
  },
});

export const options: TroupeOptions = { actors: ['./actors/counter.js'], workers: 1, shards: 2, httpPort: 0 };

export async function main(servers: string, id: string): Promise<number> {
  await startTracingSdk();
  given(counter).when('Increment', { by: 1 }).thenState({ value: 1 });
  const node: Troupe = await Troupe.start({ ...options, servers });
  const client = await TroupeClient.connect({ servers });
  try {
    const result = await client.send('Counter', id, 'Increment', { by: 2 });
    return result.version;
  } catch (e) {
    if (isTroupeError(e, 'DOMAIN_REJECTION')) return -1;
    throw e;
  } finally {
    await client.close();
    await node.stop();
  }
}
`;

/** The same, with a type error: proves the check above reads real types (not `any`). */
const BAD_TS = `import { Troupe } from 'troupe';
export const started = Troupe.start({ actors: 42 });
`;

const TSCONFIG = {
  compilerOptions: {
    target: 'ES2022', module: 'nodenext', moduleResolution: 'nodenext', strict: true, outDir: 'out',
    declaration: true, esModuleInterop: true, skipLibCheck: true, types: ['node'],
  },
};

/** Start `troupe start` from the installed bin; resolves once it prints that it is running. */
async function startCli(cwd: string, args: string[], env: Record<string, string>): Promise<{ child: ChildProcess; stdout: () => string; exited: Promise<number | null> }> {
  const bin = realpathSync(join(cwd, 'node_modules', '.bin', 'troupe'));
  const child = spawn(process.execPath, [bin, 'start', ...args], { cwd, env: userEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const until = Date.now() + 45_000;
  while (!out.includes('is running')) {
    if (Date.now() > until || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error(`troupe start did not start:\n${out}\n${err}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, stdout: () => out, exited };
}

async function cli(cwd: string, args: string[], env: Record<string, string>): Promise<unknown> {
  const bin = realpathSync(join(cwd, 'node_modules', '.bin', 'troupe'));
  const { stdout } = await run(process.execPath, [bin, ...args], { cwd, env: userEnv(env), timeout: 30_000 });
  return JSON.parse(stdout) as unknown;
}

describe('the packed package', () => {
  const nats = useNatsServer();
  let work = '';
  let tarball = '';
  let packed: string[] = [];
  let app = '';
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    work = tempDir('troupe-package-');
    const [info] = JSON.parse(await npm(REPO_ROOT, ['pack', '--json', '--pack-destination', work], 180_000)) as [{ filename: string; files: { path: string }[] }];
    tarball = join(work, info.filename);
    packed = info.files.map((f) => f.path);
    app = join(work, 'app');
    mkdirSync(join(app, 'actors'), { recursive: true });
    writeFileSync(join(app, 'package.json'), `${JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module' }, null, 2)}\n`);
    await npm(app, ['install', tarball, '@types/node@20.19.25', '--no-audit', '--no-fund', '--prefer-offline'], 180_000);
    writeFileSync(join(app, 'actors', 'counter.js'), COUNTER_JS);
  }, 300_000);

  afterAll(() => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  });

  it('ships compiled JS, types, nats.conf and the LICENSE, and no sources, tests or benchmarks', () => {
    for (const f of ['package.json', 'LICENSE', 'README.md', 'nats.conf', 'dist/index.js', 'dist/index.d.ts', 'dist/testing/index.js', 'dist/ops/index.d.ts', 'dist/internal.js', 'dist/node/worker.js', 'dist/cli/main.js']) {
      expect(packed, f).toContain(f);
    }
    expect(packed.filter((f) => /^(test|bench|actors|\.ci)\//.test(f) || (/\.ts$/.test(f) && !f.endsWith('.d.ts')))).toEqual([]);
    expect(readFileSync(join(app, 'node_modules', 'troupe', 'LICENSE'), 'utf8')).toContain('Apache License');
  });

  it('installs without tsx, esbuild or the OpenTelemetry SDK', () => {
    for (const p of ['tsx', 'esbuild', '@opentelemetry/sdk-node']) expect(existsSync(join(app, 'node_modules', p)), p).toBe(false);
    expect(existsSync(join(app, 'node_modules', 'troupe', 'dist', 'index.js'))).toBe(true);
  });

  it('type-checks and emits an app written in TypeScript against the installed types', async () => {
    // One tsc run over both files: app.ts must check clean (and emit), bad.ts must be refused.
    writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({ ...TSCONFIG, include: ['src/app.ts', 'src/bad.ts'] }));
    mkdirSync(join(app, 'src'), { recursive: true });
    writeFileSync(join(app, 'src', 'app.ts'), APP_TS);
    writeFileSync(join(app, 'src', 'bad.ts'), BAD_TS);
    const out = await run(process.execPath, [TSC, '-p', 'tsconfig.json'], { cwd: app, timeout: 60_000 }).then(() => '', (e: { stdout?: string }) => e.stdout ?? '');
    const errors = out.split('\n').filter((l) => /error TS\d+/.test(l));
    expect(errors.filter((l) => !l.startsWith('src/bad.ts')), out).toEqual([]);
    expect(errors.join('\n')).toMatch(/src\/bad\.ts\(2,\d+\): error TS\d+: .*'number'/);
    expect(readFileSync(join(app, 'out', 'app.js'), 'utf8')).toContain("from 'troupe'");
  });

  it('runs the app\'s JavaScript actor on a node started with `troupe start`, keeping data under --data-dir', async () => {
    const env = { NATS_URL: nats.url };
    const node = await startCli(app, ['--actors', './actors/counter.js', '--workers', '1', '--shards', '2', '--http-port', '0', '--data-dir', 'var/troupe'], env);
    children.push(node.child);
    expect(node.stdout()).toContain('Actors: Counter');
    const sent = await cli(app, ['send', 'Counter', 'cli-1', 'Increment', '{"by":2}'], env) as { version: number };
    expect(sent.version).toBe(1);
    await cli(app, ['send', 'Counter', 'cli-1', 'Increment', '{"by":3}'], env);
    expect(await cli(app, ['state', 'Counter', 'cli-1'], env)).toEqual({ state: { value: 5 }, version: 2 });
    const history = await cli(app, ['history', 'Counter', 'cli-1'], env) as { eventType: string; payload: unknown }[];
    expect(history.map((e) => [e.eventType, e.payload])).toEqual([['Incremented', { by: 2 }], ['Incremented', { by: 3 }]]);
    node.child.kill('SIGINT');
    expect(await node.exited).toBe(0);

    expect(readdirSync(join(app, 'var', 'troupe', 'data')).length).toBeGreaterThan(0);
    expect(troupeDirs(join(app, 'node_modules'))).toEqual([]);
    expect(existsSync(join(app, 'node_modules', 'troupe', 'var'))).toBe(false);
  });

  it('runs the compiled TypeScript app through the API, keeping data under the app\'s ./.troupe', async () => {
    writeFileSync(join(app, 'run.mjs'), `import { main } from './out/app.js';\nprocess.stdout.write(String(await main(process.argv[2], 'api-1')));\n`);
    const { stdout } = await run(process.execPath, ['run.mjs', nats.url], { cwd: app, env: userEnv(), timeout: 60_000 });
    expect(stdout).toBe('1');
    expect(readdirSync(join(app, '.troupe', 'data')).length).toBeGreaterThan(0);
    expect(troupeDirs(join(app, 'node_modules'))).toEqual([]);
  });

  it.skipIf(typeof (process.features as { typescript?: unknown }).typescript === 'string')(
    'refuses a TypeScript actor module with the fix when neither Node nor the app can load TypeScript',
    async () => {
      writeFileSync(join(app, 'actors', 'typed.ts'), COUNTER_JS.replace('(state, command)', '(state: { value: number }, command: { by: number })'));
      writeFileSync(join(app, 'typed.mjs'), `import { Troupe } from 'troupe';
try {
  await Troupe.start({ actors: ['./actors/typed.ts'], servers: process.argv[2], workers: 1, shards: 2, httpPort: 0 });
  process.stdout.write('started');
} catch (e) {
  process.stdout.write(JSON.stringify({ name: e.name, code: e.code, message: e.message }));
}
`);
      const { stdout } = await run(process.execPath, ['typed.mjs', nats.url], { cwd: app, env: userEnv(), timeout: 60_000 });
      const e = JSON.parse(stdout) as { name: string; code: string; message: string };
      expect(e.code).toBe('INVALID_DEFINITION');
      expect(e.message).toContain('npm i -D tsx');
      expect(e.message).toContain('actors/typed.ts');
    },
  );

  it.skipIf(typeof (process.features as { typescript?: unknown }).typescript === 'string')(
    'loads a TypeScript actor module, in the main thread and the workers, through the tsx the app installed',
    async () => {
      await npm(app, ['install', '--save-dev', 'tsx@4.23.15', '--no-audit', '--no-fund', '--prefer-offline'], 120_000);
      writeFileSync(join(app, 'typed-run.mjs'), `import { Troupe } from 'troupe';
const node = await Troupe.start({ actors: ['./actors/typed.ts'], servers: process.argv[2], workers: 2, shards: 2, httpPort: 0, dataDir: '.troupe/typed' });
try {
  for (const id of ['ts-1', 'ts-2', 'ts-3', 'ts-4']) await node.send('Counter', id, 'Increment', { by: 4 });
  process.stdout.write(JSON.stringify(await node.query('Counter', 'ts-3')));
} finally {
  await node.stop();
}
`);
      const { stdout } = await run(process.execPath, ['typed-run.mjs', nats.url], { cwd: app, env: userEnv(), timeout: 60_000 });
      expect(JSON.parse(stdout)).toEqual({ state: { value: 4 }, version: 1 });
    },
  );

  it('`troupe init` scaffolds an app whose tests pass and whose actor runs from its config', async () => {
    const dir = join(work, 'my-app');
    const script = `import('troupe/internal').then((m) => m.scaffold(${JSON.stringify(dir)}, { troupeVersion: '0.1.0' })).then((r) => process.stdout.write(JSON.stringify(r)))`;
    const { stdout } = await run(process.execPath, ['-e', script], { cwd: app, env: userEnv(), timeout: 30_000 });
    expect((JSON.parse(stdout) as { files: string[] }).files).toEqual(expect.arrayContaining(['package.json', 'troupe.config.mjs', 'actors/counter.js', 'test/counter.test.js', 'README.md']));
    expect(readFileSync(join(dir, 'README.md'), 'utf8').trim().split('\n').length).toBeLessThanOrEqual(5);

    const pkgFile = join(dir, 'package.json');
    const pkg = JSON.parse(readFileSync(pkgFile, 'utf8')) as { dependencies: Record<string, string>; scripts: Record<string, string> };
    expect(pkg.dependencies.troupe).toBe('^0.1.0');
    expect(pkg.scripts.start).toBe('troupe start');
    pkg.dependencies.troupe = `file:${tarball}`;
    writeFileSync(pkgFile, JSON.stringify(pkg, null, 2));
    await npm(dir, ['install', '--no-audit', '--no-fund', '--prefer-offline'], 180_000);
    expect(existsSync(join(dir, 'node_modules', 'tsx'))).toBe(false);

    const test = await npm(dir, ['test'], 60_000);
    expect(test).toMatch(/# pass 2\b/);
    expect(test).toMatch(/# fail 0\b/);

    writeFileSync(join(dir, 'run.mjs'), `import { Troupe } from 'troupe';
import config from './troupe.config.mjs';
const node = await Troupe.start({ ...config, servers: process.argv[2], workers: 1, shards: 2, httpPort: 0 });
try {
  await node.send('Counter', 'init-1', 'Increment', { by: 2 });
  await node.send('Counter', 'init-1', 'Increment', {});
  const page = await fetch(node.httpUrl + '/');
  const dashboard = page.status === 200 && (await page.text()).includes('<title>Troupe dashboard</title>') && (await fetch(node.httpUrl + '/dashboard.js')).ok;
  process.stdout.write(JSON.stringify({ ...await node.query('Counter', 'init-1'), dashboard }));
} finally {
  await node.stop();
}
`);
    const started = await run(process.execPath, ['run.mjs', nats.url], { cwd: dir, env: userEnv(), timeout: 60_000 });
    // The installed package serves the dashboard on the node's HTTP port (the page is compiled in).
    expect(JSON.parse(started.stdout)).toEqual({ state: { value: 3 }, version: 2, dashboard: true });
    expect(troupeDirs(join(dir, 'node_modules'))).toEqual([]);
    expect(existsSync(join(dir, '.troupe', 'data'))).toBe(true);
  });
});
