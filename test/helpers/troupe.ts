// Helpers for integration tests that run Troupe nodes against a throwaway nats-server.
//
//   const nats = useNatsServer();
//   const node = await startNode(nats.url, { dataDir: tempDir() });
//   const log = await readLog(nats.url, node.options.stream);   // every event, in stream order
//
// Each test that starts nodes uses its own stream and subject prefix (`freshStream()`), so
// nodes left over from another test of the same file never see its commands.

import { jetstream, jetstreamManager, DeliverPolicy } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { actorModules } from '../../actors/index.ts';
import { decodeCommitBatch, type EventEnvelope } from '../../runtime/journal/codec.ts';
import { Troupe } from '../../runtime/node/system.ts';
import type { TroupeOptions } from '../../runtime/options.ts';
import type { TroupeError } from '../../runtime/errors.ts';
import { tempDir } from './nats.ts';

export { actorModules };

let streams = 0;

/** A stream name and subject prefix no other test of this process uses. */
export function freshStream(label = 'T'): { stream: string; subjectPrefix: string } {
  streams++;
  const tag = `${label}${streams}_${process.pid}`;
  return { stream: `TROUPE_${tag}`, subjectPrefix: `troupe_${tag.toLowerCase()}` };
}

/** Start a node with test defaults: 2 workers, 8 shards, the example actors, a fresh dataDir. */
export async function startNode(servers: string, options: Partial<TroupeOptions> = {}): Promise<Troupe> {
  return Troupe.start({
    actors: [...actorModules],
    servers,
    workers: 2,
    shards: 8,
    dataDir: options.dataDir ?? tempDir(),
    ...options,
  });
}

/** One JetStream message of the log, decoded. */
export interface LoggedMessage {
  seq: number;
  subject: string;
  events: EventEnvelope[];
}

/** Open a NATS connection; close it when done. */
export function natsConnect(servers: string): Promise<NatsConnection> {
  return connect({ servers: servers.split(','), name: 'troupe-test-reader' });
}

/** Every message of `stream`, in order, decoded with decodeCommitBatch. */
export async function readLog(servers: string, stream: string): Promise<LoggedMessage[]> {
  const nc = await natsConnect(servers);
  try {
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(stream);
    const out: LoggedMessage[] = [];
    if (info.state.messages === 0) return out;
    const last = info.state.last_seq;
    const consumer = await jetstream(nc).consumers.get(stream, { deliver_policy: DeliverPolicy.All });
    const messages = await consumer.consume({ max_messages: 512 });
    for await (const m of messages) {
      out.push({ seq: m.seq, subject: m.subject, events: decodeCommitBatch(m.data, m.seq) });
      if (m.seq >= last) break;
    }
    messages.stop();
    return out;
  } finally {
    await nc.close();
  }
}

/** All events of the log, in stream order. */
export async function readEvents(servers: string, stream: string): Promise<EventEnvelope[]> {
  return (await readLog(servers, stream)).flatMap((m) => m.events);
}

/** Number of messages in the stream. */
export async function messageCount(servers: string, stream: string): Promise<number> {
  const nc = await natsConnect(servers);
  try {
    return (await (await jetstreamManager(nc)).streams.info(stream)).state.messages;
  } finally {
    await nc.close();
  }
}

/** How many events of each commandId the log holds. */
export function countByCommandId(events: readonly EventEnvelope[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const e of events) counts.set(e.commandId, (counts.get(e.commandId) ?? 0) + 1);
  return counts;
}

export interface FoldedAccount {
  opened: boolean;
  balance: number;
  /** The sequence numbers of the account's events, in log order. */
  sequences: number[];
}

/** Account states rebuilt by hand from the log: balance = sum of Deposited − Withdrawn. */
export function foldAccounts(events: readonly EventEnvelope[]): Map<string, FoldedAccount> {
  const accounts = new Map<string, FoldedAccount>();
  for (const e of events) {
    if (e.aggregateType !== 'Account') continue;
    let a = accounts.get(e.aggregateId);
    if (a === undefined) accounts.set(e.aggregateId, a = { opened: false, balance: 0, sequences: [] });
    a.sequences.push(e.sequence);
    const amount = (e.payload as { amount?: number }).amount ?? 0;
    if (e.eventType === 'AccountOpened') a.opened = true;
    else if (e.eventType === 'Deposited') a.balance += amount;
    else if (e.eventType === 'Withdrawn') a.balance -= amount;
  }
  return accounts;
}

/** 1..n */
export function range1(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i + 1);
}

/** The outcome of a promise, readable once it settled. */
export interface Outcome<T> {
  settled: boolean;
  value?: T;
  error?: unknown;
  readonly promise: Promise<void>;
}

export function track<T>(p: Promise<T>): Outcome<T> {
  const o = { settled: false } as Outcome<T> & { promise: Promise<void> };
  o.promise = p.then(
    (v) => { o.settled = true; o.value = v; },
    (e: unknown) => { o.settled = true; o.error = e; },
  );
  return o;
}

/** Wait until every outcome settled, or throw after `timeoutMs` naming how many did not. */
export async function allSettled(outcomes: readonly Outcome<unknown>[], timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (outcomes.some((o) => !o.settled)) {
    if (Date.now() > until) throw new Error(`${outcomes.filter((o) => !o.settled).length} of ${outcomes.length} sends did not settle within ${timeoutMs} ms`);
    await sleep(20);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Call `fn` until it resolves; rethrow its last error after `timeoutMs`. */
/** Poll `cond` every 50 ms until it holds; throws naming `what` after `timeoutMs`. */
export async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

export async function eventually<T>(fn: () => Promise<T>, timeoutMs: number, onError?: (e: unknown) => void): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      onError?.(e);
      if (Date.now() > until) throw e;
      await sleep(100);
    }
  }
}

/** Every message of the stream as JetStream returns it: sequence and raw bytes. */
export async function rawLog(servers: string, stream: string): Promise<{ seq: number; data: Buffer }[]> {
  const nc = await natsConnect(servers);
  try {
    const jsm = await jetstreamManager(nc);
    const last = (await jsm.streams.info(stream)).state.last_seq;
    const out: { seq: number; data: Buffer }[] = [];
    for (let seq = 1; seq <= last; seq++) {
      const m = await jsm.streams.getMessage(stream, { seq });
      if (m !== null) out.push({ seq, data: Buffer.from(m.data) });
    }
    return out;
  } finally {
    await nc.close();
  }
}

/** An error as a test failure message should show it. */
export function describeError(e: unknown): string {
  const t = e as TroupeError;
  return `${t?.code ?? typeof e} retryable=${String(t?.retryable)}: ${t?.message ?? String(e)}`;
}
