// The durable-timer workload: N actors each schedule one timer, all due within the run; the node
// fires them. Reports firings per second (first due time to last firing: at most actors /
// spread when the node keeps up), the late-firing p99 (fire time
// minus due time, from the node's troupe_timer_late_seconds histogram: a bucket bound) and the
// process's peak RSS (the node's workers are threads of this process).
//
//   node --import tsx bench/timers.ts [--actors 100000] [--spread-ms 0] [--servers nats://...]
//   node --import tsx bench/timers.ts --pending with|without [--actors 1000000]
//
// --pending measures what pending timers cost in memory instead (runPending): every actor gets
// one command, with a timer due in a day or without, and the process's RSS is read after.
//
// Without --servers it starts its own nats-server (bench/nats.ts). Prints one JSON line.
import { fileURLToPath } from 'node:url';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Troupe } from '../runtime/node/system.ts';
import { startBenchNats } from './nats.ts';

export interface TimerBenchResult {
  actors: number;
  scheduleSec: number;
  firingsPerSec: number;
  lateP99Sec: number;
  peakRssMb: number;
}

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

/** p99 of a Prometheus histogram in the exposition text: the upper bound of its bucket. */
function p99(text: string, name: string): number {
  const buckets = [...text.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\S+)$`, 'gm'))].map((m) => [m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2])] as const);
  const total = buckets[buckets.length - 1]?.[1] ?? 0;
  return buckets.find(([, n]) => n >= total * 0.99)?.[0] ?? NaN;
}

function counter(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m === null ? 0 : Number(m[1]);
}

export async function runTimers(servers: string, actors: number, spreadMs: number): Promise<TimerBenchResult> {
  const dataDir = mkdtempSync(join(tmpdir(), 'troupe-bench-timers-'));
  let peak = process.memoryUsage().rss;
  const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 100);
  const tag = `${Date.now().toString(36)}`;
  const node = await Troupe.start({
    actors: [fileURLToPath(new URL('./timer-actor.ts', import.meta.url))], servers, dataDir,
    stream: `TROUPE_BENCH_TIMERS_${tag}`, subjectPrefix: `troupe_bench_timers_${tag}`, workers: 2, shards: 16, serve: false,
  });
  try {
    // Every actor arms its timer twice: first far ahead (which measures how fast they are
    // scheduled), then again under the same key (replacing it) due from 2 s after the second
    // pass should end, spread over spreadMs: so all are pending before the first falls due.
    const ids = Array.from({ length: actors }, (_, i) => `s-${i}`);
    const arm = async (at: (i: number) => number) => {
      for (let from = 0; from < actors; from += 2000) {
        await Promise.all(ids.slice(from, from + 2000).map((id, k) => node.send('Sleeper', id, 'Arm', { at: at(from + k) })));
      }
    };
    const t0 = Date.now();
    await arm(() => t0 + 86_400_000);
    const firstDue = Date.now() + Math.ceil((Date.now() - t0) * 1.3) + 2000;
    await arm((i) => firstDue + Math.floor((i * spreadMs) / actors));
    const scheduleSec = (Date.now() - t0) / 2000; // one pass
    if (Date.now() > firstDue) process.stderr.write('timers: the second pass ended after the first due time; lateness includes scheduling\n');
    let firstFiring = 0;
    let fired = 0;
    let text = '';
    const until = Date.now() + spreadMs + 600_000;
    while (fired < actors && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 100));
      text = await node.metrics();
      fired = counter(text, 'troupe_timers_fired_total');
      if (fired > 0 && firstFiring === 0) firstFiring = Date.now();
    }
    const seconds = (Date.now() - firstDue) / 1000;
    return { actors, scheduleSec, firingsPerSec: fired / seconds, lateP99Sec: p99(text, 'troupe_timer_late_seconds'), peakRssMb: Math.round(peak / 1e6) };
  } finally {
    clearInterval(sampler);
    await node.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

export interface PendingBenchResult {
  actors: number;
  withTimers: boolean;
  pending: number;
  /** RSS once every actor was sent its command and the process settled (3 s later). */
  rssMb: number;
  /** Of rssMb: anonymous memory (heaps, buffers) and file-backed pages (LMDB's memory map), from /proc (Linux; else -1). */
  rssAnonMb: number;
  rssFileMb: number;
  heapUsedMb: number;
  peakRssMb: number;
  sendSec: number;
}

function procStatusMb(field: string): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
    return m === null ? -1 : Math.round(Number(m[1]) * 1024 / 1e6);
  } catch {
    return -1;
  }
}

/**
 * What pending timers cost in memory: `actors` actors each get one command (one event), with a
 * timer due in a day or without; idle actors passivate (maxResidentActors per worker, as in the
 * scale run), so the difference between the two runs is what the timers hold.
 */
export async function runPending(servers: string, actors: number, withTimers: boolean, maxResidentActors = 100_000): Promise<PendingBenchResult> {
  const dataDir = mkdtempSync(join(tmpdir(), 'troupe-bench-pending-'));
  let peak = process.memoryUsage().rss;
  const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 100);
  const tag = `${Date.now().toString(36)}`;
  const node = await Troupe.start({
    actors: [fileURLToPath(new URL('./timer-actor.ts', import.meta.url))], servers, dataDir, maxResidentActors,
    stream: `TROUPE_BENCH_PENDING_${tag}`, subjectPrefix: `troupe_bench_pending_${tag}`, workers: 2, shards: 16, serve: false,
  });
  try {
    const at = Date.now() + 86_400_000;
    const t0 = Date.now();
    for (let from = 0; from < actors; from += 2000) {
      await Promise.all(Array.from({ length: Math.min(2000, actors - from) }, (_, k) => node.send('Sleeper', `p-${from + k}`, 'Poke', withTimers ? { at } : {})));
    }
    const sendSec = (Date.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 3000));
    const text = await node.metrics();
    const mem = process.memoryUsage();
    return { actors, withTimers, pending: counter(text, 'troupe_timers_pending'), rssMb: Math.round(mem.rss / 1e6), rssAnonMb: procStatusMb('RssAnon'), rssFileMb: procStatusMb('RssFile') + procStatusMb('RssShmem'), heapUsedMb: Math.round(mem.heapUsed / 1e6), peakRssMb: Math.round(Math.max(peak, mem.rss) / 1e6), sendSec };
  } finally {
    clearInterval(sampler);
    await node.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const i = process.argv.indexOf('--servers');
  const p = process.argv.indexOf('--pending');
  const nats = i >= 0 ? null : await startBenchNats();
  try {
    const servers = i >= 0 ? process.argv[i + 1]! : nats!.url;
    const r = p >= 0
      ? await runPending(servers, arg('--actors', 1_000_000), process.argv[p + 1] !== 'without')
      : await runTimers(servers, arg('--actors', 100_000), arg('--spread-ms', 0));
    console.log(JSON.stringify(r));
  } finally {
    await nats?.stop();
  }
}
