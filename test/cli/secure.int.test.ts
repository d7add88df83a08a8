// The locked-down configuration of `troupe start --secure` (cli/secure.ts), against a real
// nats-server started with it: each user can do its job, and the server refuses the rest.
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consume, type Consumer } from '../../runtime/consumers/consume.ts';
import type { EventEnvelope } from '../../runtime/journal/codec.ts';
import type { Troupe } from '../../runtime/node/system.ts';
import { TroupeClient } from '../../runtime/remote/client.ts';
import { commandSubject } from '../../runtime/remote/subjects.ts';
import { ensureSecureConfig, type SecureFiles, type SecureUser } from '../../runtime/cli/secure.ts';
import { findNatsServer, freePorts, startNatsServer, tempDir, type NatsServerHandle } from '../helpers/nats.ts';
import { eventually, startNode } from '../helpers/troupe.ts';

const STREAM = 'TROUPE';
const PREFIX = 'troupe';
const SHARDS = 4;

/** The server's permission refusal found in `e` or its causes. */
function permissionViolation(e: unknown): { operation: string; subject: string } | undefined {
  for (let c = e; c !== undefined && c !== null; c = (c as { cause?: unknown }).cause) {
    if ((c as Error).name === 'PermissionViolationError') return c as { operation: string; subject: string };
  }
  return undefined;
}

async function refusal(p: Promise<unknown>): Promise<{ operation: string; subject: string } | undefined> {
  try {
    await p;
  } catch (e) {
    return permissionViolation(e);
  }
  throw new Error('the server accepted it');
}

describe('troupe start --secure configuration', () => {
  let server: NatsServerHandle;
  let files: SecureFiles;
  let node: Troupe;
  let admin: NatsConnection;
  const open: { close(): Promise<void> }[] = [];

  const as = (u: SecureUser) => ({ user: files.users[u].user, password: files.users[u].password });
  const connectAs = async (u: SecureUser) => {
    const nc = await connect({ servers: server.url, user: u, pass: files.users[u].password });
    open.push(nc);
    return nc;
  };
  const lastSeq = async () => (await (await jetstreamManager(admin)).streams.info(STREAM)).state.last_seq;

  beforeAll(async () => {
    const dir = join(tempDir(), 'secure');
    files = ensureSecureConfig(dir, { consumers: ['audit'] });
    server = await startNatsServer({ config: files.configFile });
    node = await startNode(server.url, { stream: STREAM, subjectPrefix: PREFIX, shards: SHARDS, workers: 1, nats: as('node') });
    admin = await connect({ servers: server.url, user: 'admin', pass: files.users.admin.password });
  }, 30_000);

  afterAll(async () => {
    for (const c of open.reverse()) await c.close().catch(() => {});
    await node?.stop();
    await admin?.close();
    await server?.stop();
  });

  it('writes the passwords once, in files only their owner reads', () => {
    for (const f of [files.configFile, join(files.dir, 'users.json'), ...Object.values(files.envFiles)]) {
      expect((statSync(f).mode & 0o777).toString(8), f).toBe('600');
    }
    expect((statSync(files.dir).mode & 0o777).toString(8)).toBe('700');
    const again = ensureSecureConfig(files.dir, { consumers: ['audit'] });
    expect(again.created).toBe(false);
    expect(again.users).toEqual(files.users);
    expect(new Set(Object.values(files.users).map((u) => u.password)).size).toBe(4);
  });

  it('refuses a connection without credentials or with a wrong password', async () => {
    await expect(connect({ servers: server.url, reconnect: false })).rejects.toThrow(/authorization/i);
    await expect(connect({ servers: server.url, user: 'client', pass: 'guessed-password', reconnect: false })).rejects.toThrow(/authorization/i);
  });

  it('lets a client user send commands and read state and history through TroupeClient', async () => {
    const client = await TroupeClient.connect({ servers: server.url, subjectPrefix: PREFIX, nats: as('client') });
    open.push(client);
    await client.send('Account', 'sec-1', 'OpenAccount', {});
    await client.send('Account', 'sec-1', 'Deposit', { amount: 40 });
    expect(await client.query('Account', 'sec-1')).toEqual({ state: { opened: true, balance: 40 }, version: 2 });
    expect((await client.history('Account', 'sec-1')).map((e) => e.eventType)).toEqual(['AccountOpened', 'Deposited']);
  });

  it('refuses a client user the log subjects, stream creation and deletion, and the shard-lease bucket', async () => {
    const nc = await connectAs('client');
    const before = await lastSeq();
    expect(await refusal(nc.request(`${PREFIX}.log.0`, new Uint8Array([1]), { timeout: 5_000 })))
      .toMatchObject({ operation: 'publish', subject: `${PREFIX}.log.0` });
    const jsm = await jetstreamManager(nc);
    expect(await refusal(jsm.streams.add({ name: 'STOLEN', subjects: ['stolen.>'] })))
      .toMatchObject({ operation: 'publish', subject: '$JS.API.STREAM.CREATE.STOLEN' });
    expect(await refusal(jsm.streams.delete(STREAM)))
      .toMatchObject({ operation: 'publish', subject: `$JS.API.STREAM.DELETE.${STREAM}` });
    // The lease of shard 0 exists (the node holds every shard), and the client may not read it.
    expect((await (await new Kvm(admin).open(`${STREAM}_shards`)).get('shard.0'))?.string()).toContain(node.nodeName);
    const shards = await new Kvm(nc).open(`${STREAM}_shards`);
    expect(await refusal(shards.get('shard.0')))
      .toMatchObject({ operation: 'publish', subject: `$JS.API.STREAM.MSG.GET.KV_${STREAM}_shards` });
    const direct = `$JS.API.DIRECT.GET.KV_${STREAM}_shards.$KV.${STREAM}_shards.shard.0`;
    expect(await refusal(nc.request(direct, new Uint8Array(), { timeout: 5_000 }))).toMatchObject({ operation: 'publish', subject: direct });
    expect(await refusal(shards.put('shard.0', 'mine')))
      .toMatchObject({ operation: 'publish', subject: `$KV.${STREAM}_shards.shard.0` });
    expect(await refusal(jsm.streams.info(`KV_${STREAM}_shards`)))
      .toMatchObject({ operation: 'publish', subject: `$JS.API.STREAM.INFO.KV_${STREAM}_shards` });
    // The stream is still there, with nothing added.
    expect(await lastSeq()).toBe(before);
  });

  it('lets a consumer user run consume(), and refuses it commands', async () => {
    const seen: EventEnvelope[] = [];
    const consumer: Consumer = await consume({
      name: 'audit', servers: server.url, nats: as('consumer'), stream: STREAM, subjectPrefix: PREFIX, dataDir: tempDir(),
      handler: (e) => { seen.push(e); },
    });
    open.push({ close: () => consumer.stop() });
    await node.send('Account', 'sec-2', 'OpenAccount', {});
    await eventually(async () => { expect(seen.map((e) => e.aggregateId)).toContain('sec-2'); }, 15_000);

    const nc = await connectAs('consumer');
    const before = await lastSeq();
    expect(await refusal(nc.request(commandSubject(PREFIX, 0), new Uint8Array([1]), { timeout: 5_000 })))
      .toMatchObject({ operation: 'publish', subject: commandSubject(PREFIX, 0) });
    expect(await refusal(nc.request(`${PREFIX}.cmd`, new Uint8Array([1]), { timeout: 5_000 })))
      .toMatchObject({ operation: 'publish', subject: `${PREFIX}.cmd` });
    expect(await refusal(nc.request(`${PREFIX}.log.0`, new Uint8Array([1]), { timeout: 5_000 })))
      .toMatchObject({ operation: 'publish', subject: `${PREFIX}.log.0` });
    expect(await lastSeq()).toBe(before);
  }, 30_000);
});

