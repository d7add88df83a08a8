import { describe, expect, it } from 'vitest';
import { renderClusterStatus } from '../../runtime/cli/cluster.ts';
import type { ClusterStatus } from '../../runtime/node/membership.ts';

const status: ClusterStatus = {
  stream: 'TROUPE',
  shards: 4,
  nodes: [
    { node: 'node-1', state: 'ready', since: 0, version: '0.3.0', shards: [0, 1], moves: [], heartbeatMsAgo: 120, shardCount: 2 },
    { node: 'node-2', state: 'draining', since: 0, version: '0.3.0', shards: [2], moves: [{ shard: 2, kind: 'hand-off', since: 0 }], heartbeatMsAgo: 40, shardCount: 1 },
  ],
  leases: [
    { shard: 0, node: 'node-1', ageMs: 900, heldMs: 5_000 },
    { shard: 1, node: 'node-1', ageMs: 300, heldMs: 5_000 },
    { shard: 2, node: 'node-2', ageMs: 100, heldMs: 9_000 },
  ],
  unowned: [3],
  moves: [{ shard: 2, kind: 'hand-off', since: 0, node: 'node-2', ms: 35 }],
};

describe('troupe cluster status', () => {
  it('prints one line per node with its state, version, shard count and oldest lease renewal, then what has no owner and what moves', () => {
    const lines = renderClusterStatus(status).trimEnd().split('\n');
    expect(lines[0]).toBe('stream TROUPE: 4 shards, 2 node(s), 1 without an owner, 1 moving');
    expect(lines[1]).toMatch(/^ {2}node-1 +ready +v0\.3\.0 +2 shards {2}heartbeat 120 ms ago {2}oldest lease renewal 900 ms ago$/);
    expect(lines[2]).toMatch(/^ {2}node-2 +draining +v0\.3\.0 +1 shards {2}heartbeat 40 ms ago {2}oldest lease renewal 100 ms ago$/);
    expect(lines.slice(3)).toEqual(['  without an owner: 3', '  moving: shard 2 hand-off on node-2 for 35 ms']);
  });

  it('lists the instances of scaled consumers and projections with the shards each holds, and the one instance of a plain consumer', () => {
    const lines = renderClusterStatus({
      ...status,
      consumers: [
        { name: 'billing', group: 'billing', ttlMs: 10_000, members: [], shards: [], exclusive: { member: 'host-1', ageMs: 10 } },
        {
          name: 'proj_balances_v2', projection: { name: 'balances', version: 2 }, group: 'proj_balances_v2', ttlMs: 3_000, exclusive: null,
          members: [{ member: 'a', since: 0, at: 0 }, { member: 'b', since: 0, at: 0 }],
          shards: [{ shard: 0, member: 'b', ageMs: 5 }, { shard: 1, member: 'a', ageMs: 5 }, { shard: 2, member: 'b', ageMs: 5 }],
        },
      ],
    }).trimEnd().split('\n');
    expect(lines.slice(-2)).toEqual([
      '  consumer billing: one instance (host-1)',
      '  projection balances v2: 2 instance(s), 3 shard(s) held: a [1]  b [0,2]',
    ]);
  });
});
