/**
 * Shard checkpoints shared through NATS KV, so a node that takes a shard over does not read
 * the shard's whole log: the node that hands a shard off writes what its LMDB cache knows of
 * the shard (store.ts `exportShards`), the next owner restores it (`importShard`) and reads
 * only the log after it.
 *
 * One KV bucket per stream, `<stream>_checkpoints` (history 1, no max age):
 *
 *   s<shard>              {position, identity, id, chunks, bytes}   the manifest, written last
 *   s<shard>.<id>.<i>     chunk i of the checkpoint's bytes          (a value stays under max_payload)
 *
 * A writer puts the chunks under a fresh id, then the manifest, then deletes the chunks of the
 * manifest it replaced; a reader that meets a missing chunk (a newer checkpoint replaced it
 * meanwhile) reads none and catches up from the log. `identity` is the stream's (store.ts):
 * a checkpoint of another incarnation of the stream is ignored.
 */
import { Kvm, type KV } from '@nats-io/kv';
import { nuid, type NatsConnection } from './journal.ts';

export interface CheckpointManifest {
  /** The log position up to which the checkpoint's history and command ids are complete. */
  position: number;
  identity: string;
  id: string;
  chunks: number;
  bytes: number;
}

/** Room left in a message for the KV headers and subject. */
const HEADROOM = 4096;

export class SharedCheckpoints {
  private constructor(private readonly kv: KV, private readonly chunkBytes: number) {}

  static async open(nc: NatsConnection, stream: string, replicas: number): Promise<SharedCheckpoints> {
    const kvm = new Kvm(nc);
    const bucket = `${stream}_checkpoints`;
    let kv: KV;
    try {
      kv = await kvm.create(bucket, { history: 1, replicas });
    } catch {
      kv = await kvm.open(bucket);
    }
    const maxPayload = nc.info?.max_payload ?? 1024 * 1024;
    return new SharedCheckpoints(kv, Math.max(16 * 1024, maxPayload - HEADROOM));
  }

  async manifest(shard: number): Promise<CheckpointManifest | null> {
    const e = await this.kv.get(`s${shard}`);
    if (e === null || e.operation !== 'PUT' || e.value.length === 0) return null;
    return e.json<CheckpointManifest>();
  }

  /** Write a shard's checkpoint; the previous one's chunks are deleted after. */
  async write(shard: number, position: number, identity: string, bytes: Uint8Array): Promise<CheckpointManifest> {
    const previous = await this.manifest(shard).catch(() => null);
    const id = nuid.next();
    const chunks = Math.max(1, Math.ceil(bytes.length / this.chunkBytes));
    for (let i = 0; i < chunks; i++) {
      await this.kv.put(`s${shard}.${id}.${i}`, bytes.subarray(i * this.chunkBytes, (i + 1) * this.chunkBytes));
    }
    const m: CheckpointManifest = { position, identity, id, chunks, bytes: bytes.length };
    await this.kv.put(`s${shard}`, JSON.stringify(m));
    if (previous !== null) {
      for (let i = 0; i < previous.chunks; i++) await this.kv.purge(`s${shard}.${previous.id}.${i}`).catch(() => {});
    }
    return m;
  }

  /** The checkpoint's bytes, or null when a chunk is gone (a newer checkpoint replaced it). */
  async read(shard: number, m: CheckpointManifest): Promise<Uint8Array | null> {
    const out = new Uint8Array(m.bytes);
    let at = 0;
    for (let i = 0; i < m.chunks; i++) {
      const e = await this.kv.get(`s${shard}.${m.id}.${i}`);
      if (e === null || e.operation !== 'PUT') return null;
      if (at + e.value.length > m.bytes) return null;
      out.set(e.value, at);
      at += e.value.length;
    }
    return at === m.bytes ? out : null;
  }
}
