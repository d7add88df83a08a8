/**
 * Every error Troupe raises. Each has a stable string `code`, whether a retry can help
 * (`retryable`), the ids someone needs to debug it, and an optional `cause`.
 *
 * Errors lose their class when they cross `postMessage` or NATS: send `toWire(e)` and
 * rebuild with `fromWire()`. Branch on them with `isTroupeError(e, code)`.
 */

export type ErrorCode =
  | 'VALIDATION'
  | 'UNKNOWN_ACTOR_TYPE'
  | 'UNKNOWN_COMMAND_TYPE'
  | 'MALFORMED_COMMAND'
  | 'MALFORMED_REQUEST'
  | 'COMMAND_TOO_LARGE'
  | 'SCHEMA_VIOLATION'
  | 'SENSITIVE_DATA'
  | 'UPCAST_FAILED'
  | 'KEYS_UNAVAILABLE'
  | 'DOMAIN_REJECTION'
  | 'DECIDE_FAILED'
  | 'CONCURRENCY'
  | 'SHARD_NOT_OWNED'
  | 'JOURNAL_UNAVAILABLE'
  | 'OVERLOADED'
  | 'NOT_FOUND'
  | 'TIMEOUT'
  | 'INVALID_OPTION'
  | 'INVALID_DEFINITION'
  | 'STOPPED'
  | 'WORKER_LOST'
  | 'NATS_SERVER_UNSUPPORTED'
  | 'INTERNAL';

export interface ErrorData {
  aggregateType?: string;
  aggregateId?: string;
  commandId?: string;
  commandType?: string;
  sequence?: number;
  shard?: number;
  field?: string;
  [key: string]: unknown;
}

export class TroupeError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly data: ErrorData;

  constructor(code: ErrorCode, message: string, data: ErrorData = {}, options: { cause?: unknown; retryable?: boolean } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.data = data;
    this.retryable = options.retryable ?? false;
  }

  get aggregateType(): string | undefined { return this.data.aggregateType; }
  get aggregateId(): string | undefined { return this.data.aggregateId; }
  get commandId(): string | undefined { return this.data.commandId; }

  toJSON(): WireError {
    return toWire(this);
  }
}

/**
 * A command or event does not have the required shape (missing id, wrong types); a read
 * request (query, history) that cannot be decoded is MALFORMED_REQUEST.
 */
export class ValidationError extends TroupeError {
  override name = 'ValidationError';
  constructor(code: 'VALIDATION' | 'MALFORMED_COMMAND' | 'MALFORMED_REQUEST' | 'COMMAND_TOO_LARGE' | 'SCHEMA_VIOLATION' | 'SENSITIVE_DATA' | 'UNKNOWN_ACTOR_TYPE' | 'UNKNOWN_COMMAND_TYPE', message: string, data: ErrorData = {}, cause?: unknown) {
    super(code, message, data, { cause, retryable: false });
  }
}

/** The actor refused the command: a business rule. Nothing was appended. */
export class DomainRejection extends TroupeError {
  override name = 'DomainRejection';
  constructor(message: string, data: ErrorData = {}, cause?: unknown) {
    super('DOMAIN_REJECTION', message, data, { cause, retryable: false });
  }
}

/** Throw this from a decide function to reject a command with a reason callers can branch on. */
export function reject(reason: string, details?: Record<string, unknown>): never {
  // A rejection is an answer, not a bug: skip the stack trace, which costs more than the decision.
  // (No try/finally: the constructor cannot throw, and a throw out of a finally block costs ~2 µs.)
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  const e = new DomainRejection(reason, details === undefined ? { reason } : { reason, ...details });
  Error.stackTraceLimit = limit;
  throw e;
}

/** A decide function threw something that is not a domain rejection: a bug in the actor. */
export class DecideFailedError extends TroupeError {
  override name = 'DecideFailedError';
  constructor(message: string, data: ErrorData = {}, cause?: unknown) {
    super('DECIDE_FAILED', message, data, { cause, retryable: false });
  }
}

/** Another writer appended to the shard (fencing), or the node does not own the shard. */
export class ConcurrencyError extends TroupeError {
  override name = 'ConcurrencyError';
  constructor(code: 'CONCURRENCY' | 'SHARD_NOT_OWNED', message: string, data: ErrorData = {}, cause?: unknown) {
    // Retryable: the command was not stored; a retry is decided against the state the log now holds.
    super(code, message, data, { cause, retryable: true });
  }
}

/** JetStream could not be reached or did not acknowledge. Retrying with the same commandId is safe. */
export class JournalUnavailableError extends TroupeError {
  override name = 'JournalUnavailableError';
  constructor(message: string, data: ErrorData = {}, cause?: unknown) {
    super('JOURNAL_UNAVAILABLE', message, data, { cause, retryable: true });
  }
}

export class OverloadedError extends TroupeError {
  override name = 'OverloadedError';
  constructor(message: string, data: ErrorData = {}) {
    super('OVERLOADED', message, data, { retryable: true });
  }
}

export class NotFoundError extends TroupeError {
  override name = 'NotFoundError';
  constructor(message: string, data: ErrorData = {}) {
    super('NOT_FOUND', message, data, { retryable: false });
  }
}

