import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { sealSnapshot } from '../../runtime/contracts/sensitive.ts';
import { Store } from '../../runtime/journal/store.ts';

// The LMDB cache on real files: the history index (one entry per actor per flush window),
// snapshots, command ids and checkpoints.
describe('Store', () => {
  const dirs: string[] = [];
  const stores: Store[] = [];
  const open = (dir = mkdtempSync(join(tmpdir(), 'troupe-store-'))) => {
    dirs.push(dir);
    const s = new Store(dir, 'S', 60_000);
    stores.push(s);
    return { s, dir };
  };
  afterEach(async () => {
    for (const s of stores.splice(0)) await s.close().catch(() => {});
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('answers from memory before the window is written, and from LMDB after a reopen', async () => {
    const { s, dir } = open();
    s.indexCommit('Account', 'a1', 1, 10);
    s.indexCommit('Account', 'a1', 3, 11);
    s.indexCommit('Entity', 'a1', 1, 11); // same id, another type
    s.indexCommit('Account', 'a2', 1, 11);
    expect(s.historyAfter('Account', 'a1', 0)).toEqual([{ lastSeq: 1, position: 10 }, { lastSeq: 3, position: 11 }]);
    await s.flushIndex();
    s.indexCommit('Account', 'a1', 4, 12);
    expect(s.historyAfter('Account', 'a1', 1)).toEqual([{ lastSeq: 3, position: 11 }, { lastSeq: 4, position: 12 }]);
    s.advanceCheckpoint(0, 12);
    await s.close();
    stores.pop();

    const reopened = new Store(dir, 'S', 60_000);
    stores.push(reopened);
    expect(reopened.historyAfter('Account', 'a1', 0).map((e) => e.position)).toEqual([10, 11, 12]);
    expect(reopened.historyAfter('Account', 'a1', 3)).toEqual([{ lastSeq: 4, position: 12 }]);
    expect(reopened.historyAfter('Entity', 'a1', 0)).toEqual([{ lastSeq: 1, position: 11 }]);
    expect(reopened.historyAfter('Account', 'a3', 0)).toEqual([]);
    expect(reopened.getCheckpoint(0)).toBe(12);
  });

  it('keeps every position when a catch-up re-indexes commits already stored under the same key', async () => {
    const { s } = open();
    for (let v = 1; v <= 5; v++) s.indexCommit('Account', 'a1', v, 100 + v);
    await s.flushIndex();
    // A catch-up after a crash meets commits 4 and 5 again, in a run that also ends at 5.
    s.indexCommit('Account', 'a1', 4, 104, true);
    s.indexCommit('Account', 'a1', 5, 105, true);
    await s.flushIndex();
    expect(s.historyAfter('Account', 'a1', 0).map((e) => e.position)).toEqual([101, 102, 103, 104, 105]);
  });

  it('keeps each actor\'s entries in order in a window of thousands, before and after the write', async () => {
    const { s } = open();
    const versions = new Map<string, number>();
    for (let i = 0; i < 3000; i++) {
      const id = `a${i % 7}`;
      const v = (versions.get(id) ?? 0) + 1;
      versions.set(id, v);
      s.indexCommit('Account', id, v, 1000 + i);
    }
    const expected = (k: number) => Array.from({ length: 3000 }, (_, i) => i).filter((i) => i % 7 === k).map((i) => 1000 + i);
    expect(s.historyAfter('Account', 'a3', 0).map((e) => e.position)).toEqual(expected(3));
    await s.flushIndex();
    expect(s.historyAfter('Account', 'a3', 0).map((e) => e.position)).toEqual(expected(3));
    expect(s.historyAfter('Account', 'a6', 400).map((e) => e.lastSeq)).toEqual(Array.from({ length: versions.get('a6')! - 400 }, (_, i) => 401 + i));
  });

  it('writes a snapshot as given and removes it when given null', async () => {
    const { s } = open();
    expect(await s.putSnapshot('Account', 'a1', sealSnapshot('Account', 'a1', { sv: 1, version: 3, position: 7, state: { balance: 5 } }))).toBe(true);
    expect(s.getSnapshot('Account', 'a1')).toEqual({ sv: 1, version: 3, position: 7, state: { balance: 5 } });
    expect(await s.putSnapshot('Account', 'a1', null)).toBe(false);
    expect(s.getSnapshot('Account', 'a1')).toBeUndefined();
  });

  it('answers a processed commandId for one to two TTLs, and forgets it after', async () => {
    const { s } = open();
    const ttl = 60_000;
    const t0 = 10 * ttl + 5;
    s.putCommand('c1', ['Account', 'a1', 1, 1, 9], t0);
    await s.flushed();
    expect(s.getCommand('Account', 'a1', 'c1', t0)).toEqual(['Account', 'a1', 1, 1, 9]);
    expect(s.getCommand('Account', 'a1', 'c1', t0 + ttl)).toEqual(['Account', 'a1', 1, 1, 9]);
    expect(s.getCommand('Account', 'a1', 'c1', t0 + 2 * ttl)).toBeUndefined();
    await s.expireCommands(t0 + 2 * ttl);
    expect(s.getCommand('Account', 'a1', 'c1', t0 + ttl)).toBeUndefined();
  });

  it('forgets snapshots, history, checkpoints and command ids when reset for another stream', async () => {
    const { s } = open();
    await s.putSnapshot('Account', 'a1', sealSnapshot('Account', 'a1', { sv: 1, version: 1, position: 1, state: {} }));
    s.indexCommit('Account', 'a1', 1, 1);
    s.advanceCheckpoint(0, 1);
    s.putCommand('c1', ['Account', 'a1', 1, 1, 1]);
    await s.flushed();
    await s.resetFor('stream-2');
    expect(s.getSnapshot('Account', 'a1')).toBeUndefined();
    expect(s.historyAfter('Account', 'a1', 0)).toEqual([]);
    expect(s.getCheckpoint(0)).toBe(0);
    expect(s.getCommand('Account', 'a1', 'c1')).toBeUndefined();
    expect(s.getStreamIdentity()).toBe('stream-2');
  });
});

// Processed command ids: scoped to their actor, remembered for one to two TTLs.
describe('Store command ids', () => {
  const dirs: string[] = [];
  const stores: Store[] = [];
  afterEach(async () => {
    for (const s of stores.splice(0)) await s.close().catch(() => {});
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const open = (ttlMs: number) => {
    const dir = mkdtempSync(join(tmpdir(), 'troupe-store-'));
    dirs.push(dir);
    const s = new Store(dir, 'S', ttlMs);
    stores.push(s);
    return s;
  };

  it('keys a processed command by actor type, actor id and commandId', async () => {
    const s = open(60_000);
    const now = 1_000_000;
    s.putCommand('c-1', ['Account', 'a1', 1, 1, 10], now);
    s.putCommand('c-1', ['Account', 'a2', 3, 4, 11], now);
    await s.flushed();
    expect(s.getCommand('Account', 'a1', 'c-1', now)).toEqual(['Account', 'a1', 1, 1, 10]);
    expect(s.getCommand('Account', 'a2', 'c-1', now)).toEqual(['Account', 'a2', 3, 4, 11]);
    expect(s.getCommand('Entity', 'a1', 'c-1', now)).toBeUndefined();
    expect(s.getCommand('Account', 'a3', 'c-1', now)).toBeUndefined();
    expect(s.getCommand('Account', 'a1', 'c-2', now)).toBeUndefined();
  });

  it('answers a remembered command from its queue until LMDB holds it, then from LMDB', async () => {
    const s = open(60_000);
    const now = Date.now();
    s.rememberCommand('c-1', ['Account', 'a1', 1, 1, 10], now);
    s.rememberCommand('c-1', ['Account', 'a2', 3, 4, 11], now); // the same id on another actor
    expect(s.queuedCommand('Account', 'a1', 'c-1')).toEqual(['Account', 'a1', 1, 1, 10]);
    expect(s.queuedCommand('Account', 'a2', 'c-1')).toEqual(['Account', 'a2', 3, 4, 11]);
    s.rememberCommand('c-2', ['Account', 'a1', 2, 2, 12], now); // queued after the first lookup
    expect(s.queuedCommand('Account', 'a1', 'c-2')).toEqual(['Account', 'a1', 2, 2, 12]);
    expect(s.queuedCommand('Entity', 'a1', 'c-1')).toBeUndefined();
    expect(s.queuedCommand('Account', 'a1', 'c-3')).toBeUndefined();
    expect(s.getCommand('Account', 'a1', 'c-1', now)).toBeUndefined();

    // Being written: still answered from the queue; committed: from LMDB, no longer queued.
    const written = s.flushIndex();
    expect(s.queuedCommand('Account', 'a2', 'c-1')).toEqual(['Account', 'a2', 3, 4, 11]);
    await written;
    expect(s.queuedCommand('Account', 'a2', 'c-1')).toBeUndefined();
    expect(s.getCommand('Account', 'a2', 'c-1', now)).toEqual(['Account', 'a2', 3, 4, 11]);
    expect(s.getCommand('Account', 'a1', 'c-2', now)).toEqual(['Account', 'a1', 2, 2, 12]);
  });

  it('forgets a processed command after one to two TTLs, once old epochs are expired', async () => {
    const ttl = 60_000;
    const s = open(ttl);
    const at = 10 * ttl + 1;
    s.putCommand('c-1', ['Account', 'a1', 1, 1, 10], at);
    await s.flushed();
    expect(s.getCommand('Account', 'a1', 'c-1', at + ttl)).toBeDefined();
    expect(s.getCommand('Account', 'a1', 'c-1', at + 2 * ttl)).toBeUndefined();
    await s.expireCommands(at + 3 * ttl);
    expect(s.getCommand('Account', 'a1', 'c-1', at)).toBeUndefined();
  });
});
