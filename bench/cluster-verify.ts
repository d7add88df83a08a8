/**
 * Verification of a cluster run (bench/cluster.ts): the log alone against what the client was told.
 */
import { readFileSync } from 'node:fs';
import { connect } from '@nats-io/transport-node';
import { decodeCommitBatch } from '../runtime/journal/codec.ts';
import { shardOf } from '../runtime/envelope.ts';
import { LedgerVerifier, readWholeStream, type LedgerVerification } from './baselines.ts';
import type { LedgerCommand } from './workload.ts';

export interface ClusterVerification extends LedgerVerification {
  /** Acknowledged commandIds read back from the client. */
  readonly acked: number;
}

/**
 * Rebuild every account from the log alone and check it against what the client was told:
 * each acknowledged commandId in the log exactly once, nothing in the log that was not
 * acknowledged, and the ledger's rules (with a sequential replay when `commands` is given).
 */
export async function verifyClusterLog(opts: {
  servers: string;
  stream: string;
  accounts: number;
  accepted: number;
  jetstreamMessages: number;
  ackFile: string;
  commands?: readonly LedgerCommand[];
  /** With the shard count, a command found twice is described: its shard, who wrote each copy and when. */
  shards?: number;
  /** Date.now() of the move or kill, to time the copies from. */
  eventAt?: number;
}): Promise<ClusterVerification> {
  const acked = readFileSync(opts.ackFile, 'utf8').split('\n').filter((l) => l !== '');
  const verifier = new LedgerVerifier({ accounts: opts.accounts, accepted: opts.accepted, ...(opts.commands === undefined ? {} : { commands: opts.commands }) });
  const inLog = new Map<string, number>();
  // Where each command's first event is (log position, when decided, by which node), and every later copy.
  const first = new Map<string, { agg: string; pos: number; at: number; by: string }>();
  const again: { id: string; agg: string; pos: number; at: number; by: string }[] = [];
  const nc = await connect({ servers: opts.servers.split(','), name: 'bench-verify' });
  let read: number;
  try {
    read = await readWholeStream(nc, opts.stream, (m) => {
      let events;
      try {
        events = decodeCommitBatch(m.data, m.seq);
      } catch (err) {
        verifier.fail(`stream seq ${m.seq}: cannot decode: ${String(err)}`);
        return;
      }
      for (const e of events) {
        verifier.add({ eventType: e.eventType, aggregateId: e.aggregateId, seq: e.sequence, payload: e.payload as { amount?: number } }, `stream seq ${m.seq}`);
        inLog.set(e.commandId, (inLog.get(e.commandId) ?? 0) + 1);
        const here = { agg: e.aggregateId, pos: e.position, at: Date.parse(e.timestamp), by: e.source };
        if (!first.has(e.commandId)) first.set(e.commandId, here);
        else again.push({ id: e.commandId, ...here });
      }
    });
  } finally {
    await nc.close();
  }
  if (read !== opts.jetstreamMessages) verifier.fail(`read ${read} messages, the stream holds ${opts.jetstreamMessages}`);
  const ackedSet = new Set(acked);
  if (ackedSet.size !== acked.length) verifier.fail(`${acked.length - ackedSet.size} commandIds acknowledged twice`);
  const notOnce = acked.filter((id) => inLog.get(id) !== 1);
  if (notOnce.length > 0) verifier.fail(`${notOnce.length} acknowledged commands are not in the log exactly once (e.g. ${notOnce.slice(0, 3).join(', ')}: ${notOnce.slice(0, 3).map((id) => inLog.get(id) ?? 0).join(', ')} times)`);
  if (again.length > 0) verifier.fail(describeCopies(again, first, opts.shards, opts.eventAt));
  const unacked = [...inLog.keys()].filter((id) => !ackedSet.has(id));
  if (unacked.length > 0) verifier.fail(`${unacked.length} commands in the log were never acknowledged (e.g. ${unacked.slice(0, 3).join(', ')})`);
  return { ...verifier.finish(), acked: acked.length };
}

/** What the commands found twice have in common: shards, writers, and the time between the copies. */
function describeCopies(
  again: readonly { id: string; agg: string; pos: number; at: number; by: string }[],
  first: ReadonlyMap<string, { agg: string; pos: number; at: number; by: string }>,
  shards: number | undefined,
  eventAt: number | undefined,
): string {
  const count = (keys: string[]): string => {
    const m = new Map<string, number>();
    for (const k of keys) m.set(k, (m.get(k) ?? 0) + 1);
    return [...m].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([k, n]) => `${k}: ${n}`).join(', ');
  };
  const pairs = again.map((c) => ({ c, f: first.get(c.id)! }));
  const gaps = pairs.map(({ c, f }) => c.at - f.at).sort((a, b) => a - b);
  const t0 = Math.min(...pairs.map(({ f }) => f.at));
  const rel = (at: number): string => `${((at - (eventAt ?? t0)) / 1000).toFixed(1)} s`;
  const span = (ats: number[]): string => `${rel(Math.min(...ats))} to ${rel(Math.max(...ats))}`;
  return `${again.length} later copies of commands already in the log: ` +
    `${shards === undefined ? '' : `by shard {${count(pairs.map(({ c }) => String(shardOf('Account', c.agg, shards))))}}; `}` +
    `first copy written by {${count(pairs.map(({ f }) => f.by))}}, later copy by {${count(pairs.map(({ c }) => c.by))}}; ` +
    `first copies decided ${span(pairs.map(({ f }) => f.at))}, later ones ${span(pairs.map(({ c }) => c.at))} ${eventAt === undefined ? 'from the first' : 'after the event'}; ` +
    `later copies ${(gaps[0]! / 1000).toFixed(1)}–${(gaps[gaps.length - 1]! / 1000).toFixed(1)} s after the first (median ${(gaps[Math.floor(gaps.length / 2)]! / 1000).toFixed(1)} s)`;
}
