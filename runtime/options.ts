/**
 * Options of a Troupe node: types, named defaults, and one `resolveOptions()` that checks,
 * fills and freezes them. Resolved options cross to worker threads as plain data.
 */
import { resolveNatsAuth, type NatsAuth, type NatsAuthOptions } from './connection.ts';
import { availableParallelism, hostname } from 'node:os';
import { resolve } from 'node:path';
import { createHash } from 'node:crypto';
import { InvalidOptionError } from './errors.ts';
import type { NodeAuthorize } from './principal.ts';
import type { AuthOptions } from './token.ts';
import type { RateLimits } from './rate-limit.ts';

/** pino's levels, as `logLevel` takes them. */
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function isLogLevel(v: unknown): v is LogLevel {
  return typeof v === 'string' && (LOG_LEVELS as readonly string[]).includes(v);
}

export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';
export const DEFAULT_STREAM = 'TROUPE';
export const DEFAULT_SUBJECT_PREFIX = 'troupe';
/**
 * Shards are the unit of ownership, so a deployment can spread over up to this many workers
 * (across nodes). Each shard has one JetStream message in flight, so fewer shards carry more
 * commits per message: on the ledger workload at C = 64, 16 shards gave ~33k cmds/s at p99
 * ~8 ms against ~26k at p99 ~10 ms with 64 (1 worker, 2 cores), and the same at C = 4096.
 */
export const DEFAULT_SHARDS = 16;
/**
 * One core is left to the main thread (and, on a small machine, nats-server). On the 2-core
 * benchmark machine one worker and two were within the machine's noise of each other (one
 * run 1.4x for one worker, the next 0.9x: bench/RESULTS.md, workers rows), and one worker
 * uses ~40 MB less memory.
 */
export const DEFAULT_WORKERS = Math.max(1, Math.min(8, availableParallelism() - 1));
export const DEFAULT_DATA_DIR = '.troupe/data';
/** A flush never exceeds this many bytes; the server's default max_payload is 1 MiB. */
export const DEFAULT_MAX_BATCH_BYTES = 512 * 1024;
export const DEFAULT_MAX_BATCH_COMMITS = 4096;
export const DEFAULT_LINGER_MS = 0;
export const DEFAULT_MAX_COMMAND_BYTES = 64 * 1024;
export const DEFAULT_ACK_TIMEOUT_MS = 5_000;
export const DEFAULT_MAX_QUEUED_COMMANDS = 200_000;
export const DEFAULT_MAX_RESIDENT_ACTORS = 200_000;
export const DEFAULT_IDLE_ACTOR_MS = 5 * 60_000;
export const DEFAULT_COMMAND_ID_TTL_MS = 24 * 60 * 60_000;
export const DEFAULT_DUPLICATE_WINDOW_MS = 2 * 60_000;
export const DEFAULT_LEASE_TTL_MS = 10_000;
export const DEFAULT_SETTLE_MS = 2_000;
export const DEFAULT_MAX_CONCURRENT_MOVES = 4;
export const DEFAULT_RESTART_GRACE_MS = 30_000;
/** Logs of an embedded node: quiet unless something needs attention (`troupe start` uses info). */
export const DEFAULT_LOG_LEVEL: LogLevel = 'warn';
export const DEFAULT_HTTP_HOST = '127.0.0.1';
/** /health fails when a consumer's dead-letter queue holds more events than this. */
export const DEFAULT_MAX_DLQ_DEPTH = 1000;
/** /health fails when a consumer is more log messages behind than this. */
export const DEFAULT_MAX_CONSUMER_LAG = 100_000;

