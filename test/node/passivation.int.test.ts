// Passivation against a real nats-server and real LMDB files: resident actors stay within
// maxResidentActors however many are touched, idle actors leave memory after idleActorMs,
// each leaves a snapshot, and a passivated actor comes back on demand with its state.
import { describe, expect, it } from 'vitest';
import { Store } from '../../runtime/journal/store.ts';
import type { Troupe } from '../../runtime/node/system.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { freshStream, startNode } from '../helpers/troupe.ts';

async function resident(node: Troupe): Promise<number> {
  return (await node.stats()).workers.reduce((n, w) => n + w.residentActors, 0);
}

/** Poll until `ok` holds or `ms` pass; returns the last value seen. */
async function eventually<T>(read: () => Promise<T>, ok: (v: T) => boolean, ms = 5000): Promise<T> {
  const until = Date.now() + ms;
  let v = await read();
  while (!ok(v) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 50));
    v = await read();
  }
  return v;
}

describe('passivation', () => {
  const nats = useNatsServer();

  it('keeps resident actors within maxResidentActors while many are touched, and brings a passivated one back with its state', async () => {
    const s = freshStream('PASS');
    const dataDir = tempDir();
    const node = await startNode(nats.url, { ...s, dataDir, workers: 1, shards: 4, maxResidentActors: 100, idleActorMs: 600_000 });
    const ids = Array.from({ length: 1000 }, (_, i) => `p-${i}`);
    try {
      for (let from = 0; from < ids.length; from += 100) {
        const slice = ids.slice(from, from + 100);
        await Promise.all(slice.map((id) => node.send('Account', id, 'OpenAccount', {})));
        await Promise.all(slice.map((id, k) => node.send('Account', id, 'Deposit', { amount: from + k + 1 })));
      }
      // The periodic sweep runs at most every second; activations sweep sooner.
      const n = await eventually(() => resident(node), (v) => v <= 110);
      expect(n).toBeLessThanOrEqual(110);
      expect(n).toBeGreaterThan(0);
      // p-0 was used first, so it was passivated: it comes back with its state, and takes commands.
      expect(await node.query('Account', 'p-0')).toEqual({ state: { opened: true, balance: 1 }, version: 2 });
      await expect(node.send('Account', 'p-0', 'Deposit', { amount: 5 })).resolves.toMatchObject({ version: 3 });
      expect(await node.query('Account', 'p-0')).toEqual({ state: { opened: true, balance: 6 }, version: 3 });
    } finally {
      await node.stop();
    }
    // Passivation left a snapshot behind (p-1 was not touched again; a stop only snapshots residents).
    const store = new Store(dataDir, s.stream, 60_000);
    try {
      expect(store.getSnapshot('Account', 'p-1')).toMatchObject({ version: 2, state: { opened: true, balance: 2 } });
    } finally {
      await store.close();
    }
  });

  it('passivates actors idle for idleActorMs, and they come back on demand', async () => {
    const node = await startNode(nats.url, { ...freshStream('IDLE'), workers: 1, shards: 4, idleActorMs: 200 });
    try {
      const ids = Array.from({ length: 20 }, (_, i) => `idle-${i}`);
      await Promise.all(ids.map((id) => node.send('Account', id, 'OpenAccount', {})));
      expect(await resident(node)).toBe(20);
      expect(await eventually(() => resident(node), (v) => v === 0)).toBe(0);
      await node.send('Account', 'idle-3', 'Deposit', { amount: 7 });
      expect(await node.query('Account', 'idle-3')).toEqual({ state: { opened: true, balance: 7 }, version: 2 });
      expect(await resident(node)).toBe(1);
    } finally {
      await node.stop();
    }
  });
});
