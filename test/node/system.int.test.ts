// The Troupe facade against a real nats-server: what `send`, `query` and `history` promise,
// how bad input is refused, and how a re-sent commandId is answered.
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { jetstreamManager } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decode, decodeCommitBatch, encode } from '../../runtime/journal/codec.ts';
import { shardOf, type CommandResult } from '../../runtime/envelope.ts';
import { OUTCOME_STRIDE } from '../../runtime/wire.ts';
import { DomainRejection, isTroupeError, ValidationError, type ErrorCode, type WireError } from '../../runtime/errors.ts';
import type { Troupe } from '../../runtime/node/system.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { actorModules, countByCommandId, freshStream, messageCount, natsConnect, range1, readEvents, startNode } from '../helpers/troupe.ts';

const buggyModule = fileURLToPath(new URL('../fixtures/buggy-actor.ts', import.meta.url));

/** The error `p` rejects with; fails the test when it resolves. */
async function rejectionOf(p: Promise<unknown>): Promise<unknown> {
  try {
    const r = await p;
    throw new Error(`expected a rejection, got ${JSON.stringify(r)}`);
  } catch (e) {
    return e;
  }
}

function expectCode(e: unknown, code: ErrorCode): void {
  expect(isTroupeError(e, code), `expected ${code}, got ${String((e as Error)?.stack ?? e)}`).toBe(true);
}

