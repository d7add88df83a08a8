// `troupe keys status|rotate|retire` as an operator runs them, against a real nats-server.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { openKeyRing } from '../../runtime/index.ts';
import { formatMasterKeys, MasterKey, parseMasterKeys } from '../../runtime/contracts/crypto.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';
import { freshStream } from '../helpers/troupe.ts';

const cli = fileURLToPath(new URL('../../runtime/cli/main.ts', import.meta.url));
const runTs = fileURLToPath(new URL('../../runtime/bin/run-ts.cjs', import.meta.url));

function run(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const e: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const k of ['TROUPE_MASTER_KEY', 'TROUPE_MASTER_KEYS', 'TROUPE_DATA_DIR']) if (!(k in env)) delete e[k];
  const child = spawn(process.execPath, [runTs, cli, ...args], { env: e, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, stdout, stderr })));
}

describe('troupe keys', () => {
  const nats = useNatsServer();

  it('rotates and retires the master key in the key file, printing ids and counts, never keys', async () => {
    const { stream } = freshStream('CLIKEYS');
    const keyFile = join(tempDir(), 'master.keys');
    const oldKey = randomBytes(32).toString('base64');
    const oldId = new MasterKey(Buffer.from(oldKey, 'base64')).id;
    writeFileSync(keyFile, formatMasterKeys([{ id: oldId, key: oldKey }]), { mode: 0o600 });
    const ring = await openKeyRing({ servers: nats.url, stream, masterKeyFile: keyFile });
    const kid = await ring.ensure('user:1');
    await ring.close();
    const env = { NATS_URL: nats.url, TROUPE_STREAM: stream, TROUPE_MASTER_KEY_FILE: keyFile };

    const rotated = await run(['keys', 'rotate'], env);
    expect(rotated.code, rotated.stderr).toBe(0);
    const change = JSON.parse(rotated.stdout) as { active: string; ids: string[]; rewrapped: number };
    expect(change).toMatchObject({ ids: [change.active, oldId], rewrapped: 1, file: keyFile });
    expect(rotated.stderr).toContain(`troupe keys retire ${oldId}`);
    const entries = readFileSync(keyFile, 'utf8');
    for (const secret of [oldKey, entries.split('\n').find((l) => l.startsWith(change.active))!.split(' ')[1]!]) {
      expect(rotated.stdout + rotated.stderr).not.toContain(secret);
    }

    const status = await run(['keys', 'status'], env);
    expect(JSON.parse(status.stdout)).toEqual({ ids: [change.active, oldId], wraps: { [change.active]: 1, [oldId]: 1 }, keys: 1 });

    const retired = await run(['keys', 'retire', oldId], env);
    expect(retired.code, retired.stderr).toBe(0);
    expect(parseMasterKeys(readFileSync(keyFile, 'utf8')).ids).toEqual([change.active]);
    const after = await openKeyRing({ servers: nats.url, stream, masterKeyFile: keyFile });
    expect(after.key(kid)).toBeInstanceOf(Buffer);
    await after.close();

    chmodSync(keyFile, 0o644);
    const refused = await run(['keys', 'status'], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`may be read by group or others (mode 0644): run chmod 600 ${keyFile}`);
  }, 60_000);
});
