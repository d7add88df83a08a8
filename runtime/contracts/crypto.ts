/**
 * Encryption of sensitive fields: AES-256-GCM (node:crypto), one data key per subject (a user,
 * a tenant, an aggregate), keys wrapped with a master key, rotation and crypto-shredding.
 *
 *   master key (env / file / option)          never stored anywhere Troupe writes
 *     └─ wraps ─▶ subject keys (32 B each)     stored wrapped in a KeyBackend (NATS KV in production)
 *                   └─ encrypt ─▶ field values  { $enc: kid, d: iv | tag | ciphertext } in the log
 *
 * A subject may have several keys (rotation adds one); new values use the newest, old values
 * name theirs by key id (`kid`), so they stay readable. Shredding a subject destroys all its
 * keys in the backend (a PURGE marker remains), after which every value written under them is
 * unreadable everywhere and readers get a redacted marker instead.
 *
 * Master-key rotation: a stored key carries one wrapping per master key (`wraps`, by master id).
 * A process wraps the keys it creates under every master key it holds and unwraps with any;
 * `rewrapAll` adds the wrappings of a new master key to every stored key, or drops a retired
 * one's (master-rotation.ts drives it). Subject names are hashed with the deployment's name key,
 * derived once from its first master key and stored wrapped like a subject key, so the hashes,
 * and with them shredding, survive every rotation.
 *
 * The KeyRing is the in-memory view of one thread: synchronous lookups for the write path,
 * asynchronous creation (awaited before an event that needs a new key is decided again).
 *
 * The AES-GCM primitives are in cipher.ts and the master key in master-key.ts; both are
 * re-exported here.
 */
import { randomBytes } from 'node:crypto';
import { KeysUnavailableError } from '../errors.ts';
import { KEY_BYTES } from './cipher.ts';
import { MASTER_KEY_ENV, MASTER_KEY_FILE_ENV, MasterKey, MasterKeys, subjectHashWith } from './master-key.ts';

export { decryptBytes, encryptBytes, KEY_BYTES } from './cipher.ts';
export {
  checkKeyFile, DEV_MASTER_KEY_FILE, formatMasterKeys, MASTER_KEY_ENV, MASTER_KEY_FILE_ENV, MASTER_KEYS_ENV, MasterKey, MasterKeys,
  parseMasterKey, parseMasterKeys, resolveMasterKey, resolveMasterKeys, type MasterKeySource,
} from './master-key.ts';

/** A key wrapped with each of several master keys: master id → wrapped bytes. */
export type Wraps = Readonly<Record<string, Uint8Array>>;

// ── key storage ────────────────────────────────────────────────────────────────────────────

/** A subject key as stored: wrapped with one or several master keys. */
export interface StoredKey {
  readonly kid: string;
  readonly subjectHash: string;
  readonly createdAt: number;
  /** The key wrapped with each master key, by `MasterKey.id`. */
  readonly wraps: Wraps;
}

/** Where wrapped keys live. Every node and consumer of a deployment must see the same store. */
export interface KeyBackend {
  /** Store a new key; its kid is fresh, so this never replaces one. */
  create(key: StoredKey): Promise<void>;
  /** Destroy every key of a subject, leaving a marker; returns the destroyed kids. */
  destroy(subjectHash: string): Promise<string[]>;
  /** One key by id: the stored key, 'destroyed' when a marker remains, undefined when never stored. */
  fetch(kid: string): Promise<StoredKey | 'destroyed' | undefined>;
  /**
   * Deliver every stored key and every destroy marker, then keep delivering changes (from any
   * process). Resolves once the keys stored so far were delivered.
   */
  follow(onKey: (key: StoredKey) => void, onDestroyed: (kid: string, subjectHash: string) => void): Promise<void>;
  /**
   * Replace the wrappings of a stored key (master-key rotation), atomically against a concurrent
   * destroy: a destroyed key stays destroyed. `next` gets the stored wrappings and returns the
   * new ones. Resolves false when the key is destroyed or was never stored.
   */
  rewrap(kid: string, subjectHash: string, next: (current: Wraps) => Wraps): Promise<boolean>;
  /** The deployment's subject-name key, wrapped, or undefined when none is stored yet. */
  nameKey(): Promise<Wraps | undefined>;
  /** Store the name key unless one is stored; resolves with the stored one (another process's when it was first). */
  initNameKey(wraps: Wraps): Promise<Wraps>;
  /** Replace the name key's wrappings (master-key rotation). */
  rewrapNameKey(next: (current: Wraps) => Wraps): Promise<void>;
  close(): Promise<void>;
}

