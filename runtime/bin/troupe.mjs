#!/usr/bin/env node
// Troupe's command-line entry point (package.json "bin", `npm start`, `npm test`).
//
// Plain JavaScript with node: builtins only:
//   1. makes sure a nats-server >= 2.10 is available ($TROUPE_NATS_SERVER, PATH, or
//      <data dir>/bin/nats-server; on Debian-like systems it fetches Debian 13's package);
//   2. `ensure-nats`: prints the server's path and version and exits;
//      anything else: runs the CLI with TROUPE_NATS_SERVER set: the compiled dist/cli/main.js
//      in the installed package, or, in a source checkout (runtime/cli/main.ts next to this
//      file), `node runtime/bin/run-ts.cjs runtime/cli/main.ts <args>` (TypeScript through tsx,
//      a dev dependency of the repository).
// It never installs npm packages: in the repository, `npm ci` does (see the README).
//
// Data (the fetched nats-server, and everything `troupe start` keeps) goes under the app's
// working directory: `--data-dir`, else TROUPE_DATA_DIR, else ./.troupe; never inside the package.
// Environment: TROUPE_NATS_SERVER (a nats-server binary to use), TROUPE_DATA_DIR (data folder,
// default ./.troupe), TROUPE_NATS_DEBIAN_SUITE (Debian suite to fetch from, default trixie).

import { spawn, spawnSync } from 'node:child_process';
import { accessSync, chmodSync, constants, copyFileSync, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** `--data-dir DIR` / `--data-dir=DIR` among the arguments (the CLI parses them again). */
function dataDirArg(args) {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--') break;
    if (args[i] === '--data-dir' && args[i + 1] !== undefined) return args[i + 1];
    if (args[i].startsWith('--data-dir=')) return args[i].slice('--data-dir='.length);
  }
  return undefined;
}

const DATA_DIR = resolve(dataDirArg(process.argv.slice(2)) || process.env.TROUPE_DATA_DIR || '.troupe');
const LOCAL_BIN = join(DATA_DIR, 'bin', 'nats-server');
const SUITE = process.env.TROUPE_NATS_DEBIAN_SUITE || 'trixie';
const MIN = [2, 10];

class Failure extends Error {}

function say(msg) {
  process.stderr.write(`troupe: ${msg}\n`);
}

// ---------------------------------------------------------------------------------------------
// nats-server

function isExecutable(p) {
  try {
    accessSync(p, constants.X_OK);
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function versionOf(bin) {
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) return undefined;
  return /v?(\d+\.\d+\.\d+\S*)/.exec(`${r.stdout}${r.stderr}`)?.[1];
}

function versionOk(v) {
  const m = /^(\d+)\.(\d+)/.exec(v);
  if (!m) return false;
  const major = Number(m[1]);
  const minor = Number(m[2]);
  return major > MIN[0] || (major === MIN[0] && minor >= MIN[1]);
}

const INSTALL_ADVICE = 'Install nats-server >= 2.10 from the NATS releases (https://github.com/nats-io/nats-server/releases) ' +
  'and put it on PATH, or set TROUPE_NATS_SERVER to its path.';

function tooOld(found) {
  return `nats-server ${found.version} (${found.path}) is too old; Troupe needs nats-server >= 2.10. ` +
    'nats-server 2.9 does not serialize the expected-last-subject-sequence check on replicated streams ' +
    '(nats-server#4320): two writers with the same expectation can both be accepted, so Troupe cannot ' +
    'fence a stale writer and the log could fork.';
}

/** Returns {path, version, old?}: a good server, or undefined plus the first too-old one seen. */
function findServer() {
  const fromEnv = process.env.TROUPE_NATS_SERVER;
  if (fromEnv) {
    const p = resolve(fromEnv);
    if (!isExecutable(p)) throw new Failure(`TROUPE_NATS_SERVER=${fromEnv} is not an executable file. ${INSTALL_ADVICE}`);
    const v = versionOf(p);
    if (!v) throw new Failure(`TROUPE_NATS_SERVER=${fromEnv}: \`${p} --version\` failed.`);
    if (!versionOk(v)) throw new Failure(`${tooOld({ path: p, version: v })} Unset TROUPE_NATS_SERVER or point it at a newer server.`);
    return { found: { path: p, version: v } };
  }
  let old;
  const candidates = (process.env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, 'nats-server'));
  candidates.push(LOCAL_BIN);
  for (const c of candidates) {
    if (!isExecutable(c)) continue;
    const v = versionOf(c);
    if (!v) continue;
    if (versionOk(v)) return { found: { path: c, version: v } };
    old ??= { path: c, version: v };
  }
  return { old };
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', ...opts });
  if (r.error) throw new Failure(`could not run ${cmd}: ${r.error.message}`);
  return r;
}

