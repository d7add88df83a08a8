import { mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { connect as netConnect } from 'node:net';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { afterEach, describe, expect, it } from 'vitest';
import {
  ENSURE_NATS_COMMAND, findNatsServer, startNatsCluster, startNatsServer, tempDir, useNatsServer, type NatsCluster,
  type NatsServerHandle,
} from '../helpers/nats.ts';
import { startNatsServer as startForApp } from '../../runtime/testing/index.ts';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

async function open(url: string | string[]): Promise<NatsConnection> {
  const nc = await connect({ servers: url, reconnect: false });
  cleanups.push(() => nc.close());
  return nc;
}

function portAccepts(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = netConnect({ host: '127.0.0.1', port });
    s.once('connect', () => { s.destroy(); res(true); });
    s.once('error', () => { s.destroy(); res(false); });
  });
}

function started(s: NatsServerHandle): NatsServerHandle {
  cleanups.push(() => s.stop());
  return s;
}

describe('nats-server binary', () => {
  it('is found and is 2.10 or newer', () => {
    const { path, version } = findNatsServer();
    expect(path).toMatch(/nats-server$/);
    const [major, minor] = version.split('.').map(Number);
    expect(major! > 2 || (major === 2 && minor! >= 10)).toBe(true);
  });

  it('fails with the install command when the binary is missing', () => {
    const saved = process.env.TROUPE_NATS_SERVER;
    process.env.TROUPE_NATS_SERVER = '/nonexistent/nats-server';
    try {
      expect(() => findNatsServer()).toThrow(ENSURE_NATS_COMMAND);
    } finally {
      if (saved === undefined) delete process.env.TROUPE_NATS_SERVER; else process.env.TROUPE_NATS_SERVER = saved;
    }
    expect(findNatsServer().version).toMatch(/^\d+\.\d+\.\d+/);
  });

  it("is found in the app's .troupe/bin (the working directory's) when PATH and TROUPE_NATS_SERVER have none, and starts from the package's nats.conf", async () => {
    const real = findNatsServer().path;
    const app = tempDir();
    const bin = join(app, '.troupe', 'bin', 'nats-server');
    mkdirSync(join(app, '.troupe', 'bin'), { recursive: true });
    symlinkSync(real, bin);
    const saved = { cwd: process.cwd(), PATH: process.env.PATH, TROUPE_NATS_SERVER: process.env.TROUPE_NATS_SERVER, TROUPE_DATA_DIR: process.env.TROUPE_DATA_DIR };
    process.chdir(app);
    process.env.PATH = '';
    delete process.env.TROUPE_NATS_SERVER;
    delete process.env.TROUPE_DATA_DIR;
    try {
      expect(findNatsServer().path).toBe(bin);
      const s = started(await startForApp());
      const nc = await open(s.url);
      const info = await (await jetstreamManager(nc)).getAccountInfo();
      expect(info.limits).toBeDefined();
    } finally {
      process.chdir(saved.cwd);
      for (const k of ['PATH', 'TROUPE_NATS_SERVER', 'TROUPE_DATA_DIR'] as const) {
        if (saved[k] === undefined) delete process.env[k]; else process.env[k] = saved[k];
      }
    }
  });
});

describe('startNatsServer', () => {
  it('starts from nats.conf on a random loopback port with JetStream, and stop()/kill()/restart() keep the store', async () => {
    const storeDir = tempDir();
    const s = started(await startNatsServer({ storeDir }));
    expect(s.url).toBe(`nats://127.0.0.1:${s.port}`);
    expect(s.storeDir).toBe(storeDir);
    expect(s.running).toBe(true);
    expect(s.pid).toBeGreaterThan(0);

    let nc = await open(s.url);
    expect(nc.info?.max_payload).toBe(8 * 1024 * 1024);
    expect(nc.info?.jetstream).toBe(true);
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'T', subjects: ['t.>'] });
    const ack = await jetstream(nc).publish('t.one', 'hello');
    expect(ack).toMatchObject({ stream: 'T', seq: 1 });
    await nc.close();

    const firstPid = s.pid;
    await s.stop();
    expect(s.running).toBe(false);
    expect(await portAccepts(s.port)).toBe(false);

    await s.restart();
    expect(s.running).toBe(true);
    expect(s.pid).not.toBe(firstPid);
    nc = await open(s.url);
    expect((await (await jetstreamManager(nc)).streams.info('T')).state.messages).toBe(1);
    expect((await jetstream(nc).publish('t.two', 'again')).seq).toBe(2);
    await nc.close();

    await s.kill();
    expect(s.running).toBe(false);
    await s.restart();
    nc = await open(s.url);
    const info = await (await jetstreamManager(nc)).streams.info('T');
    expect(info.state.messages).toBe(2);
    expect(info.state.last_seq).toBe(2);
  });

  it('writes sync_interval: always into a generated config for syncAlways', async () => {
    const s = started(await startNatsServer({ syncAlways: true, serverName: 'sync-test' }));
    const conf = readFileSync(s.configFile, 'utf8');
    expect(conf).toMatch(/^\s*sync_interval: always$/m);
    expect(conf).toContain(`store_dir: ${JSON.stringify(s.storeDir)}`);
    const nc = await open(s.url);
    expect(nc.info?.server_name).toBe('sync-test');
    await (await jetstreamManager(nc)).streams.add({ name: 'S', subjects: ['s'] });
    expect((await jetstream(nc).publish('s', 'x')).seq).toBe(1);
  });

  it('reports the server output when the server cannot start', async () => {
    const s = started(await startNatsServer());
    // Same port twice: the second server cannot bind.
    await expect(startNatsServer({ port: s.port })).rejects.toThrow(/address already in use/);
  });
});

describe('useNatsServer', () => {
  const nats = useNatsServer();
  it('gives each test file a running server', async () => {
    expect(nats.running).toBe(true);
    const nc = await open(nats.url);
    expect(nc.info?.jetstream).toBe(true);
  });
});

describe('startNatsCluster', () => {
  it('starts 3 routed servers that take an R3 stream', async () => {
    const cluster: NatsCluster = await startNatsCluster();
    cleanups.push(() => cluster.stop());
    expect(cluster.urls).toHaveLength(3);
    expect(new Set(cluster.servers.map((s) => s.name)).size).toBe(3);

    const nc = await open(cluster.urls);
    const jsm = await jetstreamManager(nc);
    const si = await jsm.streams.add({ name: 'R3', subjects: ['r3.>'], num_replicas: 3 });
    expect(si.config.num_replicas).toBe(3);
    expect(si.cluster?.replicas).toHaveLength(2);
    const ack = await jetstream(nc).publish('r3.a', 'x');
    expect(ack.seq).toBe(1);

    // Every member serves the stream.
    for (const url of cluster.urls) {
      const one = await open(url);
      expect((await (await jetstreamManager(one)).streams.info('R3')).state.messages).toBe(1);
    }
  }, 120_000);
});
