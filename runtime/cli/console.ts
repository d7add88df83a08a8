/**
 * `troupe consumers`, `troupe projections`, `troupe actors <type>`, `troupe stats`: the
 * operator's view of a running deployment, from its NATS URL alone.
 *
 * consumers, projections   the log stream's JetStream consumers, lease buckets and DLQ stream
 *                          (consumers/overview.ts), read directly;
 * actors, stats            asked of every node at once on `<prefix>.ops.actors|stats`
 *                          (remote/ops-service.ts): each node answers for itself within a short window.
 */
import { ConsumerStore } from '../consumers/consumer-store.ts';
import { DeadLetterQueue } from '../consumers/dlq.ts';
import { consumerOverview, gatherConsumerStatus, projectionOverview, projectionStoreTag, requestRebuild, type ConsumerInstanceStatus } from '../consumers/overview.ts';
import { fromWire, isTroupeError } from '../errors.ts';
import { describeStream, type NatsConnection } from '../journal/journal.ts';
import { connectCli, type NatsFlags } from './credentials.ts';
import { DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX } from '../options.ts';
import { gatherOps, type NodeAnswer } from '../remote/ops-service.ts';
import { CliError, EXIT_RETRYABLE, EXIT_USAGE } from './exit.ts';

export interface ConsoleFlags extends NatsFlags {
  natsUrl?: string;
  stream?: string;
  json?: boolean;
  /** projections: the consumer process's data dir, to tell which version is active. */
  dataDir?: string;
  /** actors */
  resident?: boolean;
  limit?: number;
  /** actors, stats: how long to collect answers, ms. */
  window?: number;
  /** rebuild: which version (default: the only one running); wait: false returns once the rebuild started. */
  version?: number;
  wait?: boolean;
}

interface Opened { nc: NatsConnection; stream: string; prefix: string; servers: string }

async function withNats<T>(flags: ConsoleFlags, run: (o: Opened) => Promise<T>): Promise<T> {
  const stream = flags.stream ?? DEFAULT_STREAM;
  const { nc, servers } = await connectCli(flags, 'troupe-ops');
  let prefix: string;
  try {
    try {
      prefix = (await describeStream(nc, stream)).subjectPrefix ?? DEFAULT_SUBJECT_PREFIX;
    } catch (e) {
      if (isTroupeError(e)) throw e;
      throw new CliError(`stream ${stream} is not readable on ${servers} (${(e as Error).message}); start a node on it, or pass --stream`, EXIT_RETRYABLE, { cause: e });
    }
    return await run({ nc, stream, prefix, servers });
  } finally {
    await nc.close().catch(() => {});
  }
}

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Left-aligned columns, two spaces apart. */
export function table(head: string[], rows: (string | number)[][]): string {
  const cells = [head, ...rows.map((r) => r.map(String))];
  const widths = head.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return `${cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n')}\n`;
}

export function consumers(flags: ConsoleFlags): Promise<void> {
  return withNats(flags, async ({ nc, stream, prefix }) => {
    const dlq = await DeadLetterQueue.open({ nc, stream, subjectPrefix: prefix }).catch(() => null);
    // What the running processes say (counters, failing aggregates), sampled around the overview's second.
    const first = await gatherConsumerStatus(nc, prefix, flags.window ?? 500);
    const t0 = Date.now();
    const overview = await consumerOverview(nc, stream, { sampleMs: 1000, dlq });
    const second = await gatherConsumerStatus(nc, prefix, flags.window ?? 500);
    const seconds = (Date.now() - t0) / 1000;
    await dlq?.close();
    const list = overview.map((c) => ({ ...c, ...runningStatus(c.name, first, second, seconds) }));
    if (flags.json === true) return print(list);
    if (list.length === 0) return void process.stdout.write(`no durable consumer reads ${stream}\n`);
    process.stdout.write(table(['NAME', 'KIND', 'INSTANCES', 'LAG', 'MSGS/S', 'HANDLED/S', 'HANDLED', 'FAILED', 'FAILING', 'DEAD LETTERS'], list.map((c) => [
      c.name, c.durables > 1 ? `${c.kind} (${c.durables})` : c.kind, c.instances === null ? '-' : c.instances.length === 0 ? 'none' : c.instances.join(','),
      c.lag, c.messagesPerSecond ?? '-', c.handledPerSecond ?? '-', c.handled ?? '-', c.failed ?? '-', c.failingAggregates === null ? '-' : c.failingAggregates.length, c.dlqDepth ?? '-',
    ])));
    for (const c of list) {
      for (const f of c.failingAggregates ?? []) process.stdout.write(`  ${c.name}: ${f.aggregateType}/${f.aggregateId} failing (${f.reason}, ${f.attempts} attempts, next ${f.nextAttemptAt}) on ${f.instance}\n`);
    }
    if (list.some((c) => c.handled === null)) process.stdout.write('HANDLED, FAILED, FAILING: - when no running instance answered (they come from the consumer processes)\n');
  });
}

