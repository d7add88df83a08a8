/**
 * The master key, which wraps every subject key (crypto.ts): from an option, TROUPE_MASTER_KEY,
 * a file named by TROUPE_MASTER_KEY_FILE, or, in development, a key generated once into the
 * project's data folder. Only its id (a fingerprint) is ever stored.
 */
import { createHash, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { KeysUnavailableError } from '../errors.ts';
import { decryptBytes, encryptBytes, KEY_BYTES } from './cipher.ts';

export const MASTER_KEY_ENV = 'TROUPE_MASTER_KEY';
export const MASTER_KEY_FILE_ENV = 'TROUPE_MASTER_KEY_FILE';
/**
 * The development master key, generated when none is configured: in the project's data folder
 * (`.troupe/`, next to `.troupe/data`), not in a node's dataDir, which is a cache that may be
 * deleted. Relative to the working directory.
 */
export const DEV_MASTER_KEY_FILE = '.troupe/master.key';

/** The key that wraps every subject key. Only its id (a fingerprint) is ever stored. */
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

  /** Subject names never reach storage: a keyed hash stands for them (no dictionary attack without the master key). */
  subjectHash(subject: string): string {
    return createHmac('sha256', this.#names).update(subject, 'utf8').digest('base64url').slice(0, 22);
  }

  wrap(kid: string, subjectHash: string, key: Uint8Array): Buffer {
    return encryptBytes(this.#wrap, key, `${kid}.${subjectHash}`);
  }

  unwrap(kid: string, subjectHash: string, wrapped: Uint8Array): Buffer {
    return decryptBytes(this.#wrap, wrapped, `${kid}.${subjectHash}`);
  }
}

/** 32 bytes as base64, base64url or 64 hex characters. */
export function parseMasterKey(text: string | Uint8Array, what = 'the master key'): MasterKey {
  if (typeof text !== 'string') return new MasterKey(text);
  const t = text.trim();
  const bytes = /^[0-9a-fA-F]{64}$/.test(t) ? Buffer.from(t, 'hex') : Buffer.from(t, /[-_]/.test(t) ? 'base64url' : 'base64');
  if (bytes.length !== KEY_BYTES) {
    throw new KeysUnavailableError(`${what} must be ${KEY_BYTES} random bytes as base64 or 64 hex characters (make one: openssl rand -base64 32), got ${bytes.length} bytes`, {}, undefined, false);
  }
  return new MasterKey(bytes);
}

export interface MasterKeySource {
  /** The key itself (32 bytes, or base64 / hex text). Takes precedence over everything else. */
  masterKey?: string | Uint8Array;
  /** A file holding the key as text. */
  masterKeyFile?: string;
  /** The development key file to use (created when missing) when nothing else is configured. Default DEV_MASTER_KEY_FILE; `false` refuses to generate one. */
  devKeyFile?: string | false;
  /** Process environment to read TROUPE_MASTER_KEY / TROUPE_MASTER_KEY_FILE from. Default process.env. */
  env?: Record<string, string | undefined>;
}

/**
 * Find the master key: `masterKey`, then TROUPE_MASTER_KEY, then `masterKeyFile`, then
 * TROUPE_MASTER_KEY_FILE, then `master.key` in TROUPE_DATA_DIR or `.troupe/master.key` under the working directory, which is
 * generated (mode 0600) when missing. The generated key is for local development: every node
 * and consumer of a deployment needs the same master key, so production sets
 * TROUPE_MASTER_KEY (or TROUPE_MASTER_KEY_FILE).
 */
export function resolveMasterKey(src: MasterKeySource = {}): { key: MasterKey; source: string } {
  const env = src.env ?? process.env;
  if (src.masterKey !== undefined) return { key: parseMasterKey(src.masterKey, 'options.masterKey'), source: 'option' };
  const fromEnv = env[MASTER_KEY_ENV];
  if (fromEnv !== undefined && fromEnv !== '') return { key: parseMasterKey(fromEnv, MASTER_KEY_ENV), source: MASTER_KEY_ENV };
  const file = src.masterKeyFile ?? (env[MASTER_KEY_FILE_ENV] || undefined);
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new KeysUnavailableError(`cannot read the master key file ${file}: ${(e as Error).message}`, { file }, e, false);
    }
    return { key: parseMasterKey(text, `the master key in ${file}`), source: file };
  }
  if (src.devKeyFile === false) {
    throw new KeysUnavailableError(`no master key: set ${MASTER_KEY_ENV} (32 random bytes as base64: openssl rand -base64 32) or ${MASTER_KEY_FILE_ENV}, or pass masterKey`, {}, undefined, false);
  }
  const dataRoot = env.TROUPE_DATA_DIR;
  const path = resolvePath(src.devKeyFile ?? (dataRoot ? join(dataRoot, 'master.key') : DEV_MASTER_KEY_FILE));
  mkdirSync(dirname(path), { recursive: true });
  try {
    writeFileSync(path, `${randomBytes(KEY_BYTES).toString('base64')}\n`, { flag: 'wx', mode: 0o600 });
    chmodSync(path, 0o600);
    process.emitWarning(`generated a development master key in ${path}; every node and consumer of a deployment needs the same key: set ${MASTER_KEY_ENV} in production`, { code: 'TROUPE_DEV_MASTER_KEY' });
  } catch (e) {
    if ((e as { code?: string }).code !== 'EEXIST') throw new KeysUnavailableError(`cannot create the development master key ${path}: ${(e as Error).message}`, { file: path }, e, false);
  }
  return { key: parseMasterKey(readFileSync(path, 'utf8'), `the master key in ${path}`), source: path };
}