describe('troupe start --secure', () => {
  const cli = fileURLToPath(new URL('../../runtime/cli/main.ts', import.meta.url));
  const runTs = fileURLToPath(new URL('../../runtime/bin/run-ts.cjs', import.meta.url));
  const running = new Set<ChildProcess>();
  afterAll(() => { for (const c of running) c.kill('SIGKILL'); });

  function spawnCli(args: string[], env: Record<string, string> = {}): { child: ChildProcess; out: () => string; exited: Promise<number | null> } {
    const e: NodeJS.ProcessEnv = { ...process.env, TROUPE_NATS_SERVER: findNatsServer().path, OTEL_TRACES_EXPORTER: 'none', ...env };
    for (const k of ['NATS_URL', 'NATS_USER', 'NATS_PASSWORD', 'TROUPE_DATA_DIR', 'TROUPE_ACTORS', 'TROUPE_NATS_PORT', 'TROUPE_HTTP_PORT']) if (!(k in env)) delete e[k];
    const child = spawn(process.execPath, [runTs, cli, ...args], { cwd: tempDir(), env: e, stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => { running.delete(child); resolve(code); }));
    return { child, out: () => out, exited };
  }

  it('runs its own nats-server locked down, says where the credentials are, and serves the client user', async () => {
    const dataDir = tempDir();
    const [port] = await freePorts(1);
    const url = `nats://127.0.0.1:${port}`;
    const node = spawnCli(['start', '--secure', '--data-dir', dataDir, '--nats-port', String(port), '--http-port', 'off', '--workers', '1', '--log-level', 'warn']);
    const until = Date.now() + 45_000;
    while (!node.out().includes('Ctrl-C stops')) {
      if (Date.now() > until || node.child.exitCode !== null) throw new Error(`troupe start --secure did not start:\n${node.out()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const dir = join(dataDir, 'secure');
    const users = JSON.parse(readFileSync(join(dir, 'users.json'), 'utf8')) as Record<SecureUser, { user: string; password: string }>;
    expect(node.out()).toContain(`secured: credentials in ${dir}`);
    expect(node.out()).not.toContain('open');
    for (const u of Object.values(users)) expect(node.out()).not.toContain(u.password);

    await expect(connect({ servers: url, reconnect: false })).rejects.toThrow(/authorization/i);
    // The CLI's clients authenticate through NATS_USER / NATS_PASSWORD.
    const send = spawnCli(['send', 'Account', 'cli-1', 'OpenAccount', '--nats-url', url], { NATS_USER: 'client', NATS_PASSWORD: users.client.password });
    expect(await send.exited, send.out()).toBe(0);
    const anonymous = spawnCli(['state', 'Account', 'cli-1', '--nats-url', url, '--timeout', '2000']);
    expect(await anonymous.exited).not.toBe(0);
    expect(anonymous.out()).toMatch(/authorization/i);

    const client = await TroupeClient.connect({ servers: url, nats: { user: 'client', password: users.client.password } });
    try {
      expect(await client.query('Account', 'cli-1')).toEqual({ state: { opened: true, balance: 0 }, version: 1 });
    } finally {
      await client.close();
    }
    node.child.kill('SIGTERM');
    expect(await node.exited, node.out()).toBe(0);
  }, 60_000);
});
