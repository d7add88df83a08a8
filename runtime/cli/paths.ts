/**
 * Where `troupe start` keeps its data: the event log of its own nats-server, LMDB, the master
 * key. Under the app's working directory, never inside node_modules (a reinstall would delete it).
 */
import { join, resolve } from 'node:path';

/** --data-dir, else TROUPE_DATA_DIR, else `<cwd>/.troupe`. */
export function dataRoot(flag?: string): string {
  const env = process.env.TROUPE_DATA_DIR;
  return resolve(flag ?? (env !== undefined && env !== '' ? env : join(process.cwd(), '.troupe')));
}