function hasCommand(cmd) {
  return (process.env.PATH ?? '').split(delimiter).filter(Boolean).some((d) => isExecutable(join(d, cmd)));
}

/** The URI of the mirror apt uses for the main Debian archive (not security, not a third party). */
function debianMirror() {
  // --no-release-info lists every configured source, downloaded lists or not.
  let r = run('apt-get', ['indextargets', '--no-release-info', '--format', '$(REPO_URI) $(RELEASE) $(TARGET_OF)']);
  if (r.status !== 0) r = run('apt-get', ['indextargets', '--format', '$(REPO_URI) $(RELEASE) $(TARGET_OF)']);
  if (r.status !== 0) throw new Failure(`\`apt-get indextargets\` failed: ${r.stderr.trim()}`);
  const rows = [];
  for (const line of r.stdout.split('\n')) {
    const [uri, release, targetOf] = line.trim().split(/\s+/);
    if (!uri || !release) continue;
    if (targetOf && targetOf !== 'deb') continue;
    let path;
    try {
      path = new URL(uri).pathname;
    } catch {
      continue;
    }
    // The Debian archive proper: a path segment named exactly "debian" (so not debian-security,
    // debian-ports, or a third-party repository).
    if (!path.split('/').includes('debian')) continue;
    rows.push({ uri: uri.endsWith('/') ? uri : `${uri}/`, main: !/[-/]/.test(release) });
  }
  const pick = rows.find((x) => x.main) ?? rows[0];
  return pick?.uri;
}

