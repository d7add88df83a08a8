// A JetStream cluster of local nats-server processes on loopback, for multi-node tests and R3
// benchmarks: each member is one server of nats-server.ts, with its own name, ports and store.

import { freePorts, startNatsServer, type NatsServerHandle, type StartNatsServerOptions } from './nats-server.ts';

export interface NatsCluster {
  urls: string[];
  servers: NatsServerHandle[];
  /** Stop every server (SIGTERM, wait). */
  stop(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Finding the binary

/**
 * Start a JetStream cluster of `size` (default 3) servers on loopback, each with its own
 * server_name (`troupe-n1`...), client port, route port and temp store; resolves once every
 * member knows the meta leader, so R3 streams can be created at once.
 */
export async function startNatsCluster(opts: { size?: number; name?: string; syncAlways?: boolean; config?: string } = {}): Promise<NatsCluster> {
  const size = opts.size ?? 3;
  if (!Number.isInteger(size) || size < 1) throw new Error(`startNatsCluster: size must be a positive integer, got ${size}`);
  // Now and then (seen about once in fifty starts on a loaded 2-core machine) a fresh 2.10
  // cluster keeps re-creating routes and elects no JetStream meta leader; a new cluster on
  // new ports then forms at once. So: up to three attempts of 15 s each.
  let last: unknown;
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      return await startClusterOnce(size, opts, 15_000);
    } catch (e) {
      last = e;
    }
  }
  throw last;
}

async function startClusterOnce(size: number, opts: { name?: string; syncAlways?: boolean; config?: string }, timeoutMs: number): Promise<NatsCluster> {
  const clusterName = opts.name ?? 'troupe-test';
  const ports = await freePorts(size * 3);
  const clientPorts = ports.slice(0, size);
  const routePorts = ports.slice(size, size * 2);
  const monitorPorts = ports.slice(size * 2);
  const routes = routePorts.map((p) => `nats-route://127.0.0.1:${p}`);
  const started = await Promise.allSettled(clientPorts.map((port, i) => {
    const o: StartNatsServerOptions = {
      port,
      serverName: `troupe-n${i + 1}`,
      cluster: { name: clusterName, port: routePorts[i]!, routes },
      // A one-server "cluster" never logs a meta leader line for others; wait only for ready.
      waitForMetaLeader: size > 1,
      timeoutMs,
      // Monitoring on loopback, to see when the meta group can place replicated streams.
      extraArgs: ['-m', String(monitorPorts[i]!)],
    };
    if (opts.syncAlways) o.syncAlways = true;
    if (opts.config) o.config = opts.config;
    return startNatsServer(o);
  }));
  const servers = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  const stop = async () => { await Promise.all(servers.map((s) => s.stop())); };
  if (failed) {
    await stop();
    throw failed.reason;
  }
  if (size > 1) {
    try {
      await metaGroupReady(monitorPorts, size, Date.now() + timeoutMs);
    } catch (e) {
      await stop();
      throw e;
    }
  }
  return { urls: servers.map((s) => s.url), servers, stop };
}

/**
 * Resolves when every server names the same JetStream meta leader and the leader sees all
 * other peers as current: before that, creating an R3 stream can fail with "no suitable peers
 * for placement" even though every server has logged the leader (seen here).
 */
async function metaGroupReady(monitorPorts: number[], size: number, deadline: number): Promise<void> {
  let last = '';
  while (Date.now() < deadline) {
    try {
      const views = await Promise.all(monitorPorts.map(async (port) => {
        const r = await fetch(`http://127.0.0.1:${port}/jsz`);
        return (await r.json() as { meta_cluster?: { leader?: string; replicas?: { current?: boolean }[] } }).meta_cluster;
      }));
      const leader = views[0]?.leader;
      const agreed = leader !== undefined && leader !== '' && views.every((v) => v?.leader === leader);
      const leaderView = views.find((v) => v?.replicas !== undefined);
      const current = leaderView?.replicas?.filter((r) => r.current === true).length ?? 0;
      if (agreed && current === size - 1) return;
      last = JSON.stringify(views);
    } catch (e) {
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the JetStream meta group of the cluster did not form in time; last view: ${last.slice(0, 2000)}`);
}
