/**
 * Subject keys in NATS KV, so that every node and consumer of a deployment reads the same keys.
 *
 *   bucket  <stream>_keys          (history 1, no expiry: a key lives until it is shredded)
 *   key     s.<subjectHash>.<kid>  value: JSON { v: 2, kid, s, at, w: { <master id>: wrapped key, base64 } }
 *           names                  value: JSON { v: 2, w: { <master id>: wrapped subject-name key } }
 *   (version 1 records, { v: 1, kid, s, at, mk, w }, hold one wrapping and are still read)
 *
 * Subject names never reach the bucket (a keyed hash stands for them) and keys are stored
 * wrapped, so the bucket alone reveals nothing. Shredding purges a subject's keys: the PURGE
 * marker that remains tells every reader "destroyed" rather than "never existed".
 *
 * This is one of the few files that import `@nats-io/*`.
 */
import { Kvm, type KV } from '@nats-io/kv';
import { connect, credsAuthenticator, nkeyAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import { connectFailure, loginRefusal, natsConnectOptions, resolveNatsAuth, type NatsAuthOptions } from '../connection.ts';
import { KeyRing, resolveMasterKeys, type KeyBackend, type KeyRingOptions, type MasterKeySource, type StoredKey, type Wraps } from './crypto.ts';
import { KeysUnavailableError } from '../errors.ts';

type KeyRecordJson =
  | { v: 1; kid: string; s: string; at: number; mk: string; w: string }
  | { v: 2; kid: string; s: string; at: number; w: Record<string, string> };

const NAME_KEY = 'names';
/** Attempts of a compare-and-set before giving up (only concurrent rotations compete). */
const CAS_ATTEMPTS = 20;

function encodeWraps(w: Wraps): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [id, bytes] of Object.entries(w)) out[id] = Buffer.from(bytes).toString('base64');
  return out;
}

function decodeWraps(w: Record<string, string>): Wraps {
  const out: Record<string, Uint8Array> = {};
  for (const [id, text] of Object.entries(w)) out[id] = Buffer.from(text, 'base64');
  return out;
}

function json(value: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value));
}

const INITIAL_LOAD_TIMEOUT_MS = 30_000;

/** The bucket that holds a stream's keys. */
export function keyBucketName(stream: string): string {
  return `${stream}_keys`;
}

function encodeRecord(k: StoredKey): Uint8Array {
  const rec: KeyRecordJson = { v: 2, kid: k.kid, s: k.subjectHash, at: k.createdAt, w: encodeWraps(k.wraps) };
  return json(rec);
}

function decodeRecord(bytes: Uint8Array): StoredKey {
  const rec = JSON.parse(new TextDecoder().decode(bytes)) as KeyRecordJson;
  const wraps = rec.v === 1 ? { [rec.mk]: Buffer.from(rec.w, 'base64') } : decodeWraps(rec.w);
  return { kid: rec.kid, subjectHash: rec.s, createdAt: rec.at, wraps };
}

function decodeNames(bytes: Uint8Array): Wraps {
  return decodeWraps((JSON.parse(new TextDecoder().decode(bytes)) as { w: Record<string, string> }).w);
}

/** The KV error of a create or update that lost a race (wrong last sequence). */
function lostRace(e: unknown): boolean {
  const err = e as { code?: unknown; api_error?: { err_code?: number }; message?: string };
  return err?.code === 10071 || err?.api_error?.err_code === 10071 || /wrong last sequence/i.test(err?.message ?? '');
}

/** `s.<subjectHash>.<kid>` → its parts. */
function parseKey(key: string): { subjectHash: string; kid: string } | undefined {
  const parts = key.split('.');
  return parts.length === 3 && parts[0] === 's' ? { subjectHash: parts[1]!, kid: parts[2]! } : undefined;
}

export class NatsKeyBackend implements KeyBackend {
  private stopFollowing: (() => void) | null = null;

  private constructor(private readonly kv: KV, private readonly ownConnection: NatsConnection | null) {}

