/**
 * `troupe tail`: the log, decoded as event envelopes — one JSON line per event (--json) or one
 * readable line. Reads the stream with an ordered consumer (no durable state on the server),
 * from a stream position or a time, and with --follow keeps printing as commits land.
 *
 * Sensitive fields are decrypted only when a master key is at hand (--key-file,
 * TROUPE_MASTER_KEY_FILE / TROUPE_MASTER_KEY(S), or the development key in the data folder);
 * otherwise they show the redacted marker, as any reader without keys sees them. With --actors,
 * payloads are upcast to the current version of their event type, as consumers read them.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { describeStream, readStream, shardSubject } from '../journal/journal.ts';
import type { EventEnvelope } from '../journal/codec.ts';
import { shardOf } from '../envelope.ts';
import { openKeyRing } from '../contracts/keystore.ts';
import type { KeyRing } from '../contracts/crypto.ts';
import { MASTER_KEY_ENV, MASTER_KEY_FILE_ENV, MASTER_KEYS_ENV } from '../contracts/crypto.ts';
import { loadRegistry, type Registry } from '../contracts/registry.ts';
import { readLogMessage } from '../consumers/reader.ts';
import { DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX } from '../options.ts';
import { CliError, EXIT_RETRYABLE, EXIT_USAGE } from './exit.ts';
import { connectCli, type NatsFlags } from './credentials.ts';
import { dataPaths } from './paths.ts';

export interface TailFlags extends NatsFlags {
  natsUrl?: string;
  stream?: string;
  subjectPrefix?: string;
  type?: string;
  id?: string;
  from?: string;
  follow?: boolean;
  json?: boolean;
  actors?: string;
  keyFile?: string;
  dataDir?: string;
}

/** Where reading starts: a stream position (an integer ≥ 1), or a time (ISO-8601, or an age like 15m, 2h, 30s, 1d). */
export type TailStart = { seq: number } | { time: Date };

const AGE = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseTailStart(from: string | undefined, now = Date.now()): TailStart {
  if (from === undefined || from === '') return { seq: 1 };
  if (/^\d+$/.test(from)) {
    const seq = Number(from);
    if (seq < 1) throw new CliError(`--from: a stream position starts at 1; got ${from}`, EXIT_USAGE);
    return { seq };
  }
  const age = AGE.exec(from);
  if (age !== null) return { time: new Date(now - Number(age[1]) * UNIT_MS[age[2]!]!) };
  const t = Date.parse(from);
  if (Number.isNaN(t)) throw new CliError(`--from: expected a stream position (e.g. 120), a time (e.g. 2026-12-03T09:00:00Z) or an age (e.g. 15m); got ${from}`, EXIT_USAGE);
  return { time: new Date(t) };
}

/** One readable line for an event. */
export function renderEvent(e: EventEnvelope): string {
  const redacted = e.redacted !== undefined && e.redacted.length > 0 ? ` redacted=${e.redacted.join(',')}` : '';
  return `#${e.position} ${e.timestamp} ${e.aggregateType}/${e.aggregateId} #${e.sequence} ${e.eventType}@v${e.version} ${JSON.stringify(e.payload)} user=${e.userId ?? '-'} command=${e.commandId}${redacted}`;
}

/** Whether `e` passes --type and --id. */
export function matches(e: EventEnvelope, flags: Pick<TailFlags, 'type' | 'id'>): boolean {
  return (flags.type === undefined || e.aggregateType === flags.type) && (flags.id === undefined || e.aggregateId === flags.id);
}

/** The master key configured for this shell, or the development key of the data folder when it exists; null: read without keys. */
function masterKeyFile(flags: TailFlags): { masterKeyFile?: string } | null {
  const env = process.env;
  if (flags.keyFile !== undefined && flags.keyFile !== '') return { masterKeyFile: flags.keyFile };
  if (env[MASTER_KEYS_ENV] || env[MASTER_KEY_ENV] || env[MASTER_KEY_FILE_ENV]) return {};
  const dev = dataPaths({ dataDir: flags.dataDir }).masterKey;
  return existsSync(dev) ? { masterKeyFile: dev } : null;
}

export async function tail(flags: TailFlags, out: (line: string) => void = (l) => process.stdout.write(`${l}\n`)): Promise<void> {
  if (flags.id !== undefined && flags.type === undefined) throw new CliError('--id needs --type (an actor is named by its type and id)', EXIT_USAGE);
  const start = parseTailStart(flags.from);
  const stream = flags.stream ?? DEFAULT_STREAM;
  let registry: Registry | undefined;
  if (flags.actors !== undefined && flags.actors !== '') registry = await loadRegistry(flags.actors.split(',').map((a) => resolve(a.trim())));
  const { nc, servers: url } = await connectCli(flags, 'troupe-tail');
  let keys: KeyRing | null = null;
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once('SIGINT', onSignal);
  try {
    const info = await describeStream(nc, stream).catch((e: unknown) => {
      throw new CliError(`no Troupe stream ${stream} on ${url} (${(e as Error).message}); name it with --stream`, EXIT_RETRYABLE, { cause: e });
    });
    // The stream records its subjects: the prefix is read from there unless given.
    const prefix = flags.subjectPrefix ?? info.subjectPrefix ?? DEFAULT_SUBJECT_PREFIX;
    const keySource = masterKeyFile(flags);
    if (keySource !== null) keys = await openKeyRing({ nc, stream, ...keySource, devKeyFile: false });
    // One actor lives on one shard subject: read only that one.
    const filter = flags.type !== undefined && flags.id !== undefined && info.shards > 0
      ? shardSubject(prefix, shardOf(flags.type, flags.id, info.shards))
      : `${prefix}.log.>`;
    const follow = flags.follow === true;
    // Without --follow, stop at the end of the log as it was when tail began.
    if (!follow && (info.messages === 0 || ('seq' in start && start.seq > info.lastSeq))) return;
    await readStream(nc, stream, filter, start, { ...(follow ? {} : { until: info.lastSeq }), signal: stop.signal }, async (data, seq) => {
      const events = await readLogMessage(data, seq, { ...(registry !== undefined ? { registry } : {}), keys });
      for (const e of events) if (matches(e, flags)) out(flags.json === true ? JSON.stringify(e) : renderEvent(e));
    });
  } finally {
    process.off('SIGINT', onSignal);
    await keys?.close().catch(() => {});
    await nc.close().catch(() => {});
  }
}
