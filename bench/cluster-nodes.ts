/**
 * The machinery of the cluster step (bench/cluster.ts): Troupe node processes, the shard leases
 * as the parent sees them in NATS KV, and a run's cleanup.
 */
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { ownerOf } from '../runtime/placement.ts';
import type { ClusterSettings } from './cluster.ts';
import { spawnChild, type ChildHandle } from './spawn.ts';
import { CHILD_SCRIPT, type ServeSpec } from './troupe.ts';

export interface ClusterNode {
  readonly name: string;
  readonly dataDir: string;
  readonly child: ChildHandle<{ stopped: true; stopMs: number }>;
}

export async function startNodes(settings: ClusterSettings, run: { stream: string; subjectPrefix: string }, names: readonly string[]): Promise<ClusterNode[]> {
  const nodes = names.map((name): ClusterNode => {
    const dataDir = mkdtempSync(join(tmpdir(), `troupe-bench-cluster-${name}-`));
    const spec: ServeSpec = {
      server: settings.server,
      stream: run.stream,
      subjectPrefix: run.subjectPrefix,
      dataDir,
      tuning: {
        shards: settings.shards,
        replicas: settings.replicas,
        nodeName: name,
        source: name,
        ...(settings.leaseTtlMs === undefined ? {} : { leaseTtlMs: settings.leaseTtlMs }),
        ...(settings.settleMs === undefined ? {} : { settleMs: settings.settleMs }),
      },
    };
    return { name, dataDir, child: spawnChild(CHILD_SCRIPT, { mode: 'serve', spec }) };
  });
  try {
    await Promise.all(nodes.map((n) => Promise.race([n.child.nextMessage(), n.child.result])));
  } catch (e) {
    await stopNodes(nodes);
    throw e;
  }
  return nodes;
}

/** SIGKILL every node still running and remove the data dirs. Every acknowledged command is in the log already. */
export async function stopNodes(nodes: readonly ClusterNode[]): Promise<void> {
  await Promise.all(nodes.map(async (n) => {
    const p = n.child.process;
    if (p.exitCode === null && p.signalCode === null) {
      const exited = new Promise((r) => p.once('exit', r));
      n.child.kill();
      await exited;
    }
    await rm(n.dataDir, { recursive: true, force: true }).catch(() => {});
  }));
}

/**
 * Follows `<stream>_shards` (one key per shard, the holder's name) from the parent. A lease that
 * expires makes no notification; a node that takes it writes its name, which does.
 */
export class LeaseWatch {
  readonly holders = new Map<number, string>();
  private readonly waiters = new Set<() => void>();
  private closed = false;

  private constructor(private readonly nc: NatsConnection, private readonly iter: AsyncIterable<{ key: string; operation: string; json<T>(): T }> & { stop(): void }) {}

  static async open(servers: string, stream: string): Promise<LeaseWatch> {
    const nc = await connect({ servers: servers.split(','), name: 'bench-lease-watch' });
    try {
      const kv = await new Kvm(nc).open(`${stream}_shards`);
      const iter = await kv.watch({ key: 'shard.>' });
      const w = new LeaseWatch(nc, iter);
      void w.pump();
      return w;
    } catch (e) {
      await nc.close();
      throw e;
    }
  }

  private async pump(): Promise<void> {
    try {
      for await (const e of this.iter) {
        const shard = Number(e.key.slice('shard.'.length));
        if (e.operation === 'PUT') this.holders.set(shard, e.json<{ node: string }>().node);
        else this.holders.delete(shard);
        for (const w of [...this.waiters]) w();
      }
    } catch {
      // closed
    }
  }

  /** Resolves with Date.now() once `ok(holders)` holds; rejects after `timeoutMs`. */
  until(ok: (holders: ReadonlyMap<number, string>) => boolean, timeoutMs: number, what: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!ok(this.holders)) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve(Date.now());
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; holders: ${JSON.stringify(Object.fromEntries(this.holders))}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.iter.stop();
    await this.nc.close().catch(() => {});
  }
}

/** Every shard held by the node placement gives it among `names`. */
export function placedOver(names: readonly string[], shards: number): (h: ReadonlyMap<number, string>) => boolean {
  const want = Array.from({ length: shards }, (_, s) => ownerOf(s, names));
  return (h) => want.every((n, s) => h.get(s) === n);
}

export async function deleteClusterRun(servers: string, stream: string): Promise<void> {
  const nc = await connect({ servers: servers.split(','), name: 'bench-cleanup' }).catch(() => null);
  if (nc === null) return;
  try {
    const jsm = await jetstreamManager(nc);
    for (const name of [stream, `KV_${stream}_shards`, `KV_${stream}_nodes`, `KV_${stream}_checkpoints`, `KV_${stream}_keys`]) await jsm.streams.delete(name).catch(() => {});
  } finally {
    await nc.close().catch(() => {});
  }
}

export async function streamMessages(servers: string, stream: string): Promise<number> {
  const nc = await connect({ servers: servers.split(','), name: 'bench-info' });
  try {
    return (await (await jetstreamManager(nc)).streams.info(stream)).state.messages;
  } finally {
    await nc.close();
  }
}
