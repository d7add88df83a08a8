/**
 * Where `troupe start` keeps its data: one folder per app, under the app's working directory.
 *
 *   <root>/data         the node's LMDB environment (a cache: snapshots, history index, command ids)
 *   <root>/nats         the local nats-server's JetStream store (the event log)
 *   <root>/bin          the nats-server binary fetched by `troupe ensure-nats`
 *   <root>/master.key   the development master key (sensitive fields)
 *
 * <root> is `--data-dir`, else TROUPE_DATA_DIR, else `.troupe`, each relative to the working
 * directory. Never the package's own folder: an installed Troupe lives in node_modules, which a
 * reinstall deletes.
 */
import { join, resolve } from 'node:path';

export const DATA_DIR_ENV = 'TROUPE_DATA_DIR';
export const DEFAULT_DATA_ROOT = '.troupe';

export interface DataPaths {
  readonly root: string;
  readonly data: string;
  readonly nats: string;
  readonly bin: string;
  readonly masterKey: string;
}

export function dataPaths(opts: { dataDir?: string | undefined; env?: Record<string, string | undefined>; cwd?: string } = {}): DataPaths {
  const env = opts.env ?? process.env;
  const given = opts.dataDir !== undefined && opts.dataDir !== '' ? opts.dataDir : env[DATA_DIR_ENV] || DEFAULT_DATA_ROOT;
  const root = resolve(opts.cwd ?? process.cwd(), given);
  return { root, data: join(root, 'data'), nats: join(root, 'nats'), bin: join(root, 'bin'), masterKey: join(root, 'master.key') };
}

/** The data root alone: --data-dir, else TROUPE_DATA_DIR, else `<cwd>/.troupe`. */
export function dataRoot(flag?: string): string {
  return dataPaths({ dataDir: flag }).root;
}
