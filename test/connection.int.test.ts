// NATS connection security against a real nats-server that requires a user and password: the
// node (main thread, worker threads, key store), TroupeClient, the dead-letter queue and the CLI
// connect with credentials from the environment or from options; a wrong password is a clear
// error that does not contain it; and the password is in no log line, error, /metrics or /health.
// Then an NKey user over mutual TLS.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nkeys } from '@nats-io/transport-node';
import { afterAll, describe, expect, it } from 'vitest';
import { DeadLetterQueue, isTroupeError, NatsAuthError, Troupe, TroupeClient } from '../runtime/index.ts';
import { findNatsServer, tempDir, useNatsServer } from './helpers/nats.ts';
import { freshStream } from './helpers/troupe.ts';

const CUSTOMER = fileURLToPath(new URL('./fixtures/customer.ts', import.meta.url));
const cli = fileURLToPath(new URL('../runtime/cli/main.ts', import.meta.url));
const runTs = fileURLToPath(new URL('../runtime/bin/run-ts.cjs', import.meta.url));
const USER = 'troupe-node';
const PASSWORD = `pw-${randomBytes(12).toString('hex')}`;
const WRONG = `wrong-${randomBytes(12).toString('hex')}`;
const NATS_VARS = ['NATS_URL', 'NATS_USER', 'NATS_PASSWORD', 'NATS_TOKEN', 'NATS_NKEY', 'NATS_CREDS', 'NATS_TLS_CA', 'NATS_TLS_CERT', 'NATS_TLS_KEY', 'TROUPE_MASTER_KEY'];

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

async function failure(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a failure');
}

/** Everything an error shows: message, data, causes. */
function everything(e: unknown): string {
  const parts: string[] = [];
  for (let c = e as { message?: string; data?: unknown; cause?: unknown; stack?: string } | undefined; c; c = c.cause as typeof c) {
    parts.push(String(c.message), JSON.stringify(c.data ?? {}), String(c.stack));
  }
  return parts.join('\n');
}

