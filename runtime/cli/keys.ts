/**
 * `troupe keys status|rotate|retire`: the deployment's master keys (see
 * contracts/master-rotation.ts). The keys come from TROUPE_MASTER_KEY_FILE (or --key-file), else
 * TROUPE_MASTER_KEYS / TROUPE_MASTER_KEY, else the development key `troupe start` generated in
 * the data folder. Output is JSON on stdout; no key material is printed, except the new key list
 * when the keys came from the environment (there is nowhere else to put it).
 */
import { existsSync } from 'node:fs';
import { masterKeyStatus, retireMasterKey, rotateMasterKey, type MasterKeyAdminOptions } from '../contracts/master-rotation.ts';
import { MASTER_KEY_ENV, MASTER_KEY_FILE_ENV, MASTER_KEYS_ENV } from '../contracts/crypto.ts';
import { DEFAULT_NATS_URL, DEFAULT_STREAM } from '../options.ts';
import { natsAuthOf, type NatsFlags } from './credentials.ts';
import { dataPaths } from './paths.ts';

export interface KeysFlags extends NatsFlags {
  natsUrl?: string;
  stream?: string;
  keyFile?: string;
  dataDir?: string;
}

function adminOptions(flags: KeysFlags): MasterKeyAdminOptions {
  const env = process.env;
  let keyFile = flags.keyFile || env[MASTER_KEY_FILE_ENV] || undefined;
  if (keyFile === undefined && !env[MASTER_KEYS_ENV] && !env[MASTER_KEY_ENV]) {
    const dev = dataPaths({ dataDir: flags.dataDir }).masterKey;
    if (existsSync(dev)) keyFile = dev;
  }
  return { servers: flags.natsUrl || DEFAULT_NATS_URL, stream: flags.stream || DEFAULT_STREAM, nats: natsAuthOf(flags), ...(keyFile !== undefined ? { keyFile } : {}) };
}

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export async function keysStatus(flags: KeysFlags): Promise<void> {
  print(await masterKeyStatus(adminOptions(flags)));
}

export async function keysRotate(flags: KeysFlags): Promise<void> {
  const change = await rotateMasterKey(adminOptions(flags));
  print(change);
  const next = change.file !== undefined
    ? `restart every node and consumer (they read ${change.file}), then: troupe keys retire ${change.ids[1]}`
    : `set ${MASTER_KEYS_ENV} to the keyList above in every node and consumer, restart them, then: troupe keys retire ${change.ids[1]}`;
  process.stderr.write(`master key ${change.active} is active; ${change.rewrapped} subject keys rewrapped. Next: ${next}\n`);
}

export async function keysRetire(id: string, flags: KeysFlags): Promise<void> {
  const change = await retireMasterKey({ ...adminOptions(flags), id });
  print(change);
  process.stderr.write(`master key ${id} retired: no stored key is wrapped with it any more${change.file === undefined ? `; remove it from ${MASTER_KEYS_ENV} everywhere` : ''}.\n`);
}
