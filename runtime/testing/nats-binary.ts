// Finding a nats-server >= 2.10 to run: $TROUPE_NATS_SERVER, PATH, or the one
// `node runtime/bin/troupe.mjs ensure-nats` fetched into the project's data folder.

import { execFileSync } from 'node:child_process';
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (the folder holding nats.conf and package.json). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The default nats-server configuration. */
export const DEFAULT_NATS_CONFIG = join(REPO_ROOT, 'nats.conf');
/** The command that installs a suitable nats-server (also run by `npm test` and `npm start`). */
export const ENSURE_NATS_COMMAND = 'node runtime/bin/troupe.mjs ensure-nats';

const MIN_MAJOR = 2;
const MIN_MINOR = 10;

interface FoundServer { path: string; version: string }
let cachedServer: FoundServer | undefined;
let cachedKey = '';

function dataDir(): string {
  const d = process.env.TROUPE_DATA_DIR;
  return d ? resolve(d) : join(REPO_ROOT, '.troupe');
}

function isExecutable(p: string): boolean {
  try {
    accessSync(p, fsConstants.X_OK);
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function versionOf(bin: string): string | undefined {
  try {
    const out = execFileSync(bin, ['--version'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
    return /v?(\d+\.\d+\.\d+\S*)/.exec(out)?.[1];
  } catch {
    return undefined;
  }
}

function versionOk(v: string): boolean {
  const m = /^(\d+)\.(\d+)/.exec(v);
  if (!m) return false;
  const major = Number(m[1]);
  const minor = Number(m[2]);
  return major > MIN_MAJOR || (major === MIN_MAJOR && minor >= MIN_MINOR);
}

function tooOldMessage(path: string, version: string): string {
  return `nats-server ${version} at ${path} is too old: Troupe needs nats-server >= 2.10. ` +
    `nats-server 2.9 does not serialize the expected-last-subject-sequence check on replicated ` +
    `streams (nats-server#4320), so two writers with the same expectation can both be accepted ` +
    `and Troupe cannot fence a stale writer.`;
}

function installHint(): string {
  return `Run \`${ENSURE_NATS_COMMAND}\` in ${REPO_ROOT} (\`npm test\` and \`npm start\` do it too): ` +
    `it fetches nats-server >= 2.10 into ${join(dataDir(), 'bin')}. Or install nats-server >= 2.10 from ` +
    `https://github.com/nats-io/nats-server/releases and put it on PATH or set TROUPE_NATS_SERVER.`;
}

/**
 * Find a nats-server >= 2.10: `$TROUPE_NATS_SERVER`, else `nats-server` on PATH, else
 * `<repo>/.troupe/bin/nats-server` (`$TROUPE_DATA_DIR/bin/nats-server`). Throws an Error that
 * names the install command when none is found or the only one is older than 2.10.
 */
export function findNatsServer(): { path: string; version: string } {
  const key = [process.env.TROUPE_NATS_SERVER, process.env.PATH, process.env.TROUPE_DATA_DIR].join('\0');
  if (cachedServer && cachedKey === key) return { ...cachedServer };
  cachedServer = undefined;
  cachedKey = key;
  const fromEnv = process.env.TROUPE_NATS_SERVER;
  if (fromEnv) {
    const p = resolve(fromEnv);
    if (!isExecutable(p)) throw new Error(`TROUPE_NATS_SERVER=${fromEnv} is not an executable file. ${installHint()}`);
    const v = versionOf(p);
    if (!v) throw new Error(`TROUPE_NATS_SERVER=${fromEnv}: \`${p} --version\` failed. ${installHint()}`);
    if (!versionOk(v)) throw new Error(`${tooOldMessage(p, v)} ${installHint()}`);
    cachedServer = { path: p, version: v };
    return { ...cachedServer };
  }
  const candidates: string[] = [];
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir) candidates.push(join(dir, 'nats-server'));
  }
  candidates.push(join(dataDir(), 'bin', 'nats-server'));
  let old: FoundServer | undefined;
  for (const c of candidates) {
    if (!isExecutable(c)) continue;
    const v = versionOf(c);
    if (!v) continue;
    if (versionOk(v)) {
      cachedServer = { path: c, version: v };
      return { ...cachedServer };
    }
    old ??= { path: c, version: v };
  }
  if (old) throw new Error(`${tooOldMessage(old.path, old.version)} ${installHint()}`);
  throw new Error(`nats-server not found (looked at $TROUPE_NATS_SERVER, PATH, ${join(dataDir(), 'bin', 'nats-server')}). ${installHint()}`);
}
