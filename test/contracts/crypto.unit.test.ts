import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decryptBytes, encryptBytes, KeyRing, MasterKey, MemoryKeyBackend, parseMasterKey, resolveMasterKey, type KeyBackend } from '../../runtime/contracts/crypto.ts';
import { carryTaint, isSealed, sealSnapshot, sealState, stateKeys, unsealState } from '../../runtime/contracts/sensitive.ts';
import { tempDir } from '../helpers/nats.ts';

describe('AES-256-GCM', () => {
  it('round-trips, and refuses another key, altered data or other associated data', () => {
    const key = randomBytes(32);
    const data = encryptBytes(key, Buffer.from('alice@example.com'), 'ctx');
    expect(data.includes(Buffer.from('alice'))).toBe(false);
    expect(decryptBytes(key, data, 'ctx').toString()).toBe('alice@example.com');
    expect(() => decryptBytes(randomBytes(32), data, 'ctx')).toThrow();
    expect(() => decryptBytes(key, data, 'other')).toThrow();
    const altered = Buffer.from(data);
    altered[altered.length - 1]! ^= 1;
    expect(() => decryptBytes(key, altered, 'ctx')).toThrow();
  });

  it('uses a fresh IV each time', () => {
    const key = randomBytes(32);
    expect(encryptBytes(key, Buffer.from('x'), 'a').equals(encryptBytes(key, Buffer.from('x'), 'a'))).toBe(false);
  });
});

describe('the master key', () => {
  const b64 = randomBytes(32).toString('base64');

  it('parses 32 bytes as base64 or hex and refuses other lengths, saying how to make one', () => {
    const hex = Buffer.from(b64, 'base64').toString('hex');
    expect(parseMasterKey(b64).id).toBe(parseMasterKey(hex).id);
    expect(() => parseMasterKey('c2hvcnQ=')).toThrow('the master key must be 32 random bytes as base64 or 64 hex characters (make one: openssl rand -base64 32), got 5 bytes');
  });

  it('comes from the option, then TROUPE_MASTER_KEY, then a key file, then a generated development key', () => {
    const other = randomBytes(32).toString('base64');
    const file = join(tempDir(), 'key');
    writeFileSync(file, `${other}\n`);
    expect(resolveMasterKey({ masterKey: b64, env: { TROUPE_MASTER_KEY: other } }).source).toBe('option');
    expect(resolveMasterKey({ env: { TROUPE_MASTER_KEY: b64 } })).toMatchObject({ source: 'TROUPE_MASTER_KEY' });
    expect(resolveMasterKey({ env: { TROUPE_MASTER_KEY: b64 } }).key.id).toBe(parseMasterKey(b64).id);
    expect(resolveMasterKey({ env: { TROUPE_MASTER_KEY_FILE: file } }).key.id).toBe(parseMasterKey(other).id);
    expect(() => resolveMasterKey({ env: {}, devKeyFile: false })).toThrow(/no master key: set TROUPE_MASTER_KEY/);

    const dev = join(tempDir(), 'nested', 'master.key');
    const first = resolveMasterKey({ env: {}, devKeyFile: dev });
    expect(existsSync(dev)).toBe(true);
    expect(statSync(dev).mode & 0o777).toBe(0o600);
    expect(resolveMasterKey({ env: {}, devKeyFile: dev }).key.id).toBe(first.key.id);
    expect(parseMasterKey(readFileSync(dev, 'utf8')).id).toBe(first.key.id);
  });

  it('hashes subject names with a key, so the store never holds them', () => {
    const a = parseMasterKey(b64);
    const b = new MasterKey(randomBytes(32));
    expect(a.subjectHash('user:42')).toBe(a.subjectHash('user:42'));
    expect(a.subjectHash('user:42')).not.toBe(b.subjectHash('user:42'));
    expect(a.subjectHash('user:42')).toMatch(/^[A-Za-z0-9_-]{22}$/);
  });
});

