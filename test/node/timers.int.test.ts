// Durable timers against a real nats-server and real LMDB files: a timer fires once, survives
// a kill -9, a crash between its firing's append and ack, and an LMDB wipe; periodic timers
// coalesce the firings they missed; keys replace and cancel; passivated actors get their timers.
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { decodeCommits } from '../../runtime/journal/codec.ts';
import { REPO_ROOT } from '../../runtime/testing/nats-server.ts';
import type { Troupe } from '../../runtime/node/system.ts';
import type { PendingTimer } from '../../runtime/node/timers.ts';
import { COMMIT, TIMER_OP, type WireCommit } from '../../runtime/wire.ts';
import type { ReminderState } from '../fixtures/reminder.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { freshStream, rawLog, sleep, startNode } from '../helpers/troupe.ts';

const reminderModule = fileURLToPath(new URL('../fixtures/reminder.ts', import.meta.url));
const timerNodeScript = fileURLToPath(new URL('../fixtures/timer-node.ts', import.meta.url));

async function fired(node: Troupe, id: string): Promise<ReminderState['fired']> {
  return ((await node.query('Reminder', id)).state as ReminderState).fired;
}

async function until<T>(read: () => Promise<T>, ok: (v: T) => boolean, ms: number): Promise<T> {
  const end = Date.now() + ms;
  let v = await read();
  while (!ok(v) && Date.now() < end) {
    await sleep(100);
    v = await read();
  }
  return v;
}

/** Every commit of the log, decoded. */
async function commits(servers: string, stream: string): Promise<WireCommit[]> {
  return (await rawLog(servers, stream)).flatMap((m) => decodeCommits(m.data));
}

/** A node in its own process (test/fixtures/timer-node.ts) that sent `commands`; resolves once it is ready. */
async function childNode(url: string, dataDir: string, s: { stream: string; subjectPrefix: string }, commands: [string, string, Record<string, unknown>][], env: NodeJS.ProcessEnv = {}): Promise<{ child: ChildProcess; timers: Record<string, PendingTimer[]>; exited: Promise<string | number | null> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', timerNodeScript, url, dataDir, s.stream, s.subjectPrefix, JSON.stringify(commands)], {
    cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env },
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<string | number | null>((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code)));
  const end = Date.now() + 30_000;
  while (!stdout.includes('ready\n')) {
    if (Date.now() > end || child.exitCode !== null || child.signalCode !== null) {
      child.kill('SIGKILL');
      throw new Error(`the timer node did not start: ${stdout}\n${stderr}`);
    }
    await sleep(20);
  }
  const line = stdout.split('\n').find((l) => l.startsWith('timers '))!;
  return { child, timers: JSON.parse(line.slice('timers '.length)) as Record<string, PendingTimer[]>, exited };
}