/** Fetch Debian's nats-server package (suite SUITE) through apt and install its binary at LOCAL_BIN. */
function fetchFromDebian() {
  const mirror = debianMirror();
  if (!mirror) throw new Failure('apt has no Debian archive among its sources, so Debian\'s nats-server package cannot be fetched.');
  say(`fetching nats-server from Debian ${SUITE} (${mirror}) with apt; the system's apt sources and lists are not changed`);
  const tmp = mkdtempSync(join(tmpdir(), 'troupe-nats-apt-'));
  try {
    const lists = join(tmp, 'lists');
    const cache = join(tmp, 'cache');
    const debDir = join(tmp, 'deb');
    const extract = join(tmp, 'root');
    for (const d of [join(lists, 'partial'), join(cache, 'archives', 'partial'), debDir, extract]) mkdirSync(d, { recursive: true });
    const sources = join(tmp, 'sources.list');
    writeFileSync(sources, `deb ${mirror} ${SUITE} main\n`);
    const aptOpts = [
      '-o', `Dir::Etc::SourceList=${sources}`,
      '-o', 'Dir::Etc::SourceParts=/dev/null',
      '-o', `Dir::State::Lists=${lists}`,
      // Keep apt's package cache (pkgcache.bin) out of /var/cache/apt too.
      '-o', `Dir::Cache=${cache}`,
      // The temp dir is not readable by the _apt user; download as the invoking user.
      '-o', 'APT::Sandbox::User=root',
      '-o', 'Acquire::Languages=none',
      '-q',
    ];
    // Output of apt goes to stderr so that `ensure-nats` prints only its result on stdout.
    const aptStdio = ['ignore', 2, 2];
    let r = run('apt-get', [...aptOpts, 'update'], { stdio: aptStdio, cwd: tmp });
    if (r.status !== 0) throw new Failure(`\`apt-get update\` for Debian ${SUITE} failed (exit ${r.status ?? r.signal}).`);
    r = run('apt-get', [...aptOpts, 'download', 'nats-server'], { stdio: aptStdio, cwd: debDir });
    if (r.status !== 0) throw new Failure(`\`apt-get download nats-server\` from Debian ${SUITE} failed (exit ${r.status ?? r.signal}).`);
    const deb = run('sh', ['-c', 'ls -1 *.deb'], { cwd: debDir }).stdout.trim().split('\n')[0];
    if (!deb) throw new Failure('apt-get download produced no .deb file.');
    r = run('dpkg-deb', ['-x', join(debDir, deb), extract]);
    if (r.status !== 0) throw new Failure(`\`dpkg-deb -x ${deb}\` failed: ${r.stderr.trim()}`);
    const bin = join(extract, 'usr', 'sbin', 'nats-server');
    if (!existsSync(bin)) throw new Failure(`${deb} has no usr/sbin/nats-server.`);
    mkdirSync(dirname(LOCAL_BIN), { recursive: true });
    const partial = `${LOCAL_BIN}.partial-${process.pid}`;
    copyFileSync(bin, partial);
    chmodSync(partial, 0o755);
    const v = versionOf(partial);
    if (!v) {
      rmSync(partial, { force: true });
      throw new Failure(`the nats-server from ${deb} does not run on this machine (\`nats-server --version\` failed).`);
    }
    if (!versionOk(v)) {
      rmSync(partial, { force: true });
      throw new Failure(tooOld({ path: deb, version: v }));
    }
    renameSync(partial, LOCAL_BIN);
    say(`installed nats-server ${v} at ${LOCAL_BIN} (from ${deb})`);
    return { path: LOCAL_BIN, version: v };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** A usable nats-server when one is already here (passed on to the command line), else undefined; never fetches. */
function findQuietly() {
  try {
    return findServer().found;
  } catch {
    return undefined;
  }
}

function ensureNats() {
  const { found, old } = findServer();
  if (found) return found;
  const problem = old ? tooOld(old) : 'nats-server (>= 2.10) was not found on PATH, in TROUPE_NATS_SERVER, or at ' + LOCAL_BIN + '.';
  if (process.platform === 'linux' && hasCommand('apt-get') && hasCommand('dpkg-deb')) {
    if (old) say(`${tooOld(old)} Fetching a newer one.`);
    try {
      return fetchFromDebian();
    } catch (err) {
      if (!(err instanceof Failure)) throw err;
      throw new Failure(`${problem}\nFetching Debian ${SUITE}'s nats-server package failed: ${err.message}\n${INSTALL_ADVICE}`);
    }
  }
  throw new Failure(`${problem}\n${INSTALL_ADVICE}`);
}

// ---------------------------------------------------------------------------------------------
// main

function main() {
  const args = process.argv.slice(2);
  const sub = args[0];
  // Only `start` runs a nats-server; help, version, init and the clients need none (the command
  // line itself answers `troupe` with no arguments).
  const command = args.find((a) => !a.startsWith('-'));
  // `start` runs its own nats-server unless given one (--nats-url or NATS_URL): find or fetch the
  // binary now, except for --help. (A config file's `servers` is read later, by the command line.)
  const wantsHelp = args.includes('--help') || args.includes('-h');
  const givenNats = args.some((a) => a === '--nats-url' || a.startsWith('--nats-url=')) || Boolean(process.env.NATS_URL);
  const needsServer = command === 'start' && !wantsHelp && !givenNats;
  const nats = needsServer || sub === 'ensure-nats' ? ensureNats() : findQuietly();
  if (sub === 'ensure-nats') {
    process.stdout.write(`nats-server ${nats.version} ${nats.path}\n`);
    return;
  }
  const source = join(ROOT, 'runtime', 'cli', 'main.ts');
  const compiled = join(ROOT, 'dist', 'cli', 'main.js');
  let argv;
  if (existsSync(source)) {
    try {
      createRequire(import.meta.url).resolve('tsx/cjs');
    } catch {
      throw new Failure(`the repository's npm dependencies are not installed: run \`npm ci\` in ${ROOT} first.`);
    }
    argv = [join(ROOT, 'runtime', 'bin', 'run-ts.cjs'), source, ...args];
  }
  else if (existsSync(compiled)) argv = [compiled, ...args];
  else throw new Failure(`neither ${compiled} nor ${source} exists: this Troupe package is incomplete; reinstall it.`);
  const child = spawn(process.execPath, argv, {
    stdio: 'inherit',
    env: nats === undefined ? { ...process.env, TROUPE_DATA_DIR: DATA_DIR } : { ...process.env, TROUPE_NATS_SERVER: nats.path, TROUPE_DATA_DIR: DATA_DIR },
  });
  const forward = (signal) => {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  };
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(s, () => forward(s));
  child.on('error', (err) => {
    say(`could not start the CLI: ${err.message}`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => {
    if (signal) {
      const n = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 }[signal] ?? 0;
      process.exit(128 + n);
    }
    process.exit(code ?? 1);
  });
}

try {
  main();
} catch (err) {
  if (err instanceof Failure) {
    say(err.message);
    process.exit(1);
  }
  throw err;
}
