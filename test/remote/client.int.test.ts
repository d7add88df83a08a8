// TroupeClient against a node over NATS: in this process, and from a separate process.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TroupeClient } from '../../runtime/remote/client.ts';
import { decode, encode } from '../../runtime/journal/codec.ts';
import { readOutcome } from '../../runtime/wire.ts';
import { shardOf } from '../../runtime/envelope.ts';
import { DomainRejection, isTroupeError, TimeoutError, ValidationError } from '../../runtime/errors.ts';
import { REPO_ROOT } from '../../runtime/testing/nats-server.ts';
import { FLAT, FLAT_2, OUTCOME_STRIDE, REQUEST_STRIDE } from '../../runtime/wire.ts';
import type { Troupe } from '../../runtime/node/system.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { countByCommandId, eventually, freshStream, natsConnect, range1, readEvents, startNode } from '../helpers/troupe.ts';

const execFileAsync = promisify(execFile);
const senderScript = fileURLToPath(new URL('../fixtures/client-sender.ts', import.meta.url));

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

  it('records the ids it makes: the same command sent again with its commandId is answered once', async () => {
    await client.send('Account', 'c4', 'OpenAccount', {});
    const first = await client.send('Account', 'c4', 'Deposit', { amount: 4 });
    const again = await client.send('Account', 'c4', 'Deposit', { amount: 4 }, { commandId: first.commandId });
    expect(again).toEqual({ ...first, duplicate: true });
    expect(await client.query('Account', 'c4')).toMatchObject({ state: { balance: 4 }, version: 2 });
    expect(countByCommandId(await readEvents(nats.url, stream)).get(first.commandId)).toBe(1);
  });

  it('names the commandId when a reply is lost, and the retry with it is answered once', async () => {
    // A relay passes requests on to the node and drops the replies: the node stores the
    // command, the sender times out without knowing.
    const relay = await natsConnect(nats.url);
    const lossyPrefix = `${subjectPrefix}_lossy`;
    relay.subscribe(`${lossyPrefix}.cmd.*`, {
      callback: (_e, msg) => void relay.request(`${subjectPrefix}.cmd.${msg.subject.split('.').pop()}`, msg.data, { timeout: 10_000 }).catch(() => {}),
    });
    await relay.flush();
    // No stream holds the lossy prefix's log: the client is told the shard count, and does not retry.
    const lossy = await TroupeClient.connect({ servers: nats.url, subjectPrefix: lossyPrefix, shards: 8, timeoutMs: 300, retry: false });
    try {
      await client.send('Account', 'c5', 'OpenAccount', {});
      const lost = await lossy.send('Account', 'c5', 'Deposit', { amount: 9 }).then(() => null, (err: unknown) => err);
      expect(lost).toBeInstanceOf(TimeoutError);
      const commandId = (lost as TimeoutError).data.commandId as string;
      expect(commandId).toMatch(/^[0-9a-f-]{36}$/);
      await eventually(async () => expect(await client.query('Account', 'c5')).toMatchObject({ version: 2 }), 10_000);

      const retried = await client.send('Account', 'c5', 'Deposit', { amount: 9 }, { commandId });
      expect(retried).toMatchObject({ commandId, version: 2, duplicate: true });
      expect(await client.query('Account', 'c5')).toMatchObject({ state: { balance: 9 }, version: 2 });
      expect(countByCommandId(await readEvents(nats.url, stream)).get(commandId)).toBe(1);
    } finally {
      await lossy.close();
      await relay.close();
    }
  });

  it('looks up every commandId of a request in the earlier flat protocol, which has no fresh mark', async () => {
    const nc = await natsConnect(nats.url);
    try {
      await client.send('Account', 'c6', 'OpenAccount', {});
      // [commandId, type, aggregateType, aggregateId, payload, userId, correlationId, causationId, traceparent]
      const request = encode([FLAT_2, ['c6-dep', 'Deposit', 'Account', 'c6', { amount: 6 }, null, null, null, null]]);
      const ask = async () => decode<unknown[]>((await nc.request(`${subjectPrefix}.cmd`, request, { timeout: 10_000 })).data);
      const first = await ask();
      const again = await ask();
      expect([first[1], again[1]]).toEqual([null, null]);
      const result = readOutcome(first, 0, 'c6-dep', 'Account', 'c6');
      expect(result).toMatchObject({ version: 2, duplicate: false });
      expect(readOutcome(again, 0, 'c6-dep', 'Account', 'c6')).toEqual({ ...result, duplicate: true });
      expect(await client.query('Account', 'c6')).toMatchObject({ state: { balance: 6 }, version: 2 });
    } finally {
      await nc.close();
    }
  });

  it('answers a first send that its retry overtook once: the retry is stored, the late first send gets its result', async () => {
    const nc = await natsConnect(nats.url);
    try {
      await client.send('Account', 'c9', 'OpenAccount', {});
      const subject = `${subjectPrefix}.cmd`;
      // FLAT: [commandId, type, aggregateType, aggregateId, payload, userId, correlationId, causationId, traceparent, fresh]
      const send = async (fresh: boolean) => decode<unknown[]>((await nc.request(subject, encode([FLAT, ['c9-dep', 'Deposit', 'Account', 'c9', { amount: 7 }, null, null, null, null, fresh]]), { timeout: 10_000 })).data);
      const retry = await send(false);
      const late = await send(true);
      expect([retry[1], late[1]]).toEqual([null, null]);
      const result = readOutcome(retry, 0, 'c9-dep', 'Account', 'c9');
      expect(result).toMatchObject({ version: 2, duplicate: false });
      expect(readOutcome(late, 0, 'c9-dep', 'Account', 'c9')).toEqual({ ...result, duplicate: true });
      // Both in one request: the first send after its retry, the retry after its first send.
      const both = decode<unknown[]>((await nc.request(subject, encode([FLAT, [
        'c9-dep2', 'Deposit', 'Account', 'c9', { amount: 1 }, null, null, null, null, false,
        'c9-dep2', 'Deposit', 'Account', 'c9', { amount: 1 }, null, null, null, null, true,
        'c9-dep3', 'Deposit', 'Account', 'c9', { amount: 2 }, null, null, null, null, true,
        'c9-dep3', 'Deposit', 'Account', 'c9', { amount: 2 }, null, null, null, null, false,
      ]]), { timeout: 10_000 })).data);
      const outcomes = [0, 1, 2, 3].map((i) => readOutcome(both, i * OUTCOME_STRIDE, '', 'Account', 'c9'));
      expect(outcomes.map((o) => [o.version, o.duplicate])).toEqual([[3, false], [3, true], [4, false], [4, true]]);
      // The usual order: the first send stored, then its retry (its record not in LMDB yet, then in LMDB).
      const first = decode<unknown[]>((await nc.request(subject, encode([FLAT, ['c9-dep5', 'Deposit', 'Account', 'c9', { amount: 5 }, null, null, null, null, true]]), { timeout: 10_000 })).data);
      const retryOf = async () => decode<unknown[]>((await nc.request(subject, encode([FLAT, ['c9-dep5', 'Deposit', 'Account', 'c9', { amount: 5 }, null, null, null, null, false]]), { timeout: 10_000 })).data);
      const stored = readOutcome(first, 0, 'c9-dep5', 'Account', 'c9');
      expect(stored).toMatchObject({ version: 5, duplicate: false });
      expect(readOutcome(await retryOf(), 0, 'c9-dep5', 'Account', 'c9')).toEqual({ ...stored, duplicate: true });
      await new Promise((r) => setTimeout(r, 1_500)); // the store's index window (1 s) is written
      expect(readOutcome(await retryOf(), 0, 'c9-dep5', 'Account', 'c9')).toEqual({ ...stored, duplicate: true });
      expect(await client.query('Account', 'c9')).toMatchObject({ state: { balance: 15 }, version: 5 });
    } finally {
      await nc.close();
    }
  });

  it('refuses a payload that is not a plain object before sending it, with MALFORMED_COMMAND', async () => {
    await client.send('Account', 'c7', 'OpenAccount', {});
    const watcher = await natsConnect(nats.url);
    let requests = 0;
    const sub = watcher.subscribe(`${subjectPrefix}.cmd.>`, { callback: () => { requests++; } });
    try {
      await watcher.flush();
      class Amount { constructor(readonly amount: number) {} }
      for (const payload of [new Date(), new Map([['amount', 5]]), new Set([5]), new Amount(5), [5], 5, null]) {
        const e = await client.send('Account', 'c7', 'Deposit', payload).then(() => null, (err: unknown) => err);
        expect(e, String(payload)).toBeInstanceOf(ValidationError);
        expect(isTroupeError(e, 'MALFORMED_COMMAND')).toBe(true);
        expect((e as ValidationError).message).toContain('must be a plain object');
        expect((e as ValidationError).data).toMatchObject({ aggregateType: 'Account', aggregateId: 'c7', commandType: 'Deposit' });
      }
      await watcher.flush();
      expect(requests).toBe(0);
      // An absent payload is {} (Deposit's schema then names the missing amount).
      const absent = await client.send('Account', 'c7', { type: 'Deposit' }).then(() => null, (err: unknown) => err);
      expect(isTroupeError(absent, 'SCHEMA_VIOLATION')).toBe(true);
      expect(await client.query('Account', 'c7')).toEqual({ state: { opened: true, balance: 0 }, version: 1 });
    } finally {
      sub.unsubscribe();
      await watcher.close();
    }
  });

  it('refuses a Date payload that reaches the node in a request, with MALFORMED_COMMAND, and appends nothing', async () => {
    const nc = await natsConnect(nats.url);
    try {
      await client.send('Account', 'c8', 'OpenAccount', {});
      // msgpack carries a Date as a timestamp, which arrives as a Date: the node's door refuses it too.
      const flat: unknown[] = [];
      for (const payload of [new Date(), { amount: 8 }]) flat.push(null, 'Deposit', 'Account', 'c8', payload, null, null, null, null, false);
      const outcomes = decode<unknown[]>((await nc.request(`${subjectPrefix}.cmd`, encode([FLAT, flat]), { timeout: 10_000 })).data);
      expect((outcomes[1] as { code: string } | null)?.code).toBe('MALFORMED_COMMAND');
      expect(outcomes[OUTCOME_STRIDE + 1]).toBeNull();
      expect(await client.query('Account', 'c8')).toEqual({ state: { opened: true, balance: 8 }, version: 2 });
    } finally {
      await nc.close();
    }
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

  it('carries 1,000 concurrent sends in one request per shard, to that shard\'s subject, each answered', async () => {
    const watcher = await natsConnect(nats.url);
    const requests: { shard: number; shardsOfCommands: Set<number>; size: number }[] = [];
    const protocols: number[] = [];
    const sub = watcher.subscribe(`${subjectPrefix}.cmd.>`, {
      // A request is [FLAT, flat commands], REQUEST_STRIDE values per command (service.ts).
      callback: (_e, msg) => {
        const [protocol, flat] = decode(msg.data) as [number, unknown[]];
        protocols.push(protocol);
        const shardsOfCommands = new Set<number>();
        for (let b = 0; b < flat.length; b += REQUEST_STRIDE) shardsOfCommands.add(shardOf(flat[b + 2] as string, flat[b + 3] as string, 8));
        requests.push({ shard: Number(msg.subject.split('.').pop()), shardsOfCommands, size: flat.length / REQUEST_STRIDE });
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
      expect(requests.reduce((a, r) => a + r.size, 0)).toBe(1000);
      // Sent in one turn: one request per shard, each holding only its subject's shard's commands.
      const shards = new Set(ids.map((id) => shardOf('Account', id, 8)));
      expect(requests.map((r) => r.shard).sort((a, b) => a - b)).toEqual([...shards].sort((a, b) => a - b));
      for (const r of requests) expect([...r.shardsOfCommands]).toEqual([r.shard]);
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
