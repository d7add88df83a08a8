/**
 * `troupe cluster status`: the cluster as NATS KV records it (node/membership.ts) — nodes with
 * their state, version and shards, moves under way, lease ages; the instances of consumers and
 * scaled projections with the shards each holds. Reads the buckets directly, so
 * it works with no node of its own and while nodes come and go. Text by default, JSON with --json.
 */
import { connectNats } from '../journal/journal.ts';
import { readClusterStatus, type ClusterStatus } from '../node/membership.ts';
import { consumerStatus } from '../consumers/overview.ts';
import { DEFAULT_NATS_URL, DEFAULT_STREAM } from '../options.ts';
import { describeServers, resolveNatsAuth } from '../connection.ts';
import { isTroupeError } from '../errors.ts';
import { natsAuthOf, type NatsFlags } from './credentials.ts';
import { CliError, EXIT_RETRYABLE } from './exit.ts';

export interface ClusterFlags extends NatsFlags {
  natsUrl?: string;
  stream?: string;
  json?: boolean;
}

/** A short, human view of the status. */
export function renderClusterStatus(st: ClusterStatus): string {
  const lines = [`stream ${st.stream}: ${st.shards} shards, ${st.nodes.length} node(s), ${st.unowned.length} without an owner, ${st.moves.length} moving`];
  const oldest = new Map<string, number>();
  for (const l of st.leases) oldest.set(l.node, Math.max(oldest.get(l.node) ?? 0, l.ageMs));
  for (const n of st.nodes) {
    lines.push(`  ${n.node.padEnd(20)} ${n.state.padEnd(9)} v${n.version.padEnd(8)} ${String(n.shardCount).padStart(5)} shards  heartbeat ${n.heartbeatMsAgo} ms ago  oldest lease renewal ${oldest.get(n.node) ?? 0} ms ago`);
  }
  if (st.unowned.length > 0) lines.push(`  without an owner: ${st.unowned.join(', ')}`);
  for (const m of st.moves) lines.push(`  moving: shard ${m.shard} ${m.kind} on ${m.node} for ${m.ms} ms`);
  for (const b of st.blocked ?? []) lines.push(`  blocked: shard ${b.shard} (no live node can read its log: ${b.reason})`);
  for (const g of st.consumers ?? []) {
    const what = g.projection === undefined ? `consumer ${g.name}` : `projection ${g.projection.name} v${g.projection.version}`;
    if (g.members.length === 0) {
      if (g.exclusive !== null) lines.push(`  ${what}: one instance (${g.exclusive.member})`);
      continue;
    }
    const held = g.members.map((m) => {
      const shards = g.shards.filter((s) => s.member === m.member).map((s) => s.shard);
      return `${m.member} [${shards.join(',')}]`;
    });
    lines.push(`  ${what}: ${g.members.length} instance(s), ${g.shards.length} shard(s) held: ${held.join('  ')}`);
  }
  return `${lines.join('\n')}\n`;
}

export async function clusterStatus(flags: ClusterFlags): Promise<void> {
  const url = flags.natsUrl !== undefined && flags.natsUrl !== '' ? flags.natsUrl : DEFAULT_NATS_URL;
  const stream = flags.stream ?? DEFAULT_STREAM;
  const nc = await connectNats(url, 'troupe-cli', resolveNatsAuth(natsAuthOf(flags))).catch((e: unknown) => {
    if (isTroupeError(e) && !e.retryable) throw e; // a refused login: NATS_AUTH, naming the credentials used
    throw new CliError(`cannot reach NATS at ${describeServers(url)} (${(e as Error).message}); set NATS_URL (--nats-url) to where the cluster's NATS runs`, EXIT_RETRYABLE, { cause: e });
  });
  try {
    let st: ClusterStatus;
    try {
      st = await readClusterStatus(nc, stream);
      st.consumers = await consumerStatus(nc, stream).catch(() => []);
    } catch (e) {
      throw new CliError(`no Troupe stream ${stream} on ${describeServers(url)} (${(e as Error).message}); name it with --stream`, EXIT_RETRYABLE, { cause: e });
    }
    process.stdout.write(flags.json === true ? `${JSON.stringify(st, null, 2)}\n` : renderClusterStatus(st));
  } finally {
    await nc.close();
  }
}
