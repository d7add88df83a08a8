// Event contracts against a real nats-server: decided events are validated (and guarded)
// before append, and events written under v1 of a definition are read as v3 after it evolves,
// while the log stays byte for byte the same.
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { decodeCommitBatch } from '../../runtime/journal/codec.ts';
import { isTroupeError, Troupe, type EventEnvelope } from '../../runtime/index.ts';
import { Store } from '../../runtime/journal/store.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { freshStream, messageCount, natsConnect, rawLog } from '../helpers/troupe.ts';

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));
const V1 = fixture('ticket-v1.ts');
const V2 = fixture('ticket-v2.ts');
const V3 = fixture('ticket-v3.ts');


function snapshotOf(dataDir: string, stream: string, id: string): { sv: number; version: number; state: unknown } | undefined {
  const store = new Store(dataDir, stream, 60_000);
  try {
    return store.getSnapshot('Ticket', id);
  } finally {
    void store.close();
  }
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected the command to fail');
}

const shapes = (h: EventEnvelope[]) => h.map((e) => ({ type: e.eventType, version: e.version, payload: e.payload }));

describe('event contracts on a running node', () => {
  const nats = useNatsServer();

  function start(module: string, stream: { stream: string; subjectPrefix: string }, dataDir: string): Promise<Troupe> {
    return Troupe.start({ actors: [module], servers: nats.url, ...stream, dataDir, workers: 1, shards: 4 });
  }

  it('refuses a decided event that violates its schema, naming field and rule, and appends nothing', async () => {
    const stream = freshStream('SCHEMA');
    const node = await start(V1, stream, tempDir());
    try {
      await node.send('Ticket', 't-1', 'OpenTicket', { title: 'Printer on fire' });
      const before = await messageCount(nats.url, stream.stream);
      const e = await rejection(node.send('Ticket', 't-1', 'AddComment', { text: '' }, { commandId: 'empty-comment' }));
      expect(isTroupeError(e, 'SCHEMA_VIOLATION')).toBe(true);
      expect((e as Error).message).toBe('event Ticket.CommentAdded: payload/text must NOT have fewer than 1 characters');
      expect((e as { data: unknown }).data).toMatchObject({
        aggregateType: 'Ticket', aggregateId: 't-1', eventType: 'CommentAdded', commandId: 'empty-comment', field: 'payload/text', rule: 'minLength',
      });
      expect(await messageCount(nats.url, stream.stream)).toBe(before);
      expect(await node.query('Ticket', 't-1')).toMatchObject({ version: 1, state: { comments: 0 } });
      // The actor goes on: the next valid command is decided on the unchanged state.
      await expect(node.send('Ticket', 't-1', 'AddComment', { text: 'smoke' })).resolves.toMatchObject({ version: 2 });
    } finally {
      await node.stop();
    }
  });

  it('refuses a decided event whose field looks like personal data, without echoing it, and appends nothing', async () => {
    const stream = freshStream('GUARD');
    const node = await start(V1, stream, tempDir());
    try {
      await node.send('Ticket', 't-1', 'OpenTicket', { title: 'Refund' });
      const before = await messageCount(nats.url, stream.stream);
      const e = await rejection(node.send('Ticket', 't-1', 'AddComment', { text: 'customer paid with 4111 1111 1111 1111' }));
      expect(isTroupeError(e, 'SENSITIVE_DATA')).toBe(true);
      expect((e as Error).message).toContain('event Ticket.CommentAdded: payload.text holds what looks like a payment card number');
      expect((e as Error).message).not.toContain('4111');
      expect(await messageCount(nats.url, stream.stream)).toBe(before);
    } finally {
      await node.stop();
    }
  });

  it('reads events written under v1 as v3 after the definition evolves, and the log stays unchanged', async () => {
    const stream = freshStream('EVOLVE');
    const dataDir = tempDir();

    // v1 writes.
    let node = await start(V1, stream, dataDir);
    try {
      await node.send('Ticket', 't-1', 'OpenTicket', { title: 'Printer on fire' });
      await node.send('Ticket', 't-1', 'AddComment', { text: 'smoke everywhere' });
      await node.send('Ticket', 't-1', 'AddComment', { text: 'fire brigade called' });
      await node.send('Ticket', 't-1', 'AddComment', { text: 'out' });
    } finally {
      await node.stop();
    }
    const logV1 = await rawLog(nats.url, stream.stream);
    const writtenV1 = logV1.flatMap((m) => decodeCommitBatch(m.data, m.seq));
    expect(writtenV1.map((e) => [e.eventType, e.version])).toEqual([['TicketOpened', 1], ['CommentAdded', 1], ['CommentAdded', 1], ['CommentAdded', 1]]);
    expect(writtenV1[0]!.payload).toEqual({ title: 'Printer on fire' });
    expect(snapshotOf(dataDir, stream.stream, 't-1')).toMatchObject({ sv: 1, version: 4, state: { title: 'Printer on fire', comments: 3 } });

    // v2 on the same dataDir: the v1 snapshot has no state upcaster to v2, so it is rebuilt, never misread.
    node = await start(V2, stream, dataDir);
    try {
      expect(await node.query('Ticket', 't-1')).toEqual({ version: 4, state: { open: true, title: 'Printer on fire', priority: 'normal', comments: 3 } });
      expect(shapes(await node.history('Ticket', 't-1'))).toEqual([
        { type: 'TicketOpened', version: 2, payload: { title: 'Printer on fire', priority: 'normal' } },
        { type: 'CommentAdded', version: 2, payload: { text: 'smoke everywhere', internal: false } },
        { type: 'CommentAdded', version: 2, payload: { text: 'fire brigade called', internal: false } },
        { type: 'CommentAdded', version: 2, payload: { text: 'out', internal: false } },
      ]);
      await node.send('Ticket', 't-2', 'OpenTicket', { title: 'Coffee machine', priority: 'high' });
      await node.send('Ticket', 't-2', 'AddComment', { text: 'descaled', internal: true });
    } finally {
      await node.stop();
    }
    expect(snapshotOf(dataDir, stream.stream, 't-1')).toMatchObject({ sv: 2, version: 4, state: { title: 'Printer on fire', priority: 'normal' } });

    // v3 on the same dataDir: v2 snapshots are upcast by the state upcasters; every event reads as v3.
    const expectV3 = async (n: Troupe) => {
      expect(await n.query('Ticket', 't-1')).toEqual({ version: 4, state: { open: true, subject: 'Printer on fire', priority: 'normal', comments: 3 } });
      expect(await n.query('Ticket', 't-2')).toEqual({ version: 2, state: { open: true, subject: 'Coffee machine', priority: 'high', comments: 1 } });
      expect(shapes(await n.history('Ticket', 't-1'))).toEqual([
        { type: 'TicketOpened', version: 3, payload: { subject: 'Printer on fire', priority: 'normal' } },
        { type: 'CommentAdded', version: 3, payload: { body: 'smoke everywhere', words: 2 } },
        { type: 'CommentAdded', version: 3, payload: { body: 'fire brigade called', words: 3 } },
        { type: 'CommentAdded', version: 3, payload: { body: 'out', words: 1 } },
      ]);
      expect(shapes(await n.history('Ticket', 't-2'))).toEqual([
        { type: 'TicketOpened', version: 3, payload: { subject: 'Coffee machine', priority: 'high' } },
        { type: 'CommentAdded', version: 3, payload: { body: 'descaled', words: 1 } },
      ]);
    };
    node = await start(V3, stream, dataDir);
    try {
      await expectV3(node);
      // New events are written as v3 next to the old ones.
      await node.send('Ticket', 't-1', 'AddComment', { body: 'replaced the printer' });
      expect((await node.history('Ticket', 't-1')).at(-1)).toMatchObject({ version: 3, sequence: 5, payload: { body: 'replaced the printer', words: 3 } });
    } finally {
      await node.stop();
    }

    // The log was never rewritten: the messages v1 wrote are byte for byte what they were.
    const logAfter = await rawLog(nats.url, stream.stream);
    expect(logAfter.length).toBe(logV1.length + 3);
    for (const m of logV1) expect(logAfter.find((a) => a.seq === m.seq)!.data.equals(m.data), `message ${m.seq}`).toBe(true);
    expect(decodeCommitBatch(logAfter.at(-1)!.data).map((e) => e.version)).toEqual([3]);

    // And a node with no cache at all replays the whole log into the same v3 shapes.
    node = await start(V3, stream, tempDir());
    try {
      expect(await node.query('Ticket', 't-1')).toMatchObject({ version: 5, state: { subject: 'Printer on fire', comments: 4 } });
      await expect(node.history('Ticket', 't-2').then(shapes)).resolves.toEqual([
        { type: 'TicketOpened', version: 3, payload: { subject: 'Coffee machine', priority: 'high' } },
        { type: 'CommentAdded', version: 3, payload: { body: 'descaled', words: 1 } },
      ]);
    } finally {
      await node.stop();
    }
  });

  it('refuses to replay events of a version newer than the definition, saying to deploy the definition that wrote them', async () => {
    const stream = freshStream('NEWER');
    let node = await start(V3, stream, tempDir());
    try {
      await node.send('Ticket', 't-1', 'OpenTicket', { subject: 'From the future' });
    } finally {
      await node.stop();
    }
    node = await start(V1, stream, tempDir());
    try {
      // The log's shard holds a version this node cannot read: placement gives the shard to no
      // node that cannot read it (rather than failing mid-replay), and the refusal says so.
      const e = await rejection(node.query('Ticket', 't-1'));
      expect(isTroupeError(e, 'SHARD_NOT_OWNED')).toBe(true);
      expect((e as Error).message).toMatch(/placed on no node: its log holds Ticket\.TicketOpened v3, which no live node reads .*; deploy the definition that wrote it/);
    } finally {
      await node.stop();
    }
  });
});
