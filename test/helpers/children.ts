// Instances of a scaled-out consumer or projection run as child processes (test/fixtures/scaled-*-child.ts):
// each prints a line `shards a,b,...` whenever the shards it owns change.
import { spawn, type ChildProcess } from 'node:child_process';
import { afterEach } from 'vitest';
import { REPO_ROOT } from '../../runtime/testing/nats-server.ts';

export interface ScaledChild {
  proc: ChildProcess;
  /** stdout and stderr so far. */
  out: () => string;
  /** The shards it owns, from its last `shards` line. */
  shards: () => number[];
  exited: Promise<{ code: number | null; signal: string | null }>;
}

/**
 * The children of one describe block: `start` spawns a fixture with its arguments; after each
 * test the ones still running are killed (their output printed first with DEBUG_CHILD set).
 */
export function useScaledChildren(): { start: (script: string, args: readonly string[]) => ScaledChild } {
  const children: ScaledChild[] = [];
  afterEach(() => {
    if (process.env.DEBUG_CHILD) for (const c of children) console.log(c.out());
    for (const c of children.splice(0)) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
  });
  return {
    start(script, args) {
      const proc = spawn(process.execPath, ['--import', 'tsx', script, ...args], { cwd: REPO_ROOT });
      let out = '';
      proc.stdout!.on('data', (b: Buffer) => { out += b.toString(); });
      proc.stderr!.on('data', (b: Buffer) => { out += b.toString(); });
      const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
      const child: ScaledChild = {
        proc, out: () => out, exited,
        shards: () => {
          const lines = out.match(/^shards .*$/gm);
          const last = lines?.[lines.length - 1]?.slice(7) ?? '';
          return last === '' ? [] : last.split(',').map(Number);
        },
      };
      children.push(child);
      return child;
    },
  };
}
