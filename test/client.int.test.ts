// TroupeClient against a node over NATS: in this process, and from a separate process.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TroupeClient } from '../runtime/client.ts';
import { decode } from '../runtime/codec.ts';
import { DomainRejection, isTroupeError, ValidationError } from '../runtime/errors.ts';
import { REPO_ROOT } from '../runtime/nats-server.ts';
import { FLAT, REQUEST_STRIDE } from '../runtime/service.ts';
import type { Troupe } from '../runtime/system.ts';
import { useNatsServer } from './helpers/nats.ts';
import { countByCommandId, freshStream, natsConnect, range1, readEvents, startNode } from './helpers/troupe.ts';

const execFileAsync = promisify(execFile);
const senderScript = fileURLToPath(new URL('./fixtures/client-sender.ts', import.meta.url));

describe('TroupeClient', () => {
  const nats = useNatsServer();
  const { stream, subjectPrefix } = freshStream('CLI');
  let node: Troupe;
  let client: TroupeClient;

  beforeAll(async () => {
    node = await startNode(nats.url, { stream, subjectPrefix });
    client = await TroupeClient.connect({ servers: nats.url, subjectPrefix, timeoutMs: 20_000 });
  });
  afterAll(async () => {
    await client?.close();
    await node?.stop();
  });

  it('sends commands and reads state and history through the node', async () => {
    const opened = await client.send('Account', 'c1', 'OpenAccount', {}, { commandId: 'c1-open', userId: 'carol', correlationId: 'flow-1' });
    expect(opened).toMatchObject({ commandId: 'c1-open', aggregateType: 'Account', aggregateId: 'c1', version: 1, duplicate: false });
    expect(opened.position).toBeGreaterThan(0);
    const deposited = await client.send('Account', 'c1', { type: 'Deposit', payload: { amount: 25 } });
    expect(deposited).toMatchObject({ version: 2, events: [{ eventType: 'Deposited', sequence: 2 }] });

    expect(await client.query('Account', 'c1')).toEqual({ state: { opened: true, balance: 25 }, version: 2 });
    const history = await client.history('Account', 'c1');
    expect(history.map((e) => [e.eventType, e.sequence, e.commandId])).toEqual([
      ['AccountOpened', 1, 'c1-open'], ['Deposited', 2, deposited.commandId],
    ]);
    expect(history[0]).toMatchObject({ userId: 'carol', correlationId: 'flow-1', position: opened.position });
    expect(history).toEqual(await node.history('Account', 'c1'));
  });

  it('answers a re-sent commandId once', async () => {
    await client.send('Account', 'c2', 'OpenAccount', {});
    const first = await client.send('Account', 'c2', 'Deposit', { amount: 3 }, { commandId: 'c2-dep' });
    const again = await client.send('Account', 'c2', 'Deposit', { amount: 3 }, { commandId: 'c2-dep' });
    expect(again).toEqual({ ...first, duplicate: true });
    expect(await client.query('Account', 'c2')).toMatchObject({ state: { balance: 3 }, version: 2 });
  });

  it('rebuilds typed errors on the client: a rejection is a DomainRejection', async () => {
    await client.send('Account', 'c3', 'OpenAccount', {});
    const e = await client.send('Account', 'c3', 'Withdraw', { amount: 1 }).then(() => null, (err: unknown) => err);
    expect(e).toBeInstanceOf(DomainRejection);
    expect(isTroupeError(e, 'DOMAIN_REJECTION')).toBe(true);
    expect((e as DomainRejection).data).toMatchObject({ reason: 'insufficient-funds', balance: 0, amount: 1 });

    const bad = await client.send('Account', 'c3', 'Deposit', { amount: -5 }).then(() => null, (err: unknown) => err);
    expect(bad).toBeInstanceOf(ValidationError);
    expect(isTroupeError(bad, 'SCHEMA_VIOLATION')).toBe(true);

    const unknown = await client.query('Spaceship', 'x').then(() => null, (err: unknown) => err);
    expect(unknown).toBeInstanceOf(ValidationError);
    expect(isTroupeError(unknown, 'UNKNOWN_ACTOR_TYPE')).toBe(true);
    expect(await client.query('Account', 'c3')).toMatchObject({ state: { balance: 0 }, version: 1 });
  });

  it('carries 1,000 concurrent sends in a handful of request messages, each answered', async () => {
    const watcher = await natsConnect(nats.url);
    const requests: number[] = [];
    const protocols: number[] = [];
    const sub = watcher.subscribe(`${subjectPrefix}.cmd`, {
      // A request is [FLAT, flat commands], REQUEST_STRIDE values per command (service.ts).
      callback: (_e, msg) => {
        const [protocol, flat] = decode(msg.data) as [number, unknown[]];
        protocols.push(protocol);
        requests.push(flat.length / REQUEST_STRIDE);
      },
    });
    await watcher.flush();
    try {
      const ids = range1(1000).map((i) => `batch-${i}`);
      const results = await Promise.all(ids.map((id) => client.send('Account', id, 'OpenAccount', {})));
      expect(results.map((r) => r.aggregateId)).toEqual(ids);
      expect(results.every((r) => r.version === 1 && !r.duplicate)).toBe(true);
      await watcher.flush();
      expect(new Set(protocols)).toEqual(new Set([FLAT]));
      expect(requests.reduce((a, b) => a + b, 0)).toBe(1000);
      expect(requests.length).toBeLessThanOrEqual(5);
      const events = await readEvents(nats.url, stream);
      const counts = countByCommandId(events);
      expect(results.every((r) => counts.get(r.commandId) === 1)).toBe(true);
      // Each result names the event the log holds (ids cross as counters and are formatted here).
      const logged = new Map(events.map((e) => [e.commandId, e]));
      for (const r of results) {
        expect(r.events).toEqual([{ eventId: logged.get(r.commandId)!.eventId, eventType: 'AccountOpened', sequence: 1 }]);
        expect(r.position).toBe(logged.get(r.commandId)!.position);
      }
    } finally {
      sub.unsubscribe();
      await watcher.close();
    }
  });

  it('serves a client running in another process', async () => {
    const { stdout } = await execFileAsync(process.execPath, ['--import', 'tsx', senderScript, nats.url, subjectPrefix, 'child-1', '50'], {
      cwd: REPO_ROOT, timeout: 45_000,
    });
    const seen = JSON.parse(stdout.trim().split('\n').pop()!) as {
      pid: number; opened: { version: number }; versions: number[]; commandIds: string[];
      rejection: { instanceOfDomainRejection: boolean; code: string; reason: string } | null;
      query: { state: { balance: number }; version: number };
    };
    expect(seen.pid).not.toBe(process.pid);
    expect(seen.opened.version).toBe(1);
    expect(seen.versions).toEqual(range1(50).map((n) => n + 1));
    expect(seen.rejection).toEqual({ instanceOfDomainRejection: true, code: 'DOMAIN_REJECTION', reason: 'insufficient-funds' });
    expect(seen.query).toEqual({ state: { opened: true, balance: 1275 }, version: 51 });

    expect(await node.query('Account', 'child-1')).toEqual({ state: { opened: true, balance: 1275 }, version: 51 });
    const history = await node.history('Account', 'child-1');
    expect(history[0]).toMatchObject({ eventType: 'AccountOpened', userId: 'child-process' });
    expect(history.slice(1).map((e) => e.commandId)).toEqual(seen.commandIds);
  });
});
