// Sensitive fields against a real nats-server: encrypted before they leave the actor (the clear
// text is in neither JetStream's files nor LMDB's), readable by nodes and consumers that hold
// the keys, still readable after a key rotation, and redacted everywhere after shredding.
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { jetstreamManager } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actorModules } from '../../actors/index.ts';
import { decodeCommitBatch } from '../../runtime/journal/codec.ts';
import {
  eventReader, isTroupeError, openKeyRing, REDACTED, Troupe, type ActorDefinition, type EventEnvelope, type KeyRing,
} from '../../runtime/index.ts';
import { isEncrypted, isSealed, keyBucketName } from '../../runtime/internal.ts';
import { Store } from '../../runtime/journal/store.ts';
import { customer } from '../fixtures/customer.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { eventually, freshStream, messageCount, natsConnect, rawLog } from '../helpers/troupe.ts';

const CUSTOMER = fileURLToPath(new URL('../fixtures/customer.ts', import.meta.url));
const INVESTIGATION = actorModules.find((p) => p.endsWith('investigation.ts'))!;

const ALICE = { name: 'Alice Liddell', email: 'alice@wonderland.example', plan: 'gold' };
const BOB = { name: 'Bob Hatter', email: 'bob@teaparty.example', plan: 'free' };
const NOTE = 'Called the suspect Charlie Dodgson at home';
const SECRETS = [ALICE.name, ALICE.email, BOB.name, BOB.email, NOTE];

/** Every file under a folder, concatenated. */
function filesUnder(dir: string): Buffer {
  const parts: Buffer[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else parts.push(readFileSync(p));
    }
  };
  walk(dir);
  return Buffer.concat(parts);
}


async function rawEvents(servers: string, stream: string): Promise<EventEnvelope[]> {
  return (await rawLog(servers, stream)).flatMap((m) => decodeCommitBatch(m.data, m.seq));
}

