// Recovery: snapshots plus replay after a restart, a rebuild from JetStream after the LMDB
// cache is deleted, and a node killed with SIGKILL in the middle of a load.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { open as openLmdb, type Database } from 'lmdb';
import { describe, expect, it } from 'vitest';
import type { Snapshot } from '../../runtime/journal/store.ts';
import { REPO_ROOT } from '../../runtime/testing/nats-server.ts';
import type { Troupe } from '../../runtime/node/system.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { countByCommandId, foldAccounts, freshStream, range1, readEvents, sleep, startNode } from '../helpers/troupe.ts';

const loadNodeScript = fileURLToPath(new URL('../fixtures/load-node.ts', import.meta.url));

/** Read or replace one actor's snapshot in a stopped node's LMDB cache. */
async function withSnapshots<T>(dataDir: string, stream: string, fn: (db: Database<Snapshot, [string, string]>) => T): Promise<T> {
  const root = openLmdb({ path: join(dataDir, 'lmdb', stream), maxDbs: 32 });
  try {
    return fn(root.openDB<Snapshot, [string, string]>({ name: 'snapshots', sharedStructuresKey: Symbol.for('troupe.structures') }));
  } finally {
    await root.close();
  }
}

describe('recovery', () => {
  const nats = useNatsServer();

  it('restores an actor after a restart from its snapshot and the events after it', async () => {
    const { stream, subjectPrefix } = freshStream('SNAP');
    const dataDir = tempDir();
    let node = await startNode(nats.url, { stream, subjectPrefix, dataDir });
    try {
      await node.send('Account', 'saver', 'OpenAccount', {});
      for (const amount of range1(250)) await node.send('Account', 'saver', 'Deposit', { amount });
      expect(await node.query('Account', 'saver')).toEqual({ state: { opened: true, balance: 31_375 }, version: 251 });
      await node.stop();

      // A graceful stop leaves a snapshot of the latest state (Account has snapshotEvery: 100).
      const snap = await withSnapshots(dataDir, stream, (db) => db.get(['Account', 'saver']));
      expect(snap).toMatchObject({ version: 251, state: { opened: true, balance: 31_375 } });

      node = await startNode(nats.url, { stream, subjectPrefix, dataDir });
      expect(await node.query('Account', 'saver')).toEqual({ state: { opened: true, balance: 31_375 }, version: 251 });
      const history = await node.history('Account', 'saver');
      expect(history.map((e) => e.sequence)).toEqual(range1(251));
      expect(history.slice(1).map((e) => (e.payload as { amount: number }).amount)).toEqual(range1(250));
    } finally {
      await node.stop();
    }
  });

  it('activates an actor from its snapshot and replays only the events after it', async () => {
    const { stream, subjectPrefix } = freshStream('SNAP');
    const dataDir = tempDir();
    let node = await startNode(nats.url, { stream, subjectPrefix, dataDir });
    try {
      await node.send('Account', 'saver', 'OpenAccount', {});
      for (const amount of range1(250)) await node.send('Account', 'saver', 'Deposit', { amount });
      await node.stop();

      // Put a marked snapshot at version 200 in place of the stop's: 1,000,000 more than the
      // log says. If activation uses it and replays only versions 201..251, the marker shows
      // in the state; a replay from the start, or from any other version, would not give it.
      await withSnapshots(dataDir, stream, (db) => {
        const real = db.get(['Account', 'saver'])!;
        const balanceAt200 = 199 * 200 / 2; // events 2..200 deposited 1..199
        db.putSync(['Account', 'saver'], { ...real, version: 200, state: { opened: true, balance: balanceAt200 + 1_000_000 } });
      });

      node = await startNode(nats.url, { stream, subjectPrefix, dataDir });
      expect(await node.query('Account', 'saver')).toEqual({ state: { opened: true, balance: 31_375 + 1_000_000 }, version: 251 });
      expect((await node.history('Account', 'saver')).length).toBe(251);
    } finally {
      await node.stop();
    }
  });

  it('rebuilds the same states and histories from JetStream after the dataDir is deleted', async () => {
    const { stream, subjectPrefix } = freshStream('WIPE');
    const dataDir = tempDir();
    let node = await startNode(nats.url, { stream, subjectPrefix, dataDir });
    const actors: [string, string][] = [];
    try {
      const sends: Promise<unknown>[] = [];
      for (const i of range1(30)) {
        const id = `acct-${i}`;
        actors.push(['Account', id]);
        await node.send('Account', id, 'OpenAccount', {});
        for (const k of range1(i * 5)) sends.push(node.send('Account', id, 'Deposit', { amount: k }));
        sends.push(node.send('Account', id, 'Withdraw', { amount: i }));
      }
      await Promise.all(sends);
      actors.push(['Entity', 'user-1'], ['Investigation', 'case-1'], ['Threat', 'det-1']);
      await node.send('Entity', 'user-1', 'RegisterEntity', { kind: 'user', value: 'alice@example.org' });
      for (const i of range1(25)) await node.send('Entity', 'user-1', 'TagEntity', { tag: `t${i}` });
      await node.send('Entity', 'user-1', 'EnrichEntity', { source: 'ldap', attributes: { department: 'finance', mfa: true } });
      await node.send('Investigation', 'case-1', 'CreateInvestigation', { title: 'Impossible travel', severity: 'high' }, { userId: 'sam' });
      await node.send('Investigation', 'case-1', 'AddInvestigationNote', { note: 'VPN exit node' }, { userId: 'sam' });
      await node.send('Investigation', 'case-1', 'CloseInvestigation', { resolution: 'benign' });
      await node.send('Threat', 'det-1', 'DetectThreat', { signature: 'ET POLICY', score: 85, source: 'zeek' });

      const before = new Map<string, unknown>();
      for (const [type, id] of actors) before.set(`${type}/${id}`, { query: await node.query(type, id), history: await node.history(type, id) });
      await node.stop();

      expect(existsSync(join(dataDir, 'lmdb'))).toBe(true);
      rmSync(dataDir, { recursive: true, force: true });
      node = await startNode(nats.url, { stream, subjectPrefix, dataDir });
      for (const [type, id] of actors) {
        expect({ query: await node.query(type, id), history: await node.history(type, id) }, `${type} ${id}`).toEqual(before.get(`${type}/${id}`));
      }
      expect(await node.query('Account', 'acct-30')).toMatchObject({ state: { balance: 150 * 151 / 2 - 30 }, version: 152 });
      // And it keeps writing on top of the rebuilt states.
      await expect(node.send('Account', 'acct-1', 'Deposit', { amount: 1 })).resolves.toMatchObject({ version: 8 });
    } finally {
      await node.stop();
    }
  });

  it('loses no acknowledged command and half-commits nothing when the node is killed with SIGKILL under load', async () => {
    const { stream, subjectPrefix } = freshStream('KILL');
    const dataDir = tempDir();
    const ackFile = join(tempDir(), 'acks.jsonl');
    const accounts = 300;

    const child = spawn(process.execPath, ['--import', 'tsx', loadNodeScript, nats.url, dataDir, stream, subjectPrefix, ackFile, String(accounts)], {
      cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code)));
    try {
      const until = Date.now() + 30_000;
      while (!stdout.includes('loading')) {
        if (Date.now() > until || child.exitCode !== null) throw new Error(`the load node did not start: ${stdout}\n${stderr}`);
        await sleep(20);
      }
      await sleep(1500);
    } finally {
      child.kill('SIGKILL');
    }
    expect(await exited).toBe('SIGKILL');

    // Every line is an acknowledged command; a line cut short by the kill was never acknowledged to anyone.
    const text = readFileSync(ackFile, 'utf8');
    const lines = text.split('\n').slice(0, -1);
    const acked = lines.map((l) => JSON.parse(l) as { commandId: string; account: string; type: string; amount: number; version: number });
    const deposits = acked.filter((a) => a.type === 'Deposit');
    expect(deposits.length, `the load node acknowledged too few deposits to test anything\n${stderr}`).toBeGreaterThan(500);

    let node: Troupe | undefined;
    try {
      node = await startNode(nats.url, { stream, subjectPrefix, dataDir });
      const events = await readEvents(nats.url, stream);
      const counts = countByCommandId(events);
      const byCommand = new Map(events.map((e) => [e.commandId, e]));

      // Every acknowledged command is in the log exactly once, as it was acknowledged.
      const missing = acked.filter((a) => counts.get(a.commandId) !== 1);
      expect(missing.slice(0, 5), `${missing.length} acknowledged commands are not in the log exactly once`).toEqual([]);
      const different = acked.filter((a) => {
        const e = byCommand.get(a.commandId)!;
        return e.aggregateId !== a.account || e.sequence !== a.version || ((e.payload as { amount?: number }).amount ?? 0) !== a.amount;
      });
      expect(different.slice(0, 5), `${different.length} acknowledged commands differ from the log`).toEqual([]);
      // No command of the log is there twice, acknowledged or not.
      expect([...counts].filter(([, n]) => n !== 1)).toEqual([]);

      // Versions are contiguous per actor (nothing half-committed, no fork), and each state is the log's.
      const folded = foldAccounts(events);
      expect(folded.size).toBe(accounts);
      const ids = [...folded.keys()];
      const expected = ids.map((id) => {
        const a = folded.get(id)!;
        return { id, sequences: range1(a.sequences.length), query: { state: { opened: a.opened, balance: a.balance }, version: a.sequences.length } };
      });
      const queries = await Promise.all(ids.map((id) => node!.query('Account', id)));
      expect(ids.map((id, i) => ({ id, sequences: folded.get(id)!.sequences, query: queries[i] }))).toEqual(expected);

      // A re-sent acknowledged command is answered from what was stored.
      for (const a of [deposits[0]!, deposits[deposits.length - 1]!]) {
        const again = await node.send('Account', a.account, 'Deposit', { amount: a.amount }, { commandId: a.commandId });
        expect(again).toMatchObject({ commandId: a.commandId, aggregateId: a.account, version: a.version, duplicate: true });
      }
      expect(countByCommandId(await readEvents(nats.url, stream))).toEqual(counts);
    } finally {
      await node?.stop();
    }
  });
});
