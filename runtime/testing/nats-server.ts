// Starting and stopping local nats-server processes: one server for `npm start` and tests,
// or a 3-server JetStream cluster on loopback for multi-node tests and R3 benchmarks.
//
// Node builtins only. The binary is found by findNatsServer() (nats-binary.ts); `npx troupe
// ensure-nats` (in a clone, `npm test` and `npm start` run it) fetches one when the machine has
// none. The cluster is in nats-cluster.ts; both are re-exported here.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect as netConnect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DEFAULT_NATS_CONFIG, findNatsServer } from './nats-binary.ts';

export { DEFAULT_NATS_CONFIG, ENSURE_NATS_COMMAND, REPO_ROOT, findNatsServer } from './nats-binary.ts';
export { startNatsCluster, type NatsCluster } from './nats-cluster.ts';

const START_TIMEOUT_MS = 20_000;
const CLUSTER_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
const LOG_KEEP_CHARS = 64 * 1024;

export interface NatsServerHandle {
  /** Client URL, e.g. `nats://127.0.0.1:43123`. */
  url: string;
  port: number;
  /** JetStream store_dir (nats-server keeps its files in `<storeDir>/jetstream`). */
  storeDir: string;
  /** Pid of the current process (changes on restart()). */
  pid: number;
  /** Server version, e.g. `2.10.27`. */
  version: string;
  /** server_name. */
  name: string;
  /** The config file the server runs with (a generated one unless the plain config could be used). */
  configFile: string;
  /** Cluster route URL when started as a cluster member. */
  clusterUrl?: string;
  /** True while the process runs. */
  readonly running: boolean;
  /** The last ~64 KB the server wrote to stderr (its log). */
  log(): string;
  /** SIGTERM (graceful shutdown), wait for exit; SIGKILL after 15 s. No-op when not running. */
  stop(): Promise<void>;
  /** SIGKILL, wait for exit (a crash: no graceful shutdown). No-op when not running. */
  kill(): Promise<void>;
  /** Start again with the same port, store and config (stops first if still running). */
  restart(): Promise<void>;
}

export interface StartNatsServerOptions {
  /** Config file; default the package's `nats.conf`. */
  config?: string;
  /** Client port; default a random free port. */
  port?: number;
  /** JetStream store_dir; default a fresh temp dir, removed when this process exits. */
  storeDir?: string;
  /** More nats-server command-line arguments. */
  extraArgs?: string[];
  /** Make the server a member of a cluster: cluster name, route port, and the route URLs of all members. */
  cluster?: { name: string; port: number; routes: string[] };
  /** server_name; default `troupe-<port>`. */
  serverName?: string;
  /** fsync on every write (`sync_interval: always`). */
  syncAlways?: boolean;
  /** Also wait until JetStream knows its cluster meta leader (default true for cluster members). */
  waitForMetaLeader?: boolean;
  /** Startup timeout in ms (default 20 s, 30 s with waitForMetaLeader). */
  timeoutMs?: number;
}

// ---------------------------------------------------------------------------------------------
// Ports, temp files, cleanup on exit

const liveChildren = new Set<ChildProcess>();
const tempPaths = new Set<string>();
let exitHookInstalled = false;

function cleanupNow(): void {
  for (const c of liveChildren) {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
  liveChildren.clear();
  for (const p of tempPaths) {
    try { rmSync(p, { recursive: true, force: true }); } catch { /* best effort */ }
  }
  tempPaths.clear();
}

/**
 * Kill our servers and remove our temp dirs when this process ends: on 'exit', and on
 * SIGINT/SIGTERM/SIGHUP when nobody else handles the signal (vitest ends fork workers with
 * SIGTERM, which skips 'exit'). When the application has its own handler for the signal (a CLI
 * draining before shutdown), it stays in charge and servers are killed on 'exit'.
 */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', cleanupNow);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      if (process.listenerCount(sig) > 1) return;
      cleanupNow();
      process.removeListener(sig, onSignal);
      process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

/** A fresh directory under os.tmpdir(), removed when this process exits (or ends by signal). */
export function makeTempDir(prefix = 'troupe-'): string {
  installExitHook();
  const d = mkdtempSync(join(tmpdir(), prefix));
  tempPaths.add(d);
  return d;
}

/** `count` distinct free TCP ports on 127.0.0.1 (all held open together, then released). */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: count }, () => new Promise<ReturnType<typeof createServer>>((res, rej) => {
    const s = createServer();
    s.unref();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => res(s));
  })));
  const ports = servers.map((s) => (s.address() as AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise<void>((res) => s.close(() => res()))));
  return ports;
}