describe('NATS connection security', () => {
  const nats = useNatsServer({ config: authConfig() });
  const saved = Object.fromEntries(NATS_VARS.map((n) => [n, process.env[n]]));
  const masterKey = randomBytes(32).toString('base64');
  const children = new Set<ChildProcess>();

  const restoreEnv = () => {
    for (const n of NATS_VARS) {
      if (saved[n] === undefined) delete process.env[n];
      else process.env[n] = saved[n];
    }
  };
  afterAll(() => {
    restoreEnv();
    for (const c of children) c.kill('SIGKILL');
  });

  it('refuses to connect without credentials, as the server requires them', async () => {
    for (const n of NATS_VARS) delete process.env[n];
    const e = await failure(TroupeClient.connect({ servers: nats.url }));
    expect(isTroupeError(e, 'NATS_AUTH')).toBe(true);
    expect(e).toBeInstanceOf(NatsAuthError);
    expect((e as NatsAuthError).retryable).toBe(false);
    expect(e.message).toMatch(/cannot connect to NATS at nats:\/\/127\.0\.0\.1:\d+: the server refused no credentials \(authorization violation\): check NATS_USER\/NATS_PASSWORD, NATS_CREDS or NATS_TOKEN/);
  });

  it('connects a node (main thread, workers, key store) with credentials from the environment and a client with options', async () => {
    for (const n of NATS_VARS) delete process.env[n];
    process.env.NATS_USER = USER;
    process.env.NATS_PASSWORD = PASSWORD;
    process.env.TROUPE_MASTER_KEY = masterKey;
    const { stream, subjectPrefix } = freshStream('AUTH');
    const node = await Troupe.start({ actors: [CUSTOMER], servers: nats.url, stream, subjectPrefix, dataDir: tempDir(), workers: 1, shards: 2, logLevel: 'silent' });
    try {
      // The client and the dead-letter queue get their credentials from options alone.
      delete process.env.NATS_USER;
      delete process.env.NATS_PASSWORD;
      const client = await TroupeClient.connect({ servers: nats.url, subjectPrefix, nats: { user: USER, password: PASSWORD } });
      try {
        await expect(client.send('Customer', 'c1', 'RegisterCustomer', { name: 'Ada', email: 'ada@example.org', plan: 'gold' })).resolves.toMatchObject({ version: 1 });
        await expect(client.query('Customer', 'c1')).resolves.toMatchObject({ state: { email: 'ada@example.org' } });
      } finally {
        await client.close();
      }
      const dlq = await DeadLetterQueue.open({ servers: nats.url, stream, subjectPrefix, nats: { user: USER, password: PASSWORD } });
      await dlq.close();
      // And a node with options only.
      const second = await Troupe.start({
        actors: [CUSTOMER], servers: nats.url, nats: { user: USER, password: PASSWORD }, stream: `${stream}_2`, subjectPrefix: `${subjectPrefix}_2`,
        dataDir: tempDir(), workers: 1, shards: 2, logLevel: 'silent', httpPort: false,
      });
      await expect(second.send('Customer', 'c2', 'RegisterCustomer', { name: 'Bob', email: 'bob@example.org', plan: 'free' })).resolves.toMatchObject({ version: 1 });
      await second.stop();
    } finally {
      await node.stop();
      restoreEnv();
    }
  }, 60_000);

  it('refuses a wrong password with NATS_AUTH (not retryable), naming the user and where the password came from, never the password', async () => {
    for (const n of NATS_VARS) delete process.env[n];
    const e = await failure(TroupeClient.connect({ servers: nats.url, nats: { user: USER, password: WRONG } }));
    expect(isTroupeError(e, 'NATS_AUTH')).toBe(true);
    expect((e as NatsAuthError).retryable).toBe(false);
    expect(e.message).toMatch(new RegExp(`the server refused user ${USER} and its password, from options\\.nats\\.user and options\\.nats\\.password \\(authorization violation\\)`));
    expect(everything(e)).not.toContain(WRONG);
    process.env.NATS_USER = USER;
    process.env.NATS_PASSWORD = WRONG;
    const fromEnv = await failure(TroupeClient.connect({ servers: nats.url }));
    expect(fromEnv.message).toContain(`user ${USER} and its password, from NATS_USER and NATS_PASSWORD (authorization violation)`);
    for (const n of NATS_VARS) delete process.env[n];

    const inUrl = nats.url.replace('nats://', `nats://${USER}:${WRONG}@`);
    const e2 = await failure(TroupeClient.connect({ servers: inUrl }));
    expect(e2.message).toMatch(/cannot connect to NATS at nats:\/\/127\.0\.0\.1:\d+: /);
    expect(everything(e2)).not.toContain(WRONG);

    process.env.TROUPE_MASTER_KEY = masterKey;
    const { stream, subjectPrefix } = freshStream('AUTHBAD');
    const e3 = await failure(Troupe.start({ actors: [CUSTOMER], servers: nats.url, nats: { user: USER, password: WRONG }, stream, subjectPrefix, dataDir: tempDir(), workers: 1, logLevel: 'silent' }));
    expect(isTroupeError(e3, 'NATS_AUTH')).toBe(true);
    expect(e3.message).toContain(`user ${USER}`);
    expect(everything(e3)).not.toContain(WRONG);
    restoreEnv();
  }, 30_000);

  it('keeps the password out of the CLI\'s output, its logs, /metrics and /health', async () => {
    const env: NodeJS.ProcessEnv = { ...process.env, TROUPE_NATS_SERVER: findNatsServer().path, OTEL_TRACES_EXPORTER: 'none' };
    for (const n of NATS_VARS) delete env[n];
    Object.assign(env, { NATS_URL: nats.url, NATS_USER: USER, NATS_PASSWORD: PASSWORD, TROUPE_MASTER_KEY: masterKey, TROUPE_DATA_DIR: tempDir() });
    const run = (args: string[], extra: Record<string, string> = {}) => {
      const child = spawn(process.execPath, [runTs, cli, ...args], { env: { ...env, ...extra }, stdio: ['ignore', 'pipe', 'pipe'] });
      children.add(child);
      const out = { stdout: '', stderr: '' };
      child.stdout.on('data', (d: Buffer) => { out.stdout += d.toString(); });
      child.stderr.on('data', (d: Buffer) => { out.stderr += d.toString(); });
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => { children.delete(child); resolve(code); }));
      return { child, out, exited };
    };
    const node = run(['start', '--actors', CUSTOMER, '--workers', '1', '--shards', '2', '--http-port', '0', '--log-level', 'debug']);
    const until = Date.now() + 45_000;
    while (!node.out.stdout.includes('Ctrl-C stops')) {
      if (Date.now() > until || node.child.exitCode !== null) throw new Error(`troupe start did not start:\n${node.out.stdout}\n${node.out.stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const http = /HTTP: (http:\/\/\S+)\/health/.exec(node.out.stdout)![1]!;
    const sent = run(['send', 'Customer', 'c9', 'RegisterCustomer', '{"name":"Cy","email":"cy@example.org","plan":"free"}']);
    expect(await sent.exited, sent.out.stderr).toBe(0);
    const refused = run(['send', 'Customer', 'c9', 'ChangeEmail', '{"email":"x@example.org"}'], { NATS_PASSWORD: WRONG });
    expect(await refused.exited).toBe(1);
    expect(refused.out.stderr).toMatch(new RegExp(`^troupe: NATS_AUTH: cannot connect to NATS at nats://127\\.0\\.0\\.1:\\d+: the server refused user ${USER} and its password, from NATS_USER and NATS_PASSWORD \\(authorization violation\\): check them\\n$`));
    expect(refused.out.stderr).toContain(`user ${USER}`);
    const metrics = await (await fetch(`${http}/metrics`)).text();
    const health = await (await fetch(`${http}/health`)).text();
    expect(metrics).toContain('troupe_');
    node.child.kill('SIGTERM');
    await node.exited;
    const seen = [node.out.stdout, node.out.stderr, sent.out.stdout, sent.out.stderr, refused.out.stdout, refused.out.stderr, metrics, health].join('\n');
    expect(seen).not.toContain(PASSWORD);
    expect(seen).not.toContain(WRONG);
    expect(node.out.stdout).toContain(`NATS: ${nats.url} (given)`);
  }, 90_000);
});

