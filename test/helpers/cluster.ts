/**
 * Several Troupe nodes as a user runs them: `troupe start` processes with a config file, each on
 * its own HTTP port, waited for until /ready answers 200; and what a test asks of their cluster.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ClusterStatus } from '../../runtime/node/membership.ts';
import { shardsOf } from '../../runtime/placement.ts';
import { REPO_ROOT } from '../../runtime/testing/nats-server.ts';
import { freePorts, tempDir } from './nats.ts';
import { sleep } from './troupe.ts';

export interface NodeProc {
  name: string;
  dataDir: string;
  /** `http://127.0.0.1:<port>` */
  url: string;
  child: ChildProcessWithoutNullStreams;
  /** Resolves with the exit signal or code. */
  exited: Promise<NodeJS.Signals | number | null>;
  /** stdout and stderr so far. */
  output(): string;
}

export interface NodeProcOptions {
  /** The config file's content (troupe.config.json): stream, shards, leases, actors... nodeName is added. */
  config: Record<string, unknown>;
  servers: string;
  dataDir?: string;
  logLevel?: string;
  env?: Record<string, string>;
  readyTimeoutMs?: number;
}

/** Start `troupe start` as node `name`; resolves once its /ready answers 200. `procs` collects it for stopAll. */
export async function startNodeProcess(name: string, o: NodeProcOptions, procs: NodeProc[]): Promise<NodeProc> {
  const [port] = await freePorts(1);
  const dataDir = o.dataDir ?? tempDir();
  const config = join(tempDir(), 'troupe.config.json');
  writeFileSync(config, JSON.stringify({ ...o.config, nodeName: name }));
  const child = spawn(process.execPath, [join(REPO_ROOT, 'runtime', 'bin', 'run-ts.cjs'), join(REPO_ROOT, 'runtime', 'cli', 'main.ts'),
    'start', '--config', config, '--nats-url', o.servers, '--data-dir', dataDir, '--http-port', String(port), '--log-level', o.logLevel ?? 'warn'], {
    cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...o.env },
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code)));
  const p: NodeProc = { name, dataDir, url: `http://127.0.0.1:${port}`, child, exited, output: () => out };
  procs.push(p);
  const until = Date.now() + (o.readyTimeoutMs ?? 90_000);
  for (;;) {
    const ok = await fetch(`${p.url}/ready`).then((r) => r.status === 200, () => false);
    if (ok) return p;
    if (Date.now() > until || child.exitCode !== null) throw new Error(`node ${name} did not start:\n${out}`);
    await sleep(50);
  }
}

/** Kill (SIGKILL) every process still running and wait for each to exit. */
export async function killAll(procs: NodeProc[]): Promise<void> {
  for (const p of procs.splice(0)) {
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    await p.exited;
  }
}

/** Poll `probe` every 100 ms until it gives a value; throws naming `what` (and the last error) after `timeoutMs`. */
export async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last !== undefined ? ` (${String(last)})` : ''}`);
    await sleep(100);
  }
}

/** Leases exactly as placement over `nodes` says: every shard held, nothing moving (and, with `ready`, every node ready). */
export function placed(st: ClusterStatus, nodes: string[], opts: { ready?: boolean } = {}): boolean {
  if (st.unowned.length > 0 || st.moves.length > 0 || st.leases.length !== st.shards) return false;
  if (opts.ready === true && !nodes.every((n) => st.nodes.some((m) => m.node === n && m.state === 'ready'))) return false;
  return nodes.every((n) => JSON.stringify(shardsOf(n, nodes, st.shards)) === JSON.stringify(st.leases.filter((l) => l.node === n).map((l) => l.shard)));
}