export class TimeoutError extends TroupeError {
  override name = 'TimeoutError';
  constructor(message: string, data: ErrorData = {}) {
    super('TIMEOUT', message, data, { retryable: true });
  }
}

export class InvalidOptionError extends TroupeError {
  override name = 'InvalidOptionError';
  constructor(message: string, data: ErrorData = {}) {
    super('INVALID_OPTION', message, data, { retryable: false });
  }
}

export class InvalidDefinitionError extends TroupeError {
  override name = 'InvalidDefinitionError';
  constructor(message: string, data: ErrorData = {}) {
    super('INVALID_DEFINITION', message, data, { retryable: false });
  }
}

/**
 * A stored event or snapshot could not be brought to the current definition: an upcaster
 * threw, a version is newer than the definition, or a step of the chain is missing.
 */
export class UpcastError extends TroupeError {
  override name = 'UpcastError';
  constructor(message: string, data: ErrorData = {}, cause?: unknown) {
    super('UPCAST_FAILED', message, data, { cause, retryable: false });
  }
}

/**
 * Encryption keys could not be read or stored: the key bucket is unreachable, a key was
 * wrapped with another master key, or an event names a key that no store holds. Never
 * raised for a destroyed (shredded) key: readers get the redacted value instead.
 */
export class KeysUnavailableError extends TroupeError {
  override name = 'KeysUnavailableError';
  constructor(message: string, data: ErrorData = {}, cause?: unknown, retryable = true) {
    super('KEYS_UNAVAILABLE', message, data, { cause, retryable });
  }
}

export class StoppedError extends TroupeError {
  override name = 'StoppedError';
  constructor(message = 'the Troupe node is stopping or stopped; retry against a running node', data: ErrorData = {}) {
    super('STOPPED', message, data, { retryable: true });
  }
}

/** The worker thread hosting the command's shard died; the shard is re-opened from the log on another. */
export class WorkerLostError extends TroupeError {
  override name = 'WorkerLostError';
  constructor(message: string, data: ErrorData = {}, cause?: unknown) {
    super('WORKER_LOST', message, data, { cause, retryable: true });
  }
}

export interface WireError {
  code: ErrorCode;
  message: string;
  data: ErrorData;
  retryable: boolean;
}

export function toWire(e: unknown): WireError {
  if (e instanceof TroupeError) return { code: e.code, message: e.message, data: e.data, retryable: e.retryable };
  if (isWireError(e)) return e;
  const message = e instanceof Error ? e.message : String(e);
  return { code: 'INTERNAL', message, data: {}, retryable: false };
}

function isWireError(e: unknown): e is WireError {
  return typeof e === 'object' && e !== null && typeof (e as WireError).code === 'string' && typeof (e as WireError).message === 'string' && !(e instanceof Error);
}

/** Rebuild the right error class from its wire form. */
export function fromWire(w: WireError): TroupeError {
  // The stack would point here, not where the error happened: skip it (it is costly).
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return rebuild(w);
  } finally {
    Error.stackTraceLimit = limit;
  }
}

function rebuild(w: WireError): TroupeError {
  const { code, message, data } = w;
  switch (code) {
    case 'VALIDATION':
    case 'MALFORMED_COMMAND':
    case 'MALFORMED_REQUEST':
    case 'COMMAND_TOO_LARGE':
    case 'SCHEMA_VIOLATION':
    case 'SENSITIVE_DATA':
    case 'UNKNOWN_ACTOR_TYPE':
    case 'UNKNOWN_COMMAND_TYPE':
      return new ValidationError(code, message, data);
    case 'DOMAIN_REJECTION': return new DomainRejection(message, data);
    case 'DECIDE_FAILED': return new DecideFailedError(message, data);
    case 'CONCURRENCY':
    case 'SHARD_NOT_OWNED':
      return new ConcurrencyError(code, message, data);
    case 'JOURNAL_UNAVAILABLE': return new JournalUnavailableError(message, data);
    case 'OVERLOADED': return new OverloadedError(message, data);
    case 'NOT_FOUND': return new NotFoundError(message, data);
    case 'TIMEOUT': return new TimeoutError(message, data);
    case 'INVALID_OPTION': return new InvalidOptionError(message, data);
    case 'INVALID_DEFINITION': return new InvalidDefinitionError(message, data);
    case 'STOPPED': return new StoppedError(message, data);
    case 'WORKER_LOST': return new WorkerLostError(message, data);
    case 'UPCAST_FAILED': return new UpcastError(message, data);
    case 'KEYS_UNAVAILABLE': return new KeysUnavailableError(message, data, undefined, w.retryable);
    default: return new TroupeError(code, message, data, { retryable: w.retryable });
  }
}

/** Structural check that survives thread and process boundaries. */
export function isTroupeError(e: unknown, code?: ErrorCode): e is TroupeError {
  if (typeof e !== 'object' || e === null) return false;
  const c = (e as { code?: unknown }).code;
  if (typeof c !== 'string' || typeof (e as { message?: unknown }).message !== 'string') return false;
  if (!(e instanceof TroupeError) && !('retryable' in e)) return false;
  return code === undefined || c === code;
}