/** A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl. */
function certificates(): { dir: string; ca: string; serverCert: string; serverKey: string; clientCert: string; clientKey: string } {
  const dir = tempDir();
  const p = (name: string) => join(dir, name);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=troupe-test-ca');
  writeFileSync(p('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  for (const who of ['server', 'client']) {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${who}.key`, '-out', `${who}.csr`, '-subj', `/CN=troupe-${who}`);
    ssl('x509', '-req', '-in', `${who}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${who}.pem`, '-days', '1',
      ...(who === 'server' ? ['-extfile', 'server.ext'] : []));
  }
  return { dir, ca: p('ca.pem'), serverCert: p('server.pem'), serverKey: p('server.key'), clientCert: p('client.pem'), clientKey: p('client.key') };
}

describe('NATS connection security: NKey and mutual TLS', () => {
  const user = nkeys.createUser();
  const seed = new TextDecoder().decode(user.getSeed());
  const certs = certificates();
  const config = join(certs.dir, 'tls.conf');
  writeFileSync(config, [
    'max_payload: 8MB',
    'jetstream { max_memory_store: 64MB, max_file_store: 1GB }',
    `tls { cert_file: "${certs.serverCert}", key_file: "${certs.serverKey}", ca_file: "${certs.ca}", verify: true }`,
    `authorization { users = [ { nkey: "${user.getPublicKey()}" } ] }`,
    '',
  ].join('\n'));
  const nats = useNatsServer({ config });
  const saved = Object.fromEntries(NATS_VARS.map((n) => [n, process.env[n]]));
  afterAll(() => {
    for (const n of NATS_VARS) {
      if (saved[n] === undefined) delete process.env[n];
      else process.env[n] = saved[n];
    }
  });

  it('connects a node with an NKey seed file and client certificates from the environment, and a client with options', async () => {
    for (const n of NATS_VARS) delete process.env[n];
    const seedFile = join(certs.dir, 'user.nk');
    writeFileSync(seedFile, `${seed}\n`, { mode: 0o600 });
    Object.assign(process.env, { NATS_NKEY: seedFile, NATS_TLS_CA: certs.ca, NATS_TLS_CERT: certs.clientCert, NATS_TLS_KEY: certs.clientKey, TROUPE_MASTER_KEY: randomBytes(32).toString('base64') });
    const { stream, subjectPrefix } = freshStream('TLS');
    const node = await Troupe.start({ actors: [CUSTOMER], servers: nats.url, stream, subjectPrefix, dataDir: tempDir(), workers: 1, shards: 2, logLevel: 'silent', httpPort: false });
    try {
      for (const n of ['NATS_NKEY', 'NATS_TLS_CA', 'NATS_TLS_CERT', 'NATS_TLS_KEY']) delete process.env[n];
      const tls = { caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.clientKey };
      const client = await TroupeClient.connect({ servers: nats.url, subjectPrefix, nats: { nkeySeed: seed, tls } });
      try {
        await expect(client.send('Customer', 'c1', 'RegisterCustomer', { name: 'Ada', email: 'ada@example.org', plan: 'gold' })).resolves.toMatchObject({ version: 1 });
      } finally {
        await client.close();
      }
      // Without the client certificate the server refuses the TLS handshake; without the seed, the login.
      const noCert = await failure(TroupeClient.connect({ servers: nats.url, nats: { nkeySeed: seed, tls: { caFile: certs.ca } } }));
      expect(noCert.message).toMatch(/^cannot connect to NATS at nats:\/\/127\.0\.0\.1:\d+: timeout \(over TLS: a server that verifies clients drops one without a certificate; check tls\.certFile and tls\.keyFile, NATS_TLS_CERT and NATS_TLS_KEY\)/);
      expect(everything(noCert)).not.toContain(seed);
      const noSeed = await failure(TroupeClient.connect({ servers: nats.url, nats: { tls } }));
      expect(noSeed.message).toContain('the server refused no credentials (authorization violation)');
    } finally {
      await node.stop();
    }
  }, 60_000);
});
