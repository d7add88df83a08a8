/**
 * JetStream: the stream, its subjects, the lean acknowledged publisher and reads.
 *
 * Layout: one stream per deployment (`options.stream`), one subject per shard
 * (`<prefix>.log.<shard>`). Every message on a shard subject is one commit batch
 * (see codec.ts): the commits of many actors of that shard decided in one flush window.
 * A shard subject is written by one owner at a time; each publish carries
 * `Nats-Expected-Last-Subject-Sequence`, so a second writer is refused (error 10071) and
 * the log never forks.
 *
 * This is one of the few files that import `@nats-io/*`.
 */
import { connect, credsAuthenticator, headers, nkeyAuthenticator, nuid, type MsgHdrs, type NatsConnection, type Msg, type Subscription } from '@nats-io/transport-node';
import {
  DeliverPolicy, DiscardPolicy, JetStreamApiError, RetentionPolicy, StorageType, jetstream, jetstreamManager,
  type ConsumerMessages, type JetStreamClient, type JetStreamManager, type StoredMsg, type StreamInfo,
} from '@nats-io/jetstream';
import { SHARDS_METADATA } from '../envelope.ts';
import { connectFailure, loginRefusal, natsConnectOptions, resolveNatsAuth, type NatsAuth } from '../connection.ts';
import { ConcurrencyError, InvalidOptionError, JournalUnavailableError, NatsServerUnsupportedError, TroupeError } from '../errors.ts';

export type { NatsConnection, MsgHdrs, StoredMsg, Subscription };
export { headers, nuid };

/** JetStream API code for a failed expected-last-(subject-)sequence check. */
export const WRONG_LAST_SEQUENCE = 10071;
export const FORMAT_HEADER = 'Troupe-Format';
export const COMMIT_BATCH_FORMAT = 'commit-batch/1';

export interface JournalConfig {
  servers: string;
  stream: string;
  subjectPrefix: string;
  replicas: number;
  maxMessageBytes: number;
  duplicateWindowMs: number;
  /** The deployment's shard count: recorded in the stream's metadata and checked on open. */
  shards: number;
}

export { SHARDS_METADATA };

export function shardSubject(prefix: string, shard: number): string {
  return `${prefix}.log.${shard}`;
}

/** The client's authenticator factories, for connection.ts (which may not import @nats-io). */
export const NATS_AUTHENTICATORS = {
  creds: (creds: Uint8Array) => credsAuthenticator(creds),
  nkey: (seed: Uint8Array) => nkeyAuthenticator(seed),
};

/**
 * Connect with `auth` (default: the NATS_* environment, connection.ts). A refused login is not
 * retryable; its message names the credentials used, never their secret.
 */
export async function connectNats(servers: string, name: string, auth: NatsAuth = resolveNatsAuth()): Promise<NatsConnection> {
  try {
    return await connect(natsConnectOptions(servers, auth, NATS_AUTHENTICATORS, {
      name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      pingInterval: 5_000,
      timeout: 5_000,
    }));
  } catch (e) {
    const message = connectFailure(servers, auth, e);
    const refused = loginRefusal(servers, auth, e);
    if (refused !== null) throw refused;
    throw new JournalUnavailableError(`${message}. Start nats-server (npm start does) or set NATS_URL`, {}, e);
  }
}

/** Semver-ish check of the connected server; 2.9 does not fence writers on replicated streams. */
export function assertServerVersion(nc: NatsConnection): string {
  const version = nc.info?.version ?? '0.0.0';
  const [major = 0, minor = 0] = version.split('.').map((n) => Number.parseInt(n, 10));
  if (major < 2 || (major === 2 && minor < 10)) {
    throw new NatsServerUnsupportedError(
      `nats-server ${version} is too old: Troupe needs 2.10 or newer, because 2.9 does not serialize expected-last-subject-sequence on replicated streams (nats-server#4320), so it cannot fence a second writer. Install 2.10+ (npx troupe ensure-nats)`,
      { version });
  }
  if (nc.info?.jetstream !== true) {
    throw new NatsServerUnsupportedError( `nats-server ${version} at ${nc.getServer()} has JetStream disabled; start it with -js or a jetstream block in its config`, { version });
  }
  return version;
}

