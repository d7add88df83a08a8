// Exactly once per commandId across a failover: a command re-sent while its first attempt is
// still queued at the new owner (the shard opening, the actor replaying its log) is answered
// with the first attempt's result, never decided again; and after a node is killed with
// SIGKILL under a retrying TroupeClient load, no commandId is in the log twice.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { shardOf } from '../../runtime/envelope.ts';
import { TroupeClient } from '../../runtime/remote/client.ts';
import type { ClusterStatus } from '../../runtime/node/membership.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { countByCommandId, freshStream, range1, readEvents, sleep, startNode } from '../helpers/troupe.ts';

const nodeScript = fileURLToPath(new URL('../fixtures/serving-node.ts', import.meta.url));
const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

describe('failover duplicates', () => {
  const nats = useNatsServer();

  it('answers a commandId sent twice while its actor replays its log once, with one commit', async () => {
    const { stream, subjectPrefix } = freshStream('DUPA');
    const first = await startNode(nats.url, { stream, subjectPrefix, shards: 4, ownership: 'none' });
    const accounts = range1(6).map((i) => `replayed-${i}`);
    try {
      await Promise.all(accounts.map((a) => first.send('Account', a, 'OpenAccount', {})));
      await Promise.all(accounts.flatMap((a) => range1(30).map((amount) => first.send('Account', a, 'Deposit', { amount }))));
    } finally {
      await first.stop();
    }
    // Another node, its cache empty (and no checkpoint shared: ownership 'none'): each shard
    // catches up from the log on first use and each actor replays its commits from the log,
    // while each commandId arrives three times.
    const second = await startNode(nats.url, { stream, subjectPrefix, shards: 4, ownership: 'none' });
    try {
      const sends = accounts.flatMap((a) => [1, 2, 3].map(() => second.send('Account', a, 'Deposit', { amount: 1000 }, { commandId: `again-${a}` })));
      const results = await Promise.all(sends);
      for (const a of accounts) {
        const mine = results.filter((r) => r.aggregateId === a);
        expect(new Set(mine.map((r) => r.version)), a).toEqual(new Set([32]));
        expect(mine.filter((r) => !r.duplicate), a).toHaveLength(1);
      }
      for (const a of accounts) expect((await second.query('Account', a)).version, a).toBe(32);
    } finally {
      await second.stop();
    }
    const counts = countByCommandId(await readEvents(nats.url, stream));
    expect([...counts].filter(([, n]) => n !== 1)).toEqual([]);
  });
});
