/**
 * The dead-letter queue: a JetStream stream (`<stream>_DLQ`, so `TROUPE_DLQ` by default) that
 * holds the events consumers gave up on, one message per event, on the subject
 *
 *   <prefix>.dlq.<consumer>.<reason>
 *
 * so that stats (counts by consumer and by reason) come from one stream-info request with a
 * subject filter, without reading the messages. Each message is a msgpack `DeadLetterRecord`:
 * the event as it was in the log (before `transform`, so encrypted fields stay encrypted),
 * the failure reason and error, the attempts, the first and last failure times, and the
 * headers of the log message that carried it. `Nats-Msg-Id` is `<consumer>:<eventId>`, so a
 * consumer that crashes between dead-lettering an event and recording it does not
 * dead-letter it twice (within the stream's duplicate window).
 *
 * Replaying needs the consumer's handler, so it lives on the Consumer (`consumer.replayDeadLetter`).
 *
 * This is one of the few files that import `@nats-io/*`.
 */
import { resolveNatsAuth, type NatsAuthOptions } from '../connection.ts';
import { headers as natsHeaders, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';
import {
  DeliverPolicy, DiscardPolicy, JetStreamApiError, RetentionPolicy, StorageType, jetstream, jetstreamManager,
  type JetStreamClient, type JetStreamManager,
} from '@nats-io/jetstream';
import { decode, encode, type EventEnvelope } from '../journal/codec.ts';
import { fromWire, InvalidOptionError, JournalUnavailableError, NotFoundError, toWire, ValidationError, type WireError } from '../errors.ts';
import { connectNats } from '../journal/journal.ts';
import { DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX } from '../options.ts';

export interface DeadLetterRecord {
  consumer: string;
  /** A short, stable classification: the error's `code`, else its class name. */
  reason: string;
  error: { name: string; message: string; code?: string; stack?: string };
  /** Failed attempts, the last one included. */
  attempts: number;
  firstFailureAt: string;
  lastFailureAt: string;
  deadLetteredAt: string;
  /** The log message that carried the event: its subject, stream position and headers. */
  subject: string;
  position: number;
  headers: Record<string, string[]>;
  /** The event as the log holds it (before `transform`); null when the message could not be decoded. */
  event: EventEnvelope | null;
  /** The raw message, only when it could not be decoded. */
  data?: Uint8Array;
}

/** A dead letter as read back, with its sequence in the DLQ stream (the handle for replay/discard). */
export interface DeadLetter extends DeadLetterRecord {
  seq: number;
}

export interface DeadLetterStats {
  count: number;
  /** Age of the oldest dead letter in ms, 0 when there is none. */
  oldestAgeMs: number;
  byReason: Record<string, number>;
  byConsumer: Record<string, number>;
}

export interface DeadLetterQueueOptions {
  /** An open connection (kept open by close()), or `servers` to connect. */
  nc?: NatsConnection;
  servers?: string;
  /** How to authenticate to NATS when `servers` is used (default: the NATS_* environment; see connection.ts). */
  nats?: NatsAuthOptions;
  /** The log stream the consumers read; the DLQ stream is `<stream>_DLQ`. Default TROUPE. */
  stream?: string;
  subjectPrefix?: string;
  replicas?: number;
  /** How long a re-published dead letter is recognised as a duplicate. Default 10 minutes. */
  duplicateWindowMs?: number;
}

export interface AlertOptions {
  /** Fire when the number of dead letters (of `consumer`, or all) reaches this. */
  threshold: number;
  consumer?: string;
  onAlert: (stats: DeadLetterStats) => void;
}

const TOKEN = /[^A-Za-z0-9_-]/g;

/** A subject token from any string (reasons are free text). */
export function subjectToken(s: string): string {
  const t = s.replace(TOKEN, '_').slice(0, 64);
  return t.length === 0 ? '_' : t;
}

/** Reason of an error, for stats: its `code` when it has one, else its class name. */
export function reasonOf(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code.length > 0) return code;
  if (e instanceof Error) return e.name || 'Error';
  return typeof e;
}

export function headersToRecord(h: MsgHdrs | undefined): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  if (h === undefined) return out;
  for (const k of h.keys()) out[k] = h.values(k);
  return out;
}

