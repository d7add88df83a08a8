/**
 * The master keys, which wrap every subject key (crypto.ts). Only their ids (fingerprints) are
 * ever stored.
 *
 * A deployment holds one or several master keys: several while one is rotated out (see
 * master-rotation.ts). They come from, in order: an option, TROUPE_MASTER_KEYS (several),
 * TROUPE_MASTER_KEY (one), a key file (option, or TROUPE_MASTER_KEY_FILE), or, in development,
 * a key generated once into the project's data folder.
 *
 * Key list format (the file, or TROUPE_MASTER_KEYS): one key per line (or comma separated in the
 * variable), each `<id> <key>` or `<key>` alone; `#` starts a comment. The id is the key's
 * fingerprint (`MasterKey.id`): when written, it must match the key. The FIRST key is the
 * active one; the others are older keys kept to unwrap what they wrapped.
 *
 *   # troupe master keys: the first is active
 *   7c0d2a4e9b1f3a55 q2Vb0cJ2...base64...=
 *   1e9f0a3b77c4d012 Zk3m8Q1x...base64...=
 *
 * A key file must be readable by its owner alone (chmod 600): a file that group or others may
 * access is refused.
 */
import { createHash, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve as resolvePath, sep } from 'node:path';
import { KeysUnavailableError } from '../errors.ts';
import { decryptBytes, encryptBytes, KEY_BYTES } from './cipher.ts';

export const MASTER_KEY_ENV = 'TROUPE_MASTER_KEY';
export const MASTER_KEYS_ENV = 'TROUPE_MASTER_KEYS';
export const MASTER_KEY_FILE_ENV = 'TROUPE_MASTER_KEY_FILE';
/**
 * The development master key, generated when none is configured: in the project's data folder
 * (`.troupe/`, next to `.troupe/data`), not in a node's dataDir, which is a cache that may be
 * deleted. Relative to the working directory.
 */
export const DEV_MASTER_KEY_FILE = '.troupe/master.key';

const NAME_KEY_AAD = 'troupe/subject-names';

/** A key that wraps subject keys. Only its id (a fingerprint) is ever stored. */
export class MasterKey {
  /** Fingerprint stored with every wrapped key, to tell a wrong master key from a destroyed key. */
  readonly id: string;
  readonly #wrap: Buffer;
  readonly #names: Buffer;

  constructor(bytes: Uint8Array) {
    if (bytes.length !== KEY_BYTES) throw new KeysUnavailableError(`a master key must be ${KEY_BYTES} bytes, got ${bytes.length}`, {}, undefined, false);
    const derive = (info: string) => Buffer.from(hkdfSync('sha256', bytes, Buffer.alloc(0), info, KEY_BYTES));
    this.#wrap = derive('troupe/wrap/1');
    this.#names = derive('troupe/subject-names/1');
    this.id = createHash('sha256').update(derive('troupe/master-id/1')).digest('hex').slice(0, 16);
  }