describe('Troupe node', () => {
  const nats = useNatsServer();
  const { stream, subjectPrefix } = freshStream('SYS');
  let node: Troupe;
  let serial = 0;
  const fresh = (label: string) => `${label}-${++serial}`;

  beforeAll(async () => {
    node = await startNode(nats.url, {
      stream, subjectPrefix, actors: [...actorModules, buggyModule], maxCommandBytes: 1024, source: 'system-test',
    });
  });
  afterAll(async () => {
    await node?.stop();
  });

  const count = () => messageCount(nats.url, stream);

  /** `send` went wrong with `code`, appended nothing, and the node still serves commands. */
  async function expectRefused(send: () => Promise<unknown>, code: ErrorCode): Promise<unknown> {
    const before = await count();
    const e = await rejectionOf(send());
    expectCode(e, code);
    expect((e as { retryable: boolean }).retryable).toBe(false);
    expect(await count()).toBe(before);
    const id = fresh('after-refusal');
    await expect(node.send('Account', id, 'OpenAccount', {})).resolves.toMatchObject({ version: 1, duplicate: false });
    return e;
  }

  describe('send', () => {
    it('resolves once JetStream stored the events, with their sequence numbers, the version and the stream position', async () => {
      const id = fresh('inv');
      await node.send('Investigation', id, 'CreateInvestigation', { title: 'Beaconing from 10.0.0.7', severity: 'high' });
      const before = Date.now();
      const r = await node.send('Investigation', id, 'AssignInvestigation', { analystId: 'bob' }, {
        commandId: `assign-${id}`, correlationId: 'corr-42', userId: 'alice', causationId: 'threat-event-7',
      });
      const after = Date.now();
      expect(r).toMatchObject({ commandId: `assign-${id}`, aggregateType: 'Investigation', aggregateId: id, version: 2, duplicate: false });
      expect(r.events).toEqual([{ eventId: expect.any(String), eventType: 'InvestigationAssigned', sequence: 2 }]);
      expect(r.position).toBeGreaterThan(0);

      const nc = await natsConnect(nats.url);
      try {
        const msg = await (await jetstreamManager(nc)).streams.getMessage(stream, { seq: r.position });
        if (msg === null) throw new Error(`no message at position ${r.position}`);
        expect(msg.subject.startsWith(`${subjectPrefix}.log.`)).toBe(true);
        const mine = decodeCommitBatch(msg.data, r.position).filter((e) => e.commandId === r.commandId);
        expect(mine).toEqual([{
          eventId: r.events[0]!.eventId,
          eventType: 'InvestigationAssigned',
          aggregateType: 'Investigation',
          aggregateId: id,
          timestamp: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
          version: 1,
          sequence: 2,
          correlationId: 'corr-42',
          causationId: `assign-${id}`,
          commandCausationId: 'threat-event-7',
          commandId: `assign-${id}`,
          userId: 'alice',
          source: 'system-test',
          position: r.position,
          payload: { analystId: 'bob', previousAnalystId: null },
        }]);
        const t = Date.parse(mine[0]!.timestamp);
        expect(t).toBeGreaterThanOrEqual(before - 1);
        expect(t).toBeLessThanOrEqual(after + 1);
      } finally {
        await nc.close();
      }
    });

    it('uses the commandId as correlationId and null as userId when the metadata has none', async () => {
      const id = fresh('acc');
      const r = await node.send('Account', id, 'OpenAccount', {});
      const [event] = (await node.history('Account', id));
      expect(event).toMatchObject({ commandId: r.commandId, correlationId: r.commandId, userId: null, position: r.position });
    });

    it('rejects a command the actor refuses with a DomainRejection and appends nothing', async () => {
      const id = fresh('acc');
      await node.send('Account', id, 'OpenAccount', {});
      await node.send('Account', id, 'Deposit', { amount: 10 });
      const before = await count();
      const e = await rejectionOf(node.send('Account', id, 'Withdraw', { amount: 11 }));
      expect(e).toBeInstanceOf(DomainRejection);
      expectCode(e, 'DOMAIN_REJECTION');
      expect((e as DomainRejection).data).toMatchObject({ reason: 'insufficient-funds', balance: 10, amount: 11 });
      expect((e as DomainRejection).retryable).toBe(false);
      expect(await count()).toBe(before);
      expect(await node.query('Account', id)).toEqual({ state: { opened: true, balance: 10 }, version: 2 });
    });

    it('names the actor and the command in a DomainRejection', async () => {
      const id = fresh('acc');
      const e = await rejectionOf(node.send('Account', id, 'Deposit', { amount: 1 }, { commandId: `early-${id}` }));
      expectCode(e, 'DOMAIN_REJECTION');
      const r = e as DomainRejection;
      expect(r.data.reason).toBe('account-not-opened');
      expect({ aggregateType: r.aggregateType, aggregateId: r.aggregateId, commandId: r.commandId })
        .toEqual({ aggregateType: 'Account', aggregateId: id, commandId: `early-${id}` });
    });
  });

  describe('query and history', () => {
    it('returns the committed state and version, and a never-used actor has its initial state at version 0', async () => {
      const id = fresh('inv');
      await node.send('Investigation', id, 'CreateInvestigation', { title: 'Phishing wave', severity: 'medium' });
      await node.send('Investigation', id, 'ChangeInvestigationPriority', { priority: 'critical' });
      await node.send('Investigation', id, 'AddInvestigationNote', { note: 'two more mailboxes' });
      const { state, version } = await node.query('Investigation', id);
      expect(version).toBe(3);
      expect(state).toMatchObject({ status: 'open', title: 'Phishing wave', severity: 'medium', priority: 'critical', noteCount: 1 });
      expect(await node.query('Investigation', fresh('never'))).toMatchObject({ version: 0, state: { status: 'none' } });
    });

    it('returns every event of the actor in order, and only its events', async () => {
      const id = fresh('thr');
      const other = fresh('thr');
      await node.send('Threat', id, 'DetectThreat', { signature: 'ET TROJAN', score: 91, source: 'suricata' });
      await node.send('Threat', other, 'DetectThreat', { signature: 'ET SCAN', score: 10, source: 'suricata' });
      await node.send('Threat', id, 'DismissThreat', { reason: 'sinkholed' });
      const history = await node.history('Threat', id);
      expect(history.map((e) => [e.eventType, e.sequence])).toEqual([
        ['ThreatDetected', 1], ['HighPriorityThreatDetected', 2], ['ThreatDismissed', 3],
      ]);
      expect(history.every((e) => e.aggregateType === 'Threat' && e.aggregateId === id)).toBe(true);
      expect(await node.history('Threat', fresh('never'))).toEqual([]);
    });
  });

  describe('ordering and batching', () => {
    it('applies commands fired at one actor without awaiting in the order they were sent', async () => {
      const id = fresh('acc');
      await node.send('Account', id, 'OpenAccount', {});
      const results = await Promise.all(range1(500).map((amount) => node.send('Account', id, 'Deposit', { amount })));
      expect(results.map((r) => r.version)).toEqual(range1(500).map((n) => n + 1));
      const history = await node.history('Account', id);
      expect(history.map((e) => e.sequence)).toEqual(range1(501));
      expect(history.slice(1).map((e) => (e.payload as { amount: number }).amount)).toEqual(range1(500));
      expect(history.slice(1).map((e) => e.commandId)).toEqual(results.map((r) => r.commandId));
      expect(await node.query('Account', id)).toEqual({ state: { opened: true, balance: 500 * 501 / 2 }, version: 501 });
    });

    it('keeps each actor in order while commands to different actors interleave', async () => {
      const ids = [fresh('acc'), fresh('acc'), fresh('acc'), fresh('acc')];
      await Promise.all(ids.map((id) => node.send('Account', id, 'OpenAccount', {})));
      const sends: Promise<CommandResult>[] = [];
      for (let amount = 1; amount <= 100; amount++) for (const id of ids) sends.push(node.send('Account', id, 'Deposit', { amount }));
      await Promise.all(sends);
      for (const id of ids) {
        const history = await node.history('Account', id);
        expect(history.map((e) => e.sequence)).toEqual(range1(101));
        expect(history.slice(1).map((e) => (e.payload as { amount: number }).amount)).toEqual(range1(100));
      }
    });

    it('carries many commits in one JetStream message under load', async () => {
      const before = await count();
      const ids = Array.from({ length: 2000 }, () => fresh('bulk'));
      const results = await Promise.all(ids.map((id) => node.send('Account', id, 'OpenAccount', {})));
      const appended = (await count()) - before;
      expect(results.every((r) => r.version === 1 && r.position > 0)).toBe(true);
      expect(new Set(results.map((r) => r.position)).size).toBe(appended);
      expect(appended).toBeLessThanOrEqual(200);
    });
  });

  describe('bad input', () => {
    it('refuses an unknown actor type with UNKNOWN_ACTOR_TYPE', async () => {
      const e = await expectRefused(() => node.send('Spaceship', 'x', 'Launch', {}), 'UNKNOWN_ACTOR_TYPE');
      expect(e).toBeInstanceOf(ValidationError);
      expect((e as Error).message).toContain('Spaceship');
    });

    it('refuses an unknown command with UNKNOWN_COMMAND_TYPE', async () => {
      const id = fresh('acc');
      const e = await expectRefused(() => node.send('Account', id, 'Teleport', {}), 'UNKNOWN_COMMAND_TYPE');
      expect((e as Error).message).toContain('Teleport');
    });

    it('refuses a payload of the wrong shape with SCHEMA_VIOLATION naming the field', async () => {
      const id = fresh('acc');
      await node.send('Account', id, 'OpenAccount', {});
      const e = await expectRefused(() => node.send('Account', id, 'Deposit', { amount: 'ten' }), 'SCHEMA_VIOLATION');
      expect((e as ValidationError).data.field).toBe('payload/amount');
      expect((e as Error).message).toContain('amount');
      const missing = await expectRefused(() => node.send('Investigation', fresh('inv'), 'CreateInvestigation', { title: 'no severity' }), 'SCHEMA_VIOLATION');
      expect((missing as Error).message).toContain('severity');
      expect(await node.query('Account', id)).toEqual({ state: { opened: true, balance: 0 }, version: 1 });
    });

    it('refuses a payload that is not an object with MALFORMED_COMMAND', async () => {
      const id = fresh('acc');
      for (const payload of [42, 'amount=5', null, [5], true]) {
        await expectRefused(() => node.send('Account', id, 'Deposit', payload), 'MALFORMED_COMMAND');
      }
    });

    it('refuses a payload that is a Date, Map, Set or class instance with MALFORMED_COMMAND and appends nothing', async () => {
      const id = fresh('acc');
      await node.send('Account', id, 'OpenAccount', {});
      class Amount { constructor(readonly amount: number) {} }
      const cases: [unknown, string][] = [
        [new Date(), 'a Date'], [new Map([['amount', 5]]), 'a Map'], [new Set([5]), 'a Set'], [new Amount(5), 'a Amount'], [[5], 'an array'],
      ];
      for (const [payload, named] of cases) {
        const e = await expectRefused(() => node.send('Account', id, 'Deposit', payload), 'MALFORMED_COMMAND');
        expect((e as Error).message).toBe(`the payload of Account.Deposit must be a plain object ({ ... }), got ${named}`);
        await expectRefused(() => node.send('Account', id, { type: 'Deposit', payload }), 'MALFORMED_COMMAND');
      }
      // A plain object with no prototype is a plain object; an absent payload is {}.
      const bare = Object.assign(Object.create(null) as Record<string, unknown>, { amount: 5 });
      await expect(node.send('Account', id, 'Deposit', bare)).resolves.toMatchObject({ version: 2 });
      await expect(node.send('Account', id, { type: 'Deposit', payload: undefined } as never)).rejects.toMatchObject({ code: 'SCHEMA_VIOLATION' });
      expect(await node.query('Account', id)).toEqual({ state: { opened: true, balance: 5 }, version: 2 });
    });

    it('refuses a missing or empty actor id with MALFORMED_COMMAND', async () => {
      await expectRefused(() => node.send('Account', undefined as unknown as string, 'OpenAccount', {}), 'MALFORMED_COMMAND');
      await expectRefused(() => node.send('Account', '', 'OpenAccount', {}), 'MALFORMED_COMMAND');
      await expectRefused(() => node.send('Account', 'has space', 'OpenAccount', {}), 'MALFORMED_COMMAND');
    });

    it('refuses a command over maxCommandBytes with COMMAND_TOO_LARGE', async () => {
      const id = fresh('inv');
      const e = await expectRefused(() => node.send('Investigation', id, 'CreateInvestigation', { title: 'x'.repeat(5000), severity: 'low' }), 'COMMAND_TOO_LARGE');
      expect((e as Error).message).toContain('maxCommandBytes');
      expect(await node.query('Investigation', id)).toMatchObject({ version: 0 });
    });

    it('fails only its own command with DECIDE_FAILED when a decide throws an unexpected error', async () => {
      const id = fresh('buggy');
      const before = await count();
      const [a, b, c] = await Promise.allSettled([
        node.send('Buggy', id, 'Poke', {}),
        node.send('Buggy', id, 'Explode', {}),
        node.send('Buggy', id, 'Poke', {}),
      ]);
      expect(a).toMatchObject({ status: 'fulfilled', value: { version: 1 } });
      expect(c).toMatchObject({ status: 'fulfilled', value: { version: 2 } });
      expect(b.status).toBe('rejected');
      const e = (b as PromiseRejectedResult).reason;
      expectCode(e, 'DECIDE_FAILED');
      expect(e.retryable).toBe(false);
      expect(e.message).toContain('Buggy.Explode');
      expect(e.data).toMatchObject({ aggregateType: 'Buggy', aggregateId: id, commandType: 'Explode' });
      expect(await node.query('Buggy', id)).toEqual({ state: { pokes: 2 }, version: 2 });
      const events = await readEvents(nats.url, stream);
      expect(events.filter((ev) => ev.aggregateId === id).map((ev) => ev.sequence)).toEqual([1, 2]);
      expect(await count()).toBeGreaterThan(before);
      await expectRefused(() => node.send('Buggy', id, 'Explode', {}), 'DECIDE_FAILED');
      await expect(node.send('Buggy', id, 'Poke', {})).resolves.toMatchObject({ version: 3 });
    });

    it('answers garbage published to the query and history subjects with MALFORMED_REQUEST', async () => {
      const nc = await natsConnect(nats.url);
      try {
        for (const subject of ['query', 'history']) {
          for (const garbage of [Uint8Array.of(0xc1, 0xff, 0x00, 0x13), encode('hello'), encode(['Account']), encode({ aggregateType: 'Account', aggregateId: 'a' }), encode(['Account', 7])]) {
            const reply = decode<[WireError | null, unknown]>((await nc.request(`${subjectPrefix}.${subject}`, garbage, { timeout: 5000 })).data);
            expect(reply[0]?.code, `${subject}: ${JSON.stringify(reply)}`).toBe('MALFORMED_REQUEST');
            expect(reply[0]?.retryable).toBe(false);
            expect(reply[1]).toBeNull();
          }
        }
      } finally {
        await nc.close();
      }
    });

    it('answers garbage published to the command subject with MALFORMED_COMMAND', async () => {
      const nc = await natsConnect(nats.url);
      try {
        const before = await count();
        const ask = async (bytes: Uint8Array) => decode<unknown>((await nc.request(`${subjectPrefix}.cmd`, bytes, { timeout: 5000 })).data);
        // ... including flat requests (protocols 2 and 3) whose length is not a whole number of commands.
        for (const garbage of [Uint8Array.of(0xc1, 0xff, 0x00, 0x13), new TextEncoder().encode('{"type":"Deposit"}'), encode('hello'), encode([99, []]), encode([2, ['c-1', 'OpenAccount', 'Account']]), encode([3, ['c-1', 'OpenAccount', 'Account', 'a-1', {}, null, null, null, null]])]) {
          const reply = await ask(garbage) as { error: WireError };
          expect(reply.error.code, JSON.stringify(reply)).toBe('MALFORMED_COMMAND');
        }
        // A well-formed request whose commands are garbage: each gets its own typed error.
        // The reply is flat: OUTCOME_STRIDE values per command, the error second (envelope.ts pushOutcome).
        const outcomes = await ask(encode([1, [42, { aggregateType: 'Account' }, { aggregateType: 'Account', aggregateId: 'ok', type: 'Deposit', payload: 'x' }]])) as unknown[];
        expect(outcomes).toHaveLength(3 * OUTCOME_STRIDE);
        const codes = [0, 1, 2].map((i) => (outcomes[i * OUTCOME_STRIDE + 1] as WireError | null)?.code);
        expect(codes).toEqual(['MALFORMED_COMMAND', 'MALFORMED_COMMAND', 'MALFORMED_COMMAND']);
        // The same in a flat request: [commandId, type, aggregateType, aggregateId, payload, userId, correlationId, causationId, traceparent].
        const flat = await ask(encode([2, [null, 'Deposit', 'Account', 'bad id', {}, null, null, null, null, 'c-2', 'Deposit', 'Account', 'ok', 'x', null, null, null, null]])) as unknown[];
        expect([0, 1].map((i) => (flat[i * OUTCOME_STRIDE + 1] as WireError | null)?.code)).toEqual(['MALFORMED_COMMAND', 'MALFORMED_COMMAND']);
        expect(await count()).toBe(before);
        await expect(node.send('Account', fresh('after-garbage'), 'OpenAccount', {})).resolves.toMatchObject({ version: 1 });
      } finally {
        await nc.close();
      }
    });
  });

  describe('idempotency', () => {
    it('answers a re-sent commandId with the first result, duplicate: true, and appends nothing', async () => {
      const id = fresh('acc');
      await node.send('Account', id, 'OpenAccount', {});
      const first = await node.send('Account', id, 'Deposit', { amount: 70 }, { commandId: `dep-${id}` });
      const before = await count();
      const again = await node.send('Account', id, 'Deposit', { amount: 70 }, { commandId: `dep-${id}` });
      expect(first.duplicate).toBe(false);
      expect(again).toEqual({ ...first, duplicate: true });
      expect(await count()).toBe(before);
      expect(await node.query('Account', id)).toEqual({ state: { opened: true, balance: 70 }, version: 2 });
    });

    it('scopes a commandId to its actor: the same id on another actor of the same shard or of another shard is a new command', async () => {
      const shards = node.options.shards;
      const base = fresh('scope');
      const shardOfId = (id: string) => shardOf('Account', id, shards);
      // Three actors: `a`, `near` in a's shard, `far` in another shard.
      const a = `${base}-a`;
      let near = '';
      let far = '';
      for (let i = 0; near === '' || far === ''; i++) {
        const id = `${base}-${i}`;
        if (shardOfId(id) === shardOfId(a)) near ||= id;
        else far ||= id;
      }
      for (const id of [a, near, far]) await node.send('Account', id, 'OpenAccount', {});
      const commandId = `shared-${base}`;
      const results = [];
      for (const id of [a, near, far]) results.push(await node.send('Account', id, 'Deposit', { amount: 3 }, { commandId }));
      expect(results.map((r) => [r.aggregateId, r.version, r.duplicate])).toEqual([[a, 2, false], [near, 2, false], [far, 2, false]]);
      // On the same actor it is a re-send: answered with the first result, nothing appended.
      const before = await count();
      expect(await node.send('Account', near, 'Deposit', { amount: 3 }, { commandId })).toEqual({ ...results[1], duplicate: true });
      expect(await count()).toBe(before);
      const events = (await readEvents(nats.url, stream)).filter((e) => e.commandId === commandId);
      expect(events.map((e) => e.aggregateId).sort()).toEqual([a, near, far].sort());
      for (const id of [a, near, far]) expect(await node.query('Account', id)).toEqual({ state: { opened: true, balance: 3 }, version: 2 });
    });

    it('scopes a commandId to its actor in LMDB too, after a restart', async () => {
      const s = freshStream('IDEM');
      const dataDir = tempDir();
      let n = await startNode(nats.url, { ...s, dataDir, shards: 1 });
      try {
        for (const id of ['a', 'b']) await n.send('Account', id, 'OpenAccount', {});
        const first = await n.send('Account', 'a', 'Deposit', { amount: 2 }, { commandId: 'kept' });
        await n.stop();
        n = await startNode(nats.url, { ...s, dataDir, shards: 1 });
        const before = await messageCount(nats.url, s.stream);
        expect(await n.send('Account', 'a', 'Deposit', { amount: 2 }, { commandId: 'kept' })).toEqual({ ...first, duplicate: true });
        expect(await messageCount(nats.url, s.stream)).toBe(before);
        expect(await n.send('Account', 'b', 'Deposit', { amount: 2 }, { commandId: 'kept' })).toMatchObject({ aggregateId: 'b', version: 2, duplicate: false });
        expect(await messageCount(nats.url, s.stream)).toBe(before + 1);
      } finally {
        await n.stop();
      }
    });

    it('answers a commandId sent twice at once with one commit', async () => {
      const id = fresh('acc');
      await node.send('Account', id, 'OpenAccount', {});
      const [a, b] = await Promise.all([
        node.send('Account', id, 'Deposit', { amount: 5 }, { commandId: `twin-${id}` }),
        node.send('Account', id, 'Deposit', { amount: 5 }, { commandId: `twin-${id}` }),
      ]);
      expect([a.duplicate, b.duplicate].sort()).toEqual([false, true]);
      expect({ ...a, duplicate: false }).toEqual({ ...b, duplicate: false });
      expect(countByCommandId(await readEvents(nats.url, stream)).get(`twin-${id}`)).toBe(1);
      expect(await node.query('Account', id)).toMatchObject({ state: { balance: 5 }, version: 2 });
    });

    it('answers a re-sent commandId after the node restarts on the same dataDir', async () => {
      const s = freshStream('IDEM');
      const dataDir = tempDir();
      let n = await startNode(nats.url, { ...s, dataDir });
      try {
        await n.send('Account', 'a', 'OpenAccount', {});
        const first = await n.send('Account', 'a', 'Deposit', { amount: 9 }, { commandId: 'restart-dep' });
        await n.stop();
        const before = await messageCount(nats.url, s.stream);
        n = await startNode(nats.url, { ...s, dataDir });
        const again = await n.send('Account', 'a', 'Deposit', { amount: 9 }, { commandId: 'restart-dep' });
        expect(again).toEqual({ ...first, duplicate: true });
        expect(await messageCount(nats.url, s.stream)).toBe(before);
        expect(await n.query('Account', 'a')).toEqual({ state: { opened: true, balance: 9 }, version: 2 });
      } finally {
        await n.stop();
      }
    });

    it('answers a re-sent commandId from the log after the dataDir was deleted', async () => {
      const s = freshStream('IDEM');
      const dataDir = tempDir();
      let n = await startNode(nats.url, { ...s, dataDir });
      try {
        await n.send('Account', 'a', 'OpenAccount', {});
        const first = await n.send('Account', 'a', 'Deposit', { amount: 4 }, { commandId: 'wiped-dep' });
        await n.send('Account', 'a', 'Deposit', { amount: 6 });
        await n.stop();
        rmSync(dataDir, { recursive: true, force: true });
        const before = await messageCount(nats.url, s.stream);
        n = await startNode(nats.url, { ...s, dataDir });
        const again = await n.send('Account', 'a', 'Deposit', { amount: 4 }, { commandId: 'wiped-dep' });
        expect(again).toEqual({ ...first, duplicate: true });
        expect(await messageCount(nats.url, s.stream)).toBe(before);
        expect(await n.query('Account', 'a')).toEqual({ state: { opened: true, balance: 10 }, version: 3 });
      } finally {
        await n.stop();
      }
    });
  });

  describe('shard count', () => {
    it('records the shard count in the stream and refuses a node started with another', async () => {
      const s = freshStream('SHARDS');
      const n = await startNode(nats.url, { ...s, shards: 4 });
      await n.send('Account', 'a', 'OpenAccount', {});
      await n.stop();
      const nc = await natsConnect(nats.url);
      try {
        expect((await (await jetstreamManager(nc)).streams.info(s.stream)).config.metadata?.['troupe.shards']).toBe('4');
      } finally {
        await nc.close();
      }
      const e = await rejectionOf(startNode(nats.url, { ...s, shards: 8 }));
      expectCode(e, 'INVALID_OPTION');
      expect((e as Error).message).toContain('routed over 4 shards, and options.shards is 8');
      const again = await startNode(nats.url, { ...s, shards: 4 });
      try {
        expect(await again.query('Account', 'a')).toEqual({ state: { opened: true, balance: 0 }, version: 1 });
      } finally {
        await again.stop();
      }
    });

    it('checks a stream written without the record against the shards its subjects name, then records the count', async () => {
      const s = freshStream('LEGACY');
      const ids = Array.from({ length: 30 }, (_, i) => `legacy-${i}`);
      const n = await startNode(nats.url, { ...s, shards: 8 });
      await Promise.all(ids.map((id) => n.send('Account', id, 'OpenAccount', {})));
      await n.stop();
      const highest = Math.max(...ids.map((id) => shardOf('Account', id, 8)));
      const nc = await natsConnect(nats.url);
      try {
        const jsm = await jetstreamManager(nc);
        // As a stream written before the record was kept.
        const { config } = await jsm.streams.info(s.stream);
        await jsm.streams.update(s.stream, { ...config, metadata: {} });
        const e = await rejectionOf(startNode(nats.url, { ...s, shards: highest }));
        expectCode(e, 'INVALID_OPTION');
        expect((e as Error).message).toContain(`holds commits of shard ${highest}, so it was written with more than options.shards = ${highest} shards`);
        expect((e as Error).message).toContain(`at least ${highest + 1}`);
        expect((await jsm.streams.info(s.stream)).config.metadata?.['troupe.shards']).toBeUndefined();
        const again = await startNode(nats.url, { ...s, shards: 8 });
        try {
          expect(await again.query('Account', ids[0]!)).toMatchObject({ version: 1 });
        } finally {
          await again.stop();
        }
        expect((await jsm.streams.info(s.stream)).config.metadata?.['troupe.shards']).toBe('8');
      } finally {
        await nc.close();
      }
    });
  });
});
