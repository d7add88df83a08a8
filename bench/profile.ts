/**
 * Summaries of V8 CPU profiles (.cpuprofile, from `node --cpu-prof` or TROUPE_PROFILE_DIR):
 * the functions with the most self time, and self time by source file.
 *
 *   node --import tsx bench/profile.ts DIR_OR_FILE [...] [--top 25]
 *
 * `npm run bench -- --only in-process --profile DIR` leaves one profile of the main thread and
 * one per worker thread in DIR/<variant>/.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { REPO_DIR } from './spawn.ts';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface SelfTime {
  readonly name: string;
  readonly where: string;
  readonly ms: number;
  readonly pct: number;
}

export interface ProfileSummary {
  readonly file: string;
  readonly totalMs: number;
  /** Time not idle, not (program), not (garbage collector). */
  readonly busyMs: number;
  readonly idleMs: number;
  readonly gcMs: number;
  readonly top: readonly SelfTime[];
  readonly byFile: readonly SelfTime[];
}

function shortUrl(url: string): string {
  if (url === '') return '';
  let path = url;
  try {
    if (url.startsWith('file:')) path = fileURLToPath(url);
  } catch {
    // keep the URL
  }
  if (path.startsWith(REPO_DIR)) {
    const rel = relative(REPO_DIR, path);
    const nm = rel.lastIndexOf('node_modules/');
    return nm >= 0 ? rel.slice(nm + 'node_modules/'.length) : rel;
  }
  return path;
}

export function summarizeProfile(file: string, top = 25): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  for (const n of profile.nodes) byId.set(n.id, n);
  const selfUs = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  if (samples.length > 0 && deltas.length === samples.length) {
    // timeDeltas[i] is the time before sample i; attribute it to the sample's node.
    for (let i = 0; i < samples.length; i++) {
      const id = samples[i]!;
      selfUs.set(id, (selfUs.get(id) ?? 0) + Math.max(0, deltas[i]!));
    }
  } else {
    const interval = samples.length > 0 ? (profile.endTime - profile.startTime) / samples.length : 1000;
    for (const n of profile.nodes) selfUs.set(n.id, (n.hitCount ?? 0) * interval);
  }
  let totalUs = 0;
  let idleUs = 0;
  let gcUs = 0;
  let programUs = 0;
  const fns = new Map<string, { name: string; where: string; us: number }>();
  const files = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (n === undefined) continue;
    totalUs += us;
    const name = n.callFrame.functionName || '(anonymous)';
    if (name === '(idle)') { idleUs += us; continue; }
    if (name === '(garbage collector)') gcUs += us;
    if (name === '(program)') programUs += us;
    const where = shortUrl(n.callFrame.url);
    const key = `${name}\u0000${where}\u0000${n.callFrame.lineNumber}`;
    const f = fns.get(key) ?? { name, where: where === '' ? '' : `${where}:${n.callFrame.lineNumber + 1}`, us: 0 };
    f.us += us;
    fns.set(key, f);
    const fileKey = where === '' ? name : where;
    files.set(fileKey, (files.get(fileKey) ?? 0) + us);
  }
  const busyUs = totalUs - idleUs;
  const pct = (us: number) => (busyUs > 0 ? (100 * us) / busyUs : 0);
  return {
    file,
    totalMs: totalUs / 1000,
    busyMs: (busyUs - gcUs - programUs) / 1000,
    idleMs: idleUs / 1000,
    gcMs: gcUs / 1000,
    top: [...fns.values()].sort((a, b) => b.us - a.us).slice(0, top).map((f) => ({ name: f.name, where: f.where, ms: f.us / 1000, pct: pct(f.us) })),
    byFile: [...files].sort((a, b) => b[1] - a[1]).slice(0, 15).map(([where, us]) => ({ name: where, where, ms: us / 1000, pct: pct(us) })),
  };
}

export function profileFiles(paths: readonly string[]): string[] {
  const out: string[] = [];
  const walk = (p: string): void => {
    const st = statSync(p);
    if (st.isDirectory()) for (const e of readdirSync(p).sort()) walk(join(p, e));
    else if (p.endsWith('.cpuprofile')) out.push(p);
  };
  for (const p of paths) walk(p);
  return out;
}

/**
 * `worker-<pid>-<tid>.cpuprofile` (TROUPE_PROFILE_DIR) is a Troupe worker; `CPU.<date>.<time>.<pid>.<tid>.<n>.cpuprofile`
 * (--cpu-prof) is thread <tid> of the process: 0 the main thread, then tsx's loader thread and the workers.
 */
export function threadKind(file: string): string {
  const name = basename(file);
  if (name.startsWith('worker-')) return `Troupe worker (TROUPE_PROFILE_DIR), thread ${name.split('-')[2]?.replace('.cpuprofile', '') ?? '?'}`;
  const m = /^CPU\.\d+\.\d+\.(\d+)\.(\d+)\.\d+\.cpuprofile$/.exec(name);
  if (m === null) return 'profile';
  return m[2] === '0' ? `main thread (--cpu-prof), pid ${m[1]}` : `thread ${m[2]} (--cpu-prof), pid ${m[1]}`;
}

export function formatSummary(s: ProfileSummary, top = 20): string {
  const lines: string[] = [];
  const kind = threadKind(s.file);
  lines.push(`${s.file} (${kind}): ${(s.totalMs / 1000).toFixed(1)} s sampled, ${(s.idleMs / 1000).toFixed(1)} s idle, GC ${(s.gcMs / 1000).toFixed(2)} s`);
  lines.push('  self time (% of non-idle)   function                                   where');
  for (const f of s.top.slice(0, top)) {
    lines.push(`  ${f.ms.toFixed(0).padStart(7)} ms ${f.pct.toFixed(1).padStart(5)}%   ${f.name.slice(0, 42).padEnd(42)} ${f.where}`);
  }
  lines.push('  by file:');
  for (const f of s.byFile.slice(0, 10)) lines.push(`  ${f.ms.toFixed(0).padStart(7)} ms ${f.pct.toFixed(1).padStart(5)}%   ${f.name}`);
  return lines.join('\n');
}

const isMain = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1];
if (isMain) {
  const args = process.argv.slice(2);
  const topAt = args.indexOf('--top');
  const top = topAt >= 0 ? Number(args[topAt + 1]) : 20;
  const paths = args.filter((a, i) => a !== '--top' && (topAt < 0 || i !== topAt + 1));
  if (paths.length === 0) {
    process.stderr.write('usage: node --import tsx bench/profile.ts DIR_OR_FILE [...] [--top N]\n');
    process.exit(2);
  }
  for (const f of profileFiles(paths)) process.stdout.write(`${formatSummary(summarizeProfile(f, top), top)}\n\n`);
}