export interface Journal {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  config: JournalConfig;
  /**
   * Resolves when the stream next elects a leader (set by a node's worker, which watches the
   * advisories). A JetStream API request sent while the stream had no leader is not answered
   * until its timeout (10 s), long after the new leader could answer: reads ask again then.
   */
  leaderElected?: () => Promise<void>;
  /** When a reader (an ordered consumer) last stalled, or the stream last elected a leader: see readerStalled. */
  readerStalledAt?: number;
  electedAt?: number;
}

/** How long after a reader stalled reads use direct gets instead of ordered consumers. */
const STALL_MEMORY_MS = 30_000;

/**
 * Whether an ordered consumer stalled recently, or the stream elected a new leader: consumers
 * created right after an election may deliver nothing for seconds, while gets are answered.
 * Catch-ups then read with gets once a reader did stall; activations (whose positions are
 * known) read with gets after an election at once.
 */
export function readerStalled(journal: Journal, since: 'stalled' | 'elected'): boolean {
  const at = since === 'stalled' ? journal.readerStalledAt : Math.max(journal.readerStalledAt ?? 0, journal.electedAt ?? 0);
  return at !== undefined && at > 0 && Date.now() - at < STALL_MEMORY_MS;
}

/** `ask` the JetStream API; ask again whenever the stream elects a leader before the answer comes. */
async function untilElected<T>(journal: Journal, ask: () => Promise<T>): Promise<T> {
  const elected = journal.leaderElected;
  if (elected === undefined) return ask();
  for (;;) {
    const answer = ask();
    const won = await Promise.race([answer.then((value) => ({ value })), elected().then(() => null)]);
    if (won !== null) return won.value;
    answer.catch(() => {}); // superseded by the next try
  }
}

export async function openJournal(nc: NatsConnection, config: JournalConfig): Promise<Journal> {
  const jsm = await jetstreamManager(nc, { timeout: 10_000 });
  return { nc, js: jetstream(nc, { timeout: 10_000 }), jsm, config };
}

/**
 * Create the stream if it does not exist; check that an existing one is usable. The shard
 * count is fixed per stream (an actor's commits are on the subject of `hash mod shards`), so
 * it is recorded in the stream's metadata and a node with another count is refused. Returns the
 * stream's info (its creation time identifies the stream to the LMDB cache).
 */
export async function ensureStream(journal: Journal): Promise<StreamInfo> {
  const { jsm, config } = journal;
  const subjects = [`${config.subjectPrefix}.log.>`];
  let info: StreamInfo | null = null;
  try {
    info = await jsm.streams.info(config.stream);
  } catch (e) {
    if (!(e instanceof JetStreamApiError) || e.code !== 10059) throw unavailable('read stream info', e);
  }
  if (info !== null) {
    const covered = subjects.every((s) => info.config.subjects?.includes(s));
    if (!covered) {
      throw new InvalidOptionError( `stream ${config.stream} exists but does not hold ${subjects.join(', ')}; choose another options.stream or options.subjectPrefix`, {});
    }
    await checkShardCount(journal, info);
    return info;
  }
  try {
    return await jsm.streams.add({
      name: config.stream,
      subjects,
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.Old,
      num_replicas: config.replicas,
      max_msg_size: config.maxMessageBytes,
      duplicate_window: config.duplicateWindowMs * 1_000_000,
      allow_direct: true,
      allow_rollup_hdrs: false,
      deny_delete: true,
      deny_purge: false,
      metadata: { [SHARDS_METADATA]: String(config.shards) },
    });
  } catch (e) {
    // Another node may have created it at the same moment: then its shard count must match.
    if (!(e instanceof JetStreamApiError) || e.code !== 10058) throw unavailable('create stream', e);
    const raced = await jsm.streams.info(config.stream);
    await checkShardCount(journal, raced);
    return raced;
  }
}

/**
 * Refuse a shard count other than the stream's. A stream without the record (written before
 * it was kept) gets it, unless one of its subjects names a shard beyond the count.
 */
