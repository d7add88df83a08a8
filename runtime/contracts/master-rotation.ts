/**
 * Master-key rotation while nodes run (`troupe keys rotate`, `troupe keys retire`).
 *
 *   1. rotate   a new master key becomes the first (active) entry of the key file, and every
 *               stored subject key gets a wrapping under it, next to the old one's. Running
 *               nodes, which hold the old key only, keep reading and writing.
 *   2. restart  nodes one by one (they now hold both keys, and wrap new keys under both).
 *   3. retire   every stored key gets a wrapping under the active key if it lacks one (keys
 *               created by old nodes meanwhile), the retired key's wrappings are removed, and
 *               its entry leaves the key file. Processes still holding only the retired key can
 *               no longer open the key store. Run it again if a node holding the retired key
 *               kept writing while it ran.
 *
 * A key shredded at any point stays shredded: rewrapping is a compare-and-set that never
 * writes over a destroy marker. Subject-name hashes do not change (crypto.ts).
 */
import { randomBytes } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import { KeysUnavailableError } from '../errors.ts';
import { KEY_BYTES } from './cipher.ts';
import { openKeyRing, type OpenKeyRingOptions } from './keystore.ts';
import {
  formatMasterKeys, MASTER_KEY_FILE_ENV, MASTER_KEYS_ENV, MasterKey, parseMasterKey, readKeyFileText, readMasterKeyList, resolveMasterKeys,
  type MasterKeySource,
} from './master-key.ts';

export interface MasterKeyAdminOptions extends Omit<OpenKeyRingOptions, 'masterKey' | 'masterKeyFile' | 'devKeyFile'> {
  /** The key file to read and rewrite. Default TROUPE_MASTER_KEY_FILE; with TROUPE_MASTER_KEY(S) instead, nothing is written and the new list is returned. */
  keyFile?: string;
}

export interface RotateMasterKeyOptions extends MasterKeyAdminOptions {
  /** The new master key (32 bytes, base64 or hex). Default: 32 random bytes. */
  newKey?: string | Uint8Array;
}

export interface MasterKeyChange {
  /** The active master key's id after the change. */
  readonly active: string;
  /** Every master key id the deployment holds after the change, the active first. */
  readonly ids: readonly string[];
  /** The key file rewritten, when the keys came from one. */
  readonly file?: string;
  /**
   * The new key list (TROUPE_MASTER_KEYS format), only when the keys came from the environment
   * and nothing could be written: the operator sets it in every process's environment.
   */
  readonly keyList?: string;
  /** Subject keys rewrapped; keys shredded meanwhile (left destroyed); keys no held master key opens (left as they are). */
  readonly rewrapped: number;
  readonly destroyed: number;
  readonly unreadable: number;
}

interface Entry { id: string; key: string }

function currentEntries(opts: MasterKeyAdminOptions): { entries: Entry[]; file?: string } {
  const env = opts.env ?? process.env;
  const src: MasterKeySource = { masterKeyFile: opts.keyFile, env, devKeyFile: false };
  const { file, source } = resolveMasterKeys(src);
  const text = file !== undefined ? readKeyFileText(file) : env[MASTER_KEYS_ENV] || env.TROUPE_MASTER_KEY!;
  return { entries: readMasterKeyList(text, file ?? source).map(({ id, key }) => ({ id, key })), file };
}

/** Replace a key file in one step (write aside, mode 0600, then rename). */
function writeKeyFile(file: string, entries: readonly Entry[]): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, formatMasterKeys(entries), { mode: 0o600, flag: 'w' });
  renameSync(tmp, file);
}

async function rewrap(opts: MasterKeyAdminOptions, entries: readonly Entry[], drop: readonly string[]) {
  const ring = await openKeyRing({ ...opts, masterKey: entries.map((e) => `${e.id} ${e.key}`).join('\n') });
  try {
    return await ring.rewrapAll({ drop });
  } finally {
    await ring.close();
  }
}

/**
 * Add a new master key, active from now on, and wrap every stored subject key under it (see the
 * file's header). The key file is rewritten before anything is rewrapped, so the new key is never
 * in use without being saved.
 */
export async function rotateMasterKey(opts: RotateMasterKeyOptions): Promise<MasterKeyChange> {
  const { entries, file } = currentEntries(opts);
  const text = opts.newKey === undefined ? randomBytes(KEY_BYTES).toString('base64')
    : typeof opts.newKey === 'string' ? opts.newKey.trim() : Buffer.from(opts.newKey).toString('base64');
  const fresh: MasterKey = parseMasterKey(text, 'the new master key');
  if (entries.some((e) => e.id === fresh.id)) throw new KeysUnavailableError(`master key ${fresh.id} is already in the key list`, { masterId: fresh.id }, undefined, false);
  const next = [{ id: fresh.id, key: text }, ...entries];
  if (file !== undefined) writeKeyFile(file, next);
  const counts = await rewrap(opts, next, []);
  return { active: fresh.id, ids: next.map((e) => e.id), ...(file !== undefined ? { file } : { keyList: next.map((e) => `${e.id} ${e.key}`).join(',') }), ...counts };
}

/**
 * Retire a master key that is no longer the active one: every stored subject key is wrapped under
 * the remaining keys, the retired key's wrappings are removed, and then its entry leaves the key
 * file.
 */
export async function retireMasterKey(opts: MasterKeyAdminOptions & { id: string }): Promise<MasterKeyChange> {
  const { entries, file } = currentEntries(opts);
  if (!entries.some((e) => e.id === opts.id)) {
    throw new KeysUnavailableError(`master key ${opts.id} is not in the key list (${entries.map((e) => e.id).join(', ')}): retiring needs it, to rewrap what only it wraps (${file ?? `${MASTER_KEYS_ENV} or ${MASTER_KEY_FILE_ENV}`})`, { masterId: opts.id }, undefined, false);
  }
  const counts = await rewrap(opts, entries, [opts.id]);
  if (counts.unreadable > 0) {
    throw new KeysUnavailableError(`${counts.unreadable} stored keys are wrapped with no master key this process holds; master key ${opts.id} was not removed from the key list`, { masterId: opts.id }, undefined, false);
  }
  const next = entries.filter((e) => e.id !== opts.id);
  if (file !== undefined) writeKeyFile(file, next);
  return { active: next[0]!.id, ids: next.map((e) => e.id), ...(file !== undefined ? { file } : { keyList: next.map((e) => `${e.id} ${e.key}`).join(',') }), ...counts };
}

/** The deployment's master keys and how many stored subject keys each one wraps. */
export async function masterKeyStatus(opts: MasterKeyAdminOptions): Promise<{ ids: readonly string[]; wraps: Record<string, number>; keys: number }> {
  const { entries } = currentEntries(opts);
  const ring = await openKeyRing({ ...opts, masterKey: entries.map((e) => `${e.id} ${e.key}`).join('\n') });
  try {
    return { ids: entries.map((e) => e.id), wraps: ring.wrapCounts(), keys: ring.size };
  } finally {
    await ring.close();
  }
}