export interface TroupeOptions {
  /** Paths (or file: URLs) of modules whose exports include actor definitions. Workers import them. */
  actors: readonly (string | URL)[];
  /** NATS servers, comma separated. Default: NATS_URL, else nats://127.0.0.1:4222. */
  servers?: string;
  /** How to authenticate to NATS (user/password, token, NKey, .creds, TLS); each field defaults to its NATS_* variable (connection.ts). */
  nats?: NatsAuthOptions;
  stream?: string;
  subjectPrefix?: string;
  /** Fixed per deployment: changing it moves actors between shards. */
  shards?: number;
  /** Worker threads hosting shards. Default: cores - 1 (at least 1, at most 8). */
  workers?: number;
  /** Folder of the node's LMDB environment. Deleting it loses nothing. */
  dataDir?: string;
  /** JetStream replicas of the stream (3 on a cluster). */
  replicas?: number;
  maxBatchBytes?: number;
  maxBatchCommits?: number;
  /** Extra time a flush waits to gather commits. 0 flushes at the end of each event-loop turn. */
  lingerMs?: number;
  maxCommandBytes?: number;
  ackTimeoutMs?: number;
  /** Commands in progress on the node (queued or awaiting their ack) before `send` fails with OVERLOADED. */
  maxQueuedCommands?: number;
  /** Actors kept in memory per worker; the least recently used beyond this are passivated. */
  maxResidentActors?: number;
  /** Actors idle this long are passivated (snapshot written, memory freed). */
  idleActorMs?: number;
  /**
   * How long a processed commandId is remembered (in LMDB, and learned again from the log): a
   * command re-sent with the same commandId to the same actor within this time is answered
   * once; after it (up to twice it), it is processed again. Default 24 h.
   */
  commandIdTtlMs?: number;
  duplicateWindowMs?: number;
  /** `lease`: shards are owned through leases in NATS KV. `none`: rely on log fencing alone. */
  ownership?: 'lease' | 'none';
  leaseTtlMs?: number;
  /**
   * How long the set of live nodes must stay the same before shards move (node/ownership.ts):
   * a node that restarts within it moves no shard. A node that leaves on purpose (stop,
   * SIGTERM) moves its shards at once. Default 2000 ms.
   */
  settleMs?: number;
  /** Shards this node hands off or takes over at the same time. Default 4. */
  maxConcurrentMoves?: number;
  /**
   * How long the other nodes keep a node that stopped to restart (`stop({ handOff: false })`,
   * SIGUSR2 on `troupe start`) in placement after its last heartbeat, moving none of its shards;
   * then settleMs as for any vanished node. At least leaseTtlMs. Default 30 s.
   */
  restartGraceMs?: number;
  /** This node's stable name; a restarted node with the same name takes its leases back at once. */
  nodeName?: string;
  /** `source` field of every event. */
  source?: string;
  /** Serve commands from other processes over NATS request/reply. Default true. */
  serve?: boolean;
  /** pino level of the node's logs (stdout, JSON lines). Default: TROUPE_LOG_LEVEL, else 'warn'. */
  logLevel?: LogLevel;
  /**
   * Port of the HTTP server (/health, /ready, /metrics); 0 picks a free one; false serves none.
   * Default: TROUPE_HTTP_PORT when set, else none.
   */
  httpPort?: number | false;
  /** Address the HTTP server listens on. Default 127.0.0.1. */
  httpHost?: string;
  /**
   * The dashboard's admin token: with it (`Authorization: Bearer <token>`) an operator may replay
   * and discard dead letters from the dashboard; without one configured the dashboard is
   * read-only. Default: TROUPE_ADMIN_TOKEN. Stays on the main thread.
   */
  adminToken?: string;
  /** /health fails above this DLQ depth (per consumer probe, unless the probe sets its own). */
  maxDlqDepth?: number;
  /** /health fails above this consumer lag (per consumer probe, unless the probe sets its own). */
  maxConsumerLag?: number;
  /**
   * Verify callers: a signed token (JWT) on every remote request, checked with a public key or a
   * JWKS file; its principal's id becomes the events' userId. Absent: callers are not verified
   * and a remote request's userId is whatever it claims (a local, open node).
   */
  auth?: AuthOptions;
  /**
   * The node's rule for every command, query and history read, at the door (no actor state):
   * return true to allow; anything else is FORBIDDEN. Actor types add their own (defineActor `authorize`).
   */
  authorize?: NodeAuthorize;
  /** Token buckets on commands per principal and per tenant, at the door: beyond them, RATE_LIMITED (retryable, data.retryAfterMs). */
  rateLimits?: RateLimits;
}