export function projections(flags: ConsoleFlags): Promise<void> {
  return withNats(flags, async ({ nc, stream }) => {
    let activeOf: ((name: string, store: string) => number | undefined) | undefined;
    let store: ConsumerStore | null = null;
    if (flags.dataDir !== undefined && flags.dataDir !== '') {
      const s = store = ConsumerStore.open(flags.dataDir);
      const tag = projectionStoreTag(flags.dataDir);
      const registry = s.db<{ active: number }, string>('projections');
      activeOf = (name, t) => (t === tag ? registry.get(`${stream}/${name}`)?.active : undefined);
    }
    try {
      const list = await projectionOverview(nc, stream, activeOf);
      if (flags.json === true) return print(list);
      if (list.length === 0) return void process.stdout.write(`no projection reads ${stream}\n`);
      process.stdout.write(table(['NAME', 'VERSION', 'STORE', 'ACTIVE', 'POSITION', 'LAG', 'PROGRESS'], list.map((p) => [
        p.name, `v${p.version}`, p.store, p.shards !== undefined ? `scaled out: shards ${p.shards.join(',')}` : p.active === null ? '?' : p.active ? 'yes' : 'no', `${p.position}/${p.lastSeq}`, p.lag, bar(p.progress),
      ])));
      if (list.some((p) => p.active === null && p.shards === undefined)) process.stdout.write('ACTIVE ? : which version readers use is recorded in the LMDB of the process that builds the view; pass its --data-dir\n');
    } finally {
      await store?.close();
    }
  });
}

/**
 * `troupe rebuild <projection>`: the running projection forgets its view and builds it again
 * from the start of the log (its apply function runs in its own process, which the request
 * reaches over NATS). Shows progress until it has read the log as it was when asked.
 */
