// Set-up step of `npm test`: the dashboard test (test/ops/dashboard.int.test.ts) drives a real
// headless Chromium. Install Debian's `chromium` package when none is there, as the set-up does
// for nats-server: with apt-get, as root or through a password-less sudo. Otherwise say how;
// the dashboard test then fails with the same hint. Plain JavaScript, node: builtins only.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const say = (msg) => process.stderr.write(`troupe setup: ${msg}\n`);
const present = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].some((p) => p && existsSync(p));
const ok = (cmd, args, opts = {}) => spawnSync(cmd, args, { stdio: 'inherit', ...opts }).status === 0;

if (!present && process.platform === 'linux' && existsSync('/usr/bin/apt-get')) {
  const root = process.getuid?.() === 0;
  const sudo = !root && spawnSync('sudo', ['-n', 'true'], { stdio: 'ignore' }).status === 0;
  if (root || sudo) {
    const pre = root ? [] : ['-n'];
    const run = (...args) => ok(root ? 'apt-get' : 'sudo', root ? args : [...pre, 'apt-get', ...args], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    say('Chromium is missing (the dashboard test needs it): installing Debian\'s chromium package');
    if (!run('install', '-y', '--no-install-recommends', 'chromium')) {
      run('update');
      if (!run('install', '-y', '--no-install-recommends', 'chromium')) say('installing chromium failed; the dashboard test will fail until it is installed');
    }
  } else {
    say('Chromium is missing: the dashboard test needs it; run `sudo apt-get install -y chromium` (or set CHROMIUM_PATH)');
  }
}