export interface ResolvedOptions {
  readonly actors: readonly string[];
  readonly servers: string;
  /** NATS credentials, resolved against the environment: plain data, handed to worker threads. Never logged. */
  readonly nats: NatsAuth;
  readonly stream: string;
  readonly subjectPrefix: string;
  readonly shards: number;
  readonly workers: number;
  readonly dataDir: string;
  readonly replicas: number;
  readonly maxBatchBytes: number;
  readonly maxBatchCommits: number;
  readonly lingerMs: number;
  readonly maxCommandBytes: number;
  readonly ackTimeoutMs: number;
  readonly maxQueuedCommands: number;
  readonly maxResidentActors: number;
  readonly idleActorMs: number;
  readonly commandIdTtlMs: number;
  readonly duplicateWindowMs: number;
  readonly ownership: 'lease' | 'none';
  readonly leaseTtlMs: number;
  readonly settleMs: number;
  readonly maxConcurrentMoves: number;
  readonly restartGraceMs: number;
  readonly nodeName: string;
  readonly source: string;
  readonly serve: boolean;
  readonly logLevel: LogLevel;
  readonly httpPort: number | false;
  readonly httpHost: string;
  readonly maxDlqDepth: number;
  readonly maxConsumerLag: number;
}

/** options.httpPort, else TROUPE_HTTP_PORT, else false. */
function httpPort(o: Record<string, unknown>): number | false {
  const env = process.env.TROUPE_HTTP_PORT;
  const v = o.httpPort ?? (env !== undefined && env !== '' ? Number(env) : false);
  if (v === false) return false;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 65535) {
    const from = o.httpPort === undefined ? `TROUPE_HTTP_PORT=${JSON.stringify(env)}` : JSON.stringify(o.httpPort);
    throw new InvalidOptionError(`options.httpPort must be a port number (0 for any free port) or false, got ${from}`, { field: 'httpPort' });
  }
  return v;
}

function logLevel(o: Record<string, unknown>): LogLevel {
  const env = process.env.TROUPE_LOG_LEVEL;
  const v = o.logLevel ?? (env !== undefined && env !== '' ? env : DEFAULT_LOG_LEVEL);
  if (!isLogLevel(v)) {
    throw new InvalidOptionError(`options.logLevel must be one of fatal, error, warn, info, debug, trace, silent; got ${JSON.stringify(v)}${o.logLevel === undefined ? ' from TROUPE_LOG_LEVEL' : ''}`, { field: 'logLevel' });
  }
  return v;
}

function int(o: Record<string, unknown>, name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const v = o[name] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `between ${min} and ${max}`;
    throw new InvalidOptionError(`options.${name} must be an integer ${range}, got ${JSON.stringify(v)}`, { field: name });
  }
  return v;
}

function str(o: Record<string, unknown>, name: string, fallback: string, pattern?: RegExp): string {
  const v = o[name] ?? fallback;
  if (typeof v !== 'string' || v.length === 0 || (pattern !== undefined && !pattern.test(v))) {
    throw new InvalidOptionError(`options.${name} must be a non-empty string${pattern ? ` matching ${pattern}` : ''}, got ${JSON.stringify(v)}`, { field: name });
  }
  return v;
}