describe('sensitive fields', () => {
  const nats = useNatsServer();
  const masterKey = randomBytes(32).toString('base64');
  const previous = process.env.TROUPE_MASTER_KEY;
  const { stream, subjectPrefix } = freshStream('SENS');
  const dataDir = tempDir();
  let node: Troupe;
  let keys: KeyRing;

  const start = () => Troupe.start({ actors: [CUSTOMER, INVESTIGATION], servers: nats.url, stream, subjectPrefix, dataDir, workers: 1, shards: 4 });

  beforeAll(async () => {
    // Every node and consumer of a deployment shares one master key; worker threads inherit it.
    process.env.TROUPE_MASTER_KEY = masterKey;
    node = await start();
  });

  afterAll(async () => {
    await node?.stop();
    await keys?.close();
    if (previous === undefined) delete process.env.TROUPE_MASTER_KEY;
    else process.env.TROUPE_MASTER_KEY = previous;
  });

  it('keeps the clear text out of JetStream and LMDB, and gives it back to readers with the key', async () => {
    await node.send('Customer', 'c1', 'RegisterCustomer', ALICE);
    await node.send('Customer', 'c2', 'RegisterCustomer', BOB);
    await node.send('Investigation', 'case-1', 'CreateInvestigation', { title: 'Account takeover', severity: 'high' }, { userId: 'sam' });
    await node.send('Investigation', 'case-1', 'AddInvestigationNote', { note: NOTE }, { userId: 'sam' });

    expect(await node.query('Customer', 'c1')).toEqual({ version: 1, state: { registered: true, ...ALICE, nickname: null } });
    expect((await node.history('Customer', 'c1'))[0]).toMatchObject({ eventType: 'CustomerRegistered', payload: ALICE });
    expect((await node.history('Investigation', 'case-1'))[1]).toMatchObject({ eventType: 'InvestigationNoteAdded', payload: { note: NOTE, authorId: 'sam' } });

    // JetStream, as a client reads it: the sensitive fields are ciphertext with their key id.
    const raw = Buffer.concat((await rawLog(nats.url, stream)).map((m) => m.data));
    for (const s of SECRETS) expect(raw.includes(s), s).toBe(false);
    expect(raw.includes('gold')).toBe(true); // what is not sensitive is there in the clear: the search works
    const registered = (await rawEvents(nats.url, stream)).find((e) => e.aggregateId === 'c1')!;
    expect(isEncrypted((registered.payload as Record<string, unknown>).email)).toBe(true);
    expect((registered.payload as Record<string, unknown>).plan).toBe('gold');

    // JetStream's files on disk, and the key bucket with them.
    const disk = filesUnder(nats.storeDir);
    for (const s of SECRETS) expect(disk.includes(s), s).toBe(false);
    expect(disk.includes('gold')).toBe(true);

    // LMDB, after the node wrote its snapshots (snapshotEvery 1, and on stop).
    await node.stop();
    const lmdb = filesUnder(join(dataDir, 'lmdb'));
    for (const s of SECRETS) expect(lmdb.includes(s), s).toBe(false);
    expect(lmdb.includes('Customer')).toBe(true);
    const store = new Store(dataDir, stream, 60_000);
    expect(isSealed(store.getSnapshot('Customer', 'c1')?.state)).toBe(true);
    await store.close();

    // A restarted node opens its sealed snapshots with the keys from the bucket.
    node = await start();
    expect(await node.query('Customer', 'c1')).toMatchObject({ version: 1, state: { email: ALICE.email } });
  });

  it('gives consumers the clear values with the keys, and the redacted marker without', async () => {
    keys = await openKeyRing({ servers: nats.url, stream });
    const events = await rawEvents(nats.url, stream);
    const withKeys = eventReader({ actors: [customer as ActorDefinition<unknown>], keys });
    const c1 = await withKeys(events.find((e) => e.aggregateId === 'c1')!);
    expect(c1).toMatchObject({ payload: ALICE });
    expect(c1.redacted).toBeUndefined();
    const blind = eventReader({ actors: [customer as ActorDefinition<unknown>] });
    expect(await blind(events.find((e) => e.aggregateId === 'c1')!)).toMatchObject({ payload: { name: REDACTED, email: REDACTED, plan: 'gold' }, redacted: ['name', 'email'] });
  });

  it('opens a key ring that knows every stored key at once, wrapped with the master key in the bucket', async () => {
    const kids = (await rawEvents(nats.url, stream)).flatMap((e) => Object.values(e.payload as Record<string, unknown>).filter(isEncrypted).map((v) => v.$enc));
    expect(kids.length).toBeGreaterThanOrEqual(3);
    const late = await openKeyRing({ servers: nats.url, stream });
    try {
      for (const kid of kids) expect(late.key(kid), kid).toBeInstanceOf(Buffer); // synchronously: no fetch
    } finally {
      await late.close();
    }
    const nc = await natsConnect(nats.url);
    try {
      const jsm = await jetstreamManager(nc);
      const bucket = `KV_${keyBucketName(stream)}`;
      const last = (await jsm.streams.info(bucket)).state.last_seq;
      const stored: string[] = [];
      for (let seq = 1; seq <= last; seq++) {
        const m = await jsm.streams.getMessage(bucket, { seq });
        if (m !== null) stored.push(`${m.subject} ${new TextDecoder().decode(m.data)}`);
      }
      expect(stored.length).toBeGreaterThanOrEqual(3);
      // Subject keys, and the subject-name key, each wrapped with the master key; nothing else.
      expect(stored.filter((s) => /^\$KV\.\S+\.names \{"v":2,"w":\{"[0-9a-f]{16}":"[A-Za-z0-9+/=]+"\}\}$/.test(s))).toHaveLength(1);
      for (const s of stored.filter((x) => !/\.names /.test(x))) {
        expect(s).toMatch(/^\$KV\.\S+\.s\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{12} \{"v":2,"kid":"[A-Za-z0-9_-]{12}","s":"[A-Za-z0-9_-]{22}","at":\d+,"w":\{"[0-9a-f]{16}":"[A-Za-z0-9+/=]+"\}\}$/);
        expect(s).not.toContain('customer:c1');
        expect(s).not.toContain('user:sam');
      }
    } finally {
      await nc.close();
    }
  });

  it('writes new values under a rotated key and keeps the old ones readable', async () => {
    const kidOf = (e: EventEnvelope) => ((e.payload as Record<string, unknown>).email as { $enc: string }).$enc;
    const first = kidOf((await rawEvents(nats.url, stream)).find((e) => e.aggregateId === 'c1')!);
    const rotated = await keys.rotate('customer:c1');
    expect(rotated).not.toBe(first);
    // The node learns the new key from the bucket; until then it may still use the old one.
    await eventually(async () => {
      await node.send('Customer', 'c1', 'ChangeEmail', { email: 'alice@looking-glass.example' });
      const last = (await rawEvents(nats.url, stream)).filter((e) => e.aggregateId === 'c1').at(-1)!;
      expect(kidOf(last)).toBe(rotated);
    }, 10_000);
    const history = await node.history('Customer', 'c1');
    expect(history[0]!.payload).toMatchObject({ email: ALICE.email });
    expect(history.at(-1)!.payload).toEqual({ email: 'alice@looking-glass.example' });
    expect(new Set((await rawEvents(nats.url, stream)).filter((e) => e.aggregateId === 'c1').map(kidOf))).toEqual(new Set([first, rotated]));
  });

  it('refuses personal data in a field not declared sensitive, and appends nothing', async () => {
    const before = await messageCount(nats.url, stream);
    const e = await node.send('Customer', 'c2', 'SetNickname', { nickname: 'ssn 078-05-1120' }).then(() => null, (err: unknown) => err);
    expect(isTroupeError(e, 'SENSITIVE_DATA')).toBe(true);
    expect((e as Error).message).not.toContain('078-05-1120');
    expect(await messageCount(nats.url, stream)).toBe(before);
    await expect(node.send('Customer', 'c2', 'SetNickname', { nickname: 'The Hatter' })).resolves.toMatchObject({ version: 2 });
  });

  it('makes a subject unreadable everywhere once its keys are shredded: log, snapshots, consumers, running nodes', async () => {
    expect(await keys.shred('customer:c1')).toBe(2);
    await keys.shred('user:sam');

    // The running node: its resident actor is evicted, its sealed snapshot cannot be opened, the
    // actor is rebuilt from the log where the values now read as redacted.
    await eventually(async () => {
      expect(await node.query('Customer', 'c1')).toMatchObject({ state: { registered: true, name: REDACTED, email: REDACTED, plan: 'gold' } });
    }, 10_000);
    const history = await node.history('Customer', 'c1');
    expect(history[0]).toMatchObject({ payload: { name: REDACTED, email: REDACTED, plan: 'gold' }, redacted: ['name', 'email'] });
    expect(history.at(-1)).toMatchObject({ payload: { email: REDACTED }, redacted: ['email'] });
    expect((await node.history('Investigation', 'case-1'))[1]).toMatchObject({ payload: { note: REDACTED, authorId: 'sam' }, redacted: ['note'] });
    // Other subjects are untouched.
    expect(await node.query('Customer', 'c2')).toMatchObject({ state: { email: BOB.email, nickname: 'The Hatter' } });

    // Consumers, with a ring of their own.
    const other = await openKeyRing({ servers: nats.url, stream });
    try {
      const read = eventReader({ actors: [customer as ActorDefinition<unknown>], keys: other });
      const out = await Promise.all((await rawEvents(nats.url, stream)).filter((e) => e.aggregateType === 'Customer').map(read));
      expect(out.filter((e) => e.aggregateId === 'c1').every((e) => (e.payload as { email: string }).email === REDACTED)).toBe(true);
      expect(out.find((e) => e.aggregateId === 'c2' && e.eventType === 'CustomerRegistered')).toMatchObject({ payload: BOB });
    } finally {
      await other.close();
    }

    // A restarted node, from its snapshots and the log.
    await node.stop();
    node = await start();
    expect(await node.query('Customer', 'c1')).toMatchObject({ state: { name: REDACTED, email: REDACTED } });
    expect(await node.query('Customer', 'c2')).toMatchObject({ state: { name: BOB.name, email: BOB.email } });
    // New data about the subject gets a new key: shredding is about what was written.
    await node.send('Customer', 'c1', 'ChangeEmail', { email: 'alice@new-start.example' });
    expect(await node.query('Customer', 'c1')).toMatchObject({ state: { email: 'alice@new-start.example' } });
  });

  it('holds the commands of an actor that waits for a new subject key, and keeps their order', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `bulk-${i}`);
    const sends = ids.flatMap((id) => [
      node.send('Customer', id, 'RegisterCustomer', { name: `Person ${id}`, email: `${id}@example.org`, plan: 'free' }),
      node.send('Customer', id, 'ChangeEmail', { email: `${id}-2@example.org` }),
      node.send('Customer', id, 'ChangeEmail', { email: `${id}-3@example.org` }),
    ]);
    const results = await Promise.all(sends);
    expect(results.map((r) => r.version)).toEqual(ids.flatMap(() => [1, 2, 3]));
    for (const id of ids) expect(await node.query('Customer', id)).toMatchObject({ version: 3, state: { email: `${id}-3@example.org` } });
  });
});
