/**
 * Child processes of the suite: `node runtime/bin/run-ts.cjs <script>` (the way `troupe start`
 * runs: tsx's require hook in the main thread, no loader thread) with a JSON spec, a result line
 * on stdout, progress lines on stderr. Child scripts therefore use no top-level await.
 *
 * Protocol (both directions are line based, so Troupe's own JSON log lines on stdout never get
 * in the way):
 *   stdout  `@@bench <json>`    a message for the parent (the last one is the result)
 *   stderr  `@@phase <name>`    a phase starts (the parent samples resources around phases)
 *   stdin   one line per command, for long-running children (e.g. `stop`)
 * Anything else a child prints is kept (the last ~32 KB of each stream) for error reports.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
export const REPO_DIR = join(BENCH_DIR, '..');
export const MESSAGE_PREFIX = '@@bench ';
export const PHASE_PREFIX = '@@phase ';
const RUN_TS = join(REPO_DIR, 'runtime', 'bin', 'run-ts.cjs');

/** In a child: send a message (or the result) to the parent. */
export function sendToParent(value: unknown): void {
  process.stdout.write(`${MESSAGE_PREFIX}${JSON.stringify(value)}\n`);
}

/** In a child: announce a phase. */
export function announcePhase(name: string): void {
  process.stderr.write(`${PHASE_PREFIX}${name}\n`);
}

/** In a child: read the spec from argv[2] (JSON). */
export function readSpec<T>(): T {
  const raw = process.argv[2];
  if (raw === undefined) throw new Error(`usage: node runtime/bin/run-ts.cjs ${process.argv[1] ?? 'child'} '<json spec>'`);
  return JSON.parse(raw) as T;
}

export interface ChildHandle<T> {
  readonly pid: number;
  readonly process: ChildProcess;
  /** Resolves with the last `@@bench` message once the child exits with code 0. */
  readonly result: Promise<T>;
  /** Resolves with the next `@@bench` message. */
  nextMessage(): Promise<unknown>;
  /** Write one line to the child's stdin. */
  tell(line: string): void;
  /** SIGKILL. */
  kill(): void;
}

export interface SpawnOptions {
  readonly env?: NodeJS.ProcessEnv;
  /** Extra node flags before the script (e.g. `--cpu-prof`). */
  readonly nodeArgs?: readonly string[];
  readonly onPhase?: (name: string) => void;
  /** Kill the child and fail when it runs longer than this. */
  readonly timeoutMs?: number;
}

function keepTail(buf: string, add: string, max = 32 * 1024): string {
  const s = buf + add;
  return s.length > max ? s.slice(s.length - max) : s;
}

/** Run `node [nodeArgs] runtime/bin/run-ts.cjs <script> <spec as JSON>` in the repository root. */
export function spawnChild<T>(script: string, spec: unknown, opts: SpawnOptions = {}): ChildHandle<T> {
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), RUN_TS, script, JSON.stringify(spec)], {
    cwd: REPO_DIR,
    env: { ...process.env, ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  let outLine = '';
  let errLine = '';
  let last: unknown;
  let haveResult = false;
  const queued: unknown[] = [];
  const waiters: ((v: unknown) => void)[] = [];

  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    outLine += chunk;
    let nl: number;
    while ((nl = outLine.indexOf('\n')) >= 0) {
      const line = outLine.slice(0, nl);
      outLine = outLine.slice(nl + 1);
      if (line.startsWith(MESSAGE_PREFIX)) {
        let msg: unknown;
        try {
          msg = JSON.parse(line.slice(MESSAGE_PREFIX.length));
        } catch {
          out = keepTail(out, `${line}\n`);
          continue;
        }
        last = msg;
        haveResult = true;
        const w = waiters.shift();
        if (w !== undefined) w(msg);
        else queued.push(msg);
      } else {
        out = keepTail(out, `${line}\n`);
      }
    }
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    errLine += chunk;
    let nl: number;
    while ((nl = errLine.indexOf('\n')) >= 0) {
      const line = errLine.slice(0, nl);
      errLine = errLine.slice(nl + 1);
      if (line.startsWith(PHASE_PREFIX)) opts.onPhase?.(line.slice(PHASE_PREFIX.length).trim());
      else err = keepTail(err, `${line}\n`);
    }
  });

  const result = new Promise<T>((resolve, reject) => {
    const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${script} ran longer than ${opts.timeoutMs} ms; killed.\nstderr: ${err.slice(-4000)}`));
    }, opts.timeoutMs);
    child.on('error', (e) => {
      if (timer !== undefined) clearTimeout(timer);
      reject(e);
    });
    child.on('exit', (code, signal) => {
      if (timer !== undefined) clearTimeout(timer);
      if (code === 0 && haveResult) resolve(last as T);
      else {
        const why = code === 0 ? 'exited without a result' : `exited with ${code ?? signal}`;
        reject(new Error(`${script} ${why}.\nstderr (tail): ${err.slice(-4000)}\nstdout (tail): ${out.slice(-2000)}`));
      }
    });
  });
  result.catch(() => {});

  return {
    pid: child.pid ?? -1,
    process: child,
    result,
    nextMessage() {
      const q = queued.shift();
      if (q !== undefined) return Promise.resolve(q);
      return new Promise((resolve, reject) => {
        waiters.push(resolve);
        result.then(() => reject(new Error(`${script} exited before sending a message`)), reject);
      });
    },
    tell(line: string) {
      child.stdin.write(`${line}\n`);
    },
    kill() {
      child.kill('SIGKILL');
    },
  };
}

/** In a child: resolves with each line written to stdin. */
export function onStdinLine(fn: (line: string) => void): void {
  let buf = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line !== '') fn(line);
    }
  });
}
