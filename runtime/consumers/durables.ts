/**
 * What operators and the health probe read of a consumer from JetStream, and the names it goes
 * by there: durable names, lease buckets, lag (messages left and the oldest one's age), a
 * durable's info, the breaker gauge, and the /health and /metrics probe. Plain consumers
 * (consume.ts) and scaled-out ones (scaled.ts) share it.
 *
 * This is one of the few files that import `@nats-io/*`.
 */
import { JetStreamApiError, jetstreamManager, type JetStreamManager, type MsgRequest } from '@nats-io/jetstream';
import type { NatsConnection } from '../journal/journal.ts';
import type { ProbeOptions } from './consume-options.ts';
import { registerConsumerProbe, type ConsumerGauges, type HealthCheckResult } from '../ops/metrics.ts';
import { CircuitState } from './flow.ts';

export interface ConsumerInfo {
  /** Messages not yet delivered to this consumer. */
  numPending: number;
  /** Messages delivered and not acked (held, or waiting for a retry). */
  numAckPending: number;
  /** Every message up to this stream position is acked. */
  ackFloor: number;
}

/** The JetStream consumer of one shard of a scaled-out consumer. */
export function shardDurable(name: string, shard: number): string {
  return `${name}_s${shard}`;
}

/** The KV bucket of a consumer name's leases (the instances of a scaled-out consumer, or its one instance). */
export function consumerLeaseBucket(stream: string, name: string): string {
  return `${stream}_consumer_${name}`;
}

/** What a consumer has left to handle: messages, and the age of the oldest one. */
export interface ConsumerLag {
  /** Log messages not delivered yet plus delivered and not acked. */
  messages: number;
  /** Age of the oldest log message not handled yet, in ms (0 when there is none). */
  oldestAgeMs: number;
}

/**
 * Age of the oldest message on `filter` after `ackFloor`: every message up to the ack floor is
 * acked, so the first one after it that the consumer reads is the oldest unhandled one.
 */
export async function oldestAfter(jsm: JetStreamManager, stream: string, filter: string, ackFloor: number): Promise<number> {
  const m = await jsm.streams.getMessage(stream, { seq: ackFloor + 1, next_by_subj: filter } as unknown as MsgRequest);
  return m === null ? 0 : Math.max(0, Date.now() - m.time.getTime());
}

/** The lag of each shard's JetStream consumer of a scaled-out name, summed; the oldest age is the largest. */
export async function scaledLag(nc: NatsConnection, stream: string, subjectPrefix: string, name: string, shardCount: number): Promise<ConsumerLag> {
  const jsm = await jetstreamManager(nc, { timeout: 10_000 });
  const lags = await Promise.all(Array.from({ length: shardCount }, async (_, shard): Promise<ConsumerLag> => {
    let i;
    try {
      i = await jsm.consumers.info(stream, shardDurable(name, shard));
    } catch (e) {
      if (e instanceof JetStreamApiError && e.code === 10014) return { messages: 0, oldestAgeMs: 0 };
      throw e;
    }
    const messages = i.num_pending + i.num_ack_pending;
    return { messages, oldestAgeMs: messages === 0 ? 0 : await oldestAfter(jsm, stream, `${subjectPrefix}.log.${shard}`, i.ack_floor.stream_seq) };
  }));
  return { messages: lags.reduce((a, l) => a + l.messages, 0), oldestAgeMs: lags.reduce((a, l) => Math.max(a, l.oldestAgeMs), 0) };
}

/** The JetStream view of a durable consumer, or null when it does not exist. */
export async function durableInfo(nc: NatsConnection, stream: string, durable: string): Promise<ConsumerInfo | null> {
  const jsm = await jetstreamManager(nc, { timeout: 10_000 });
  try {
    const i = await jsm.consumers.info(stream, durable);
    return { numPending: i.num_pending, numAckPending: i.num_ack_pending, ackFloor: i.ack_floor.stream_seq };
  } catch (e) {
    if (e instanceof JetStreamApiError && e.code === 10014) return null;
    throw e;
  }
}

/**
 * Where messages of one log subject lie (a scaled projection's partition: `<prefix>.log.<shard>`):
 * the first one after a position, the last one now. null when there is none.
 */
export interface SubjectCursor {
  nextAfter(after: number): Promise<number | null>;
  last(): Promise<number | null>;
}

export async function subjectCursor(nc: NatsConnection, stream: string, subject: string): Promise<SubjectCursor> {
  const jsm = await jetstreamManager(nc, { timeout: 10_000 });
  const seqOf = async (req: Record<string, unknown>): Promise<number | null> => {
    try {
      return (await jsm.streams.getMessage(stream, req as unknown as MsgRequest))?.seq ?? null;
    } catch (e) {
      if (e instanceof JetStreamApiError && e.code === 10037) return null; // no message found
      throw e;
    }
  };
  return {
    nextAfter: (after) => seqOf({ seq: after + 1, next_by_subj: subject }),
    last: () => seqOf({ last_by_subj: subject }),
  };
}

/** cockatiel's CircuitState as a number for the breaker gauge: 0 closed, 1 open, 2 half-open, 3 isolated. */
export function breakerState(state: CircuitState): number {
  switch (state) {
    case CircuitState.Closed: return 0;
    case CircuitState.Open: return 1;
    case CircuitState.HalfOpen: return 2;
    default: return 3;
  }
}

/** What registerProbe reads of a consumer, plain or scaled out. */
export interface ProbedConsumer {
  readonly name: string;
  lag(): Promise<ConsumerLag>;
  gauges(): ConsumerGauges;
  status(): HealthCheckResult;
  readonly deadLetters: { stats(): Promise<{ byConsumer: Record<string, number> }> };
}

/**
 * Register the /health and /metrics probe of a consumer, plain or scaled out: its lag (pending
 * plus un-acked messages, and the oldest one's age; one JetStream request serves both within a
 * scrape), its dead-letter depth, its held messages and breaker, against the probe's thresholds.
 * A projection is labelled with its own name and version.
 */
export function registerProbe(c: ProbedConsumer, probe: ProbeOptions | undefined, as?: { name: string; version: number }): () => void {
  let cached: { at: number; lag: Promise<ConsumerLag> } | null = null;
  const lag = () => {
    const now = Date.now();
    if (cached === null || now - cached.at > 250) {
      const p = c.lag();
      cached = { at: now, lag: p };
      p.catch(() => { if (cached?.lag === p) cached = null; });
    }
    return cached.lag;
  };
  return registerConsumerProbe({
    name: as?.name ?? c.name,
    ...(as === undefined ? {} : { version: as.version }),
    lag: async () => (await lag()).messages,
    lagAgeMs: async () => (await lag()).oldestAgeMs,
    dlqDepth: async () => (await c.deadLetters.stats()).byConsumer[c.name] ?? 0,
    gauges: () => c.gauges(),
    status: () => c.status(),
    ...(probe?.maxLag === undefined ? {} : { maxLag: probe.maxLag }),
    ...(probe?.maxLagAgeMs === undefined ? {} : { maxLagAgeMs: probe.maxLagAgeMs }),
    ...(probe?.maxDlqDepth === undefined ? {} : { maxDlqDepth: probe.maxDlqDepth }),
  });
}