  /** Open (creating if needed) the key bucket of `stream`. `ownConnection` is closed by close(). */
  static async open(nc: NatsConnection, stream: string, opts: { replicas?: number; ownConnection?: boolean } = {}): Promise<NatsKeyBackend> {
    try {
      const kv = await new Kvm(nc).create(keyBucketName(stream), { history: 1, replicas: opts.replicas ?? 1 });
      // A new replicated bucket answers "no responders" until its stream has elected a leader.
      const until = Date.now() + 15_000;
      for (;;) {
        try {
          await kv.get(NAME_KEY);
          break;
        } catch (e) {
          if (!/no responders/i.test((e as Error).message ?? '') || Date.now() > until) throw e;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      return new NatsKeyBackend(kv, opts.ownConnection === true ? nc : null);
    } catch (e) {
      throw new KeysUnavailableError(`cannot open the key bucket ${keyBucketName(stream)}: ${(e as Error).message}`, { stream }, e);
    }
  }

  async create(k: StoredKey): Promise<void> {
    await this.kv.create(`s.${k.subjectHash}.${k.kid}`, encodeRecord(k));
  }

  async destroy(subjectHash: string): Promise<string[]> {
    const names: string[] = [];
    for await (const name of await this.kv.keys(`s.${subjectHash}.*`)) names.push(name);
    const kids: string[] = [];
    for (const name of names) {
      await this.kv.purge(name);
      const parsed = parseKey(name);
      if (parsed !== undefined) kids.push(parsed.kid);
    }
    return kids;
  }

  async rewrap(kid: string, subjectHash: string, next: (current: Wraps) => Wraps): Promise<boolean> {
    const name = `s.${subjectHash}.${kid}`;
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const e = await this.kv.get(name);
      if (e === null || e.operation !== 'PUT') return false; // never stored, or destroyed: stays so
      const k = decodeRecord(e.value);
      try {
        await this.kv.update(name, encodeRecord({ ...k, wraps: next(k.wraps) }), e.revision);
        return true;
      } catch (err) {
        if (!lostRace(err)) throw err;
      }
    }
    throw new KeysUnavailableError(`cannot rewrap key ${kid}: it kept changing under ${CAS_ATTEMPTS} attempts`, { kid });
  }

  async nameKey(): Promise<Wraps | undefined> {
    const e = await this.kv.get(NAME_KEY);
    return e === null || e.operation !== 'PUT' ? undefined : decodeNames(e.value);
  }

  async initNameKey(wraps: Wraps): Promise<Wraps> {
    try {
      await this.kv.create(NAME_KEY, json({ v: 2, w: encodeWraps(wraps) }));
      return wraps;
    } catch (e) {
      if (!lostRace(e)) throw e;
      const stored = await this.nameKey();
      if (stored === undefined) throw e;
      return stored;
    }
  }

  async rewrapNameKey(next: (current: Wraps) => Wraps): Promise<void> {
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const e = await this.kv.get(NAME_KEY);
      if (e === null || e.operation !== 'PUT') return;
      try {
        await this.kv.update(NAME_KEY, json({ v: 2, w: encodeWraps(next(decodeNames(e.value))) }), e.revision);
        return;
      } catch (err) {
        if (!lostRace(err)) throw err;
      }
    }
    throw new KeysUnavailableError(`cannot rewrap the subject-name key: it kept changing under ${CAS_ATTEMPTS} attempts`);
  }

  async fetch(kid: string): Promise<StoredKey | 'destroyed' | undefined> {
    let last: { operation: string; value: Uint8Array } | undefined;
    for await (const e of await this.kv.history({ key: `s.*.${kid}` })) last = e;
    if (last === undefined) return undefined;
    return last.operation === 'PUT' ? decodeRecord(last.value) : 'destroyed';
  }