async function checkShardCount(journal: Journal, info: StreamInfo): Promise<void> {
  const { jsm, config } = journal;
  const recorded = info.config.metadata?.[SHARDS_METADATA];
  if (recorded !== undefined) {
    if (recorded === String(config.shards)) return;
    throw new InvalidOptionError(
      `stream ${config.stream} is routed over ${recorded} shards, and options.shards is ${config.shards}. The shard count is fixed per stream: ` +
      `start with shards: ${recorded}, or use another options.stream`, { stream: config.stream, shards: config.shards, streamShards: Number(recorded) });
  }
  let highest = -1;
  try {
    const withSubjects = await jsm.streams.info(config.stream, { subjects_filter: `${config.subjectPrefix}.log.>` });
    for (const subject of Object.keys(withSubjects.state.subjects ?? {})) highest = Math.max(highest, Number(subject.slice(subject.lastIndexOf('.') + 1)));
    if (highest >= config.shards) {
      throw new InvalidOptionError(
        `stream ${config.stream} holds commits of shard ${highest}, so it was written with more than options.shards = ${config.shards} shards. ` +
        `The shard count is fixed per stream: start with the count it was written with (at least ${highest + 1}; the default was 64 before it became 16), or use another options.stream`,
        { stream: config.stream, shards: config.shards, streamShardsAtLeast: highest + 1 });
    }
    await jsm.streams.update(config.stream, { ...withSubjects.config, metadata: { ...withSubjects.config.metadata, [SHARDS_METADATA]: String(config.shards) } });
  } catch (e) {
    if (e instanceof TroupeError) throw e;
    throw unavailable('record the shard count in the stream', e);
  }
}

function unavailable(what: string, e: unknown): JournalUnavailableError {
  return new JournalUnavailableError(`JetStream could not ${what}: ${(e as Error)?.message ?? String(e)}`, {}, e);
}

/** The sequence of the last message on a subject, or 0 when it has none. */
export async function lastSequenceOf(journal: Journal, subject: string): Promise<number> {
  try {
    const m = await untilElected(journal, () => journal.jsm.streams.getMessage(journal.config.stream, { last_by_subj: subject }));
    return m?.seq ?? 0;
  } catch (e) {
    if (e instanceof JetStreamApiError && (e.code === 10037 || e.status === 404)) return 0;
    throw unavailable(`read the last message of ${subject}`, e);
  }
}

export async function readMessage(journal: Journal, seq: number): Promise<StoredMsg> {
  let m: StoredMsg | null;
  try {
    m = await untilElected(journal, () => journal.jsm.streams.getMessage(journal.config.stream, { seq }));
  } catch (e) {
    throw unavailable(`read message ${seq}`, e);
  }
  if (m === null) throw unavailable(`find message ${seq} (it is missing from stream ${journal.config.stream})`, null);
  return m;
}

/**
 * Every message on `subject` with a sequence in [from, to], in order, through an ordered
 * consumer. Used to catch a shard up from its checkpoint.
 */
export async function readSubject(journal: Journal, subject: string, from: number, to: number, each: (data: Uint8Array, seq: number) => void): Promise<void> {
  if (to < from) return;
  if (readerStalled(journal, 'stalled')) return readSubjectByGets(journal, subject, from, to, each);
  let seq = from - 1;
  try {
    // Creating the ordered consumer can hang too (seen right after the stream elected a new
    // leader, until the client's 10 s timeout): it gets READ_IDLE_MS, as each message does.
    // Readers an election superseded (untilElected asked again), or made after the timeout, are stopped.
    const made: ConsumerMessages[] = [];
    let chosen: ConsumerMessages | null = null;
    let settled = false;
    const setup = untilElected(journal, async () => {
      const consumer = await journal.js.consumers.get(journal.config.stream, {
        filter_subjects: [subject],
        deliver_policy: DeliverPolicy.StartSequence,
        opt_start_seq: from,
      });
      const m = await consumer.consume({ max_messages: 512 });
      made.push(m);
      if (settled && m !== chosen) m.stop();
      return m;
    });
    let late: ReturnType<typeof setTimeout> | undefined;
    const messages = await Promise.race([setup, new Promise<never>((_, reject) => {
      late = setTimeout(() => {
        settled = true;
        for (const m of made) m.stop();
        journal.readerStalledAt = Date.now();
        reject(new Error(`no reader within ${READ_IDLE_MS} ms`));
      }, READ_IDLE_MS);
    })]).finally(() => clearTimeout(late));
    chosen = messages;
    settled = true;
    for (const m of made) if (m !== messages) m.stop();
    // A reader that stops receiving would wait for the ordered consumer's own reset (~10 s):
    // give up after READ_IDLE_MS without a message instead; the caller tries again (a shard
    // re-opens, an actor activates, on its next command).
    let idle = false;
    let last = Date.now();
    const watchdog = setInterval(() => {
      if (Date.now() - last < READ_IDLE_MS) return;
      idle = true;
      journal.readerStalledAt = Date.now();
      messages.stop();
    }, READ_IDLE_MS / 4);
    try {
      for await (const m of messages) {
        last = Date.now();
        if (m.seq > to) break;
        each(m.data, m.seq);
        seq = m.seq;
        if (m.seq >= to) break;
      }
    } finally {
      clearInterval(watchdog);
      messages.stop();
    }
    if (seq < to) throw new Error(idle ? `no message for ${READ_IDLE_MS} ms after ${seq}` : `the reader stopped after ${seq}`);
  } catch (e) {
    throw unavailable(`read ${subject} from ${from} to ${to}`, e);
  }
}