export function resolveOptions(input: TroupeOptions): ResolvedOptions {
  if (typeof input !== 'object' || input === null) throw new InvalidOptionError('options must be an object');
  const o = input as unknown as Record<string, unknown>;
  if (!Array.isArray(input.actors) || input.actors.length === 0) {
    throw new InvalidOptionError('options.actors must list at least one module path that exports actor definitions', { field: 'actors' });
  }
  const actors = input.actors.map((a) => {
    if (a instanceof URL) return a.pathname;
    if (typeof a !== 'string' || a.length === 0) throw new InvalidOptionError(`options.actors entries must be paths or file URLs, got ${JSON.stringify(a)}`, { field: 'actors' });
    return a.startsWith('file:') ? new URL(a).pathname : resolve(a);
  });
  const dataDir = resolve(str(o, 'dataDir', DEFAULT_DATA_DIR));
  const ownership = o.ownership ?? 'lease';
  if (ownership !== 'lease' && ownership !== 'none') throw new InvalidOptionError(`options.ownership must be 'lease' or 'none', got ${JSON.stringify(ownership)}`, { field: 'ownership' });
  const maxBatchBytes = int(o, 'maxBatchBytes', DEFAULT_MAX_BATCH_BYTES, 4096, 64 * 1024 * 1024);
  const maxCommandBytes = int(o, 'maxCommandBytes', DEFAULT_MAX_COMMAND_BYTES, 256, maxBatchBytes);
  const defaultName = `${hostname()}-${createHash('sha256').update(dataDir).digest('hex').slice(0, 8)}`;
  const resolved: ResolvedOptions = {
    actors,
    servers: str(o, 'servers', process.env.NATS_URL || DEFAULT_NATS_URL),
    nats: resolveNatsAuth(input.nats),
    stream: str(o, 'stream', DEFAULT_STREAM, /^[A-Za-z0-9_-]+$/),
    subjectPrefix: str(o, 'subjectPrefix', DEFAULT_SUBJECT_PREFIX, /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/),
    shards: int(o, 'shards', DEFAULT_SHARDS, 1, 65536),
    workers: int(o, 'workers', DEFAULT_WORKERS, 1, 256),
    dataDir,
    replicas: int(o, 'replicas', 1, 1, 5),
    maxBatchBytes,
    maxBatchCommits: int(o, 'maxBatchCommits', DEFAULT_MAX_BATCH_COMMITS, 1, 65535),
    lingerMs: int(o, 'lingerMs', DEFAULT_LINGER_MS, 0, 1000),
    maxCommandBytes,
    ackTimeoutMs: int(o, 'ackTimeoutMs', DEFAULT_ACK_TIMEOUT_MS, 100),
    maxQueuedCommands: int(o, 'maxQueuedCommands', DEFAULT_MAX_QUEUED_COMMANDS, 1),
    maxResidentActors: int(o, 'maxResidentActors', DEFAULT_MAX_RESIDENT_ACTORS, 1),
    idleActorMs: int(o, 'idleActorMs', DEFAULT_IDLE_ACTOR_MS, 10),
    commandIdTtlMs: int(o, 'commandIdTtlMs', DEFAULT_COMMAND_ID_TTL_MS, 1000),
    duplicateWindowMs: int(o, 'duplicateWindowMs', DEFAULT_DUPLICATE_WINDOW_MS, 1000),
    ownership,
    leaseTtlMs: int(o, 'leaseTtlMs', DEFAULT_LEASE_TTL_MS, 1000),
    settleMs: int(o, 'settleMs', DEFAULT_SETTLE_MS, 0),
    maxConcurrentMoves: int(o, 'maxConcurrentMoves', DEFAULT_MAX_CONCURRENT_MOVES, 1),
    restartGraceMs: int(o, 'restartGraceMs', DEFAULT_RESTART_GRACE_MS, 0),
    nodeName: str(o, 'nodeName', defaultName, /^[A-Za-z0-9_.-]+$/),
    source: str(o, 'source', 'troupe'),
    serve: (o.serve ?? true) === true,
    logLevel: logLevel(o),
    httpPort: httpPort(o),
    httpHost: str(o, 'httpHost', DEFAULT_HTTP_HOST),
    maxDlqDepth: int(o, 'maxDlqDepth', DEFAULT_MAX_DLQ_DEPTH, 0),
    maxConsumerLag: int(o, 'maxConsumerLag', DEFAULT_MAX_CONSUMER_LAG, 0),
  };
  return Object.freeze(resolved);
}