  /**
   * The subject-name key this master key derives. A deployment's name key is derived once, from
   * its first master key, and then stored wrapped (see KeyRing): rotating the master key does
   * not change the hashes that stand for subject names.
   */
  derivedNameKey(): Buffer {
    return Buffer.from(this.#names);
  }

  /** Subject names never reach storage: a keyed hash stands for them (no dictionary attack without the name key). */
  subjectHash(subject: string): string {
    return subjectHashWith(this.#names, subject);
  }

  wrap(kid: string, subjectHash: string, key: Uint8Array): Buffer {
    return encryptBytes(this.#wrap, key, `${kid}.${subjectHash}`);
  }

  unwrap(kid: string, subjectHash: string, wrapped: Uint8Array): Buffer {
    return decryptBytes(this.#wrap, wrapped, `${kid}.${subjectHash}`);
  }

  wrapNameKey(key: Uint8Array): Buffer {
    return encryptBytes(this.#wrap, key, NAME_KEY_AAD);
  }

  unwrapNameKey(wrapped: Uint8Array): Buffer {
    return decryptBytes(this.#wrap, wrapped, NAME_KEY_AAD);
  }
}

/** The keyed hash that stands for a subject name. */
export function subjectHashWith(nameKey: Uint8Array, subject: string): string {
  return createHmac('sha256', nameKey).update(subject, 'utf8').digest('base64url').slice(0, 22);
}

/** The master keys of one process: the active one wraps new keys; all of them unwrap. */
export class MasterKeys {
  readonly active: MasterKey;
  readonly all: readonly MasterKey[];

  constructor(keys: readonly MasterKey[]) {
    if (keys.length === 0) throw new KeysUnavailableError('no master key given', {}, undefined, false);
    const seen = new Set<string>();
    const all: MasterKey[] = [];
    for (const k of keys) if (!seen.has(k.id)) { seen.add(k.id); all.push(k); }
    this.all = all;
    this.active = all[0]!;
  }

  static of(key: MasterKey | MasterKeys): MasterKeys {
    return key instanceof MasterKeys ? key : new MasterKeys([key]);
  }

  get id(): string {
    return this.active.id;
  }

  get ids(): string[] {
    return this.all.map((k) => k.id);
  }

  byId(id: string): MasterKey | undefined {
    return this.all.find((k) => k.id === id);
  }
}

function keyBytes(text: string, what: string): Buffer {
  const t = text.trim();
  const bytes = /^[0-9a-fA-F]{64}$/.test(t) ? Buffer.from(t, 'hex') : Buffer.from(t, /[-_]/.test(t) ? 'base64url' : 'base64');
  if (bytes.length !== KEY_BYTES) {
    throw new KeysUnavailableError(`${what} must be ${KEY_BYTES} random bytes as base64 or 64 hex characters (make one: openssl rand -base64 32), got ${bytes.length} bytes`, {}, undefined, false);
  }
  return bytes;
}

/** 32 bytes as base64, base64url or 64 hex characters. */
export function parseMasterKey(text: string | Uint8Array, what = 'the master key'): MasterKey {
  if (typeof text !== 'string') return new MasterKey(text);
  return new MasterKey(keyBytes(text, what));
}

/**
 * A key list: one entry per line (or comma separated), each `<id> <key>` or `<key>`, `#`
 * comments. The first is the active key. Never puts key material in an error message.
 */
export function parseMasterKeys(text: string, what = 'the master key list'): MasterKeys {
  return new MasterKeys(readMasterKeyList(text, what).map((e) => e.master));
}

/** The entries of a key list, as written (the key's text) and parsed. */
export function readMasterKeyList(text: string, what = 'the master key list'): { id: string; key: string; master: MasterKey }[] {
  const keys: { id: string; key: string; master: MasterKey }[] = [];
  const entries = text.split('\n').flatMap((l) => l.replace(/#.*$/, '').split(',')).map((l) => l.trim()).filter((l) => l !== '');
  entries.forEach((entry, i) => {
    const parts = entry.split(/\s+/);
    if (parts.length > 2) throw new KeysUnavailableError(`${what}: entry ${i + 1} must be "<id> <key>" or "<key>"`, {}, undefined, false);
    const key = new MasterKey(keyBytes(parts.at(-1)!, `${what}: entry ${i + 1}`));
    if (parts.length === 2 && parts[0] !== key.id) {
      // Echo the written id only when it looks like one: a key pasted in its place must not reach a log.
      const said = /^[0-9a-f]{16}$/.test(parts[0]!) ? parts[0]! : '(not a 16-hex-digit id)';
      throw new KeysUnavailableError(`${what}: entry ${i + 1} says id ${said}, but its key's id is ${key.id} (the id is the key's fingerprint; fix the id or the key)`, {}, undefined, false);
    }
    keys.push({ id: key.id, key: parts.at(-1)!, master: key });
  });
  if (keys.length === 0) throw new KeysUnavailableError(`${what} holds no key`, {}, undefined, false);
  return keys;
}

/** The text of a key list, the active key first (what `troupe keys rotate` writes). */
export function formatMasterKeys(entries: readonly { id: string; key: string }[]): string {
  return `# Troupe master keys, one "<id> <key>" per line: the first wraps new keys, the others only unwrap.\n# Keep this file readable by its owner alone (chmod 600).\n${entries.map((e) => `${e.id} ${e.key}`).join('\n')}\n`;
}

/**
 * Refuse a key file that group or others may access, and one inside an installed package
 * (node_modules), which a reinstall deletes and which is often shipped or shared.
 */
export function checkKeyFile(file: string): void {
  const path = resolvePath(file);
  if (path.split(sep).includes('node_modules')) {
    throw new KeysUnavailableError(`the master key file ${path} is inside node_modules: keep master keys in a file the operator controls, outside any installed package (set ${MASTER_KEY_FILE_ENV})`, { file: path }, undefined, false);
  }
  if (process.platform === 'win32') return;
  let mode: number;
  try {
    mode = statSync(path).mode & 0o777;
  } catch (e) {
    throw new KeysUnavailableError(`cannot read the master key file ${path}: ${(e as Error).message}`, { file: path }, e, false);
  }
  if ((mode & 0o077) !== 0) {
    throw new KeysUnavailableError(`the master key file ${path} may be read by group or others (mode ${mode.toString(8).padStart(4, '0')}): run chmod 600 ${path}`, { file: path }, undefined, false);
  }
}

/** The text of a key file, once its permissions were checked. */
export function readKeyFileText(file: string): string {
  checkKeyFile(file);
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new KeysUnavailableError(`cannot read the master key file ${file}: ${(e as Error).message}`, { file }, e, false);
  }
}

function readKeyFile(file: string): MasterKeys {
  return parseMasterKeys(readKeyFileText(file), `the master key file ${file}`);
}

export interface MasterKeySource {
  /** The key itself (32 bytes, or base64 / hex text), or a key list (see the file's header). Takes precedence over everything else. */
  masterKey?: string | Uint8Array;
  /** A file holding the key, or a key list. */
  masterKeyFile?: string;
  /** The development key file to use (created when missing) when nothing else is configured. Default DEV_MASTER_KEY_FILE; `false` refuses to generate one. */
  devKeyFile?: string | false;
  /** Process environment to read TROUPE_MASTER_KEY(S) / TROUPE_MASTER_KEY_FILE from. Default process.env. */
  env?: Record<string, string | undefined>;
}

/**
 * Find the master keys: `masterKey`, then TROUPE_MASTER_KEYS, then TROUPE_MASTER_KEY, then
 * `masterKeyFile`, then TROUPE_MASTER_KEY_FILE, then `master.key` in TROUPE_DATA_DIR or
 * `.troupe/master.key` under the working directory, which is generated (mode 0600) when missing.
 * The generated key is for local development: every node and consumer of a deployment needs the
 * same master keys, so production sets TROUPE_MASTER_KEY_FILE (or TROUPE_MASTER_KEY(S)).
 * `file` is the key file the keys came from, if any (what rotation rewrites).
 */
export function resolveMasterKeys(src: MasterKeySource = {}): { keys: MasterKeys; source: string; file?: string } {
  const env = src.env ?? process.env;
  if (src.masterKey !== undefined) {
    const keys = typeof src.masterKey === 'string' ? parseMasterKeys(src.masterKey, 'options.masterKey') : new MasterKeys([parseMasterKey(src.masterKey)]);
    return { keys, source: 'option' };
  }
  const many = env[MASTER_KEYS_ENV];
  if (many !== undefined && many !== '') return { keys: parseMasterKeys(many, MASTER_KEYS_ENV), source: MASTER_KEYS_ENV };
  const one = env[MASTER_KEY_ENV];
  if (one !== undefined && one !== '') return { keys: new MasterKeys([parseMasterKey(one, MASTER_KEY_ENV)]), source: MASTER_KEY_ENV };
  const file = src.masterKeyFile ?? (env[MASTER_KEY_FILE_ENV] || undefined);
  if (file !== undefined) return { keys: readKeyFile(file), source: file, file: resolvePath(file) };
  if (src.devKeyFile === false) {
    throw new KeysUnavailableError(`no master key: set ${MASTER_KEY_FILE_ENV} (a file, chmod 600, holding 32 random bytes as base64: openssl rand -base64 32) or ${MASTER_KEY_ENV}, or pass masterKey`, {}, undefined, false);
  }
  const dataRoot = env.TROUPE_DATA_DIR;
  const path = resolvePath(src.devKeyFile ?? (dataRoot ? join(dataRoot, 'master.key') : DEV_MASTER_KEY_FILE));
  if (path.split(sep).includes('node_modules')) {
    throw new KeysUnavailableError(`will not create a development master key inside node_modules (${path}): run from your app's folder, or set TROUPE_DATA_DIR or ${MASTER_KEY_FILE_ENV}`, { file: path }, undefined, false);
  }
  mkdirSync(dirname(path), { recursive: true });
  try {
    const bytes = randomBytes(KEY_BYTES);
    writeFileSync(path, formatMasterKeys([{ id: new MasterKey(bytes).id, key: bytes.toString('base64') }]), { flag: 'wx', mode: 0o600 });
    chmodSync(path, 0o600);
    process.emitWarning(`generated a development master key in ${path}; every node and consumer of a deployment needs the same key: set ${MASTER_KEY_FILE_ENV} in production`, { code: 'TROUPE_DEV_MASTER_KEY' });
  } catch (e) {
    if ((e as { code?: string }).code !== 'EEXIST') throw new KeysUnavailableError(`cannot create the development master key ${path}: ${(e as Error).message}`, { file: path }, e, false);
  }
  return { keys: readKeyFile(path), source: path, file: path };
}

/** The active master key alone (see resolveMasterKeys). */
export function resolveMasterKey(src: MasterKeySource = {}): { key: MasterKey; source: string } {
  const { keys, source } = resolveMasterKeys(src);
  return { key: keys.active, source };
}