/** readSubject one direct get at a time (`next_by_subj`), while ordered consumers stall. */
async function readSubjectByGets(journal: Journal, subject: string, from: number, to: number, each: (data: Uint8Array, seq: number) => void): Promise<void> {
  let seq = from;
  try {
    while (seq <= to) {
      const m = await untilElected(journal, () => journal.jsm.streams.getMessage(journal.config.stream,
        // STREAM.MSG.GET answers next_by_subj (nats-server 2.10+); the client's type names only the direct-get form.
        { seq, next_by_subj: subject } as unknown as Parameters<JetStreamManager['streams']['getMessage']>[1]));
      if (m === null || m.seq > to) break;
      each(m.data, m.seq);
      seq = m.seq + 1;
    }
  } catch (e) {
    throw unavailable(`read ${subject} from ${from} to ${to}`, e);
  }
  if (seq <= to) throw unavailable(`read ${subject} from ${from} to ${to} (it ends at ${seq - 1})`, null);
}

/** How long a catch-up read waits for its next message before it gives up (and is tried again). */
const READ_IDLE_MS = 3_000;

/** A stream as a reader needs it: its last position, message count, shard count (metadata) and subject prefix. */
export async function describeStream(nc: NatsConnection, stream: string): Promise<{ lastSeq: number; messages: number; shards: number; subjectPrefix: string | null }> {
  const info = await (await jetstreamManager(nc)).streams.info(stream);
  const log = info.config.subjects?.find((s) => s.endsWith('.log.>'));
  return {
    lastSeq: info.state.last_seq, messages: info.state.messages, shards: Number(info.config.metadata?.[SHARDS_METADATA] ?? 0),
    subjectPrefix: log === undefined ? null : log.slice(0, -'.log.>'.length),
  };
}

/**
 * Read the messages of `stream` on `filter` in order, from a position or a time, through an
 * ordered consumer (nothing is kept on the server). Stops after sequence `until` when given
 * (or after a quiet second: the filtered subjects may end before it), else when `signal` aborts.
 */
export async function readStream(
  nc: NatsConnection, stream: string, filter: string, start: { seq: number } | { time: Date },
  opts: { until?: number; signal?: AbortSignal }, each: (data: Uint8Array, seq: number) => void | Promise<void>,
): Promise<void> {
  const consumer = await jetstream(nc).consumers.get(stream, 'seq' in start
    ? { filter_subjects: [filter], deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: start.seq }
    : { filter_subjects: [filter], deliver_policy: DeliverPolicy.StartTime, opt_start_time: start.time.toISOString() });
  const messages = await consumer.consume({ max_messages: 256, idle_heartbeat: 1_000 });
  const stop = () => void messages.stop();
  opts.signal?.addEventListener('abort', stop);
  let quiet: NodeJS.Timeout | null = null;
  const arm = () => {
    if (opts.until === undefined) return;
    if (quiet !== null) clearTimeout(quiet);
    quiet = setTimeout(stop, 1_000);
  };
  try {
    arm();
    for await (const m of messages) {
      await each(m.data, m.seq);
      if (opts.until !== undefined && m.seq >= opts.until) break;
      arm();
    }
  } finally {
    if (quiet !== null) clearTimeout(quiet);
    opts.signal?.removeEventListener('abort', stop);
    messages.stop();
  }
}

export interface PublishAck {
  seq: number;
  duplicate: boolean;
}

export type PublishCallback = (error: TroupeError | null, ack: PublishAck | null) => void;

/**
 * The headers of an append, encoded by hand. nats.js asks a message's headers only for
 * `encode()`; its MsgHdrs builds a Map of arrays, canonicalises and validates every key, and
 * encodes through a template string: ~7% of a worker's time when messages are small (C = 64).
 * Keys are Troupe's own; values are checked for CR/LF, which would end the header block.
 */
export class AppendHeaders {
  private readonly keys: string[] = [];
  private readonly values: string[] = [];