describe('the key ring', () => {
  it('creates a key for a new subject once, and looks it up synchronously after', async () => {
    const ring = await KeyRing.inMemory();
    expect(ring.currentKey('user:1')).toBeUndefined();
    const [k1, k2] = await Promise.all([ring.ensure('user:1'), ring.ensure('user:1')]);
    expect(k1).toBe(k2);
    expect(ring.currentKey('user:1')?.kid).toBe(k1);
    expect(ring.key(k1)).toHaveLength(32);
    expect(ring.size).toBe(1);
  });

  it('stores keys wrapped with the master key, never in the clear', async () => {
    const backend = new MemoryKeyBackend();
    const ring = await KeyRing.open(new MasterKey(randomBytes(32)), backend);
    const kid = await ring.ensure('user:1');
    const [stored] = backend.stored();
    expect(stored).toMatchObject({ kid, masterId: ring.master.id });
    expect(Buffer.from(stored!.wrapped).includes(ring.key(kid)!)).toBe(false);
    expect(JSON.stringify(stored)).not.toContain('user:1');
  });

  it('rotates: new values get a new key, old keys stay readable', async () => {
    const ring = await KeyRing.inMemory();
    const old = await ring.ensure('tenant:a');
    const rotated = await ring.rotate('tenant:a');
    expect(rotated).not.toBe(old);
    expect(ring.currentKey('tenant:a')?.kid).toBe(rotated);
    expect(ring.key(old)).toBeInstanceOf(Buffer);
  });

  it('rotates after a maximum age, on the next write', async () => {
    let now = 1_000;
    const ring = await KeyRing.inMemory({ rotateAfterMs: 100, now: () => now });
    const first = await ring.ensure('user:1');
    now += 100;
    expect(ring.currentKey('user:1')).toBeUndefined();
    const second = await ring.ensure('user:1');
    expect(second).not.toBe(first);
    expect(ring.key(first)).toBeInstanceOf(Buffer);
  });

  it('shreds every key of one subject and no other, and tells listeners', async () => {
    const ring = await KeyRing.inMemory();
    const a1 = await ring.ensure('user:a');
    const a2 = await ring.rotate('user:a');
    const b = await ring.ensure('user:b');
    const destroyed: string[] = [];
    ring.onDestroyed((kids) => destroyed.push(...kids));
    expect(await ring.shred('user:a')).toBe(2);
    expect(ring.key(a1)).toBeNull();
    expect(ring.key(a2)).toBeNull();
    expect(ring.isDestroyed(a1)).toBe(true);
    expect(ring.currentKey('user:a')).toBeUndefined();
    expect(ring.key(b)).toBeInstanceOf(Buffer);
    expect(destroyed.sort()).toEqual([a1, a2].sort());
  });

  it('shares keys and shreds between rings over one store (what nodes and consumers do over NATS KV)', async () => {
    const master = new MasterKey(randomBytes(32));
    const backend = new MemoryKeyBackend();
    const node = await KeyRing.open(master, backend);
    const kid = await node.ensure('user:1');
    const consumer = await KeyRing.open(master, backend);
    expect(consumer.key(kid)?.equals(node.key(kid)!)).toBe(true);
    const late = await node.ensure('user:2');
    expect(consumer.key(late)).toBeInstanceOf(Buffer);
    await consumer.shred('user:1');
    expect(node.key(kid)).toBeNull();
  });

  it('loads a kid it never saw from the store, knows a destroyed one, and refuses an unknown one', async () => {
    const master = new MasterKey(randomBytes(32));
    const backend = new MemoryKeyBackend();
    const writer = await KeyRing.open(master, backend);
    const kid = await writer.ensure('user:1');
    // A ring that does not follow the store: it learns keys only by asking for them.
    const notFollowing = (): KeyBackend => ({
      follow: async () => {}, fetch: (k) => backend.fetch(k), create: (k) => backend.create(k), destroy: (s) => backend.destroy(s), close: async () => {},
    });
    const blind = await KeyRing.open(master, notFollowing());
    expect(blind.key(kid)).toBeUndefined();
    expect(await blind.load(kid)).toBeInstanceOf(Buffer);
    await writer.shred('user:1');
    const blind2 = await KeyRing.open(master, notFollowing());
    expect(await blind2.load(kid)).toBeNull();
    await expect(blind2.load('never-was')).rejects.toThrow(/encryption key never-was is in no key store this process can see/);
  });

  it('refuses to open over keys wrapped with another master key', async () => {
    const backend = new MemoryKeyBackend();
    await (await KeyRing.open(new MasterKey(randomBytes(32)), backend)).ensure('user:1');
    await expect(KeyRing.open(new MasterKey(randomBytes(32)), backend)).rejects.toThrow(/1 of 1 stored keys were wrapped with master key [0-9a-f]{16}, but this process has master key [0-9a-f]{16}: give every node and consumer the deployment's master key/);
  });
});

describe('sealed snapshots', () => {
  it('leaves a state built from no sensitive value as it is', async () => {
    const snap = { sv: 1, version: 3, position: 7, state: { balance: 5 } };
    expect(sealSnapshot('Account', 'a-1', snap)).toBe(snap);
  });

  it('seals a state built with keys, opens it with them, and never holds the clear value', async () => {
    const ring = await KeyRing.inMemory();
    const kid = await ring.ensure('customer:c1');
    const state = { email: 'alice@example.com' };
    carryTaint(undefined, state, ring, [kid]);
    expect(stateKeys(state)).toEqual([kid]);
    const sealed = sealSnapshot('Customer', 'c1', { sv: 1, version: 1, position: 1, state })!;
    expect(isSealed(sealed.state)).toBe(true);
    expect(JSON.stringify(sealed)).not.toContain('alice');
    const opened = unsealState(ring, 'Customer', 'c1', sealed.state as never);
    expect(opened?.state).toEqual(state);
    expect(stateKeys(opened!.state)).toEqual([kid]);
    // Bound to its actor: the same bytes do not open as another actor's snapshot.
    expect(unsealState(ring, 'Customer', 'c2', sealed.state as never)).toBeUndefined();
  });

  it('carries the keys from state to state, and needs every one of them', async () => {
    const ring = await KeyRing.inMemory();
    const a = await ring.ensure('user:a');
    const b = await ring.ensure('user:b');
    const s1 = { n: 1 };
    carryTaint(undefined, s1, ring, [a]);
    const s2 = { n: 2 };
    carryTaint(s1, s2, ring, null);
    const s3 = { n: 3 };
    carryTaint(s2, s3, ring, [b, a]);
    expect([...stateKeys(s3)].sort()).toEqual([a, b].sort());
    const sealed = sealState('T', '1', s3);
    await ring.shred('user:b');
    expect(unsealState(ring, 'T', '1', sealed as never)).toBeUndefined();
    // And a state built with a destroyed key cannot be sealed at all: no snapshot is written.
    expect(sealState('T', '1', s3)).toBeNull();
    expect(sealSnapshot('T', '1', { sv: 1, version: 3, position: 1, state: s3 })).toBeNull();
  });
});