/** A KeyBackend in memory: for tests and single-process tools. Share one instance to share keys. */
export class MemoryKeyBackend implements KeyBackend {
  private readonly keys = new Map<string, StoredKey>();
  private readonly destroyed = new Map<string, string>();
  private readonly followers = new Set<{ onKey: (key: StoredKey) => void; onDestroyed: (kid: string, subjectHash: string) => void }>();
  private names: Wraps | undefined;

  async create(key: StoredKey): Promise<void> {
    if (this.keys.has(key.kid) || this.destroyed.has(key.kid)) throw new Error(`key ${key.kid} exists`);
    this.keys.set(key.kid, key);
    for (const f of this.followers) f.onKey(key);
  }

  async destroy(subjectHash: string): Promise<string[]> {
    const kids = [...this.keys.values()].filter((k) => k.subjectHash === subjectHash).map((k) => k.kid);
    for (const kid of kids) {
      this.keys.delete(kid);
      this.destroyed.set(kid, subjectHash);
      for (const f of this.followers) f.onDestroyed(kid, subjectHash);
    }
    return kids;
  }

  async fetch(kid: string): Promise<StoredKey | 'destroyed' | undefined> {
    return this.keys.get(kid) ?? (this.destroyed.has(kid) ? 'destroyed' : undefined);
  }

  async follow(onKey: (key: StoredKey) => void, onDestroyed: (kid: string, subjectHash: string) => void): Promise<void> {
    for (const k of this.keys.values()) onKey(k);
    for (const [kid, sh] of this.destroyed) onDestroyed(kid, sh);
    this.followers.add({ onKey, onDestroyed });
  }

  async rewrap(kid: string, _subjectHash: string, next: (current: Wraps) => Wraps): Promise<boolean> {
    const k = this.keys.get(kid);
    if (k === undefined) return false;
    const updated = { ...k, wraps: next(k.wraps) };
    this.keys.set(kid, updated);
    for (const f of this.followers) f.onKey(updated);
    return true;
  }

  async nameKey(): Promise<Wraps | undefined> {
    return this.names;
  }

  async initNameKey(wraps: Wraps): Promise<Wraps> {
    this.names ??= wraps;
    return this.names;
  }

  async rewrapNameKey(next: (current: Wraps) => Wraps): Promise<void> {
    if (this.names !== undefined) this.names = next(this.names);
  }

  /** Every stored key as it is at rest (wrapped), for tests that look for clear text. */
  stored(): StoredKey[] {
    return [...this.keys.values()];
  }

  async close(): Promise<void> {
    this.followers.clear();
  }
}

// ── the key ring ───────────────────────────────────────────────────────────────────────────

interface RingKey {
  readonly kid: string;
  readonly subjectHash: string;
  readonly createdAt: number;
  wraps: Wraps | null;
  key: Buffer | null;
}

/** What `KeyRing.key(kid)` knows: the key, `null` when it was destroyed, `undefined` when it never saw it. */
export type KeyLookup = Buffer | null | undefined;

export interface KeyRingOptions {
  /** Subject keys older than this are rotated the next time a value is written for the subject. Default: never. */
  rotateAfterMs?: number;
  /** Clock for rotation decisions and creation times. */
  now?: () => number;
}

/**
 * One thread's view of the subject keys: every stored key (unwrapped on first use) and every
 * destroyed kid, kept current by following the backend, so the write path looks keys up
 * synchronously.
 */
export class KeyRing {
  private readonly byKid = new Map<string, RingKey>();
  private readonly destroyedKids = new Set<string>();
  /** subjectHash → the newest key (rotation picks the newest; ties go to the larger kid). */
  private readonly current = new Map<string, RingKey>();
  private readonly creating = new Map<string, Promise<string>>();
  private readonly listeners = new Set<(kids: readonly string[]) => void>();
  private readonly rotateAfterMs: number;
  private readonly now: () => number;
  private closed = false;

  /** The subject-name key (see the file's header); set by open(). */
  private names: Buffer = Buffer.alloc(0);
  /** The master keys of this process: the active one first. */
  readonly masters: MasterKeys;

  private constructor(master: MasterKey | MasterKeys, readonly backend: KeyBackend, opts: KeyRingOptions) {
    this.masters = MasterKeys.of(master);
    this.rotateAfterMs = opts.rotateAfterMs ?? Number.POSITIVE_INFINITY;
    this.now = opts.now ?? Date.now;
  }