export function rebuild(name: string, flags: ConsoleFlags): Promise<void> {
  return withNats(flags, async ({ nc, stream, prefix }) => {
    const running = (await projectionOverview(nc, stream)).filter((p) => p.name === name);
    const versions = [...new Set(running.map((p) => p.version))];
    let version = flags.version;
    if (version === undefined) {
      if (versions.length > 1) throw new CliError(`projection ${name} runs in versions ${versions.map((v) => `v${v}`).join(', ')}: name one with --version`, EXIT_USAGE);
      if (versions.length === 0) throw new CliError(`no running projection ${name} reads ${stream} (see \`troupe projections\`): a projection is rebuilt by its own process, so start it first`, EXIT_RETRYABLE);
      version = versions[0]!;
    }
    if (running.some((p) => p.version === version && p.shards !== undefined)) {
      throw new CliError(`projection ${name} v${version} is scaled out: its partitions are not rebuilt in place; start v${version + 1} beside it, move the readers, then stop v${version}`, EXIT_USAGE);
    }
    // The rebuild creates the projection's JetStream consumer again: that is how its start is seen.
    const before = new Set(running.filter((p) => p.version === version).map((p) => p.created));
    const { from } = await requestRebuild(nc, prefix, name, version);
    const tty = flags.json !== true && process.stderr.isTTY === true;
    const started = Date.now();
    let restarted = from === 0;
    let last = { position: 0, lag: 0 };
    while (flags.wait !== false) {
      const now = (await projectionOverview(nc, stream)).find((p) => p.name === name && p.version === version);
      if (now !== undefined && !before.has(now.created)) restarted = true;
      if (now !== undefined) last = { position: now.position, lag: now.lag };
      if (tty) process.stderr.write(`\r${name} v${version} ${bar(from === 0 ? 1 : Math.min(last.position, from) / from)} ${last.position}/${from}`);
      if (restarted && now !== undefined && now.position >= from) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    if (tty) process.stderr.write('\n');
    const done = { projection: name, version, from, position: last.position, waited: flags.wait !== false, ms: Date.now() - started };
    if (flags.json === true) return print(done);
    process.stdout.write(flags.wait === false
      ? `projection ${name} v${version} is rebuilding from the start of the log (up to ${from} then live); watch it with \`troupe projections\`\n`
      : `projection ${name} v${version} rebuilt: read the log up to ${from} in ${(done.ms / 1000).toFixed(1)} s\n`);
  });
}

type Failing = ConsumerInstanceStatus['failing'][number] & { instance: string };

/**
 * A consumer's counters from its running processes: each process counts once per name (its
 * shards share the counters), summed over processes; handled/s from two answers `seconds` apart.
 * null when no instance answered.
 */
export function runningStatus(name: string, first: readonly ConsumerInstanceStatus[], second: readonly ConsumerInstanceStatus[], seconds: number):
  { handled: number | null; failed: number | null; handledPerSecond: number | null; failingAggregates: Failing[] | null } {
  const byInstance = (list: readonly ConsumerInstanceStatus[]) => {
    const m = new Map<string, ConsumerInstanceStatus[]>();
    for (const s of list) if (s.consumer === name) m.set(s.instance, [...(m.get(s.instance) ?? []), s]);
    return m;
  };
  const now = byInstance(second);
  if (now.size === 0) return { handled: null, failed: null, handledPerSecond: null, failingAggregates: null };
  const before = byInstance(first);
  let handled = 0;
  let failed = 0;
  let delta = 0;
  const failing: Failing[] = [];
  for (const [instance, answers] of now) {
    // Versions of a projection count apart; the shards of one process share one counter.
    const one = new Map(answers.map((a) => [a.version ?? 0, a]));
    for (const [v, a] of one) {
      handled += a.handled;
      failed += a.failed;
      const b = before.get(instance)?.find((x) => (x.version ?? 0) === v);
      if (b !== undefined) delta += a.handled - b.handled;
    }
    for (const a of answers) for (const f of a.failing) failing.push({ ...f, instance });
  }
  return { handled, failed, handledPerSecond: seconds > 0 ? Math.round((delta / seconds) * 10) / 10 : null, failingAggregates: failing };
}

/** A 20-character progress bar with the percentage. */
export function bar(fraction: number): string {
  const f = Math.max(0, Math.min(1, fraction));
  const n = Math.round(f * 20);
  return `[${'#'.repeat(n)}${'.'.repeat(20 - n)}] ${(f * 100).toFixed(f === 1 ? 0 : 1)}%`;
}

function answered<T>(answers: NodeAnswer<T>[], servers: string): void {
  if (answers.length === 0) throw new CliError(`no Troupe node answered on ${servers}: start one with \`npx troupe start\`, or set NATS_URL (--nats-url) to where one runs`, EXIT_RETRYABLE);
}

interface ActorsAnswer { type: string; resident: boolean; ids: string[]; hosted: boolean }

export function actors(type: string, flags: ConsoleFlags): Promise<void> {
  return withNats(flags, async ({ nc, prefix, servers }) => {
    const answers = await gatherOps<ActorsAnswer>(nc, prefix, 'actors', { type, resident: flags.resident === true, limit: flags.limit ?? 1000 }, flags.window);
    answered(answers, servers);
    if (flags.json === true) return print(answers.map((a) => ({ node: a.node, ...(a.error !== undefined ? { error: a.error } : { ids: a.value!.ids, hosted: a.value!.hosted }) })));
    const lines: string[] = [];
    for (const a of answers) {
      if (a.error !== undefined) lines.push(`# ${a.node}: ${a.error.message}`);
      else if (!a.value!.hosted) lines.push(`# ${a.node}: hosts no actor type ${type}`);
      else {
        lines.push(`# ${a.node}: ${a.value!.ids.length} ${flags.resident === true ? 'resident ' : ''}${type}`);
        lines.push(...a.value!.ids);
      }
    }
    process.stdout.write(`${lines.join('\n')}\n`);
  });
}

interface TimersAnswer { type: string; id: string; timers: { key: string; dueAt: string; command: string; payload: unknown; every?: number; scheduledBy: string }[] }

/** `troupe timers <type> <id>`: the actor's pending durable timers, from the node that owns its shard. */
export function timers(type: string, id: string, flags: ConsoleFlags): Promise<void> {
  return withNats(flags, async ({ nc, prefix, servers }) => {
    const answers = await gatherOps<TimersAnswer>(nc, prefix, 'timers', { type, id }, flags.window);
    answered(answers, servers);
    const owner = answers.find((a) => a.value !== undefined);
    if (owner === undefined) {
      // Every node refused: the owner's reason (an unknown type, a forbidden read) over "not mine".
      const why = answers.find((a) => a.error !== undefined && a.error.code !== 'SHARD_NOT_OWNED') ?? answers[0]!;
      throw fromWire(why.error!);
    }
    const list = owner.value!.timers;
    if (flags.json === true) return print({ node: owner.node, ...owner.value });
    if (list.length === 0) {
      process.stdout.write(`${type} ${id} has no pending timers (node ${owner.node})\n`);
      return;
    }
    process.stdout.write(table(['KEY', 'DUE', 'EVERY', 'COMMAND', 'PAYLOAD', 'SCHEDULED BY'], list.map((t) => [
      t.key, t.dueAt, t.every === undefined ? '-' : `${t.every}ms`, t.command, JSON.stringify(t.payload), t.scheduledBy,
    ])));
  });
}

interface StatsAnswer {
  node: string; version: string; phase: string; uptimeS: number;
  shards: { owned: number; total: number }; workers: number; residentActors: number; passivations: number; queuedCommands: number;
  last10s: { commandsPerSecond: number; eventsPerSecond: number; failedPerSecond: number; p50Ms: number | null; p99Ms: number | null };
  sinceStart: { commands: number; failed: number; p50Ms: number | null; p99Ms: number | null };
}

function ms(v: number | null): string {
  return v === null ? '-' : `${v < 10 ? v.toFixed(2) : Math.round(v)}ms`;
}

export function stats(flags: ConsoleFlags): Promise<void> {
  return withNats(flags, async ({ nc, prefix, servers }) => {
    const answers = await gatherOps<StatsAnswer>(nc, prefix, 'stats', {}, flags.window);
    answered(answers, servers);
    if (flags.json === true) return print(answers.map((a) => (a.error !== undefined ? { node: a.node, error: a.error } : a.value)));
    const ok = answers.filter((a) => a.value !== undefined).map((a) => a.value!);
    process.stdout.write(table(['NODE', 'PHASE', 'SHARDS', 'CMDS/S', 'EVENTS/S', 'P50', 'P99', 'RESIDENT', 'PASSIVATED', 'COMMANDS'], ok.map((s) => [
      s.node, s.phase, `${s.shards.owned}/${s.shards.total}`, Math.round(s.last10s.commandsPerSecond), Math.round(s.last10s.eventsPerSecond),
      ms(s.last10s.p50Ms), ms(s.last10s.p99Ms), s.residentActors, s.passivations, s.sinceStart.commands,
    ])));
    for (const a of answers) if (a.error !== undefined) process.stdout.write(`# ${a.node}: ${a.error.message}\n`);
    if (ok.length > 1) {
      const sum = (f: (s: StatsAnswer) => number) => ok.reduce((x, s) => x + f(s), 0);
      process.stdout.write(`total: ${ok.length} nodes, ${Math.round(sum((s) => s.last10s.commandsPerSecond))} commands/s, ${sum((s) => s.residentActors)} resident actors, ${sum((s) => s.shards.owned)} shards owned\n`);
    }
    process.stdout.write('rates and latency: the last 10 s; P50/P99 of command latency as the node measures it\n');
  });
}
