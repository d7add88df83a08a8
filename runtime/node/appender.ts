/**
 * A shard's appends: decided commits wait in `buffer`; one JetStream message per flush carries
 * many of them, with the expected last subject sequence (fencing: a second writer is refused,
 * the log never forks). At most one message is in flight: the next expectation is the
 * previous ack.
 *
 *   decided ──push──▶ buffer ──flush──▶ in flight ──ack──▶ stored: replies, index, command ids, snapshots
 *                                           └──refused / no ack──▶ the shard breaks (ShardHost.appendFailed)
 */
import { beginBatch, endBatch, writeCommit } from '../journal/codec.ts';
import { AppendHeaders, COMMIT_BATCH_FORMAT, FORMAT_HEADER, type PublishAck } from '../journal/journal.ts';
import type { TroupeError } from '../errors.ts';
import { IdUse } from '../envelope.ts';
import { TIMER_OP } from '../wire.ts';
import type { PendingCommit } from './cell.ts';
import { snapshotIfDue } from './passivation.ts';
import type { ShardHost } from './shard.ts';

/**
 * For the durable-timer crash test (test/node/timers.int.test.ts) only: the process kills itself
 * once JetStream acknowledged a message holding a timer's firing, before the ack is handled.
 */
const CRASH_AFTER_FIRING_APPEND = process.env.TROUPE_TEST_CRASH_AT === 'timer-firing-appended';

export class Appender {
  private buffer: PendingCommit[] = [];
  private inflight: PendingCommit[] | null = null;
  /** The stream sequence of the shard's last message: the expectation of the next append. */
  expectedSeq = 0;

  constructor(private readonly host: ShardHost) {}

  /** Commits buffered or in flight. */
  get queued(): number {
    return this.buffer.length + (this.inflight?.length ?? 0);
  }

  get idle(): boolean {
    return this.inflight === null && this.buffer.length === 0;
  }

  push(pc: PendingCommit): void {
    this.buffer.push(pc);
    this.host.ctx.scheduleFlush(this.host);
  }

  /** Every commit buffered or in flight, which the caller fails; the appender is then empty. */
  takeAll(): PendingCommit[] {
    const all = this.inflight === null ? this.buffer : [...this.inflight, ...this.buffer];
    this.inflight = null;
    this.buffer = [];
    return all;
  }

  /** Send one message of buffered commits, if none is in flight. Called by the worker's flush loop. */
  flush(): void {
    const host = this.host;
    // host.needs.holding: a record of a newer event version must reach KV first (log-needs.ts).
    if (this.inflight !== null || this.buffer.length === 0 || host.state !== 'ready' || host.needs.holding) return;
    const ctx = host.ctx;
    const { maxBatchBytes, maxBatchCommits } = ctx.options;
    let n = 0;
    let bytes = 8;
    const buffer = this.buffer;
    while (n < buffer.length && n < maxBatchCommits && (n === 0 || bytes + buffer[n]!.size <= maxBatchBytes)) {
      bytes += buffer[n]!.size;
      n++;
    }
    const batch = n === buffer.length ? buffer : buffer.slice(0, n);
    this.buffer = n === buffer.length ? [] : buffer.slice(n);
    this.inflight = batch;
    const source = ctx.options.source;
    beginBatch(ctx.ids.prefix, batch.length);
    for (let i = 0; i < batch.length; i++) {
      const pc = batch[i]!;
      const cmd = pc.cmd;
      writeCommit(pc.commandId, pc.cell.reg.def.type, pc.cell.id, cmd.correlationId === pc.commandId ? null : cmd.correlationId, cmd.userId, pc.timestamp, source, pc.firstSeq, pc.wire, cmd.causationId, pc.timers);
    }
    const data = endBatch();
    const h = new AppendHeaders();
    h.set('Nats-Expected-Last-Subject-Sequence', String(this.expectedSeq));
    const msgId = `${ctx.writerId}.${host.shard}.${this.expectedSeq}`;
    h.set('Nats-Msg-Id', msgId);
    h.set(FORMAT_HEADER, COMMIT_BATCH_FORMAT);
    const observer = ctx.observer;
    observer?.flushed(host.subject, batch, h, msgId, data.length);
    const sentAt = performance.now();
    const generation = host.generation;
    ctx.publisher.publish(host.subject, data, h, (err, ack) => {
      if (generation !== host.generation) return;
      if (err !== null) this.failed(err);
      else {
        if (CRASH_AFTER_FIRING_APPEND && batch.some((pc) => pc.timers?.[0]?.[0] === TIMER_OP.FIRED)) process.kill(process.pid, 'SIGKILL');
        observer?.appended(host.shard, batch, ack!.seq, performance.now() - sentAt);
        this.appended(ack!);
      }
    });
  }

  private appended(ack: PublishAck): void {
    const host = this.host;
    const batch = this.inflight!;
    this.inflight = null;
    this.expectedSeq = ack.seq;
    const { store } = host.ctx;
    const ids = host.commandIds;
    const position = ack.seq;
    const now = Date.now();
    let remembered: unknown[] | null = null;
    for (let i = 0; i < batch.length; i++) {
      const pc = batch[i]!;
      const cell = pc.cell;
      cell.state = pc.stateAfter;
      cell.version = pc.lastSeq;
      if (pc.timers !== null) host.timersStored(cell.reg.def.type, cell.id, pc.timers);
      if (cell.lastPending === pc) {
        cell.lastPending = null;
        cell.timerEdits = null;
      }
      // A commit of timer ops alone has no events: nothing to replay, so no history entry.
      if (pc.wire.length > 0) store.indexCommit(cell.reg.def.type, cell.id, pc.lastSeq, position);
      if (pc.cmd.idUse !== IdUse.GENERATED) {
        ids.stored(pc, position, now, remembered ??= []);
      }
      snapshotIfDue(store, cell, position);
      pc.cmd.replyStored(pc, position, host.ctx.ids.prefix);
      if (pc.followers !== null) for (const f of pc.followers) f();
    }
    store.advanceCheckpoint(host.shard, position);
    // Once these puts are committed LMDB answers duplicates; until then the store's queue does
    // (and, for GIVEN ids, the shard's memory: forgotten here once LMDB has them).
    if (remembered !== null && remembered.length > 0) {
      const done = remembered;
      store.whenIndexed(() => ids.indexed(done));
    }
    // Through the flush loop, not at once: the next messages of all shards then leave in one socket write.
    if (this.buffer.length > 0) host.ctx.scheduleFlush(host);
  }

  private failed(cause: TroupeError): void {
    this.host.appendFailed(cause, this.takeAll());
  }
}