/** Fires `onAlert` when the count crosses the threshold upwards; re-arms once it is below again. */
export class ThresholdAlarm {
  private above = false;
  constructor(private readonly options: AlertOptions) {
    if (!Number.isInteger(options.threshold) || options.threshold < 1) {
      throw new InvalidOptionError(`alert threshold must be an integer >= 1, got ${JSON.stringify(options.threshold)}`, { field: 'threshold' });
    }
  }

  check(stats: DeadLetterStats): boolean {
    const n = this.options.consumer === undefined ? stats.count : (stats.byConsumer[this.options.consumer] ?? 0);
    if (n >= this.options.threshold) {
      if (!this.above) {
        this.above = true;
        this.options.onAlert(stats);
        return true;
      }
    } else {
      this.above = false;
    }
    return false;
  }
}

/**
 * Replaying needs the consumer's handler, so a running consumer answers replay requests on
 *
 *   <prefix>.ops.dlq.replay.<consumer>.<shard>
 *
 * (`troupe dlq replay`, the dashboard): a plain consumer listens on every shard (`*`), one
 * shard of a scaled-out consumer on its own; instances of a name form a queue group, so one
 * instance replays each request. The request is `{ seq }`, the answer `{ ok: true }` or
 * `{ error: WireError }`.
 */
export function replaySubject(prefix: string, consumer: string, shard: number | '*'): string {
  return `${prefix}.ops.dlq.replay.${subjectToken(consumer)}.${shard}`;
}

/** The shard of a log subject (`<prefix>.log.<shard>`), or null. */
export function shardOfLogSubject(subject: string): number | null {
  const m = /\.log\.(\d+)$/.exec(subject);
  return m === null ? null : Number(m[1]);
}

const text = new TextEncoder();
const untext = new TextDecoder();

/** Answer replay requests for `consumer` with `replay(seq)`; returns the unsubscribe. */
export function serveReplays(nc: NatsConnection, prefix: string, consumer: string, shard: number | undefined, replay: (seq: number) => Promise<void>): () => void {
  const sub = nc.subscribe(replaySubject(prefix, consumer, shard ?? '*'), {
    queue: `troupe-dlq-replay-${subjectToken(consumer)}`,
    callback: (err, msg) => {
      if (err !== null) return;
      void (async () => {
        let answer: unknown;
        try {
          const { seq } = JSON.parse(untext.decode(msg.data)) as { seq?: unknown };
          if (typeof seq !== 'number' || !Number.isInteger(seq) || seq < 1) throw new ValidationError('VALIDATION', 'a replay request is {"seq": <dead letter sequence>}', {});
          await replay(seq);
          answer = { ok: true };
        } catch (e) {
          answer = { error: toWire(e) };
        }
        msg.respond(text.encode(JSON.stringify(answer)));
      })();
    },
  });
  return () => sub.unsubscribe();
}

/**
 * Ask the running instances of `consumer` to replay dead letter `seq` (its handler runs again;
 * on success the dead letter is deleted). Rejects with the handler's error, NOT_FOUND for a
 * dead letter that is not there, or JOURNAL_UNAVAILABLE (retryable) when no instance runs.
 */
export async function requestReplay(q: DeadLetterQueue, seq: number, timeoutMs = 30_000): Promise<void> {
  const dl = await q.get(seq);
  const shard = shardOfLogSubject(dl.subject);
  const subject = replaySubject(q.subjectPrefix, dl.consumer, shard ?? 0);
  let reply: Uint8Array;
  try {
    reply = (await q.connection.request(subject, text.encode(JSON.stringify({ seq })), { timeout: timeoutMs })).data;
  } catch (e) {
    const none = /no responders|503/i.test(String((e as Error)?.message ?? e)) || (e as { code?: string })?.code === '503';
    throw new JournalUnavailableError(none
      ? `no running instance of consumer ${dl.consumer} answers replay requests: start it (its handler replays the event), then retry`
      : `consumer ${dl.consumer} did not answer the replay of dead letter ${seq} within ${timeoutMs} ms`, { consumer: dl.consumer, sequence: seq }, e);
  }
  const answer = JSON.parse(untext.decode(reply)) as { ok?: true; error?: WireError };
  if (answer.error !== undefined) throw fromWire(answer.error);
}

