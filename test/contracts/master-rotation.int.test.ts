// Master-key rotation against a real nats-server, under load: a node keeps writing customers
// (name and email encrypted under per-customer keys) while a new master key is added and the old
// one retired. Every event written before, during and after reads back in the clear with the new
// master key alone; a subject shredded before stays shredded, and one shredded after (by a
// process that never held the old master key) is found by the same subject hash.
import { randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeCommitBatch } from '../../runtime/journal/codec.ts';
import { eventReader, openKeyRing, REDACTED, Troupe, type ActorDefinition, type EventEnvelope } from '../../runtime/index.ts';
import { formatMasterKeys, MasterKey, parseMasterKeys } from '../../runtime/contracts/crypto.ts';
import { masterKeyStatus, retireMasterKey, rotateMasterKey } from '../../runtime/contracts/master-rotation.ts';
import { customer } from '../fixtures/customer.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { freshStream, rawLog } from '../helpers/troupe.ts';

const CUSTOMER = fileURLToPath(new URL('../fixtures/customer.ts', import.meta.url));
const ENV_NAMES = ['TROUPE_MASTER_KEY', 'TROUPE_MASTER_KEYS', 'TROUPE_MASTER_KEY_FILE'] as const;

describe('master-key rotation', () => {
  const nats = useNatsServer();
  const { stream, subjectPrefix } = freshStream('ROT');
  const keyFile = join(tempDir(), 'master.keys');
  const oldKey = randomBytes(32);
  const oldId = new MasterKey(oldKey).id;
  const saved = Object.fromEntries(ENV_NAMES.map((n) => [n, process.env[n]]));
  let node: Troupe;
  // Two workers: two key rings per node open the bucket (and its stored name key) side by side.
  const start = (dataDir: string) => Troupe.start({ actors: [CUSTOMER], servers: nats.url, stream, subjectPrefix, dataDir, workers: 2, shards: 4 });

  beforeAll(() => {
    for (const n of ENV_NAMES) delete process.env[n];
    writeFileSync(keyFile, formatMasterKeys([{ id: oldId, key: oldKey.toString('base64') }]), { mode: 0o600 });
    process.env.TROUPE_MASTER_KEY_FILE = keyFile; // worker threads read it too
  });

  afterAll(async () => {
    await node?.stop();
    for (const n of ENV_NAMES) {
      if (saved[n] === undefined) delete process.env[n];
      else process.env[n] = saved[n];
    }
  });

  it('refuses to start with a key file that others may read, naming chmod 600', async () => {
    chmodSync(keyFile, 0o644);
    try {
      await expect(start(tempDir())).rejects.toThrow(`the master key file ${keyFile} may be read by group or others (mode 0644): run chmod 600 ${keyFile}`);
    } finally {
      chmodSync(keyFile, 0o600);
    }
  });

  it('keeps every event written before, during and after a rotation readable, and shredded subjects shredded', async () => {
    node = await start(tempDir());
    /** customer id → the email its last acknowledged command set. */
    const expected = new Map<string, string>();
    let n = 0;
    const failures: unknown[] = [];
    let running = false;
    let loops: Promise<void>[] = [];
    const write = async () => {
      while (running) {
        const id = `p${n++}`;
        try {
          await node.send('Customer', id, 'RegisterCustomer', { name: `Person ${id}`, email: `${id}@example.org`, plan: 'free' });
          expected.set(id, `${id}@example.org`);
          await node.send('Customer', id, 'ChangeEmail', { email: `${id}-2@example.org` });
          expected.set(id, `${id}-2@example.org`);
        } catch (e) {
          failures.push(e);
        }
      }
    };
    const load = () => { running = true; loops = [write(), write()]; };
    const pause = async () => { running = false; await Promise.all(loops); };
    const written = () => expected.size;

    // Before: a few customers, one of them shredded.
    load();
    while (written() < 20) await new Promise((r) => setTimeout(r, 20));
    const admin = await openKeyRing({ servers: nats.url, stream });
    await admin.shred('customer:p0');
    await admin.close();

    // During: rotate while the node writes (the node holds the old master key only).
    const beforeRotation = written();
    const rotated = await rotateMasterKey({ servers: nats.url, stream });
    expect(rotated).toMatchObject({ file: keyFile, ids: [rotated.active, oldId], destroyed: 0, unreadable: 0 });
    expect(rotated.rewrapped).toBeGreaterThanOrEqual(beforeRotation - 1);
    expect(rotated.keyList).toBeUndefined();
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(parseMasterKeys(readFileSync(keyFile, 'utf8')).ids).toEqual([rotated.active, oldId]);
    const afterRotation = written();
    expect(afterRotation, 'customers written while the rotation ran').toBeGreaterThan(beforeRotation);
    while (written() < afterRotation + 20) await new Promise((r) => setTimeout(r, 20));

    // Nodes restart onto the new key list (both keys), then the old key is retired under load.
    await pause();
    await node.stop();
    node = await start(tempDir());
    load();
    while (written() < afterRotation + 40) await new Promise((r) => setTimeout(r, 20));
    const beforeRetire = written();
    const retired = await retireMasterKey({ servers: nats.url, stream, id: oldId });
    expect(retired).toMatchObject({ active: rotated.active, ids: [rotated.active], unreadable: 0 });
    const afterRetire = written();
    expect(afterRetire, 'customers written while the retirement ran').toBeGreaterThan(beforeRetire);
    while (written() < afterRetire + 20) await new Promise((r) => setTimeout(r, 20));
    await pause();
    expect(failures).toEqual([]);
    await node.stop();

    // The key file holds the new key alone; every stored key is wrapped under it.
    expect(parseMasterKeys(readFileSync(keyFile, 'utf8')).ids).toEqual([rotated.active]);
    const status = await masterKeyStatus({ servers: nats.url, stream });
    expect(status.wraps[rotated.active]).toBe(status.keys);

    // After: a node and a consumer holding only the new master key read everything.
    node = await start(tempDir());
    let checked = 0;
    for (const [id, email] of expected) {
      if (id === 'p0') continue;
      expect(await node.query('Customer', id), id).toMatchObject({ state: { registered: true, name: `Person ${id}`, email } });
      checked++;
    }
    expect(checked).toBeGreaterThanOrEqual(80);
    expect(await node.query('Customer', 'p0')).toMatchObject({ state: { name: REDACTED, email: REDACTED } });

    const keys = await openKeyRing({ servers: nats.url, stream });
    try {
      const read = eventReader({ actors: [customer as ActorDefinition<unknown>], keys });
      const events: EventEnvelope[] = (await rawLog(nats.url, stream)).flatMap((m) => decodeCommitBatch(m.data, m.seq));
      const out = await Promise.all(events.map(read));
      expect(out.filter((e) => e.aggregateId !== 'p0' && e.redacted !== undefined)).toEqual([]);
      expect(out.filter((e) => e.aggregateId === 'p0').every((e) => e.redacted !== undefined)).toBe(true);
      expect(out.length).toBe(2 * expected.size);

      // Shredding a subject written before the rotation, by a ring that never held the old key.
      expect(await keys.shred('customer:p1')).toBeGreaterThanOrEqual(1);
    } finally {
      await keys.close();
    }
    await expect.poll(async () => (await node.query('Customer', 'p1')).state, { timeout: 10_000 }).toMatchObject({ name: REDACTED, email: REDACTED });
    expect(await node.query('Customer', 'p2')).toMatchObject({ state: { name: 'Person p2' } });
  }, 120_000);
});
