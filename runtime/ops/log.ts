/**
 * Structured logs (pino): one of the two files that import a telemetry library (the other is
 * ops/tracing.ts).
 *
 * Levels, as the node uses them:
 *   error  needs attention now: a worker thread died, an actor's decide threw, a stop failed
 *   warn   degraded or retrying: an append was refused or not acknowledged, a shard re-opens
 *   info   business events and state changes: each stored event, node started/stopping/stopped,
 *          shards opened
 *   debug  flow detail: tasks handed to workers, flushes, rejections
 *
 * Every thread has its own pino instance (one per thread: pino is not shared across threads);
 * a worker's is a child with `worker: <threadId>`. Lines carry correlationId, causationId,
 * aggregateType, aggregateId, eventType where they apply.
 *
 * The hot path never pays for a line that is switched off: `Log` holds one boolean per level,
 * computed once, and callers test it before they build the line's fields:
 *   if (log.debug) log.logger.debug({ aggregateId }, 'decided');
 */
import { pino, type Logger } from 'pino';
import type { LogLevel } from '../options.ts';

export type { Logger };
// The levels are an option of the node, so they live with the options (root); re-exported here.
export { LOG_LEVELS, isLogLevel, type LogLevel } from '../options.ts';

/** A logger plus one flag per level, read on hot paths instead of building a line that is dropped. */
export interface Log {
  readonly logger: Logger;
  readonly error: boolean;
  readonly warn: boolean;
  readonly info: boolean;
  readonly debug: boolean;
}

function flags(logger: Logger): Log {
  return {
    logger,
    error: logger.isLevelEnabled('error'),
    warn: logger.isLevelEnabled('warn'),
    info: logger.isLevelEnabled('info'),
    debug: logger.isLevelEnabled('debug'),
  };
}

/**
 * The logger of this thread. JSON lines on stdout (file descriptor 1, written synchronously, so
 * lines of several threads never interleave within a line and none is lost at exit).
 */
export function createLog(level: LogLevel, bindings: Record<string, unknown> = {}): Log {
  const logger = pino({
    level,
    base: { pid: process.pid, ...bindings },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  }, pino.destination({ fd: 1, sync: true }));
  return flags(logger);
}

/** A child logger (a worker's, a shard's) with the same level flags. */
export function childLog(parent: Log, bindings: Record<string, unknown>): Log {
  return flags(parent.logger.child(bindings));
}

/** A logger that writes nothing (all flags false): for code that runs without a node. */
export const SILENT_LOG: Log = flags(pino({ level: 'silent' }));

/** Fields of an error for a log line: code, message, retryable, the ids it carries. */
export function errorFields(e: unknown): Record<string, unknown> {
  if (typeof e !== 'object' || e === null) return { err: String(e) };
  const { code, message, retryable, data } = e as { code?: unknown; message?: unknown; retryable?: unknown; data?: unknown };
  return { code, err: message, retryable, ...(typeof data === 'object' && data !== null ? data : {}) };
}
