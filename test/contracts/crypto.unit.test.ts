import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  decryptBytes, encryptBytes, formatMasterKeys, KeyRing, MasterKey, MasterKeys, MemoryKeyBackend, parseMasterKey, parseMasterKeys, resolveMasterKey,
  resolveMasterKeys, type KeyBackend,
} from '../../runtime/contracts/crypto.ts';
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
    writeFileSync(file, `${other}\n`, { mode: 0o600 });
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
    expect(parseMasterKeys(readFileSync(dev, 'utf8')).active.id).toBe(first.key.id);
  });

  it('reads several keys with ids, the first one active, and refuses an id that is not the key\'s', () => {
    const a = randomBytes(32).toString('base64');
    const b = randomBytes(32).toString('hex');
    const [ida, idb] = [parseMasterKey(a).id, parseMasterKey(b).id];
    const keys = parseMasterKeys(`# comment\n${ida} ${a}\n\n${b}  # older\n`);
    expect(keys.ids).toEqual([ida, idb]);
    expect(keys.active.id).toBe(ida);
    expect(parseMasterKeys(`${b},${a}`).ids).toEqual([idb, ida]);
    expect(parseMasterKeys(formatMasterKeys([{ id: ida, key: a }, { id: idb, key: b }])).ids).toEqual([ida, idb]);
    expect(() => parseMasterKeys(`${idb} ${a}`, 'TROUPE_MASTER_KEYS')).toThrow(`TROUPE_MASTER_KEYS: entry 1 says id ${idb}, but its key's id is ${ida}`);
    expect(resolveMasterKeys({ env: { TROUPE_MASTER_KEYS: `${a},${b}`, TROUPE_MASTER_KEY: b } })).toMatchObject({ source: 'TROUPE_MASTER_KEYS' });
    // No key material in any message.
    let e = new Error('not thrown');
    try {
      parseMasterKeys(`${a} ${b}`);
    } catch (err) {
      e = err as Error;
    }
    expect(e.message).toContain('entry 1 says id');
    expect(e.message).not.toContain(a);
    expect(e.message).not.toContain(b);
  });

  it('refuses a key file that group or others may read, naming chmod 600', () => {
    const file = join(tempDir(), 'master.keys');
    writeFileSync(file, `${b64}\n`, { mode: 0o600 });
    expect(resolveMasterKeys({ env: { TROUPE_MASTER_KEY_FILE: file } }).keys.active.id).toBe(parseMasterKey(b64).id);
    chmodSync(file, 0o644);
    expect(() => resolveMasterKeys({ env: { TROUPE_MASTER_KEY_FILE: file } })).toThrow(`the master key file ${file} may be read by group or others (mode 0644): run chmod 600 ${file}`);
    chmodSync(file, 0o640);
    expect(() => resolveMasterKeys({ masterKeyFile: file, env: {} })).toThrow(/mode 0640\): run chmod 600/);
  });

  it('refuses a master key file, or a development key, inside node_modules', () => {
    const dir = join(tempDir(), 'node_modules', 'troupe');
    expect(() => resolveMasterKeys({ env: {}, devKeyFile: join(dir, '.troupe', 'master.key') })).toThrow(/will not create a development master key inside node_modules/);
    expect(existsSync(dir)).toBe(false);
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
    expect(Object.keys(stored!.wraps)).toEqual([ring.master.id]);
    expect(Buffer.from(stored!.wraps[ring.master.id]!).includes(ring.key(kid)!)).toBe(false);
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
      rewrap: (k, s, n) => backend.rewrap(k, s, n), nameKey: () => backend.nameKey(), initNameKey: (w) => backend.initNameKey(w), rewrapNameKey: (n) => backend.rewrapNameKey(n),
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

describe('master-key rotation', () => {
  it('rewraps every key under a new master key: a process holding only the new key reads, hashes and shreds what the old one wrote', async () => {
    const oldKey = new MasterKey(randomBytes(32));
    const newKey = new MasterKey(randomBytes(32));
    const backend = new MemoryKeyBackend();
    const before = await KeyRing.open(oldKey, backend);
    const a = await before.ensure('user:a');
    const b = await before.ensure('user:b');
    const gone = await before.ensure('user:gone');
    await before.shred('user:gone');

    const rotating = await KeyRing.open(new MasterKeys([newKey, oldKey]), backend);
    expect(await rotating.rewrapAll()).toEqual({ rewrapped: 2, destroyed: 0, unreadable: 0 });
    // The running ring, holding the old key only, still reads everything and learns the new wrappings.
    expect(before.key(a)).toBeInstanceOf(Buffer);
    expect(before.wrapCounts()).toEqual({ [oldKey.id]: 2, [newKey.id]: 2 });
    const c = await before.ensure('user:c'); // written during the rotation, under the old key only

    expect(await rotating.rewrapAll({ drop: [oldKey.id] })).toEqual({ rewrapped: 3, destroyed: 0, unreadable: 0 });
    expect(backend.stored().every((k) => Object.keys(k.wraps).join() === newKey.id)).toBe(true);

    const after = await KeyRing.open(newKey, backend);
    for (const kid of [a, b, c]) expect(after.key(kid)?.equals(before.key(kid)!), kid).toBe(true);
    expect(after.key(gone)).toBeNull(); // shredded before: stays shredded
    expect(after.subjectHash('user:a')).toBe(before.subjectHash('user:a'));
    expect(after.currentKey('user:a')?.kid).toBe(a);
    expect(await after.shred('user:a')).toBe(1);
    expect(before.key(a)).toBeNull();
    await expect(KeyRing.open(oldKey, backend)).rejects.toThrow(/stored keys were wrapped with master key [0-9a-f]{16}, but this process has master key/);
  });

  it('keeps the hashes of a deployment whose name key was not stored yet (derived from its first master key)', async () => {
    const oldKey = new MasterKey(randomBytes(32));
    const backend = new MemoryKeyBackend();
    const ring = await KeyRing.open(oldKey, backend);
    expect(ring.subjectHash('user:1')).toBe(oldKey.subjectHash('user:1'));
    const rotated = await KeyRing.open(new MasterKeys([new MasterKey(randomBytes(32)), oldKey]), backend);
    expect(rotated.subjectHash('user:1')).toBe(oldKey.subjectHash('user:1'));
  });

  it('does not bring a key shredded during the rotation back', async () => {
    const oldKey = new MasterKey(randomBytes(32));
    const backend = new MemoryKeyBackend();
    const ring = await KeyRing.open(oldKey, backend);
    await ring.ensure('user:a');
    const kid = await ring.ensure('user:b');
    const rotating = await KeyRing.open(new MasterKeys([new MasterKey(randomBytes(32)), oldKey]), backend);
    await ring.shred('user:b');
    expect(await backend.rewrap(kid, ring.subjectHash('user:b'), (w) => w)).toBe(false);
    expect(await rotating.rewrapAll()).toEqual({ rewrapped: 1, destroyed: 0, unreadable: 0 });
    expect(await backend.fetch(kid)).toBe('destroyed');
  });

  it('refuses to retire the active master key', async () => {
    const ring = await KeyRing.inMemory();
    await expect(ring.rewrapAll({ drop: [ring.master.id] })).rejects.toThrow(`cannot retire master key ${ring.master.id}: it is the active one; rotate to a new master key first`);
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
