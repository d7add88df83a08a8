/**
 * The `troupe` command line as a user runs it: spawned the way runtime/bin/troupe.mjs spawns it
 * (node runtime/bin/run-ts.cjs runtime/cli/main.ts ...), with a clean environment.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { findNatsServer, tempDir } from './nats.ts';

export const CLI_MAIN = fileURLToPath(new URL('../../runtime/cli/main.ts', import.meta.url));
export const RUN_TS = fileURLToPath(new URL('../../runtime/bin/run-ts.cjs', import.meta.url));

/** Variables of the caller's shell that would change what a command does: cleared unless given. */
const CLEARED = [
  'NATS_URL', 'NATS_USER', 'NATS_PASSWORD', 'NATS_TOKEN', 'NATS_NKEY', 'NATS_CREDS', 'NATS_TLS_CA', 'NATS_TLS_CERT', 'NATS_TLS_KEY',
  'TROUPE_DATA_DIR', 'TROUPE_ACTORS', 'TROUPE_STREAM', 'TROUPE_TOKEN', 'TROUPE_TOKEN_FILE',
  'TROUPE_MASTER_KEY', 'TROUPE_MASTER_KEYS', 'TROUPE_MASTER_KEY_FILE',
];

export interface Ran { code: number | null; stdout: string; stderr: string }

/** The environment a spawned command gets: this process's, minus CLEARED, plus `extra`. */
export function cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, TROUPE_NATS_SERVER: findNatsServer().path, OTEL_TRACES_EXPORTER: 'none', ...extra };
  for (const k of CLEARED) if (!(k in extra)) delete env[k];
  return env;
}

/** Run `troupe <args>` to its end, in a fresh working directory (or `cwd`); its exit code and output. */
export function runCli(args: string[], env: Record<string, string> = {}, cwd: string = tempDir()): Promise<Ran> {
  const child = spawn(process.execPath, [RUN_TS, CLI_MAIN, ...args], { cwd, env: cliEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, stdout, stderr })));
}