  /** The active master key (the first of `masters`). */
  get master(): MasterKey {
    return this.masters.active;
  }

  /** Open a ring over a backend; resolves once every stored key is known. */
  static async open(master: MasterKey | MasterKeys, backend: KeyBackend, opts: KeyRingOptions = {}): Promise<KeyRing> {
    const ring = new KeyRing(master, backend, opts);
    try {
      await backend.follow((k) => ring.learn(k), (kid, sh) => ring.forget(kid, sh));
      const foreign = [...ring.byKid.values()].filter((k) => ring.masterFor(k.wraps) === undefined);
      if (foreign.length > 0) {
        const stored = Object.keys(foreign[0]!.wraps!);
        throw new KeysUnavailableError(`${foreign.length} of ${ring.byKid.size} stored keys were wrapped with master key ${stored.join(', ')}, but this process has master key ${ring.masters.ids.join(', ')}: give every node and consumer the deployment's master key (${MASTER_KEY_ENV} or ${MASTER_KEY_FILE_ENV})`, { masterId: ring.master.id, storedMasterId: stored[0] }, undefined, false);
      }
      await ring.openNameKey();
    } catch (e) {
      await backend.close();
      throw e;
    }
    return ring;
  }

  /** The held master key that unwraps one of these wrappings, preferring the active one. */
  private masterFor(wraps: Wraps | null): MasterKey | undefined {
    if (wraps === null) return undefined;
    return this.masters.all.find((m) => wraps[m.id] !== undefined);
  }

  /** Every held master key wraps `key`: what a process stores, so that any of them unwraps it. */
  private wrapAll(wrap: (m: MasterKey) => Buffer): Record<string, Uint8Array> {
    const out: Record<string, Uint8Array> = {};
    for (const m of this.masters.all) out[m.id] = wrap(m);
    return out;
  }

  /**
   * The name key: the stored one, or, for a deployment that has none stored yet, the key derived
   * from the master key that wrapped its oldest subject key (how names were hashed before the
   * name key was stored), else from the active master key; then stored wrapped.
   */
  private async openNameKey(): Promise<void> {
    let wraps = await this.backend.nameKey();
    if (wraps === undefined) {
      let oldest: RingKey | undefined;
      for (const k of this.byKid.values()) if (oldest === undefined || k.createdAt < oldest.createdAt) oldest = k;
      const origin = oldest === undefined ? this.master : this.masterFor(oldest.wraps)!;
      const derived = origin.derivedNameKey();
      wraps = await this.backend.initNameKey(this.wrapAll((m) => m.wrapNameKey(derived)));
    }
    const m = this.masterFor(wraps);
    if (m === undefined) {
      throw new KeysUnavailableError(`the key store's subject-name key was wrapped with master key ${Object.keys(wraps).join(', ')}, but this process has master key ${this.masters.ids.join(', ')}: give every node and consumer the deployment's master key (${MASTER_KEY_ENV} or ${MASTER_KEY_FILE_ENV})`, { masterId: this.master.id }, undefined, false);
    }
    this.names = m.unwrapNameKey(wraps[m.id]!);
  }

  /** The keyed hash that stands for a subject name in the key store (stable across master-key rotations). */
  subjectHash(subject: string): string {
    return subjectHashWith(this.names, subject);
  }

  /** A ring with its own in-memory backend and a random master key: for tests and the test kit. */
  static async inMemory(opts: KeyRingOptions = {}): Promise<KeyRing> {
    return KeyRing.open(new MasterKey(randomBytes(KEY_BYTES)), new MemoryKeyBackend(), opts);
  }

  private learn(k: StoredKey): void {
    if (this.destroyedKids.has(k.kid)) return;
    const known = this.byKid.get(k.kid);
    if (known !== undefined) {
      known.wraps = k.wraps; // rewrapped (master-key rotation); the key itself never changes
      return;
    }
    const rk: RingKey = { kid: k.kid, subjectHash: k.subjectHash, createdAt: k.createdAt, wraps: k.wraps, key: null };
    this.byKid.set(k.kid, rk);
    const cur = this.current.get(k.subjectHash);
    if (cur === undefined || cur.createdAt < rk.createdAt || (cur.createdAt === rk.createdAt && cur.kid < rk.kid)) this.current.set(k.subjectHash, rk);
  }