export class DeadLetterQueue {
  readonly streamName: string;
  private readonly base: string;
  private ready: Promise<void> | null = null;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly ownsConnection: boolean,
    private readonly jsm: JetStreamManager,
    private readonly js: JetStreamClient,
    readonly logStream: string,
    readonly subjectPrefix: string,
    private readonly replicas: number,
    private readonly duplicateWindowMs: number,
  ) {
    this.streamName = `${logStream}_DLQ`;
    this.base = `${subjectPrefix}.dlq.`;
  }

  static async open(options: DeadLetterQueueOptions): Promise<DeadLetterQueue> {
    let nc = options.nc;
    const owns = nc === undefined;
    if (nc === undefined) {
      nc = await connectNats(options.servers ?? process.env.NATS_URL ?? 'nats://127.0.0.1:4222', 'troupe-dlq', resolveNatsAuth(options.nats));
    }
    const jsm = await jetstreamManager(nc, { timeout: 10_000 });
    const q = new DeadLetterQueue(nc, owns, jsm, jetstream(nc, { timeout: 10_000 }), options.stream ?? DEFAULT_STREAM,
      options.subjectPrefix ?? DEFAULT_SUBJECT_PREFIX, options.replicas ?? 1, options.duplicateWindowMs ?? 10 * 60_000);
    await q.ensure();
    return q;
  }

  /** Create the DLQ stream if it is missing. */
  ensure(): Promise<void> {
    this.ready ??= (async () => {
      try {
        await this.jsm.streams.info(this.streamName);
        return;
      } catch (e) {
        if (!(e instanceof JetStreamApiError) || e.code !== 10059) throw unavailable(`read stream ${this.streamName}`, e);
      }
      try {
        await this.jsm.streams.add({
          name: this.streamName,
          subjects: [`${this.base}>`],
          storage: StorageType.File,
          retention: RetentionPolicy.Limits,
          // A dead letter is never dropped to make room: publishing fails instead, and the
          // consumer keeps the event for retry.
          discard: DiscardPolicy.New,
          num_replicas: this.replicas,
          duplicate_window: this.duplicateWindowMs * 1_000_000,
          allow_direct: true,
        });
      } catch (e) {
        if (e instanceof JetStreamApiError && e.code === 10058) return;
        throw unavailable(`create stream ${this.streamName}`, e);
      }
    })().catch((e: unknown) => {
      this.ready = null;
      throw e;
    });
    return this.ready;
  }

  subjectOf(consumer: string, reason: string): string {
    return `${this.base}${subjectToken(consumer)}.${subjectToken(reason)}`;
  }

  /** Store a dead letter. Resolves with its DLQ sequence once JetStream acknowledged it. */
  async publish(record: DeadLetterRecord): Promise<number> {
    await this.ensure();
    const h = natsHeaders();
    h.set('Troupe-Consumer', record.consumer);
    h.set('Troupe-Reason', record.reason);
    if (record.event !== null) {
      h.set('Troupe-Event-Id', record.event.eventId);
      h.set('Troupe-Event-Type', record.event.eventType);
      h.set('Troupe-Aggregate', `${record.event.aggregateType}/${record.event.aggregateId}`);
    }
    const msgID = `${record.consumer}:${record.event?.eventId ?? `message-${record.position}`}`;
    try {
      const ack = await this.js.publish(this.subjectOf(record.consumer, record.reason), encode(record), { msgID, headers: h });
      return ack.seq;
    } catch (e) {
      throw unavailable(`store a dead letter for ${record.consumer}`, e);
    }
  }

  private filter(consumer?: string, reason?: string): string {
    return `${this.base}${consumer === undefined ? '*' : subjectToken(consumer)}.${reason === undefined ? '*' : subjectToken(reason)}`;
  }

  /** Count, age of the oldest, counts by reason and by consumer: one stream-info request. */
  async stats(): Promise<DeadLetterStats> {
    await this.ensure();
    let info;
    try {
      info = await this.jsm.streams.info(this.streamName, { subjects_filter: `${this.base}>` });
    } catch (e) {
      throw unavailable(`read stream ${this.streamName}`, e);
    }
    const byReason: Record<string, number> = {};
    const byConsumer: Record<string, number> = {};
    for (const [subject, n] of Object.entries(info.state.subjects ?? {})) {
      const [consumer = '?', reason = '?'] = subject.slice(this.base.length).split('.');
      byReason[reason] = (byReason[reason] ?? 0) + n;
      byConsumer[consumer] = (byConsumer[consumer] ?? 0) + n;
    }
    const count = info.state.messages;
    const oldestAgeMs = count === 0 ? 0 : Math.max(0, Date.now() - Date.parse(info.state.first_ts));
    return { count, oldestAgeMs, byReason, byConsumer };
  }

  /** Dead letters in DLQ order, oldest first; filter by consumer and reason. */
  async list(options: { consumer?: string; reason?: string; limit?: number; afterSeq?: number } = {}): Promise<DeadLetter[]> {
    await this.ensure();
    const limit = options.limit ?? 100;
    const filter = this.filter(options.consumer, options.reason);
    const out: DeadLetter[] = [];
    try {
      const info = await this.jsm.streams.info(this.streamName, { subjects_filter: filter });
      const matching = Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0);
      if (matching === 0 || limit <= 0 || (options.afterSeq ?? 0) >= info.state.last_seq) return out;
      const consumer = await this.js.consumers.get(this.streamName, {
        filter_subjects: [filter],
        ...(options.afterSeq === undefined ? { deliver_policy: DeliverPolicy.All } : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: options.afterSeq + 1 }),
      });
      const messages = await consumer.consume({ max_messages: Math.min(limit, 256) });
      // An ordered consumer's first fetch may see nothing if everything after afterSeq was discarded.
      const guard = setTimeout(() => messages.stop(), 5_000);
      try {
        for await (const m of messages) {
          out.push({ ...decode<DeadLetterRecord>(m.data), seq: m.seq });
          if (out.length >= limit || m.info.pending === 0) break;
        }
      } finally {
        clearTimeout(guard);
        messages.stop();
      }
    } catch (e) {
      throw unavailable(`list ${this.streamName}`, e);
    }
    return out;
  }

  /** One dead letter by its DLQ sequence. */
  async get(seq: number): Promise<DeadLetter> {
    await this.ensure();
    let m;
    try {
      m = await this.jsm.streams.getMessage(this.streamName, { seq });
    } catch (e) {
      if (e instanceof JetStreamApiError && (e.code === 10037 || e.status === 404)) m = null;
      else throw unavailable(`read dead letter ${seq}`, e);
    }
    if (m === null || !m.subject.startsWith(this.base)) throw new NotFoundError(`no dead letter ${seq} in ${this.streamName}`, { sequence: seq });
    return { ...decode<DeadLetterRecord>(m.data), seq: m.seq };
  }

  /** Delete one dead letter. Resolves false when there was none with that sequence. */
  async discard(seq: number): Promise<boolean> {
    try {
      return await this.jsm.streams.deleteMessage(this.streamName, seq, false);
    } catch (e) {
      // 10037 no message found, 10043 sequence not found
      if (e instanceof JetStreamApiError && (e.code === 10037 || e.code === 10043 || e.status === 404)) return false;
      throw unavailable(`discard dead letter ${seq}`, e);
    }
  }

  /** Delete every dead letter (of one consumer, or all). Resolves with how many went. */
  async discardAll(options: { consumer?: string; reason?: string } = {}): Promise<number> {
    await this.ensure();
    try {
      const r = await this.jsm.streams.purge(this.streamName, { filter: this.filter(options.consumer, options.reason) });
      return r.purged;
    } catch (e) {
      throw unavailable(`purge ${this.streamName}`, e);
    }
  }

  /** Poll stats every `intervalMs` and call `onAlert` when the count crosses `threshold`. Returns a stop function. */
  watch(options: AlertOptions & { intervalMs?: number; onError?: (e: unknown) => void }): () => void {
    const alarm = new ThresholdAlarm(options);
    let stopped = false;
    const tick = async (): Promise<void> => {
      if (stopped) return;
      try {
        alarm.check(await this.stats());
      } catch (e) {
        options.onError?.(e);
      }
      if (!stopped) timer = setTimeout(() => void tick(), options.intervalMs ?? 10_000);
    };
    let timer = setTimeout(() => void tick(), 0);
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }

  /** The NATS connection the queue reads with. */
  get connection(): NatsConnection {
    return this.nc;
  }

  async close(): Promise<void> {
    if (this.ownsConnection) await this.nc.drain().catch(() => {});
  }
}

function unavailable(what: string, e: unknown): JournalUnavailableError {
  return new JournalUnavailableError(`JetStream could not ${what}: ${(e as Error)?.message ?? String(e)}`, {}, e);
}
