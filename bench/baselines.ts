/**
 * Baselines for the ledger workload, measured on the same server as Troupe:
 *
 * - runCeiling: the per-message ceiling. Pre-encoded ~150-byte events, one JetStream message
 *   each, published the lean way (core publish() with a reply subject under one wildcard inbox
 *   subscription per connection, acks matched by hand, a window of ~4,000 in flight).
 * - runPlain: the workload written the plain way (state in a Map, one `await js.publish()` per
 *   event, per-account promise chains), then verified by rebuilding every account from the log.
 */
import { randomUUID } from 'node:crypto';
import { connect, nuid, type Msg, type NatsConnection } from '@nats-io/transport-node';
import {
  jetstream,
  jetstreamManager,
  StorageType,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import { Packr } from 'msgpackr';
import {
  accountId,
  expectedOutcome,
  runClosedLoop,
  ResourceSampler,
  summarizeLatencies,
  type LedgerCommand,
  type Outcome,
  type ResourceReport,
} from './workload.ts';
import type { BenchRow } from './report.ts';

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/** A stream/subject token unique to this run (stream names allow [A-Za-z0-9_-]). */
function runToken(): string {
  return nuid.next().toLowerCase();
}

async function createFileStream(jsm: JetStreamManager, name: string, subjects: string[], replicas = 1): Promise<void> {
  await jsm.streams.add({
    name,
    subjects,
    storage: StorageType.File,
    num_replicas: replicas,
  });
}

async function streamMessages(jsm: JetStreamManager, name: string): Promise<number> {
  const info = await jsm.streams.info(name);
  return info.state.messages;
}

async function deleteStreamQuietly(jsm: JetStreamManager, name: string): Promise<void> {
  try {
    await jsm.streams.delete(name);
  } catch {
    // Best effort: the server is usually a throwaway one.
  }
}

// ---------------------------------------------------------------------------------------------
// Ceiling
// ---------------------------------------------------------------------------------------------

export interface CeilingOptions {
  readonly url: string;
  /** Number of events (= JetStream messages) to publish. */
  readonly events: number;
  readonly connections?: 1 | 2;
  /** Total acknowledgements outstanding across all connections. */
  readonly inFlight?: number;
  /** Approximate encoded size of each event in bytes. */
  readonly size?: number;
  /** Give up when no ack arrives for this long (lost acks are not retried). */
  readonly stallTimeoutMs?: number;
  /** nats-server PID, to measure its CPU seconds and RSS. */
  readonly serverPid?: number;
  /** More nats-server PIDs (the other members of a cluster). */
  readonly serverPids?: readonly number[];
  /** Stream replicas (3 on a cluster). */
  readonly replicas?: number;
}

export interface CeilingResult {
  readonly connections: number;
  readonly events: number;
  readonly inFlight: number;
  readonly size: number;
  readonly durationMs: number;
  readonly msgsPerSec: number;
  /** Publish-to-ack latency. */
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly p999Ms: number;
  readonly maxMs: number;
  /** Acks carrying a JetStream error. */
  readonly errors: number;
  readonly jetstreamMessages: number;
  readonly resources: ResourceReport;
}

/** A ledger-like event, JSON-encoded (ASCII) and padded to exactly `size` bytes when it fits. */
function encodeCeilingEvent(i: number, size: number, encoder: TextEncoder): Uint8Array {
  const json =
    `{"eventId":"${randomUUID()}","eventType":"${i % 10 < 7 ? 'Deposited' : 'Withdrawn'}",` +
    `"aggregateId":"${accountId(i % 10_000)}","seq":${Math.floor(i / 10_000) + 1},` +
    `"timestamp":${1_700_000_000_000 + i},"payload":{"amount":${1 + (i % 100)}},"pad":"`;
  const pad = Math.max(0, size - json.length - 2);
  return encoder.encode(`${json}${'x'.repeat(pad)}"}`);
}

/** `{"stream"...` is an ack; anything else (`{"error"...`) is a failure. */
function isAck(data: Uint8Array): boolean {
  return data.length > 10 && data[0] === 0x7b && data[1] === 0x22 && data[2] === 0x73;
}

/**
 * Publishes `events` pre-encoded messages as fast as the server acknowledges them, keeping up
 * to `inFlight` unacknowledged (split evenly over the connections), and reports the rate.
 */
export async function runCeiling(opts: CeilingOptions): Promise<CeilingResult> {
  const connections = opts.connections ?? 1;
  const inFlight = opts.inFlight ?? 4000;
  const size = opts.size ?? 150;
  const total = opts.events;
  const stallTimeoutMs = opts.stallTimeoutMs ?? 15_000;

  const encoder = new TextEncoder();
  const payloads: Uint8Array[] = new Array<Uint8Array>(total);
  for (let i = 0; i < total; i++) payloads[i] = encodeCeilingEvent(i, size, encoder);

  const ncs: NatsConnection[] = [];
  for (let c = 0; c < connections; c++) ncs.push(await connect({ servers: opts.url.split(','), name: `bench-ceiling-${c}` }));
  const first = ncs[0];
  if (first === undefined) throw new Error('no connection');
  const jsm = await jetstreamManager(first);
  const token = runToken();
  const stream = `BENCH_CEILING_${token}`;
  const subject = `bench.ceiling.${token}`;
  await createFileStream(jsm, stream, [subject], opts.replicas ?? 1);

  const sentAt = new Float64Array(total);
  const latency = new Float64Array(total);
  const acked = new Uint8Array(total);
  const windowPerConn = Math.max(1, Math.floor(inFlight / connections));
  let next = 0;
  let done = 0;
  let errors = 0;
  let lastProgress = performance.now();
  const sampler = new ResourceSampler();
  if (opts.serverPid !== undefined) sampler.addChild(opts.serverPid, 'nats-server');
  for (const pid of opts.serverPids ?? []) sampler.addChild(pid, 'nats-server');

  let resolveDone!: () => void;
  let rejectDone!: (err: Error) => void;
  const finished = new Promise<void>((resolve, reject) => {
    resolveDone = resolve;
    rejectDone = reject;
  });

  const pumps = ncs.map((nc) => {
    const prefix = `_INBOX.${nuid.next()}.`;
    const prefixLen = prefix.length;
    let outstanding = 0;
    // publish() reads its options synchronously, so one object serves every message.
    const pubOpts = { reply: '' };
    const pump = (): void => {
      while (outstanding < windowPerConn && next < total) {
        const i = next++;
        outstanding++;
        sentAt[i] = performance.now();
        pubOpts.reply = prefix + i;
        nc.publish(subject, payloads[i], pubOpts);
      }
    };
    nc.subscribe(`${prefix}*`, {
      callback: (err: Error | null, msg: Msg) => {
        if (err !== null) {
          rejectDone(err);
          return;
        }
        const i = Number(msg.subject.slice(prefixLen));
        if (!(i >= 0 && i < total) || acked[i] === 1) return;
        acked[i] = 1;
        const now = performance.now();
        latency[i] = now - (sentAt[i] ?? now);
        lastProgress = now;
        if (!isAck(msg.data)) errors++;
        outstanding--;
        done++;
        if (done === total) resolveDone();
        else pump();
      },
    });
    return pump;
  });
  // Make sure the inbox subscriptions are registered before the first reply can arrive.
  await Promise.all(ncs.map((nc) => nc.flush()));

  const watchdog = setInterval(() => {
    if (performance.now() - lastProgress > stallTimeoutMs) {
      rejectDone(new Error(`ceiling stalled: ${done}/${total} acked, no ack for ${stallTimeoutMs} ms`));
    }
  }, 500);

  sampler.start();
  const start = performance.now();
  lastProgress = start;
  try {
    if (total === 0) resolveDone();
    for (const pump of pumps) pump();
    await finished;
  } finally {
    clearInterval(watchdog);
  }
  const durationMs = performance.now() - start;
  const resources = sampler.stop();

  const jetstreamMessages = await streamMessages(jsm, stream);
  await deleteStreamQuietly(jsm, stream);
  await Promise.all(ncs.map((nc) => nc.close()));

  return {
    connections,
    events: total,
    inFlight,
    size,
    durationMs,
    msgsPerSec: durationMs > 0 ? (total / durationMs) * 1000 : 0,
    ...summarizeLatencies(latency),
    errors,
    jetstreamMessages,
    resources,
  };
}

export interface BestCeilingResult {
  readonly best: CeilingResult;
  readonly runs: readonly CeilingResult[];
}

/** The best run by msgs/s, preferring runs without errors. */
export function pickBestCeiling(runs: readonly CeilingResult[]): BestCeilingResult {
  const ok = runs.filter((r) => r.errors === 0);
  const pool = ok.length > 0 ? ok : runs;
  const first = pool[0];
  if (first === undefined) throw new Error('no ceiling runs');
  const best = pool.reduce((a, b) => (b.msgsPerSec > a.msgsPerSec ? b : a), first);
  return { best, runs };
}

/** Ceiling with 1 and with 2 connections; keeps the best. */
export async function runCeilingBest(opts: Omit<CeilingOptions, 'connections'>): Promise<BestCeilingResult> {
  const runs: CeilingResult[] = [];
  for (const connections of [1, 2] as const) runs.push(await runCeiling({ ...opts, connections }));
  return pickBestCeiling(runs);
}

// ---------------------------------------------------------------------------------------------
// Plain
// ---------------------------------------------------------------------------------------------

export type LedgerEventType = 'AccountOpened' | 'Deposited' | 'Withdrawn';

/** The event as the plain implementation stores it (msgpack on the wire). */
export interface PlainEvent {
  readonly eventId: string;
  readonly eventType: LedgerEventType;
  readonly aggregateId: string;
  /** The account's sequence number after this event (1 = AccountOpened). */
  readonly seq: number;
  readonly timestamp: number;
  readonly payload: { readonly amount?: number };
}

export interface PlainOptions {
  readonly url: string;
  readonly accounts: number;
  readonly commands: readonly LedgerCommand[];
  readonly concurrency: number;
  /** nats-server PID, to measure its CPU seconds and RSS during phase 2. */
  readonly serverPid?: number;
  /** Keep the stream after the run (default: delete it). */
  readonly keepStream?: boolean;
  /** Called when a phase starts, for progress output. */
  readonly onPhase?: (phase: 'open' | 'commands' | 'verify') => void;
}

export interface LedgerVerification {
  readonly ok: boolean;
  readonly failures: readonly string[];
  readonly eventsRead: number;
  readonly deposited: number;
  readonly withdrawn: number;
  readonly balanceSum: number;
  readonly durationMs: number;
}

export interface PlainResult {
  readonly concurrency: number;
  readonly accounts: number;
  readonly commands: number;
  readonly phase1Ms: number;
  readonly phase1PerSec: number;
  /** Phase 2. */
  readonly durationMs: number;
  readonly cmdsPerSec: number;
  readonly eventsPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly p999Ms: number;
  readonly maxMs: number;
  readonly accepted: number;
  readonly rejected: number;
  readonly errors: number;
  readonly firstError?: string;
  /** Messages in the stream after the run (one per event). */
  readonly jetstreamMessages: number;
  readonly verifyOk: boolean;
  readonly verification: LedgerVerification;
  /** Phase 2: this process (peak RSS, CPU) and nats-server if `serverPid` was given. */
  readonly resources: ResourceReport;
}

interface AccountState {
  balance: number;
  seq: number;
}

/**
 * The ledger workload the way a careful user would write it on the NATS client alone:
 * decide against a Map, `await js.publish()` each event, update the Map after the ack, and
 * chain each account's commands so that two of them never interleave decide and publish.
 */
export async function runPlain(opts: PlainOptions): Promise<PlainResult> {
  const { accounts, commands, concurrency } = opts;
  const nc = await connect({ servers: opts.url, name: 'bench-plain' });
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const token = runToken();
  const stream = `BENCH_PLAIN_${token}`;
  const subjectPrefix = `plain.${token}.`;
  await createFileStream(jsm, stream, [`${subjectPrefix}>`]);

  const packr = new Packr({ useRecords: false });
  const ids: string[] = Array.from({ length: accounts }, (_, i) => accountId(i));
  const state = new Map<string, AccountState>();
  const tails = new Map<string, Promise<Outcome>>();

  const publish = async (id: string, eventType: LedgerEventType, seq: number, amount?: number): Promise<void> => {
    const event: PlainEvent = {
      eventId: randomUUID(),
      eventType,
      aggregateId: id,
      seq,
      timestamp: Date.now(),
      payload: amount === undefined ? {} : { amount },
    };
    await js.publish(subjectPrefix + id, packr.pack(event));
  };

  const open = async (id: string): Promise<Outcome> => {
    if (state.has(id)) return 'rejected';
    await publish(id, 'AccountOpened', 1);
    state.set(id, { balance: 0, seq: 1 });
    return 'accepted';
  };

  const handle = async (cmd: LedgerCommand): Promise<Outcome> => {
    const id = ids[cmd.accountIndex];
    const s = id === undefined ? undefined : state.get(id);
    if (id === undefined || s === undefined) throw new Error(`unknown account ${cmd.accountIndex}`);
    if (cmd.type === 'Deposit') {
      await publish(id, 'Deposited', s.seq + 1, cmd.amount);
      s.balance += cmd.amount;
    } else {
      if (s.balance < cmd.amount) return 'rejected';
      await publish(id, 'Withdrawn', s.seq + 1, cmd.amount);
      s.balance -= cmd.amount;
    }
    s.seq++;
    return 'accepted';
  };

  /** Per-account serialization: each command runs after the previous one for its account. */
  const serialized = <T>(id: string, item: T, fn: (item: T) => Promise<Outcome>): Promise<Outcome> => {
    const prev = tails.get(id);
    const run = prev === undefined ? fn(item) : prev.then(() => fn(item), () => fn(item));
    tails.set(id, run);
    const forget = (): void => {
      if (tails.get(id) === run) tails.delete(id);
    };
    run.then(forget, forget);
    return run;
  };

  try {
    // Phase 1: open every account.
    opts.onPhase?.('open');
    const phase1 = await runClosedLoop(ids, concurrency, (id) => serialized(id, id, open));
    if (phase1.errors > 0) throw new Error(`phase 1 failed: ${String(phase1.firstError)}`);

    // Phase 2: the generated commands.
    opts.onPhase?.('commands');
    const sampler = new ResourceSampler();
    if (opts.serverPid !== undefined) sampler.addChild(opts.serverPid, 'nats-server');
    sampler.start();
    const phase2 = await runClosedLoop(commands, concurrency, (cmd) =>
      serialized(ids[cmd.accountIndex] ?? '', cmd, handle),
    );
    const resources = sampler.stop();

    // Verification from the log alone.
    opts.onPhase?.('verify');
    const jetstreamMessages = await streamMessages(jsm, stream);
    const verification = await verifyLedgerStream({
      nc,
      stream,
      accounts,
      accepted: phase2.accepted,
      jetstreamMessages,
      decode: (m) => packr.unpack(m.data) as PlainEvent,
      expectedBalance: (id) => state.get(id)?.balance,
      commands,
    });

    return {
      concurrency,
      accounts,
      commands: commands.length,
      phase1Ms: phase1.durationMs,
      phase1PerSec: phase1.cmdsPerSec,
      durationMs: phase2.durationMs,
      cmdsPerSec: phase2.cmdsPerSec,
      eventsPerSec: phase2.durationMs > 0 ? (phase2.accepted / phase2.durationMs) * 1000 : 0,
      p50Ms: phase2.p50Ms,
      p99Ms: phase2.p99Ms,
      p999Ms: phase2.p999Ms,
      maxMs: phase2.maxMs,
      accepted: phase2.accepted,
      rejected: phase2.rejected,
      errors: phase2.errors,
      ...(phase2.firstError === undefined ? {} : { firstError: String(phase2.firstError) }),
      jetstreamMessages,
      verifyOk: verification.ok && phase2.errors === 0,
      verification,
      resources,
    };
  } finally {
    if (opts.keepStream !== true) await deleteStreamQuietly(jsm, stream);
    await nc.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/** What the verifier needs of an event; Troupe's envelope and PlainEvent both fit. */
export interface LedgerEventLike {
  readonly eventType: string;
  readonly aggregateId: string;
  /** The aggregate's sequence number after the event; checked for contiguity when present. */
  readonly seq?: number;
  readonly payload: { readonly amount?: number };
}

export interface LedgerVerifierOptions {
  readonly accounts: number;
  /** Accepted phase-2 commands as counted by the driver. */
  readonly accepted: number;
  /** The writer's in-memory balance, if it has one, to compare with the rebuilt one. */
  readonly expectedBalance?: (accountId: string) => number | undefined;
  /** The generated commands, to compare with a sequential replay (expectedOutcome). */
  readonly commands?: readonly LedgerCommand[];
}

interface RebuiltAccount {
  balance: number;
  seq: number;
}

/**
 * Rebuilds every account from events fed in log order, then checks: each account opened once
 * and first; per-account sequence numbers contiguous (when events carry one); no balance ever
 * negative; sum(balances) = sum(Deposited) − sum(Withdrawn); event count = accounts + accepted;
 * and, when given, balances equal the writer's state and a sequential replay of the commands.
 *
 * Independent of the storage layout: a store with many events per message decodes each message
 * and calls add() for every event in it.
 */
export class LedgerVerifier {
  private readonly accounts = new Map<string, RebuiltAccount>();
  private readonly failures: string[] = [];
  private deposited = 0;
  private withdrawn = 0;
  private events = 0;
  private negative = 0;
  private readonly started = performance.now();

  constructor(private readonly opts: LedgerVerifierOptions) {}

  /** Record a failure (at most 20 are kept; the verdict counts all). */
  fail(msg: string): void {
    if (this.failures.length < 20) this.failures.push(msg);
    else if (this.failures.length === 20) this.failures.push('…');
  }

  /** Apply one event; `where` (e.g. a stream sequence) goes into failure messages. */
  add(e: LedgerEventLike, where: string | number = this.events + 1): void {
    this.events++;
    const s = this.accounts.get(e.aggregateId);
    if (e.eventType === 'AccountOpened') {
      if (s !== undefined) this.fail(`${e.aggregateId} opened twice (at ${where})`);
      else this.accounts.set(e.aggregateId, { balance: 0, seq: e.seq ?? 1 });
      return;
    }
    if (s === undefined) {
      this.fail(`${e.aggregateId} ${e.eventType} before AccountOpened (at ${where})`);
      return;
    }
    const amount = e.payload.amount ?? Number.NaN;
    if (!(amount > 0)) this.fail(`${e.aggregateId} ${e.eventType} with amount ${String(amount)} (at ${where})`);
    if (e.eventType === 'Deposited') {
      s.balance += amount;
      this.deposited += amount;
    } else if (e.eventType === 'Withdrawn') {
      s.balance -= amount;
      this.withdrawn += amount;
      if (s.balance < 0) {
        this.negative++;
        this.fail(`${e.aggregateId} negative balance ${s.balance} (at ${where})`);
      }
    } else {
      this.fail(`unknown event type ${e.eventType} (at ${where})`);
    }
    if (e.seq !== undefined) {
      if (e.seq !== s.seq + 1) this.fail(`${e.aggregateId} seq ${e.seq} after ${s.seq} (at ${where})`);
      s.seq = e.seq;
    }
  }

  /** The final checks; call once after the last event. */
  finish(): LedgerVerification {
    const { accounts, accepted, expectedBalance, commands } = this.opts;
    let balanceSum = 0;
    for (const s of this.accounts.values()) balanceSum += s.balance;
    const expectedEvents = accounts + accepted;
    if (this.events !== expectedEvents) this.fail(`event count ${this.events} ≠ accounts + accepted = ${expectedEvents}`);
    if (this.accounts.size !== accounts) this.fail(`${this.accounts.size} accounts opened, expected ${accounts}`);
    if (this.negative > 0) this.fail(`${this.negative} negative balances`);
    if (balanceSum !== this.deposited - this.withdrawn) {
      this.fail(`sum(balances) ${balanceSum} ≠ deposited − withdrawn ${this.deposited - this.withdrawn}`);
    }
    if (expectedBalance !== undefined) {
      let mismatches = 0;
      for (const [id, s] of this.accounts) {
        const b = expectedBalance(id);
        if (b !== undefined && b !== s.balance) mismatches++;
      }
      if (mismatches > 0) this.fail(`${mismatches} rebuilt balances differ from the writer's state`);
    }
    if (commands !== undefined) {
      const exp = expectedOutcome(accounts, commands);
      if (exp.accepted !== accepted) this.fail(`accepted ${accepted}, a sequential replay accepts ${exp.accepted}`);
      let mismatches = 0;
      for (let i = 0; i < accounts; i++) {
        const s = this.accounts.get(accountId(i));
        if (s !== undefined && s.balance !== exp.balances[i]) mismatches++;
      }
      if (mismatches > 0) this.fail(`${mismatches} balances differ from a sequential replay of the commands`);
    }
    return {
      ok: this.failures.length === 0,
      failures: [...this.failures],
      eventsRead: this.events,
      deposited: this.deposited,
      withdrawn: this.withdrawn,
      balanceSum,
      durationMs: performance.now() - this.started,
    };
  }
}

/**
 * Reads every message of `stream` in order with an ordered consumer (no durable state on the
 * server) and hands each to `onMessage`; stops at the last one. Returns the number read.
 */
export async function readWholeStream(
  nc: NatsConnection,
  stream: string,
  onMessage: (msg: JsMsg) => void,
): Promise<number> {
  const jsm = await jetstreamManager(nc);
  const total = (await jsm.streams.info(stream)).state.messages;
  if (total === 0) return 0;
  const consumer = await jetstream(nc).consumers.get(stream); // no name: an ordered consumer
  const msgs = await consumer.consume({ max_messages: 1000 });
  let read = 0;
  try {
    for await (const m of msgs) {
      read++;
      onMessage(m);
      if (m.info.pending === 0 || read >= total) break;
    }
  } finally {
    await msgs.close();
  }
  return read;
}

export interface VerifyStreamOptions extends LedgerVerifierOptions {
  readonly nc: NatsConnection;
  readonly stream: string;
  /** Messages the stream reports; every one of them must be read back. */
  readonly jetstreamMessages: number;
  /** The events of one message, in order (one for a one-event-per-message layout). */
  readonly decode: (msg: JsMsg) => LedgerEventLike | readonly LedgerEventLike[];
}

/** LedgerVerifier over a whole stream; also checks that every stored message was read. */
export async function verifyLedgerStream(opts: VerifyStreamOptions): Promise<LedgerVerification> {
  const verifier = new LedgerVerifier(opts);
  const read = await readWholeStream(opts.nc, opts.stream, (m) => {
    let decoded: LedgerEventLike | readonly LedgerEventLike[];
    try {
      decoded = opts.decode(m);
    } catch (err) {
      verifier.fail(`stream seq ${m.seq}: cannot decode: ${String(err)}`);
      return;
    }
    if (Array.isArray(decoded)) for (const e of decoded as readonly LedgerEventLike[]) verifier.add(e, `stream seq ${m.seq}`);
    else verifier.add(decoded as LedgerEventLike, `stream seq ${m.seq}`);
  });
  if (read !== opts.jetstreamMessages) verifier.fail(`read ${read} messages, the stream holds ${opts.jetstreamMessages}`);
  return verifier.finish();
}

// ---------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------

function serverCpu(r: ResourceReport): number | null {
  const s = r.children.filter((c) => c.label === 'nats-server');
  return s.length === 0 ? null : s.reduce((sum, c) => sum + c.cpuSeconds, 0);
}

/** The ceiling as a result row: events/s is messages/s, latencies are publish-to-ack. */
export function ceilingRow(best: BestCeilingResult, workload = 'ledger', variant = 'ceiling'): BenchRow {
  const b = best.best;
  const runs = best.runs.map((r) => `${r.connections}c ${Math.round(r.msgsPerSec).toLocaleString('en-US')}/s`).join(', ');
  return {
    workload,
    variant,
    concurrency: b.inFlight,
    accounts: null,
    cmdsPerSec: null,
    eventsPerSec: b.msgsPerSec,
    p50Ms: b.p50Ms,
    p99Ms: b.p99Ms,
    p999Ms: b.p999Ms,
    peakRssMb: b.resources.peakRssMb,
    cpuSeconds: b.resources.totalCpuSeconds,
    cpuUsPerCmd: b.events > 0 ? (b.resources.totalCpuSeconds * 1e6) / b.events : null,
    serverCpuSeconds: serverCpu(b.resources),
    jetstreamMessages: b.jetstreamMessages,
    verifyOk: b.errors === 0 && b.jetstreamMessages === b.events,
    phase1PerSec: null,
    notes: `${b.events.toLocaleString('en-US')} × ${b.size} B, ${b.connections} conn best (${runs})`,
  };
}

export function plainRow(r: PlainResult, workload = 'ledger'): BenchRow {
  const notes = [`${r.accepted.toLocaleString('en-US')} accepted, ${r.rejected.toLocaleString('en-US')} rejected`];
  if (r.errors > 0) notes.push(`${r.errors} errors: ${r.firstError ?? ''}`);
  if (!r.verification.ok) notes.push(`verify: ${r.verification.failures.join('; ')}`);
  return {
    workload,
    variant: 'plain',
    concurrency: r.concurrency,
    accounts: r.accounts,
    cmdsPerSec: r.cmdsPerSec,
    eventsPerSec: r.eventsPerSec,
    p50Ms: r.p50Ms,
    p99Ms: r.p99Ms,
    p999Ms: r.p999Ms,
    peakRssMb: r.resources.peakRssMb,
    cpuSeconds: r.resources.totalCpuSeconds,
    cpuUsPerCmd: r.commands > 0 ? (r.resources.totalCpuSeconds * 1e6) / r.commands : null,
    serverCpuSeconds: serverCpu(r.resources),
    jetstreamMessages: r.jetstreamMessages,
    verifyOk: r.verifyOk,
    phase1PerSec: r.phase1PerSec,
    notes: notes.join('; '),
  };
}