  async follow(onKey: (key: StoredKey) => void, onDestroyed: (kid: string, subjectHash: string) => void): Promise<void> {
    const initial = (await this.kv.status()).values;
    // Every key of the bucket (the name key too, skipped below), so that the watcher's count of
    // initial values matches `initial`.
    let watch = await this.kv.watch({ key: '>' });
    let stopped = false;
    let lastRevision = 0;
    this.stopFollowing = () => { stopped = true; watch.stop(); };
    let loaded!: () => void;
    const ready = new Promise<void>((resolve) => { loaded = resolve; });
    if (initial === 0) loaded();
    const consume = async () => {
      for await (const e of watch) {
        lastRevision = e.revision;
        const parsed = parseKey(e.key);
        if (parsed !== undefined) {
          if (e.operation === 'PUT') {
            try {
              onKey(decodeRecord(e.value));
            } catch {
              // A value that is not a key record is not ours; leave it.
            }
          } else {
            onDestroyed(parsed.kid, parsed.subjectHash);
          }
        }
        // The watcher marks the last of the initial values (and everything after) as updates.
        if (e.isUpdate) loaded();
      }
    };
    void (async () => {
      // A watch that ends while this backend follows (a consumer lost under load, a reconnect) is
      // resumed after the last revision seen: a destroy marker must never be missed.
      while (!stopped) {
        try {
          await consume();
        } catch {
          // Resumed below; keys already known stay usable, unknown ones are fetched on demand.
        }
        loaded();
        if (stopped) break;
        await new Promise((r) => setTimeout(r, 250).unref());
        try {
          if (!stopped) watch = await this.kv.watch({ key: '>', ...(lastRevision > 0 ? { resumeFromRevision: lastRevision + 1 } : {}) });
        } catch (e) {
          if (/closed/i.test(`${(e as Error).name} ${(e as Error).message}`)) break; // the connection is gone for good
          // Still down: try again.
        }
      }
    })();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new KeysUnavailableError(`the key bucket did not deliver its ${initial} keys within ${INITIAL_LOAD_TIMEOUT_MS} ms`)), INITIAL_LOAD_TIMEOUT_MS);
    });
    try {
      await Promise.race([ready, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    this.stopFollowing?.();
    this.stopFollowing = null;
    if (this.ownConnection !== null) await this.ownConnection.close().catch(() => {});
  }
}

export interface OpenKeyRingOptions extends MasterKeySource, KeyRingOptions {
  /** The stream whose key bucket (`<stream>_keys`) to use. */
  stream: string;
  /** An open connection to use, or `servers` to open one (closed by `ring.close()`). */
  nc?: NatsConnection;
  servers?: string;
  /** How to authenticate to NATS when `servers` is given (default: the NATS_* environment). */
  nats?: NatsAuthOptions;
  replicas?: number;
}

/**
 * A key ring over a stream's key bucket: what nodes use internally, and what consumers and
 * admin tools pass to `eventReader` or call `rotate` / `shred` on.
 *
 *   const keys = await openKeyRing({ servers, stream: 'TROUPE' });   // master key from TROUPE_MASTER_KEY
 *   await keys.shred('user:42');
 */
export async function openKeyRing(opts: OpenKeyRingOptions): Promise<KeyRing> {
  const { keys } = resolveMasterKeys(opts);
  let nc = opts.nc;
  let own = false;
  if (nc === undefined) {
    const servers = opts.servers ?? process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
    const auth = resolveNatsAuth(opts.nats);
    try {
      nc = await connect(natsConnectOptions(servers, auth, { creds: credsAuthenticator, nkey: nkeyAuthenticator }, { name: 'troupe-keys', maxReconnectAttempts: -1, reconnectTimeWait: 250 }));
    } catch (e) {
      throw loginRefusal(servers, auth, e, ' (to read encryption keys)') ?? new KeysUnavailableError(`${connectFailure(servers, auth, e)} (to read encryption keys)`);
    }
    own = true;
  }
  try {
    const backend = await NatsKeyBackend.open(nc, opts.stream, { replicas: opts.replicas, ownConnection: own });
    return await KeyRing.open(keys, backend, opts);
  } catch (e) {
    if (own) await nc.close().catch(() => {});
    throw e;
  }
}
