/**
 * Throwaway nats-servers for benchmarks, on top of runtime/testing/nats-server.ts: loopback, JetStream
 * on, a fresh store dir that is deleted on stop() (not only at process exit, so a suite that
 * starts many servers does not fill the disk).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  findNatsServer,
  startNatsCluster,
  startNatsServer,
  type NatsCluster,
  type NatsServerHandle,
} from '../runtime/testing/nats-server.ts';

export interface BenchNats {
  readonly url: string;
  /** PID of the server process, for CPU/RSS sampling (ResourceSampler.addChild). */
  readonly pid: number;
  readonly storeDir: string;
  readonly handle: NatsServerHandle;
  /** Graceful stop (SIGTERM), then removal of the store dir. */
  stop(): Promise<void>;
  /** SIGKILL, then removal of the store dir. */
  kill(): Promise<void>;
}

/** Path of the nats-server binary Troupe would use; `nats-server` when none is found. */
export function natsServerBin(): string {
  try {
    return findNatsServer().path;
  } catch {
    return 'nats-server';
  }
}

/** Version of the nats-server Troupe would use, e.g. `v2.10.27`; `unknown` if none is found. */
export function natsServerVersion(): string {
  try {
    return `v${findNatsServer().version}`;
  } catch {
    return 'unknown';
  }
}

export async function startBenchNats(opts: { port?: number; syncAlways?: boolean } = {}): Promise<BenchNats> {
  const storeDir = await mkdtemp(join(tmpdir(), 'troupe-bench-nats-'));
  let handle: NatsServerHandle;
  try {
    handle = await startNatsServer({
      storeDir,
      ...(opts.port === undefined ? {} : { port: opts.port }),
      ...(opts.syncAlways === true ? { syncAlways: true } : {}),
    });
  } catch (err) {
    await rm(storeDir, { recursive: true, force: true });
    throw err;
  }
  const cleanup = (): Promise<void> => rm(storeDir, { recursive: true, force: true });
  return {
    url: handle.url,
    pid: handle.pid,
    storeDir,
    handle,
    async stop() {
      await handle.stop();
      await cleanup();
    },
    async kill() {
      await handle.kill();
      await cleanup();
    },
  };
}

/** A 3-server (by default) JetStream cluster on loopback, with every member's PID for sampling. */
export async function startBenchCluster(opts: { size?: number; syncAlways?: boolean } = {}): Promise<NatsCluster & { pids: number[] }> {
  const cluster = await startNatsCluster({
    size: opts.size ?? 3,
    ...(opts.syncAlways === true ? { syncAlways: true } : {}),
  });
  return { ...cluster, pids: cluster.servers.map((s) => s.pid) };
}
