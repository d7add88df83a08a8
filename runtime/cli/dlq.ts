/**
 * `troupe dlq list|show|replay|discard|stats`: the dead-letter queue of a deployment
 * (`<stream>_DLQ`, consumers/dlq.ts). Listing, reading and discarding talk to the DLQ stream
 * directly; replaying needs the consumer's handler, so it asks a running instance of the
 * consumer over NATS (it answers on `<prefix>.ops.dlq.replay.<consumer>.<shard>`).
 */
import { DeadLetterQueue, requestReplay, type DeadLetter } from '../consumers/dlq.ts';
import { DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX } from '../options.ts';
import { isTroupeError } from '../errors.ts';
import { describeStream } from '../journal/journal.ts';
import { CliError, EXIT_RETRYABLE, EXIT_USAGE } from './exit.ts';
import { connectCli, type NatsFlags } from './credentials.ts';

export interface DlqFlags extends NatsFlags {
  natsUrl?: string;
  stream?: string;
  subjectPrefix?: string;
  consumer?: string;
  aggregate?: string;
  limit?: number;
  json?: boolean;
  all?: boolean;
}

/** Whether a dead letter is of `--aggregate` (an id, or Type/id). */
export function ofAggregate(dl: DeadLetter, aggregate: string | undefined): boolean {
  if (aggregate === undefined) return true;
  const e = dl.event;
  if (e === null) return false;
  const slash = aggregate.indexOf('/');
  return slash < 0 ? e.aggregateId === aggregate : e.aggregateType === aggregate.slice(0, slash) && e.aggregateId === aggregate.slice(slash + 1);
}

/** One readable line for a dead letter. */
export function renderDeadLetter(dl: DeadLetter): string {
  const e = dl.event;
  const what = e === null ? '(undecodable message)' : `${e.aggregateType}/${e.aggregateId} ${e.eventType}@v${e.version} event ${e.eventId}`;
  return `#${dl.seq} ${dl.deadLetteredAt} ${dl.consumer} ${dl.reason} ${what} attempts=${dl.attempts} log#${dl.position}: ${dl.error.message.replace(/\s*\n\s*/g, ' ')}`;
}

async function withQueue<T>(flags: DlqFlags, run: (q: DeadLetterQueue) => Promise<T>): Promise<T> {
  const stream = flags.stream ?? DEFAULT_STREAM;
  const { nc, servers } = await connectCli(flags, 'troupe-dlq');
  let q: DeadLetterQueue;
  try {
    // The log stream records its subjects: the prefix (of the DLQ's subjects too) is read from there unless given.
    const prefix = flags.subjectPrefix ?? (await describeStream(nc, stream).catch(() => null))?.subjectPrefix ?? DEFAULT_SUBJECT_PREFIX;
    q = await DeadLetterQueue.open({ nc, stream, subjectPrefix: prefix });
  } catch (e) {
    await nc.close().catch(() => {});
    if (isTroupeError(e) && !e.retryable) throw e;
    throw new CliError(`cannot open the dead-letter queue on ${servers} (${(e as Error).message}); set NATS_URL (--nats-url) to where the deployment's NATS runs`, EXIT_RETRYABLE, { cause: e });
  }
  try {
    return await run(q);
  } finally {
    await q.close();
    await nc.close().catch(() => {});
  }
}

/** Every dead letter that passes the filters, oldest first (up to --limit). */
async function matching(q: DeadLetterQueue, flags: DlqFlags): Promise<DeadLetter[]> {
  const out: DeadLetter[] = [];
  const limit = flags.limit ?? Infinity;
  let after = 0;
  for (;;) {
    const page = await q.list({ ...(flags.consumer !== undefined ? { consumer: flags.consumer } : {}), afterSeq: after, limit: 100 });
    if (page.length === 0) return out;
    for (const dl of page) {
      after = dl.seq;
      if (!ofAggregate(dl, flags.aggregate)) continue;
      out.push(dl);
      if (out.length >= limit) return out;
    }
  }
}

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, (_k, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('base64') : v), 2)}\n`);
}

function seqOf(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new CliError(`expected a dead letter's sequence (see \`troupe dlq list\`), got ${text}`, EXIT_USAGE);
  return n;
}

export function dlqList(flags: DlqFlags): Promise<void> {
  return withQueue(flags, async (q) => {
    const list = await matching(q, flags);
    if (flags.json === true) print(list);
    else process.stdout.write(list.length === 0 ? 'no dead letters\n' : `${list.map(renderDeadLetter).join('\n')}\n`);
  });
}

export function dlqShow(seq: string, flags: DlqFlags): Promise<void> {
  return withQueue(flags, async (q) => print(await q.get(seqOf(seq))));
}

export function dlqStats(flags: DlqFlags): Promise<void> {
  return withQueue(flags, async (q) => {
    const st = await q.stats();
    if (flags.json === true) return print(st);
    const lines = [`${st.count} dead letter(s); oldest ${Math.round(st.oldestAgeMs / 1000)} s old`];
    for (const [c, n] of Object.entries(st.byConsumer)) lines.push(`  consumer ${c}: ${n}`);
    for (const [r, n] of Object.entries(st.byReason)) lines.push(`  reason ${r}: ${n}`);
    process.stdout.write(`${lines.join('\n')}\n`);
  });
}

/** The dead letters a replay or discard acts on: the one named, or with --all every one that passes the filters. */
async function targets(q: DeadLetterQueue, seq: string | undefined, flags: DlqFlags, verb: string): Promise<number[]> {
  if (seq !== undefined) return [seqOf(seq)];
  if (flags.all !== true) throw new CliError(`name a dead letter (troupe dlq ${verb} <seq>) or pass --all (with --consumer / --aggregate to narrow it)`, EXIT_USAGE);
  return (await matching(q, flags)).map((dl) => dl.seq);
}

export function dlqReplay(seq: string | undefined, flags: DlqFlags): Promise<void> {
  return withQueue(flags, async (q) => {
    const seqs = await targets(q, seq, flags, 'replay');
    const replayed: number[] = [];
    const failed: { seq: number; code: string; message: string }[] = [];
    for (const s of seqs) {
      try {
        await requestReplay(q, s);
        replayed.push(s);
      } catch (e) {
        if (seq !== undefined) throw e;
        failed.push({ seq: s, code: (e as { code?: string }).code ?? 'INTERNAL', message: (e as Error).message });
      }
    }
    if (flags.json === true || seq === undefined) print({ replayed, failed });
    else process.stdout.write(`replayed dead letter ${seq}: its consumer handled the event and the dead letter is gone\n`);
    if (failed.length > 0) throw new CliError(`${failed.length} of ${seqs.length} dead letter(s) failed to replay and stay in the queue`, failed.some((f) => f.code === 'JOURNAL_UNAVAILABLE') ? EXIT_RETRYABLE : 1);
  });
}

export function dlqDiscard(seq: string | undefined, flags: DlqFlags): Promise<void> {
  return withQueue(flags, async (q) => {
    const seqs = await targets(q, seq, flags, 'discard');
    let discarded = 0;
    for (const s of seqs) if (await q.discard(s)) discarded++;
    if (seq !== undefined && discarded === 0) throw new CliError(`no dead letter ${seq}`, 1);
    if (flags.json === true) print({ discarded });
    else process.stdout.write(`discarded ${discarded} dead letter(s)\n`);
  });
}
