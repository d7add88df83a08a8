#!/usr/bin/env node
// Set-up for a clone of this repository, run by `npm start` and `npm test` before anything else:
// installs the npm dependencies when node_modules is missing or older than package-lock.json.
// Plain JavaScript with node: builtins only, because it runs before `npm install`.
// Not shipped in the package: the `troupe` command itself never installs packages.

import { spawnSync } from 'node:child_process';
import { lstatSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function mtime(p) {
  try {
    return statSync(p).mtimeMs;
  } catch {
    return undefined;
  }
}

function say(msg) {
  process.stderr.write(`troupe setup: ${msg}\n`);
}

const lockTime = mtime(join(ROOT, 'package-lock.json'));
const nodeModules = mtime(join(ROOT, 'node_modules'));
const markerTime = mtime(join(ROOT, 'node_modules', '.package-lock.json'));
let reason;
if (nodeModules === undefined) reason = 'node_modules is missing';
else if (lockTime !== undefined && (markerTime === undefined || markerTime < lockTime)) reason = 'package-lock.json is newer than node_modules';

if (reason !== undefined) {
  // npm ci would empty the folder a node_modules symlink points to (someone else's install).
  if (nodeModules !== undefined && lstatSync(join(ROOT, 'node_modules')).isSymbolicLink()) {
    say(`${reason}, but node_modules is a symbolic link: not reinstalling; run \`npm ci\` yourself if needed`);
  } else {
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    const ci = lockTime !== undefined;
    say(`${reason}: running \`npm ${ci ? 'ci' : 'install'}\``);
    let r = spawnSync(npm, [ci ? 'ci' : 'install', '--no-audit', '--no-fund'], { cwd: ROOT, stdio: 'inherit' });
    if (ci && r.status !== 0) {
      say('`npm ci` failed; trying `npm install`');
      r = spawnSync(npm, ['install', '--no-audit', '--no-fund'], { cwd: ROOT, stdio: 'inherit' });
    }
    if (r.error !== undefined || r.status !== 0) {
      say(`installing the npm dependencies failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`})`);
      process.exit(1);
    }
  }
}

// `npm test` only: the dashboard test needs a headless Chromium.
if (process.env.npm_lifecycle_event === 'test') await import('./ensure-chromium.mjs');