describe('durable timers', () => {
  const nats = useNatsServer();

  it('fires a timer scheduled for +2 s once, and counts it in /metrics', async () => {
    const s = freshStream('TIM');
    const node = await startNode(nats.url, { ...s, actors: [reminderModule], workers: 1, shards: 4 });
    try {
      const scheduled = await node.send('Reminder', 'r1', 'Remind', { key: 'k', after: 2000, note: 'hello' });
      const pending = await node.timers('Reminder', 'r1');
      expect(pending).toEqual([{ key: 'k', dueAt: expect.any(String), command: 'Ring', payload: { note: 'hello' }, scheduledBy: scheduled.commandId }]);
      expect(await fired(node, 'r1')).toEqual([]);
      const got = await until(() => fired(node, 'r1'), (f) => f.length > 0, 10_000);
      expect(got).toEqual([{ key: 'k', dueAt: Date.parse(pending[0]!.dueAt), missed: 0, scheduledBy: scheduled.commandId, note: 'hello' }]);
      await sleep(1500);
      expect(await fired(node, 'r1')).toHaveLength(1);
      expect(await node.timers('Reminder', 'r1')).toEqual([]);
      const firings = (await commits(nats.url, s.stream)).filter((c) => c[COMMIT.commandId].startsWith('timer:'));
      expect(firings).toHaveLength(1);
      // The timer is no event: the scheduling commit has none, the firing's only ReminderFired.
      expect((await node.history('Reminder', 'r1')).map((e) => e.eventType)).toEqual(['ReminderFired']);
      const metrics = await node.metrics();
      expect(metrics).toMatch(/^troupe_timers_fired_total 1$/m);
      expect(metrics).toMatch(/^troupe_timer_late_seconds_count 1$/m);
      expect(metrics).toMatch(/^troupe_timers_pending 0$/m);
    } finally {
      await node.stop();
    }
  });

  it('replaces a timer scheduled again under its key, and cancels one by key', async () => {
    const node = await startNode(nats.url, { ...freshStream('TIMK'), actors: [reminderModule], workers: 1, shards: 4 });
    try {
      await node.send('Reminder', 'r2', 'Remind', { key: 'x', after: 1000, note: 'first' });
      await node.send('Reminder', 'r2', 'Remind', { key: 'x', after: 2000, note: 'second' });
      await node.send('Reminder', 'r2', 'Remind', { key: 'y', after: 1000, note: 'cancelled' });
      await node.send('Reminder', 'r2', 'Forget', { key: 'y' });
      expect((await node.timers('Reminder', 'r2')).map((t) => [t.key, t.payload])).toEqual([['x', { note: 'second' }]]);
      expect(await node.metrics()).toMatch(/^troupe_timers_pending 1$/m);
      const got = await until(() => fired(node, 'r2'), (f) => f.length > 0, 10_000);
      await sleep(1000);
      expect((await fired(node, 'r2')).map((f) => f.note)).toEqual(['second']);
      expect(got[0]!.key).toBe('x');
    } finally {
      await node.stop();
    }
  });

  it('activates a passivated actor when its timer falls due', async () => {
    const node = await startNode(nats.url, { ...freshStream('TIMP'), actors: [reminderModule], workers: 1, shards: 4, idleActorMs: 200 });
    try {
      await node.send('Reminder', 'r3', 'Remind', { key: 'later', after: 3000, note: 'wake' });
      const resident = await until(async () => (await node.stats()).workers.reduce((n, w) => n + w.residentActors, 0), (n) => n === 0, 2500);
      expect(resident, 'the actor was passivated before its timer fell due').toBe(0);
      expect((await until(() => fired(node, 'r3'), (f) => f.length > 0, 10_000)).map((f) => f.note)).toEqual(['wake']);
    } finally {
      await node.stop();
    }
  });

  it('records a firing that decide refuses, and does not fire it again after a restart', async () => {
    const s = freshStream('TIMR');
    const dataDir = tempDir();
    let node = await startNode(nats.url, { ...s, dataDir, actors: [reminderModule], workers: 1, shards: 4 });
    try {
      await node.send('Reminder', 'r4', 'SetRefusing', { refuse: true });
      await node.send('Reminder', 'r4', 'Remind', { key: 'no', after: 500 });
      const firing = await until(async () => (await commits(nats.url, s.stream)).filter((c) => c[COMMIT.commandId].startsWith('timer:')), (l) => l.length > 0, 10_000);
      expect(firing).toHaveLength(1);
      expect(firing[0]![COMMIT.events]).toEqual([]);
      expect(firing[0]![COMMIT.timers]).toEqual([[TIMER_OP.FIRED, 'no', expect.any(Number), 0, 'DOMAIN_REJECTION']]);
      expect(await node.timers('Reminder', 'r4')).toEqual([]);
      await node.stop();
      node = await startNode(nats.url, { ...s, dataDir, actors: [reminderModule], workers: 1, shards: 4 });
      await node.send('Reminder', 'r4', 'SetRefusing', { refuse: false });
      await sleep(1500);
      expect(await fired(node, 'r4')).toEqual([]);
      expect((await commits(nats.url, s.stream)).filter((c) => c[COMMIT.commandId].startsWith('timer:'))).toHaveLength(1);
    } finally {
      await node.stop();
    }
  });

  it('rebuilds pending timers from the log when the LMDB folder is deleted, and fires them', async () => {
    const s = freshStream('TIMW');
    const dataDir = tempDir();
    let node = await startNode(nats.url, { ...s, dataDir, actors: [reminderModule], workers: 1, shards: 4 });
    try {
      await node.send('Reminder', 'r5', 'RemindNoted', { key: 'w', after: 4000, note: 'rebuilt' });
      const before = await node.timers('Reminder', 'r5');
      await node.stop();
      rmSync(dataDir, { recursive: true, force: true });
      node = await startNode(nats.url, { ...s, dataDir, actors: [reminderModule], workers: 1, shards: 4 });
      expect(await node.timers('Reminder', 'r5')).toEqual(before);
      expect((await until(() => fired(node, 'r5'), (f) => f.length > 0, 10_000)).map((f) => f.note)).toEqual(['rebuilt']);
      await sleep(1000);
      expect(await fired(node, 'r5')).toHaveLength(1);
    } finally {
      await node.stop();
    }
  });

  it('fires once after a kill -9 before the timer is due and a restart after it', async () => {
    const s = freshStream('TIMK9');
    const dataDir = tempDir();
    const { child, exited } = await childNode(nats.url, dataDir, s, [['r6', 'Remind', { key: 'k', after: 2500, note: 'survived' }]]);
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    await sleep(3000);
    const node = await startNode(nats.url, { ...s, dataDir, actors: [reminderModule], workers: 1, shards: 4 });
    try {
      expect((await until(() => fired(node, 'r6'), (f) => f.length > 0, 10_000)).map((f) => [f.note, f.missed])).toEqual([['survived', 0]]);
      await sleep(1500);
      expect(await fired(node, 'r6')).toHaveLength(1);
    } finally {
      await node.stop();
    }
  });

  it('stores a firing once when the node is killed between its append and its ack: a retry is answered as a duplicate', async () => {
    const s = freshStream('TIMACK');
    const dataDir = tempDir();
    const { exited } = await childNode(nats.url, dataDir, s, [['r7', 'Remind', { key: 'k', after: 1000, note: 'once' }]], { TROUPE_TEST_CRASH_AT: 'timer-firing-appended' });
    // The node kills itself as the firing's ack arrives.
    expect(await exited).toBe('SIGKILL');
    const firing = (await commits(nats.url, s.stream)).filter((c) => c[COMMIT.commandId].startsWith('timer:'));
    expect(firing).toHaveLength(1);
    const node = await startNode(nats.url, { ...s, dataDir, actors: [reminderModule], workers: 1, shards: 4 });
    try {
      expect(await node.timers('Reminder', 'r7')).toEqual([]);
      // The firing sent again (same deterministic commandId) is answered from the log.
      const again = await node.send('Reminder', 'r7', 'Ring', { note: 'once' }, { commandId: firing[0]![COMMIT.commandId] });
      expect(again).toMatchObject({ duplicate: true, version: 1 });
      await sleep(1500);
      expect((await fired(node, 'r7')).map((f) => f.note)).toEqual(['once']);
      expect((await commits(nats.url, s.stream)).filter((c) => c[COMMIT.commandId].startsWith('timer:'))).toHaveLength(1);
    } finally {
      await node.stop();
    }
  });

  it('fires a periodic timer once, with missed ≥ 5 and its first due time, after its node was down for 5 periods', async () => {
    const s = freshStream('TIMEV');
    const dataDir = tempDir();
    const every = 2000;
    const { child, exited, timers } = await childNode(nats.url, dataDir, s, [['r8', 'Remind', { key: 'tick', every, note: 'periodic' }]]);
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    const dueAt = Date.parse(timers.r8![0]!.dueAt);
    expect(timers.r8![0]!.every).toBe(every);
    // Down from before the first due time until 5 periods after it.
    await sleep(Math.max(0, dueAt + 5 * every + 200 - Date.now()));
    const node = await startNode(nats.url, { ...s, dataDir, actors: [reminderModule], workers: 1, shards: 4 });
    try {
      const first = await until(() => fired(node, 'r8'), (f) => f.length > 0, 10_000);
      await node.send('Reminder', 'r8', 'Forget', { key: 'tick' });
      // missed counts the later due times that passed before the firing: at least the 5 periods the node was down.
      const firedAt = Date.parse((await node.history('Reminder', 'r8'))[0]!.timestamp);
      expect(first[0]).toEqual({ key: 'tick', dueAt, missed: Math.floor((firedAt - dueAt) / every), scheduledBy: expect.any(String), note: 'periodic' });
      expect(first[0]!.missed).toBeGreaterThanOrEqual(5);
      const all = await fired(node, 'r8');
      // Once on recovery: no burst of the missed firings (a next one falls at dueAt + 6 periods at the earliest).
      expect(all.filter((f) => f.missed > 0)).toHaveLength(1);
      for (const f of all.slice(1)) expect(f.dueAt).toBeGreaterThanOrEqual(dueAt + 6 * every);
      expect(await node.timers('Reminder', 'r8')).toEqual([]);
    } finally {
      await node.stop();
    }
  });
});
