// The command line's credentials against a real nats-server that requires a user and password,
// and a node that verifies callers' signed tokens: NATS credentials as flags or from the
// environment, the caller's token as a flag, a file or TROUPE_TOKEN; a refused login and a
// missing token are refusals (exit 1) that name where the credentials came from, never a secret.
import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Troupe } from '../../runtime/index.ts';
import { tempDir, useNatsServer } from '../helpers/nats.ts';

const vaultModule = fileURLToPath(new URL('../fixtures/vault.ts', import.meta.url));
const cli = fileURLToPath(new URL('../../runtime/cli/main.ts', import.meta.url));
const runTs = fileURLToPath(new URL('../../runtime/bin/run-ts.cjs', import.meta.url));
const USER = 'troupe-cli';
const PASSWORD = `pw-${randomBytes(12).toString('hex')}`;
const WRONG = `wrong-${randomBytes(12).toString('hex')}`;
const CLEARED = ['NATS_URL', 'NATS_USER', 'NATS_PASSWORD', 'NATS_TOKEN', 'NATS_NKEY', 'NATS_CREDS', 'NATS_TLS_CA', 'NATS_TLS_CERT', 'NATS_TLS_KEY', 'TROUPE_TOKEN', 'TROUPE_TOKEN_FILE', 'TROUPE_STREAM'];
const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });

function authConfig(): string {
  const file = join(tempDir(), 'auth.conf');
  writeFileSync(file, [
    'max_payload: 8MB',
    'jetstream { max_memory_store: 64MB, max_file_store: 1GB }',
    `authorization { users = [ { user: "${USER}", password: "${PASSWORD}" } ] }`,
    '',
  ].join('\n'));
  return file;
}

function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const e: NodeJS.ProcessEnv = { ...process.env };
  for (const k of CLEARED) delete e[k];
  const child = spawn(process.execPath, [runTs, cli, ...args], { env: { ...e, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, stdout, stderr })));
}

describe('troupe send, state, history, cluster status and keys with credentials', () => {
  const nats = useNatsServer({ config: authConfig() });
  // The command line talks to the default stream and subject prefix; this file's server is its own.
  const stream = 'TROUPE';
  let node: Troupe;
  let aliceToken: string;
  let tokenFile: string;

  beforeAll(async () => {
    node = await Troupe.start({
      actors: [vaultModule], servers: nats.url, nats: { user: USER, password: PASSWORD },
      dataDir: tempDir(), workers: 1, shards: 4, logLevel: 'silent', httpPort: false,
      auth: { publicKey: publicKey.export({ type: 'spki', format: 'pem' }) as string, issuer: 'test-idp' },
    });
    aliceToken = await new SignJWT({ roles: ['customer'] }).setProtectedHeader({ alg: 'ES256' }).setSubject('alice').setIssuer('test-idp')
      .setIssuedAt().setExpirationTime('10m').sign(privateKey);
    tokenFile = join(tempDir(), 'alice.jwt');
    writeFileSync(tokenFile, `${aliceToken}\n`, { mode: 0o600 });
  });
  afterAll(async () => {
    await node?.stop();
  });

  it('sends with NATS credentials and a token file given as flags, and reads with both from the environment; the events carry the token\'s principal', async () => {
    const sent = await run(['send', 'Vault', 'v1', 'OpenVault', '--nats-url', nats.url, '--nats-user', USER, '--nats-password', PASSWORD, '--token-file', tokenFile, '--user', 'mallory']);
    expect(sent.code, sent.stderr).toBe(0);
    expect(JSON.parse(sent.stdout)).toMatchObject({ version: 1 });
    const events = (await node.history('Vault', 'v1', { principal: { id: 'alice', roles: ['customer'] } }));
    expect(events.map((e) => [e.eventType, e.userId])).toEqual([['VaultOpened', 'alice']]);

    const read = await run(['history', 'Vault', 'v1'], { NATS_URL: nats.url, NATS_USER: USER, NATS_PASSWORD: PASSWORD, TROUPE_TOKEN: aliceToken });
    expect(read.code, read.stderr).toBe(0);
    expect((JSON.parse(read.stdout) as { userId: string }[]).map((e) => e.userId)).toEqual(['alice']);
    const seen = [sent.stdout, sent.stderr, read.stdout, read.stderr].join('\n');
    expect(seen).not.toContain(PASSWORD);
  }, 60_000);

  it('refuses a command without a token on a node that verifies callers: UNAUTHENTICATED, exit 1, and how to give one', async () => {
    const r = await run(['send', 'Vault', 'v2', 'OpenVault', '--nats-url', nats.url], { NATS_USER: USER, NATS_PASSWORD: PASSWORD });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^troupe: UNAUTHENTICATED: this node requires a signed token .*; this node verifies callers: give a signed token with TROUPE_TOKEN, --token-file or --token\n$/);
    const bad = await run(['state', 'Vault', 'v1', '--nats-url', nats.url, '--token', 'x.y.z'], { NATS_USER: USER, NATS_PASSWORD: PASSWORD });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/UNAUTHENTICATED: the token was refused: it is not a well-formed signed JWT; the token came from --token/);
  }, 60_000);

  it('refuses a wrong NATS password with NATS_AUTH and exit 1 in every command that connects, naming the flag or variable, never the password', async () => {
    const flag = await run(['send', 'Vault', 'v1', 'Deposit', '{"amount":1}', '--nats-url', nats.url, '--nats-user', USER, '--nats-password', WRONG, '--token-file', tokenFile]);
    expect(flag.code).toBe(1);
    expect(flag.stderr).toMatch(new RegExp(`^troupe: NATS_AUTH: cannot connect to NATS at nats://127\\.0\\.0\\.1:\\d+: the server refused user ${USER} and its password, from --nats-user and --nats-password \\(authorization violation\\): check them\\n$`));
    const env = { NATS_URL: nats.url, NATS_USER: USER, NATS_PASSWORD: WRONG };
    const cluster = await run(['cluster', 'status', '--stream', stream], env);
    expect(cluster.code).toBe(1);
    expect(cluster.stderr).toContain(`NATS_AUTH: cannot connect to NATS at ${nats.url}: the server refused user ${USER} and its password, from NATS_USER and NATS_PASSWORD`);
    const keys = await run(['keys', 'status', '--stream', stream], { ...env, TROUPE_MASTER_KEY: randomBytes(32).toString('base64') });
    expect(keys.code).toBe(1);
    expect(keys.stderr).toContain('NATS_AUTH: ');
    expect(keys.stderr).toContain('from NATS_USER and NATS_PASSWORD');
    for (const r of [flag, cluster, keys]) expect(r.stdout + r.stderr).not.toContain(WRONG);
    // With the right password as a flag (over a wrong one in the environment), cluster status answers.
    const ok = await run(['cluster', 'status', '--stream', stream, '--json', '--nats-password', PASSWORD], env);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ stream });
  }, 90_000);
});
