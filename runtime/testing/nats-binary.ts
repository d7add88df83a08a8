// Finding a nats-server >= 2.10 to run: $TROUPE_NATS_SERVER, PATH, or the one
// `npx troupe ensure-nats` fetched into the app's data folder (.troupe/bin).

import { execFileSync } from 'node:child_process';
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root (the folder holding nats.conf and package.json): the repository root in a clone. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The default nats-server configuration, shipped with the package. */
export const DEFAULT_NATS_CONFIG = join(REPO_ROOT, 'nats.conf');
/** The command that installs a suitable nats-server (also run by `npm test` and `npm start`). */
export const ENSURE_NATS_COMMAND = 'npx troupe ensure-nats';

const MIN_MAJOR = 2;
const MIN_MINOR = 10;

interface FoundServer { path: string; version: string }
let cachedServer: FoundServer | undefined;
let cachedKey = '';

/**
 * Where a fetched nats-server may live: `$TROUPE_DATA_DIR/bin`, else the app's `.troupe/bin`
 * (the working directory's), then the package's own (a clone of Troupe run from elsewhere).
 */
function binDirs(): string[] {
  const d = process.env.TROUPE_DATA_DIR;
  if (d) return [join(resolve(d), 'bin')];
  const app = join(process.cwd(), '.troupe', 'bin');
  const pkg = join(REPO_ROOT, '.troupe', 'bin');
  return app === pkg ? [app] : [app, pkg];
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
  return `Run \`${ENSURE_NATS_COMMAND}\` in your app's folder (in a clone of Troupe, \`npm test\` and \`npm start\` do it): ` +
    `it fetches nats-server >= 2.10 into .troupe/bin. Or install nats-server >= 2.10 from ` +
    `https://github.com/nats-io/nats-server/releases and put it on PATH or set TROUPE_NATS_SERVER.`;
}

/**
 * Find a nats-server >= 2.10: `$TROUPE_NATS_SERVER`, else `nats-server` on PATH, else
 * `.troupe/bin/nats-server` of the app (working directory) or of the package
 * (`$TROUPE_DATA_DIR/bin/nats-server` when set). Throws an Error that
 * names the install command when none is found or the only one is older than 2.10.
 */
export function findNatsServer(): { path: string; version: string } {
  const key = [process.env.TROUPE_NATS_SERVER, process.env.PATH, process.env.TROUPE_DATA_DIR, process.cwd()].join('\0');
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
  for (const dir of binDirs()) candidates.push(join(dir, 'nats-server'));
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
  throw new Error(`nats-server not found (looked at $TROUPE_NATS_SERVER, PATH, ${binDirs().map((d) => join(d, 'nats-server')).join(', ')}). ${installHint()}`);
}