  private forget(kid: string, subjectHash: string): void {
    if (this.destroyedKids.has(kid)) return;
    this.destroyedKids.add(kid);
    const rk = this.byKid.get(kid);
    if (rk !== undefined) {
      rk.key?.fill(0);
      rk.key = null;
      rk.wraps = null;
      this.byKid.delete(kid);
    }
    if (this.current.get(subjectHash)?.kid === kid) {
      this.current.delete(subjectHash);
      let best: RingKey | undefined;
      for (const k of this.byKid.values()) {
        if (k.subjectHash === subjectHash && (best === undefined || best.createdAt < k.createdAt || (best.createdAt === k.createdAt && best.kid < k.kid))) best = k;
      }
      if (best !== undefined) this.current.set(subjectHash, best);
    }
    for (const l of this.listeners) {
      try {
        l([kid]);
      } catch {
        // A listener's failure must not stop this ring from learning of later keys.
      }
    }
  }

  private unwrap(rk: RingKey): Buffer {
    if (rk.key !== null) return rk.key;
    const m = this.masterFor(rk.wraps);
    if (m === undefined) {
      throw new KeysUnavailableError(`key ${rk.kid} was wrapped with master key ${Object.keys(rk.wraps ?? {}).join(', ')}, but this process has master key ${this.masters.ids.join(', ')}: give every node and consumer the deployment's master key (${MASTER_KEY_ENV})`, { kid: rk.kid }, undefined, false);
    }
    rk.key = m.unwrap(rk.kid, rk.subjectHash, rk.wraps![m.id]!);
    return rk.key;
  }

  /** The key of a kid, synchronously: null once destroyed, undefined when this ring never saw it (see `load`). */
  key(kid: string): KeyLookup {
    const rk = this.byKid.get(kid);
    if (rk !== undefined) return this.unwrap(rk);
    return this.destroyedKids.has(kid) ? null : undefined;
  }

  /** True when the kid was destroyed (shredded). */
  isDestroyed(kid: string): boolean {
    return this.destroyedKids.has(kid);
  }

  /** The key new values of a subject are written with, synchronously; undefined when it has none yet (call `ensure`). */
  currentKey(subject: string): { kid: string; key: Buffer } | undefined {
    const rk = this.current.get(this.subjectHash(subject));
    if (rk === undefined || this.now() - rk.createdAt >= this.rotateAfterMs) return undefined;
    return { kid: rk.kid, key: this.unwrap(rk) };
  }

  /** Make sure the subject has a current key, creating (and storing) one if needed. Resolves with its kid. */
  ensure(subject: string): Promise<string> {
    const cur = this.currentKey(subject);
    if (cur !== undefined) return Promise.resolve(cur.kid);
    return this.create(this.subjectHash(subject));
  }

  /** Give a subject a new key for new values; values written under older keys stay readable. Resolves with the new kid. */
  rotate(subject: string): Promise<string> {
    return this.create(this.subjectHash(subject), true);
  }

  /** Rotate every subject this ring knows. Resolves with the number of subjects rotated. */
  async rotateAll(): Promise<number> {
    const hashes = [...this.current.keys()];
    for (const h of hashes) await this.create(h, true);
    return hashes.length;
  }

  private create(subjectHash: string, force = false): Promise<string> {
    this.assertOpen();
    const pending = this.creating.get(subjectHash);
    if (pending !== undefined && !force) return pending;
    const p = (async () => {
      const kid = randomBytes(9).toString('base64url');
      const key = randomBytes(KEY_BYTES);
      let createdAt = this.now();
      const cur = this.current.get(subjectHash);
      if (cur !== undefined && cur.createdAt >= createdAt) createdAt = cur.createdAt + 1; // newest wins, whatever the clock says
      const stored: StoredKey = { kid, subjectHash, createdAt, wraps: this.wrapAll((m) => m.wrap(kid, subjectHash, key)) };
      try {
        await this.backend.create(stored);
      } catch (e) {
        throw new KeysUnavailableError(`cannot store a new encryption key: ${(e as Error).message}`, {}, e);
      }
      this.learn(stored);
      const rk = this.byKid.get(kid);
      if (rk !== undefined) rk.key = key;
      return kid;
    })();
    this.creating.set(subjectHash, p);
    const done = () => { if (this.creating.get(subjectHash) === p) this.creating.delete(subjectHash); };
    p.then(done, done);
    return p;
  }

