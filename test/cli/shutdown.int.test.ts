// Graceful shutdown of `troupe start` (runtime/cli/main.ts, the README's main command) under load:
// SIGTERM → stop taking commands, finish in-flight commits, flush snapshots and telemetry,
// drain NATS, close LMDB, exit 0. No acknowledged command is lost; every command that did not
// finish gets a retryable error, and a retry with the same commandId is answered once.
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { TroupeClient } from '../../runtime/remote/client.ts';
import { isTroupeError } from '../../runtime/errors.ts';
import { REPO_ROOT } from '../../runtime/testing/nats-server.ts';
import type { Troupe } from '../../runtime/node/system.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { countByCommandId, foldAccounts, readEvents, sleep, startNode } from '../helpers/troupe.ts';

const cli = fileURLToPath(new URL('../../runtime/cli/main.ts', import.meta.url));
// The launcher `troupe start` uses (runtime/bin/troupe.mjs): TypeScript through tsx's require hook.
const runTs = fileURLToPath(new URL('../../runtime/bin/run-ts.cjs', import.meta.url));
const RETRYABLE = ['STOPPED', 'JOURNAL_UNAVAILABLE', 'TIMEOUT', 'WORKER_LOST', 'OVERLOADED'];

interface Sent { commandId: string; account: string; amount: number }

describe('graceful shutdown', () => {
  const nats = useNatsServer();

  it('exits 0 on SIGTERM under load, loses no acknowledged command and fails the rest with retryable errors', async () => {
    const dataDir = tempDir();
    const masterKey = randomBytes(32).toString('base64');
    const child = spawn(process.execPath, [runTs, cli, 'start', '--workers', '2', '--shards', '8', '--data-dir', dataDir, '--http-port', '0', '--log-level', 'info'], {
      // The node restarted below, in this process, must hold the same master key (the example actors have sensitive fields).
      cwd: REPO_ROOT, env: { ...process.env, NATS_URL: nats.url, OTEL_TRACES_EXPORTER: 'none', TROUPE_MASTER_KEY: masterKey }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));

    let client: TroupeClient | undefined;
    let node: Troupe | undefined;
    try {
      const until = Date.now() + 45_000;
      while (!stdout.includes('is running')) {
        if (Date.now() > until || child.exitCode !== null) throw new Error(`troupe start did not start:\n${stdout}\n${stderr}`);
        await sleep(50);
      }
      const http = /HTTP: (http:\/\/127\.0\.0\.1:\d+)\/health/.exec(stdout)?.[1];
      expect(http, stdout).toBeDefined();
      expect((await fetch(`${http}/ready`)).status).toBe(200);

      // Retries for 3 s at most: a send after the node exited fails then, instead of retrying for the default 30 s.
      client = await TroupeClient.connect({ servers: nats.url, timeoutMs: 8_000, retry: { totalMs: 3_000 } });
      const accounts = Array.from({ length: 40 }, (_, i) => `sd-${i}`);
      await Promise.all(accounts.map((a) => client!.send('Account', a, 'OpenAccount', {}, { commandId: `open-${a}` })));

      const acked: (Sent & { version: number })[] = [];
      const failed: (Sent & { error: unknown })[] = [];
      let n = 0;
      let stop = false;
      const lane = async (): Promise<void> => {
        while (!stop) {
          const i = n++;
          const c: Sent = { commandId: `dep-${i}`, account: accounts[(i * 7) % accounts.length]!, amount: (i % 50) + 1 };
          try {
            const r = await client!.send('Account', c.account, 'Deposit', { amount: c.amount }, { commandId: c.commandId });
            acked.push({ ...c, version: r.version });
          } catch (error) {
            failed.push({ ...c, error });
            await sleep(20);
          }
        }
      };
      const lanes = Array.from({ length: 48 }, lane);
      await sleep(800);
      const ackedBeforeSignal = acked.length;
      child.kill('SIGTERM');
      const exit = await Promise.race([exited, sleep(30_000).then(() => null)]);
      // Keep sending briefly after the exit: those sends find no node and must say so.
      await sleep(300);
      stop = true;
      await Promise.all(lanes);

      expect(exit, `the node did not exit within 30 s\n${stdout}\n${stderr}`).toEqual({ code: 0, signal: null });
      expect(ackedBeforeSignal, 'the load acknowledged too few commands to test anything').toBeGreaterThan(200);
      // Commands in flight when the signal came were finished, not dropped.
      expect(acked.length).toBeGreaterThan(ackedBeforeSignal);
      expect(stdout).toContain('SIGTERM: stopping');
      expect(stdout).toContain('stopped cleanly');

      // The steps, in the order, as the node logged them.
      const lines = stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { step?: number; msg: string });
      expect(lines.filter((l) => l.step !== undefined).map((l) => l.step)).toEqual([1, 2, 3, 4, 5]);
      expect(lines.filter((l) => l.msg.startsWith('worker stopped')).length).toBe(2);
      expect(lines.some((l) => l.msg === 'node stopped')).toBe(true);

      // Every command that did not finish got a clear, retryable error.
      expect(failed.length).toBeGreaterThan(0);
      for (const f of failed) {
        expect(isTroupeError(f.error), String(f.error)).toBe(true);
        const e = f.error as { code: string; retryable: boolean; message: string };
        expect(RETRYABLE, `${e.code}: ${e.message}`).toContain(e.code);
        expect(e.retryable, e.code).toBe(true);
      }

      // No acknowledged command is lost: each is in the log once, as it was acknowledged.
      const events = await readEvents(nats.url, 'TROUPE');
      const counts = countByCommandId(events);
      const byCommand = new Map(events.map((e) => [e.commandId, e]));
      const lost = acked.filter((a) => counts.get(a.commandId) !== 1);
      expect(lost.slice(0, 5), `${lost.length} acknowledged commands are not in the log exactly once`).toEqual([]);
      for (const a of acked) expect([byCommand.get(a.commandId)!.aggregateId, byCommand.get(a.commandId)!.sequence]).toEqual([a.account, a.version]);
      expect([...counts].filter(([, k]) => k !== 1)).toEqual([]);

      // A retry of each failed command with its commandId is answered once, by a restarted node.
      // `--data-dir` is the data folder; the node's LMDB is its `data` subfolder.
      process.env.TROUPE_MASTER_KEY = masterKey;
      node = await startNode(nats.url, { dataDir: join(dataDir, 'data'), stream: 'TROUPE', subjectPrefix: 'troupe' });
      const retried = await Promise.all(failed.map((f) => node!.send('Account', f.account, 'Deposit', { amount: f.amount }, { commandId: f.commandId })));
      expect(retried.every((r) => r.version > 0)).toBe(true);
      const after = await readEvents(nats.url, 'TROUPE');
      expect([...countByCommandId(after)].filter(([, k]) => k !== 1)).toEqual([]);
      for (const f of failed) expect(countByCommandId(after).get(f.commandId), f.commandId).toBe(1);
      for (const [id, a] of foldAccounts(after)) {
        expect(await node.query('Account', id), id).toEqual({ state: { opened: true, balance: a.balance }, version: a.sequences.length });
      }
    } finally {
      delete process.env.TROUPE_MASTER_KEY;
      if (child.exitCode === null) child.kill('SIGKILL');
      await client?.close();
      await node?.stop();
    }
  });
});