  set(key: string, value: string): void {
    if (value.includes('\r') || value.includes('\n')) throw new TypeError(`header ${key}: a value cannot contain CR or LF`);
    // As nats.js does: a key set again moves to the end.
    const i = this.keys.indexOf(key);
    if (i >= 0) {
      this.keys.splice(i, 1);
      this.values.splice(i, 1);
    }
    this.keys.push(key);
    this.values.push(value);
  }

  get(key: string): string {
    const i = this.keys.indexOf(key);
    return i >= 0 ? this.values[i]! : '';
  }

  encode(): Uint8Array {
    let s = 'NATS/1.0';
    for (let i = 0; i < this.keys.length; i++) s += `\r\n${this.keys[i]}: ${this.values[i]}`;
    return Buffer.from(`${s}\r\n\r\n`, 'latin1');
  }
}

const ACK_DECODER = new TextDecoder();

interface Pending {
  cb: PublishCallback;
  sentAt: number;
  subject: string;
}

/**
 * Acknowledged JetStream publishes sent the lean way: core `publish()` with a reply subject
 * under one wildcard inbox subscription, acks matched by hand. DESIGN.md measured ~180k
 * acknowledged msgs/s this way against ~35k/s through `js.publish()`.
 */
export class LeanPublisher {
  private readonly inbox: string;
  private readonly pending = new Map<number, Pending>();
  private readonly sub: Subscription;
  private readonly sweeper: NodeJS.Timeout;
  private next = 1;

  constructor(private readonly nc: NatsConnection, private readonly timeoutMs: number) {
    this.inbox = `_INBOX.troupe.${nuid.next()}.`;
    this.sub = nc.subscribe(`${this.inbox}*`, { callback: (_err, msg) => this.onReply(msg) });
    this.sweeper = setInterval(() => this.sweep(), Math.max(50, Math.min(500, timeoutMs / 4)));
    this.sweeper.unref();
  }

  get inFlight(): number {
    return this.pending.size;
  }

  publish(subject: string, data: Uint8Array, hdrs: AppendHeaders, cb: PublishCallback): void {
    const id = this.next++;
    this.pending.set(id, { cb, sentAt: Date.now(), subject });
    try {
      // nats.js only calls encode() on a message's headers.
      this.nc.publish(subject, data, { reply: this.inbox + id, headers: hdrs as unknown as MsgHdrs });
    } catch (e) {
      this.pending.delete(id);
      cb(new JournalUnavailableError(`publish to ${subject} failed: ${(e as Error).message}`, {}, e), null);
    }
  }

  private onReply(msg: Msg): void {
    const id = Number(msg.subject.slice(this.inbox.length));
    const p = this.pending.get(id);
    if (p === undefined) return; // timed out already: its caller was told the outcome is unknown
    this.pending.delete(id);
    if (msg.headers?.code === 503) {
      p.cb(new JournalUnavailableError(`no JetStream stream answers ${p.subject} (503 no responders)`), null);
      return;
    }
    let reply: { seq?: number; duplicate?: boolean; error?: { code: number; err_code?: number; description?: string } };
    try {
      reply = JSON.parse(ACK_DECODER.decode(msg.data));
    } catch (e) {
      p.cb(new JournalUnavailableError(`unreadable JetStream ack on ${p.subject}`, {}, e), null);
      return;
    }
    if (reply.error !== undefined) {
      const code = reply.error.err_code ?? 0;
      const text = `JetStream refused the append to ${p.subject}: ${reply.error.description ?? 'unknown error'} (${code})`;
      if (code === WRONG_LAST_SEQUENCE) p.cb(new ConcurrencyError('CONCURRENCY', text, { errCode: code }), null);
      else p.cb(new JournalUnavailableError(text, { errCode: code }), null);
      return;
    }
    p.cb(null, { seq: reply.seq ?? 0, duplicate: reply.duplicate === true });
  }

  private sweep(): void {
    if (this.pending.size === 0) return;
    const limit = Date.now() - this.timeoutMs;
    for (const [id, p] of this.pending) {
      if (p.sentAt > limit) break; // insertion order = send order
      this.pending.delete(id);
      p.cb(new JournalUnavailableError(`no JetStream acknowledgement for ${p.subject} within ${this.timeoutMs} ms; the outcome is unknown, retry with the same commandId`), null);
    }
  }

  /** Fail everything in flight (the connection is going away). */
  failAll(reason: string): void {
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.cb(new JournalUnavailableError(reason), null);
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    this.sub.unsubscribe();
  }
}