function tcpAccepts(port: number): Promise<boolean> {
  return new Promise((res) => {
    const sock = netConnect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => { sock.destroy(); res(ok); };
    sock.setTimeout(1000, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

// ---------------------------------------------------------------------------------------------
// Config generation

function confString(s: string): string {
  return JSON.stringify(s);
}

/**
 * The text of `config` with store_dir set to `storeDir`, plus `sync_interval: always` and a
 * cluster block when asked. Returns undefined when `config` has no store_dir line and nothing
 * else must change (then `-sd` on the command line is enough; nats-server refuses `-sd` together
 * with a store_dir in the file: "Duplicate 'store_dir' configuration").
 */
function deriveConfig(configText: string, storeDir: string, opts: StartNatsServerOptions): string | undefined {
  const storeRe = /^(\s*)store_dir\s*[:=]?\s*("[^"]*"|'[^']*'|\S+)\s*$/m;
  const hasStore = storeRe.test(configText);
  if (!hasStore && !opts.syncAlways && !opts.cluster) return undefined;
  let text = configText;
  const jsRe = /^(\s*)jetstream\s*[:=]?\s*\{/m;
  if (hasStore) {
    text = text.replace(storeRe, (_m, indent: string) => `${indent}store_dir: ${confString(storeDir)}`);
  } else if (jsRe.test(text)) {
    text = text.replace(jsRe, (m) => `${m}\n  store_dir: ${confString(storeDir)}`);
  } else {
    text += `\njetstream {\n  store_dir: ${confString(storeDir)}\n}\n`;
  }
  if (opts.syncAlways) {
    if (/^\s*sync_interval\s*[:=]/m.test(text)) {
      text = text.replace(/^(\s*)sync_interval\s*[:=].*$/m, (_m, indent: string) => `${indent}sync_interval: always`);
    } else if (jsRe.test(text)) {
      text = text.replace(jsRe, (m) => `${m}\n  sync_interval: always`);
    } else {
      text += `\njetstream {\n  sync_interval: always\n}\n`;
    }
  }
  if (opts.cluster) {
    const c = opts.cluster;
    text += `\n# Added by runtime/testing/nats-server.ts\ncluster {\n  name: ${confString(c.name)}\n  listen: "127.0.0.1:${c.port}"\n` +
      `  routes: [\n${c.routes.map((r) => `    ${confString(r)}`).join('\n')}\n  ]\n}\n`;
  }
  return text;
}

// ---------------------------------------------------------------------------------------------
// One server

interface Launch {
  bin: string;
  args: string[];
  waitForMetaLeader: boolean;
  timeoutMs: number;
}

const READY_RE = /Server is ready/;
const META_LEADER_RE = /JetStream cluster new metadata leader|Self is new JetStream cluster metadata leader/;
const FATAL_RE = /\[FTL\]|address already in use/i;

class ServerProcess implements NatsServerHandle {
  url: string;
  port: number;
  storeDir: string;
  pid = 0;
  version: string;
  name: string;
  configFile: string;
  clusterUrl?: string;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private logText = '';

  constructor(private readonly launch: Launch, init: { port: number; storeDir: string; version: string; name: string; configFile: string; clusterUrl?: string }) {
    this.port = init.port;
    this.url = `nats://127.0.0.1:${init.port}`;
    this.storeDir = init.storeDir;
    this.version = init.version;
    this.name = init.name;
    this.configFile = init.configFile;
    if (init.clusterUrl) this.clusterUrl = init.clusterUrl;
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  log(): string {
    return this.logText;
  }

  private append(chunk: string): void {
    this.logText += chunk;
    if (this.logText.length > LOG_KEEP_CHARS * 2) this.logText = this.logText.slice(-LOG_KEEP_CHARS);
  }

  async start(): Promise<void> {
    installExitHook();
    // detached: its own process group, so a Ctrl-C in the terminal reaches only this process,
    // which can then drain its work before it stops the server.
    const child = spawn(this.launch.bin, this.launch.args, { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    this.child = child;
    liveChildren.add(child);
    let startOut = '';
    let exitInfo: string | undefined;
    this.exited = new Promise<void>((res) => {
      child.once('exit', (code, signal) => {
        exitInfo = signal ? `signal ${signal}` : `code ${code}`;
        liveChildren.delete(child);
        if (this.child === child) this.child = undefined;
        res();
      });
      child.once('error', (err) => {
        exitInfo = `spawn error: ${err.message}`;
        liveChildren.delete(child);
        if (this.child === child) this.child = undefined;
        res();
      });
    });
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    // Keep draining the pipes for the whole life of the server, or it blocks on a full pipe.
    let onData: ((chunk: string) => void) | undefined;
    child.stdout!.on('data', (d: string) => { this.append(d); onData?.(d); });
    child.stderr!.on('data', (d: string) => { this.append(d); onData?.(d); });

    const fail = (why: string): Error => new Error(
      `nats-server ${this.name} (${this.launch.bin} ${this.launch.args.join(' ')}) ${why}.\n--- nats-server output ---\n` +
      `${startOut.slice(-8000)}`);

    await new Promise<void>((res, rej) => {
      let settled = false;
      const timer = setTimeout(() => finish(fail(`did not become ready within ${this.launch.timeoutMs} ms`)), this.launch.timeoutMs);
      const finish = (err?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        onData = undefined;
        if (err) rej(err); else res();
      };
      const check = () => {
        const out = startOut;
        if (FATAL_RE.test(out)) return finish(fail('failed to start'));
        if (!READY_RE.test(out)) return;
        if (this.launch.waitForMetaLeader && !META_LEADER_RE.test(out)) return;
        finish();
      };
      onData = (chunk) => { startOut += chunk; check(); };
      void this.exited.then(() => finish(fail(`exited during startup (${exitInfo ?? 'unknown'})`)));
      check();
    }).catch(async (err: unknown) => {
      await this.signalAndWait('SIGKILL', 5_000);
      throw err;
    });
    this.pid = child.pid ?? 0;
    // "Server is ready" is printed after the client listener is up; double-check the socket.
    if (!(await tcpAccepts(this.port))) {
      await this.signalAndWait('SIGKILL', 5_000);
      throw fail(`logged "Server is ready" but port ${this.port} refuses connections`);
    }
  }

  private async signalAndWait(signal: NodeJS.Signals, timeoutMs: number): Promise<void> {
    const child = this.child;
    if (!child) return;
    try { child.kill(signal); } catch { /* gone */ }
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.exited.then(() => false),
      new Promise<boolean>((res) => { timer = setTimeout(() => res(true), timeoutMs); }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      try { child.kill('SIGKILL'); } catch { /* gone */ }
      await this.exited;
    }
  }

  stop(): Promise<void> {
    return this.signalAndWait('SIGTERM', STOP_TIMEOUT_MS);
  }

  kill(): Promise<void> {
    return this.signalAndWait('SIGKILL', STOP_TIMEOUT_MS);
  }

  async restart(): Promise<void> {
    if (this.child) await this.stop();
    await this.start();
  }
}

function buildLaunch(bin: string, version: string, opts: StartNatsServerOptions, port: number, storeDir: string, name: string): { launch: Launch; configFile: string } {
  const config = resolve(opts.config ?? DEFAULT_NATS_CONFIG);
  let configText: string;
  try {
    configText = readFileSync(config, 'utf8');
  } catch (err) {
    throw new Error(`cannot read nats-server config ${config}: ${(err as Error).message}`);
  }
  const derived = deriveConfig(configText, storeDir, opts);
  let configFile = config;
  const args: string[] = [];
  if (derived !== undefined) {
    const dir = makeTempDir('troupe-nats-conf-');
    configFile = join(dir, 'nats.conf');
    writeFileSync(configFile, derived);
  }
  args.push('-c', configFile, '-a', '127.0.0.1', '-p', String(port), '--name', name);
  if (derived === undefined) args.push('-sd', storeDir);
  // -js: JetStream on even when a custom config has no jetstream block.
  if (!/^\s*jetstream\s*[:=]?\s*(\{|true|enabled)/m.test(derived ?? configText)) args.push('-js');
  args.push(...(opts.extraArgs ?? []));
  const waitForMetaLeader = opts.waitForMetaLeader ?? opts.cluster !== undefined;
  const timeoutMs = opts.timeoutMs ?? (waitForMetaLeader ? CLUSTER_TIMEOUT_MS : START_TIMEOUT_MS);
  return { launch: { bin, args, waitForMetaLeader, timeoutMs }, configFile };
}

/**
 * Start one nats-server from the package's `nats.conf` (or `opts.config`) on 127.0.0.1, with a random
 * free port and a fresh temp store unless told otherwise. Resolves when the server logged
 * "Server is ready" (and, for cluster members, knows its JetStream meta leader) and accepts
 * TCP connections; rejects with the server's output otherwise. Servers still running when this
 * process exits are killed.
 */
export async function startNatsServer(opts: StartNatsServerOptions = {}): Promise<NatsServerHandle> {
  const { path: bin, version } = findNatsServer();
  const storeDir = opts.storeDir ? resolve(opts.storeDir) : makeTempDir('troupe-nats-store-');
  mkdirSync(storeDir, { recursive: true });
  const attempts = opts.port === undefined ? 3 : 1;
  let lastErr: unknown;
  for (let i = 0; i < attempts; i++) {
    const port = opts.port ?? (await freePorts(1))[0]!;
    const name = opts.serverName ?? `troupe-${port}`;
    const { launch, configFile } = buildLaunch(bin, version, opts, port, storeDir, name);
    const init: { port: number; storeDir: string; version: string; name: string; configFile: string; clusterUrl?: string } =
      { port, storeDir, version, name, configFile };
    if (opts.cluster) init.clusterUrl = `nats-route://127.0.0.1:${opts.cluster.port}`;
    const server = new ServerProcess(launch, init);
    try {
      await server.start();
      return server;
    } catch (err) {
      lastErr = err;
      // A random port taken between picking and binding: try another one.
      if (!/address already in use/i.test(String((err as Error).message))) break;
    }
  }
  throw lastErr;
}