  /**
   * Crypto-shredding: destroy every key of a subject, in the store and so in every process
   * that follows it. Values written under those keys become unreadable for good; readers get
   * the redacted marker. Resolves with the number of keys destroyed.
   */
  async shred(subject: string): Promise<number> {
    this.assertOpen();
    const subjectHash = this.subjectHash(subject);
    let kids: string[];
    try {
      kids = await this.backend.destroy(subjectHash);
    } catch (e) {
      throw new KeysUnavailableError(`cannot destroy the keys of a subject: ${(e as Error).message}`, {}, e);
    }
    for (const kid of kids) this.forget(kid, subjectHash);
    for (const rk of [...this.byKid.values()]) if (rk.subjectHash === subjectHash) this.forget(rk.kid, subjectHash);
    return kids.length;
  }

  /** Ask the store for a kid this ring has not seen (written by another process a moment ago). */
  async load(kid: string): Promise<KeyLookup> {
    const known = this.key(kid);
    if (known !== undefined) return known;
    let found: StoredKey | 'destroyed' | undefined;
    try {
      found = await this.backend.fetch(kid);
    } catch (e) {
      throw new KeysUnavailableError(`cannot read encryption key ${kid}: ${(e as Error).message}`, { kid }, e);
    }
    if (found === 'destroyed') {
      this.destroyedKids.add(kid);
      return null;
    }
    if (found === undefined) {
      throw new KeysUnavailableError(`encryption key ${kid} is in no key store this process can see: check that it reads the deployment's key bucket (the stream's <stream>_keys)`, { kid }, undefined, false);
    }
    this.learn(found);
    return this.key(kid);
  }

  /**
   * Master-key rotation: give every stored key (and the name key) a wrapping under every master
   * key this ring holds, and remove the wrappings of the master ids in `drop` (a retired key).
   * Wrappings under master keys this ring does not hold are kept. A key destroyed meanwhile stays
   * destroyed. A key that no held master key unwraps is left as it is and counted `unreadable`.
   */
  async rewrapAll(opts: { drop?: readonly string[] } = {}): Promise<{ rewrapped: number; destroyed: number; unreadable: number }> {
    this.assertOpen();
    const drop = new Set(opts.drop ?? []);
    for (const id of drop) {
      if (this.masters.active.id === id) throw new KeysUnavailableError(`cannot retire master key ${id}: it is the active one; rotate to a new master key first`, { masterId: id }, undefined, false);
    }
    const keep = this.masters.all.filter((m) => !drop.has(m.id));
    if (keep.length === 0) throw new KeysUnavailableError('cannot retire every master key', {}, undefined, false);
    const next = (current: Wraps, plain: Buffer, wrap: (m: MasterKey, plain: Buffer) => Buffer): Wraps => {
      const out: Record<string, Uint8Array> = {};
      for (const [id, w] of Object.entries(current)) if (!drop.has(id)) out[id] = w;
      for (const m of keep) out[m.id] ??= wrap(m, plain);
      return out;
    };
    await this.backend.rewrapNameKey((current) => next(current, this.names, (m, k) => m.wrapNameKey(k)));
    let rewrapped = 0;
    let destroyed = 0;
    let unreadable = 0;
    for (const rk of [...this.byKid.values()]) {
      let plain: Buffer;
      try {
        plain = this.unwrap(rk);
      } catch {
        unreadable++;
        continue;
      }
      const ok = await this.backend.rewrap(rk.kid, rk.subjectHash, (current) => next(current, plain, (m, k) => m.wrap(rk.kid, rk.subjectHash, k)));
      if (ok) rewrapped++;
      else destroyed++;
    }
    return { rewrapped, destroyed, unreadable };
  }

  /** How many live keys each master key wraps (by master id), as this ring knows them. */
  wrapCounts(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const rk of this.byKid.values()) for (const id of Object.keys(rk.wraps ?? {})) counts[id] = (counts[id] ?? 0) + 1;
    return counts;
  }

  /** Called with the kids destroyed by any process, as this ring learns of them. Returns an unsubscribe function. */
  onDestroyed(listener: (kids: readonly string[]) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Number of live keys this ring knows. */
  get size(): number {
    return this.byKid.size;
  }

  private assertOpen(): void {
    if (this.closed) throw new KeysUnavailableError('the key ring is closed', {}, undefined, false);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.listeners.clear();
    for (const rk of this.byKid.values()) rk.key?.fill(0);
    await this.backend.close();
  }
}
