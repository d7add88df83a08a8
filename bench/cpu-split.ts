/**
 * Where the CPU of a command goes, per process and per thread: rounds of the ledger workload
 * in-process and remote (TroupeClient in its own process) at C = 4096, each printed as
 * throughput, CPU µs per phase-2 command of all measured processes, and the split: the node
 * process (its main thread, and every other thread with at least 0.05 s of CPU: the worker,
 * V8's helper threads, LMDB's writer), the client process, nats-server.
 *
 *   node --import tsx bench/cpu-split.ts [ROUNDS=3] [in-process,remote] [COMMANDS=100000]
 *
 * Threads are read from /proc/<pid>/task/<tid>/stat around phase 2 and named by their tid's
 * distance from the process id (`main` is the main thread; the worker is the busiest other).
 * To compare two versions of the code (A/B), run this from two checkouts, interleaved, and
 * take medians: the machine is shared, and rounds differ by more than most changes do.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { startBenchNats } from './nats.ts';
import { freshRun, runLedger, runRemote } from './troupe.ts';

const rounds = Number(process.argv[2] ?? 3);
const which = (process.argv[3] ?? 'in-process,remote').split(',');
const commands = Number(process.argv[4] ?? 100_000);

/** [field 14 utime + field 15 stime] of a /proc stat line, in seconds, and its parent pid. */
function statOf(path: string): { ppid: number; cpu: number } | undefined {
  try {
    const s = readFileSync(path, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { ppid: Number(f[1]), cpu: (Number(f[11]) + Number(f[12])) / 100 };
  } catch {
    return undefined;
  }
}

/** The bench child (bench/child.ts) this process started: the Troupe node. */
function nodeChild(): number {
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || statOf(`/proc/${d}/stat`)?.ppid !== process.pid) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').includes('child.ts')) return Number(d);
    } catch { /* gone */ }
  }
  return 0;
}

function threads(pid: number): Map<string, number> {
  const m = new Map<string, number>();
  try {
    for (const t of readdirSync(`/proc/${pid}/task`)) {
      const st = statOf(`/proc/${pid}/task/${t}/stat`);
      if (st !== undefined) m.set(t === String(pid) ? 'main' : `t${Number(t) - pid}`, st.cpu);
    }
  } catch { /* gone */ }
  return m;
}

function split(before: Map<string, number>, after: Map<string, number>): string {
  const parts: string[] = [];
  for (const [k, v] of after) {
    const d = v - (before.get(k) ?? 0);
    if (d > 0.05) parts.push(`${k}=${((d * 1e6) / commands).toFixed(1)}`);
  }
  return parts.join(' ');
}

/** Samples the node's threads around phase 2 (the phases the children announce). */
function threadSampler(): { onPhase: (p: string) => void; result: () => string } {
  let node = 0;
  let before = new Map<string, number>();
  let out = '';
  return {
    onPhase: (p) => {
      if (p === 'commands') before = threads(node = nodeChild());
      if (p === 'commands-done') out = split(before, threads(node));
    },
    result: () => out,
  };
}

async function main(): Promise<void> {
  const nats = await startBenchNats();
  const server = { servers: nats.url, pids: [nats.pid] };
  const us = (s: number) => ((s * 1e6) / commands).toFixed(1);
  try {
    for (let r = 1; r <= rounds; r++) {
      let inProcess = 0;
      if (which.includes('in-process')) {
        const t = threadSampler();
        const v = await runLedger({ variant: 'in-process', server, accounts: 10_000, commandCount: commands, seed: 42, concurrency: 4096, tuning: {}, ...freshRun('in-process') }, { isolate: true, onPhase: t.onPhase });
        const total = v.run.resources.totalCpuSeconds;
        const srv = v.run.resources.children.reduce((s, c) => s + c.cpuSeconds, 0);
        inProcess = v.run.phase2.cmdsPerSec;
        console.log(`round ${r} in-process ${Math.round(inProcess)} cmds/s ${us(total)} µs/cmd (node ${us(total - srv)} [${t.result()}], nats ${us(srv)}) verify ${v.verifyOk}`);
      }
      if (which.includes('remote')) {
        const t = threadSampler();
        const v = await runRemote({ server, accounts: 10_000, commandCount: commands, seed: 42, concurrency: 4096, tuning: {}, ...freshRun('remote') }, { isolate: true, onPhase: t.onPhase });
        const of = (label: string) => us(v.run.resources.children.filter((c) => c.label === label).reduce((s, c) => s + c.cpuSeconds, 0));
        const rate = v.run.client.phase2.cmdsPerSec;
        console.log(`round ${r} remote ${Math.round(rate)} cmds/s ${us(v.run.cpuSeconds)} µs/cmd (node ${of('node')} [${t.result()}], client ${of('client')}, nats ${of('nats-server')})` +
          `${inProcess > 0 ? ` ratio ${(rate / inProcess).toFixed(2)}` : ''} verify ${v.verifyOk}`);
      }
    }
  } finally {
    await nats.stop();
  }
}

main().then(() => process.exit(0), (e: unknown) => {
  console.error(e);
  process.exit(1);
});
